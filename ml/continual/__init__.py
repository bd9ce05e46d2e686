"""Continual training's live side: the judge (`judge.py`) applies the promotion gate (ml/gate.py) to the champion's
and the challenger's predictions as they arrive, and promotes or rejects the challenger in the registry
(ml/registry.py). See ml/README.md, "The judge"."""
