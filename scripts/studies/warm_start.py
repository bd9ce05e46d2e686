"""Should the continual trainer start a challenger from the champion's weights or from random ones? A measurement.

    python -m scripts.studies.warm_start --seeds 1,2,3,4 --cars 60 --readings 400

For each seed: a champion trained as `python -m ml train` does (`fit_and_evaluate`, the training defaults) on one
fleet; then a newer fleet a continual trainer would see (another seed, a month later), and on it a challenger from
the champion's learned layers (ml/training/model.py copy_learned_weights, as ml/continual/trainer.py does) and one
from random weights, with the same split, seed and epochs. Printed per fit, on the new fleet's held-out test cars:
PR-AUC, episodes warned, false alerts per healthy car-hour, epochs run (early stopping) and seconds.

`--other-units` trains on the newer fleet in other units instead (scripts/testkit/readings.py OTHER_UNITS, the
drift case). Its figures equal the same-units ones to the last digit: the scaling inside the model is fitted on the
new data, and a change of units is an affine map that this scaling undoes exactly.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ml.features import series_from_records
from ml.training.model import copy_learned_weights
from ml.training.settings import FitSettings
from ml.training.train import fit_and_evaluate
from scripts.testkit.readings import in_other_units
from simulator.fleet import generate_readings

NEWER_MS = 30 * 24 * 3600 * 1000  # the new fleets start a month after the champion's


def _fit(records: list[dict], settings: FitSettings, champion: Any = None) -> dict[str, Any]:
    initial = None if champion is None else (lambda model: copy_learned_weights(champion, model))
    started = time.monotonic()
    trained = fit_and_evaluate(series_from_records(records), settings, {"study": "warm_start"}, initial=initial)
    lstm = trained.report["models"]["lstm"]
    episodes = lstm["episodes"]
    return {
        "model": trained.model,
        "pr_auc": round(lstm["pr_auc"] or 0.0, 3),
        "warned": f"{episodes['warned']}/{episodes['episodes']}",
        "false_alerts_per_healthy_car_hour": episodes["false_alerts_per_healthy_car_hour"],
        "epochs": trained.metadata["training"]["epochs"],
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--cars", type=int, default=60)
    parser.add_argument("--readings", type=int, default=400)
    parser.add_argument("--other-units", action="store_true", help="the newer fleet in other units")
    args = parser.parse_args()
    settings = FitSettings(bootstrap=10)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        fleet = dict(failure_rate=2.0)
        champion = _fit(list(generate_readings(args.cars, args.readings, seed=seed, **fleet)), settings)
        newer = list(generate_readings(args.cars, args.readings, seed=seed + 100, start_time_ms=NEWER_MS, **fleet))
        if args.other_units:
            newer = [in_other_units(r) for r in newer]
        print(json.dumps({"seed": seed, "champion": {k: v for k, v in champion.items() if k != "model"}}))
        for start, source in (("warm", champion["model"]), ("scratch", None)):
            result = {k: v for k, v in _fit(newer, settings, source).items() if k != "model"}
            rows.append({"seed": seed, "start": start, **result})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
