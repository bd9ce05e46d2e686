"""The model on simulator fleets, several seeds at once: the figures behind ml/README.md's tables.

    python -m scripts.studies.model_study --cars 300 --readings 300 --seeds 1,2,3,4 --unseen-cars 600

For each seed it generates a fleet (the same readings `generate_readings` gives), runs the shipped training code
(`fit_and_evaluate`, what `python -m ml train` runs after reading Kafka) and prints three tables. One row per
seed: PR-AUC of the LSTM and its baselines on the held-out test cars, the LSTM's lead over gradient boosting with
its car-bootstrap interval, the episode figures at the threshold chosen on validation cars, the Brier score before
and after calibration. The threshold's transfer: its false-alarm rate on the validation cars it was chosen on, on
the test cars, and (`--unseen-cars N`) the served model's on N cars of another fleet. Episodes warned per failure
mode: a failed reading names its mode (`failure_mode`, reading schema v3), the series carries it and the report
computes it (ml/training/evaluate.py: warned_by_mode), as it does for a model trained from Kafka. `--json FILE`
also writes every result.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from ml.episodes import episode_report, threshold_for_budget
from ml.features import Series, gather_windows, series_from_records, window_ends
from ml.training.evaluate import alarm_rate, car_false_alarms, episode_metrics
from ml.training.report import COLUMNS, OPERATING_MODELS
from ml.training.settings import TrainSettings
from ml.training.train import TrainedModel, fit_and_evaluate
from simulator.fleet import generate_readings

UNSEEN_SEED = 10_000
"""Added to a fleet's seed for the unseen cars' fleet (--unseen-cars)."""


def unseen_transfer(
    trained: TrainedModel,
    cars: int,
    readings_per_car: int,
    seed: int,
    settings: TrainSettings,
    sizes: tuple[int, ...] = (),
    replications: int = 0,
) -> dict:
    """The served model at its own threshold on `cars` more cars of another fleet seed, which no split holds:
    its false-alarm rate there (the transfer a 60-car test set measures only roughly) and its episodes. With
    `sizes`: how the shipped rule's threshold transfers when chosen on that many of these cars (`replications`
    random draws, each threshold's rate measured on the cars not drawn)."""
    unseen = series_from_records(list(generate_readings(cars, readings_per_car, seed=seed)))
    ends = window_ends(unseen, settings.window)
    scores = trained.model.predict(gather_windows(unseen.features, ends, settings.window), batch_size=4096, verbose=0)
    scores = scores.reshape(-1)
    threshold, horizon = trained.metadata["threshold"], settings.horizon
    counts = car_false_alarms(unseen, ends, scores, threshold, horizon, window=settings.window)
    rate = alarm_rate(*counts, settings.bootstrap, settings.seed)
    result = {
        "seed": seed,
        **rate,
        "episodes": episode_metrics(unseen, ends, scores, threshold, horizon, window=settings.window),
    }
    result["chosen_on_fewer_cars"] = {
        size: chosen_on_fewer_cars(unseen, ends, scores, size, replications, settings) for size in sizes
    }
    return result


def chosen_on_fewer_cars(
    series: Series, ends: np.ndarray, scores: np.ndarray, size: int, replications: int, settings: TrainSettings
) -> list[float]:
    """The false-alarm rate on the other cars of thresholds chosen by the shipped rule (`budget_threshold`) on
    `size` cars drawn at random, `replications` times: the transfer error's spread for that many healthy
    car-hours. Cars are picked by masking what is judged, so nothing is scored twice."""
    rng = np.random.default_rng(settings.seed)
    cars = series.car_ids.astype(str)
    spread = np.zeros(len(series), np.float32)
    judged = np.zeros(len(series), bool)
    spread[ends], judged[ends] = scores, True
    rates = []
    for _ in range(replications):
        drawn = np.isin(cars, rng.choice(series.cars, size, replace=False))
        threshold = threshold_for_budget(
            series, spread, judged & drawn, settings.horizon, settings.false_alarm_budget, window=settings.window
        )
        others = judged & ~drawn
        rates.append(
            episode_report(series, others & (spread >= threshold), others, settings.horizon, window=settings.window)
        )
    return [report.false_alerts_per_car_hour for report in rates]


def study(
    cars: int,
    readings_per_car: int,
    seed: int,
    settings: TrainSettings,
    unseen_cars: int = 0,
    sizes: tuple[int, ...] = (),
    replications: int = 0,
) -> dict[str, Any]:
    # the readings name what failed (failure_mode): the report's per-mode figures read it from the series
    series = series_from_records(list(generate_readings(cars, readings_per_car, seed=seed)))
    started = time.monotonic()
    trained = fit_and_evaluate(series, settings, {"source": f"simulator fleet seed {seed}"})
    seconds = time.monotonic() - started
    metadata, report = trained.metadata, trained.report
    models = report["models"]
    return {
        "seed": seed,
        "cars": cars,
        "readings_per_car": readings_per_car,
        "pr_auc": {name: model["pr_auc"] for name, model in models.items()},
        "comparison": report["comparison"],
        "episodes": {name: model["episodes"] for name, model in models.items()},
        "threshold_transfer": {name: models[name]["threshold_transfer"] for name in OPERATING_MODELS},
        "unseen": unseen_transfer(
            trained, unseen_cars, readings_per_car, UNSEEN_SEED + seed, settings, sizes, replications
        )
        if unseen_cars
        else None,
        "brier": [metadata["calibration"]["brier_test_uncalibrated"], metadata["calibration"]["brier_test_calibrated"]],
        "targets": report["targets"],
        "seconds": round(seconds, 1),
        "epochs": metadata["training"]["epochs"],
    }


def _rate(rate: dict[str, Any]) -> str:
    low, high = rate["interval"]
    return f"{rate['rate']:.3f} [{low:.3f}, {high:.3f}] ({rate['healthy_car_hours']:.0f} h)"


def _episodes(episodes: dict[str, Any]) -> str:
    lead = episodes["median_lead_s"]
    return (
        f"{episodes['warned']}/{episodes['episodes']} ({episodes['warned_share']:.0%}), "
        f"{'n/a' if lead is None else f'{lead:.0f} s'}, {episodes['false_alerts_per_healthy_car_hour']:.2f}"
    )


def tables(results: list[dict[str, Any]], budget: float) -> str:
    """The study's three tables in Markdown: the models, the threshold's transfer, episodes by failure mode."""
    lines = [
        "| seed | PR-AUC LSTM / GBM / logistic / prevalence | LSTM - GBM [95 % car bootstrap] "
        "| LSTM warned, median lead, false alerts / car-h | GBM warned, median lead, false alerts / car-h "
        "| Brier LSTM raw → calibrated | fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        pr, c = r["pr_auc"], r["comparison"]
        lines.append(
            f"| {r['seed']} | {pr['lstm']:.3f} / {pr['gbm']:.3f} / {pr['logistic']:.3f} / {pr['prevalence']:.3f} "
            f"| {c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] {c['outcome'].replace('_', ' ')} "
            f"| {_episodes(r['episodes']['lstm'])} | {_episodes(r['episodes']['gbm'])} "
            f"| {r['brier'][0]:.4f} → {r['brier'][1]:.4f} | {r['seconds']:.0f} s, {r['epochs']} epochs |"
        )
    lines += [
        "",
        f"| seed | model | false alerts / car-h: validation (chosen on) | test cars [95 %] | test - budget {budget:g} "
        "| test - validation | unseen cars [95 %] | unseen - budget | unseen: warned, median lead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name in OPERATING_MODELS:
            t = r["threshold_transfer"][name]
            unseen = r["unseen"] if name == "lstm" and r["unseen"] else None
            lines.append(
                f"| {r['seed']} | {COLUMNS[name]} | {_rate(t['chosen_on'])} | {_rate(t['test'])} "
                f"| {t['transfer_error']:+.3f} | {t['gap']:+.3f} "
                + (
                    f"| {unseen['cars']} cars: {_rate(unseen)} | {unseen['rate'] - budget:+.3f} "
                    f"| {_episodes(unseen['episodes'])} |"
                    if unseen
                    else "| | | |"
                )
            )
    modes = sorted({mode for r in results for mode in r["episodes"]["lstm"]["by_mode"] or {}})
    lines += ["", "| seed | model | " + " | ".join(modes) + " |", "|---|---|" + "---|" * len(modes)]
    for r in results:
        for name in OPERATING_MODELS:
            by_mode = r["episodes"][name]["by_mode"] or {}
            cells = [f"{by_mode[m]['warned']}/{by_mode[m]['episodes']}" if m in by_mode else "" for m in modes]
            lines.append(f"| {r['seed']} | {COLUMNS[name]} | " + " | ".join(cells) + " |")
    sizes = sorted({int(size) for r in results if r["unseen"] for size in r["unseen"]["chosen_on_fewer_cars"]})
    if sizes:
        lines += [
            "",
            f"| threshold chosen on (LSTM, shipped rule) | draws | rate on the other cars: mean | median "
            f"| RMS of rate - {budget:g} | share above {1.5 * budget:g} | share below {0.5 * budget:g} |",
            "|---|---|---|---|---|---|---|",
        ]
        for size in sizes:
            rates = np.array([x for r in results for x in r["unseen"]["chosen_on_fewer_cars"][size]], float)
            lines.append(
                f"| {size} cars | {len(rates)} | {rates.mean():.3f} | {np.median(rates):.3f} "
                f"| {np.sqrt(np.mean((rates - budget) ** 2)):.3f} | {np.mean(rates > 1.5 * budget):.0%} "
                f"| {np.mean(rates < 0.5 * budget):.0%} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.studies.model_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cars", type=int, default=300, help="cars per fleet (default: %(default)s)")
    parser.add_argument("--readings", type=int, default=300, help="readings per car (default: %(default)s)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated fleet seeds (default: %(default)s)")
    parser.add_argument(
        "--unseen-cars",
        type=int,
        default=0,
        help="also score the served model on this many cars of another fleet (seed + 10000): its false-alarm "
        "rate where no split was drawn (default: %(default)s, none)",
    )
    parser.add_argument(
        "--chosen-on",
        default="",
        help="with --unseen-cars: comma-separated numbers of those cars to choose the threshold on by the shipped "
        "rule, --replications random draws each, the rate measured on the others (default: none)",
    )
    parser.add_argument("--replications", type=int, default=20, help="draws per --chosen-on size (%(default)s)")
    parser.add_argument("--json", help="also write every result to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.monotonic()
        sizes = tuple(int(n) for n in args.chosen_on.split(",") if n)
        settings = TrainSettings(seed=seed)
        results.append(study(args.cars, args.readings, seed, settings, args.unseen_cars, sizes, args.replications))
        print(f"seed {seed}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(tables(results, TrainSettings().false_alarm_budget))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
