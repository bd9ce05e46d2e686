"""`python -m ml train`, the seed's form and `python -m ml drift`: everything that reads a bounded range of the
readings topic to fit, evaluate and save a model, or to compare recent data with what a model was trained on.
Nothing here is imported by ml/serving/. See ml/README.md."""
