"""The LSTM that predicts car failures from the Kafka stream: training (`python -m ml train`) and the artifact
it leaves for other programs. See ml/README.md."""
