"""The LSTM that predicts car failures from the Kafka stream. See ml/README.md.

`training/` fits, evaluates and saves models (`python -m ml train`, the seed's form, `python -m ml drift`);
`serving/` predicts live (`python -m ml predict`). Beside them, what both use: the artifact and its SavedModel
signature (artifact.py), readings as windows (features.py), the Kafka readers (source.py), out-of-distribution
scores (ood.py), live figures and the promotion gate (live_eval.py, gate.py) and the settings every command
shares (settings.py). `training/` and `serving/` never import each other."""
