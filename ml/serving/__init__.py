"""`python -m ml predict`: live predictions from the readings topic, one per reading, at least once. Nothing here
is imported by ml/training/. See ml/serving/README.md."""
