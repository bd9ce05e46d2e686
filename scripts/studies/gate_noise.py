"""How noisy is the promotion gate on live data of the size it judges? A measurement for its defaults.

    python -m scripts.studies.gate_noise --seeds 1,2 --live-cars 200

For each seed: three models trained as `python -m ml train` does (`fit_and_evaluate`, the training defaults) on a
history fleet (60 cars x 400 readings): A and B of the same recipe (two weight seeds) on all 60 cars, and L on 8 of
them (less history). A live fleet of other cars (--live-cars x 360 readings) is predicted by each, every reading
with a full window of its car (the model's own threshold), and the gate (ml/gate.py, defaults) judges samples of
live cars that hold about N matured failure episodes, --samples times per N:
- A against B: the same recipe, neither better. How often the gate promotes by chance, and the spread of their live
  PR-AUC difference (what `pr_auc_margin` must let through);
- L against A: A is better (six times the history). How often the gate promotes A (its power) at each N.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from ml.features import gather_windows, series_from_records, window_ends
from ml.gate import GateRule, decide
from ml.live_eval import head_to_head
from ml.training.settings import FitSettings
from ml.training.train import PREDICT_BATCH, fit_and_evaluate
from simulator.fleet import generate_readings

LIVE_MS = 90 * 24 * 3600 * 1000  # the live fleet runs three months after the history


def _train(records: list[dict], seed: int) -> Any:
    return fit_and_evaluate(series_from_records(records), FitSettings(seed=seed, bootstrap=10), {"study": "gate"})


def _predictions(trained: Any, live: list[dict], version: str) -> list[dict[str, Any]]:
    metadata = trained.metadata
    window, threshold = int(metadata["window"]), float(metadata["threshold"])
    series = series_from_records(live, metadata["features"])
    ends = window_ends(series, window)
    windows = gather_windows(series.features, ends, window)
    probabilities = trained.model.predict(windows, batch_size=PREDICT_BATCH, verbose=0).reshape(-1)
    return [
        {
            "car_id": str(series.car_ids[i]), "seq": int(series.seq[i]), "model_version": version,
            "failure_probability": float(p), "failure_predicted": bool(p >= threshold), "alert_suppressed": False,
        }
        for i, p in zip(ends, probabilities, strict=True)
    ]  # fmt: skip


def _samples(live: list[dict], ours: list, theirs: list, horizon: int, window: int, episodes: int, n: int, rng):
    """`n` verdicts of the gate on random car samples holding about `episodes` episodes: (verdict, PR-AUC diff)."""
    cars = sorted({r["car_id"] for r in live})
    whole = head_to_head(live, ours, theirs, horizon, window)[0]
    per_car = whole.episodes / len(cars)
    size = max(2, round(episodes / per_car))
    out = []
    for _ in range(n):
        chosen = set(rng.choice(cars, size=size, replace=False))
        pick = [r for r in live if r["car_id"] in chosen]
        a, b = ([p for p in ps if p["car_id"] in chosen] for ps in (ours, theirs))
        champion, challenger = head_to_head(pick, a, b, horizon, window)
        decision = decide(champion, challenger, GateRule(min_episodes=1))
        diff = None if None in (champion.pr_auc, challenger.pr_auc) else challenger.pr_auc - champion.pr_auc
        out.append((decision.verdict, champion.episodes, diff))
    return out


def _summary(rows: list[tuple[str, int, float | None]]) -> dict[str, Any]:
    diffs = np.array([d for _, _, d in rows if d is not None])
    spread = [round(float(q), 3) for q in np.percentile(diffs, [5, 50, 95])] if len(diffs) else None
    return {
        "episodes_mean": round(float(np.mean([e for _, e, _ in rows])), 1),
        "promote": sum(v == "promote" for v, _, _ in rows),
        "reject": sum(v == "reject" for v, _, _ in rows),
        "wait": sum(v == "wait" for v, _, _ in rows),
        "pr_auc_diff_p5_p50_p95": spread,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--live-cars", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--episodes", default="5,10,20,40")
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        history = list(generate_readings(60, 400, seed=seed, failure_rate=2.0))
        few = {f"car-{n:05d}" for n in range(1, 9)}
        models = {
            "A": _train(history, seed=1),
            "B": _train(history, seed=2),
            "L": _train([r for r in history if r["car_id"] in few], seed=1),
        }
        live = list(generate_readings(args.live_cars, 360, seed=seed + 500, failure_rate=2.0, start_time_ms=LIVE_MS))
        predictions = {name: _predictions(trained, live, name) for name, trained in models.items()}
        horizon, window = int(models["A"].metadata["horizon"]), int(models["A"].metadata["window"])
        rng = np.random.default_rng(seed)
        for pair in (("A", "B"), ("L", "A")):
            whole = decide(*head_to_head(live, predictions[pair[0]], predictions[pair[1]], horizon, window))
            print(json.dumps({"seed": seed, "whole_fleet": f"{pair[0]} against {pair[1]}", "reason": whole.reason}))
            for episodes in (int(e) for e in args.episodes.split(",")):
                rows = _samples(live, predictions[pair[0]], predictions[pair[1]], horizon, window, episodes,
                                args.samples, rng)  # fmt: skip
                result = {"seed": seed, "champion": pair[0], "challenger": pair[1], "episodes": episodes}
                print(json.dumps(result | _summary(rows)), flush=True)


if __name__ == "__main__":
    main()
