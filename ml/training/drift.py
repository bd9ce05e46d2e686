"""`python -m ml drift`: does the recent data on car-sensor still look like what the serving model was trained on?

Reads the last N records of every partition (through ml/source.py's readers), compares each feature with the
serving model's training statistics (metadata.json `feature_stats`) and training sample (training_sample.npy),
and writes a report a person opens: drift.html (one row per feature), drift.png (distributions), drift.json.

Per feature:
- the training cars' mean, std, [min, max] and [0.5 %, 99.5 %] quantiles beside the recent ones;
- PSI (population stability index) over ten bins cut at the training sample's deciles: the symmetric
  Kullback-Leibler divergence of the two binned distributions (scipy.stats.entropy both ways). Usual reading:
  under 0.1 stable, 0.1 to 0.25 a shift, over 0.25 a drift;
- the two-sample Kolmogorov-Smirnov statistic (scipy.stats.ks_2samp): the largest gap between the two CDFs;
- the share of recent readings outside the training [min, max] range, and the share beyond the OOD threshold
  (ml/ood.py: what the predictor flags as out of distribution).

Verdict: OUT OF RANGE when more than --ood-share of the recent readings are out of distribution on this feature
(other units, another sensor), else DRIFT when PSI passes --psi-threshold, else ok.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from scipy import stats

from common.cli import add_settings_arguments, describe, settings_from_args
from common.errors import ConfigError
from common.logs import setup_logging
from ml import ood
from ml.settings import MlSettings

log = logging.getLogger(__name__)

PSI_BINS = 10
PSI_FLOOR = 1e-4  # a bin empty on one side would make the divergence infinite
OUT_OF_RANGE, DRIFT, OK = "OUT OF RANGE", "DRIFT", "ok"


class DriftSettings(MlSettings):
    """`python -m ml drift`: the last records of every partition against the serving model's training data."""

    recent_records: int = Field(5000, ge=1, description="Records read from the end of every partition")
    model_path: str | None = Field(
        None,
        description="Model version directory; unset: the one the predictor serves from --model-dir (the registry's "
        "champion, else the newest)",
    )
    drift_dir: str = Field("artifacts/drift", description="Folder of the drift reports (one sub-folder per run)")
    psi_threshold: float = Field(0.25, gt=0, description="PSI from which a feature's verdict is DRIFT")
    ood_share: float = Field(
        0.01, ge=0, le=1, description="Share of out-of-distribution readings from which a feature is OUT OF RANGE"
    )
    ood_threshold: float = Field(
        ood.DEFAULT_THRESHOLD, ge=0, description="Out of distribution beyond this many training-range widths"
    )


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    training: dict[str, float]
    """min, max, mean, std, q0_5, q99_5 of the training cars."""
    recent: dict[str, float]
    """The same for the recent readings."""
    psi: float
    ks: float
    ks_pvalue: float
    outside_range: float
    """Share of recent readings outside the training [min, max]."""
    out_of_distribution: float
    """Share of recent readings beyond the OOD threshold (what the predictor flags)."""
    verdict: str


def summary(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return dict.fromkeys(("min", "max", "mean", "std", "q0_5", "q99_5"), float("nan"))
    low, high = np.quantile(values, [0.005, 0.995])
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "q0_5": float(low),
        "q99_5": float(high),
    }


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, in bins cut at `expected`'s quantiles."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = []
    for values in (expected, actual):
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        shares.append(np.maximum(counts / max(len(values), 1), PSI_FLOOR))
    return float(stats.entropy(shares[1], shares[0]) + stats.entropy(shares[0], shares[1]))


def compare(
    metadata: dict[str, Any], sample: np.ndarray, recent: np.ndarray, settings: DriftSettings
) -> list[FeatureDrift]:
    """One FeatureDrift per model feature: `sample` and `recent` are raw readings [n, F] in metadata's order."""
    scorer = ood.OodScorer.from_metadata(metadata, settings.ood_threshold)
    if not scorer.enabled or sample is None or not len(sample):
        raise ConfigError(
            f"model {metadata.get('version')} keeps no training statistics or sample (trained before "
            "`python -m ml drift` existed): retrain it, then compare"
        )
    distances = scorer.distances(recent)
    stats_of = metadata[ood.STATS_KEY]["features"]
    result = []
    for i, name in enumerate(scorer.names):
        trained = {key: float(stats_of[name][key]) for key in ("min", "max", "mean", "std", "q0_5", "q99_5")}
        values = recent[:, i].astype(np.float64)
        # null (not reported) is no value to compare; distances counts it far out, as the predictor flags it
        values = values[~np.isnan(values)]
        ks, ks_pvalue = stats.ks_2samp(sample[:, i], values)[:2] if len(values) else (1.0, 0.0)
        shift = psi(sample[:, i].astype(np.float64), values)
        share_ood = float((distances[:, i] > settings.ood_threshold).mean())
        verdict = OUT_OF_RANGE if share_ood > settings.ood_share else DRIFT if shift >= settings.psi_threshold else OK
        result.append(
            FeatureDrift(
                name=name,
                training=trained,
                recent=summary(values),
                psi=shift,
                ks=float(ks),
                ks_pvalue=float(ks_pvalue),
                outside_range=float((distances[:, i] > 0).mean()),
                out_of_distribution=share_ood,
                verdict=verdict,
            )
        )
    return result


def headline(features: list[FeatureDrift]) -> str:
    """One sentence: which features are out of range, which drifted."""
    parts = []
    for verdict in (OUT_OF_RANGE, DRIFT):
        names = [f.name for f in features if f.verdict == verdict]
        if names:
            parts.append(f"{len(names)} {verdict.lower()} ({', '.join(names)})")
    if not parts:
        return f"all {len(features)} features look like the training data"
    return f"of {len(features)} features: " + "; ".join(parts)


def run(settings: DriftSettings) -> Path:
    """Read the recent records, compare, write the report; returns the HTML file."""
    # TensorFlow loads here (ml/source.py), after --help and the settings check
    from ml import artifact
    from ml.features import feature_matrix
    from ml.registry import serving_version
    from ml.source import read_records, resolve_range
    from ml.training.drift_report import write_drift_report

    version = Path(settings.model_path) if settings.model_path else serving_version(settings.model_dir)
    if version is None:
        raise ConfigError(f"no model in {settings.model_dir}: train one first (python -m ml train)")
    metadata = artifact.read_metadata(version)
    sample = artifact.read_training_sample(version)
    kafka = (settings.kafka_bootstrap_servers, settings.kafka_security)
    topic_range = resolve_range(*kafka, settings.topic, last_per_partition=settings.recent_records)
    if topic_range.count == 0:
        raise ConfigError(f"{settings.topic} holds no records to compare")
    result = read_records(*kafka, topic_range, settings.reader, settings.schema_registry_url)
    recent = feature_matrix([record.value for record in result.records], metadata["features"])
    if not len(recent):
        raise ConfigError(f"none of the {topic_range.count} records of {settings.topic} decoded as a reading")
    features = compare(metadata, sample, recent, settings)
    context = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "model": metadata.get("version", version.name),
        "model_path": str(version),
        "topic": settings.topic,
        "offsets": {str(p.partition): [p.start, p.end] for p in topic_range.partitions},
        "readings": len(recent),
        "rejected": result.rejected,
        "training_readings": metadata[ood.STATS_KEY].get("readings"),
        "headline": headline(features),
        "settings": {k: getattr(settings, k) for k in ("psi_threshold", "ood_share", "ood_threshold")},
        "features": [asdict(f) for f in features],
    }
    folder = Path(settings.drift_dir) / artifact.new_version()
    html = write_drift_report(folder, context, sample, recent, features)
    log.info("drift of %s against model %s: %s", settings.topic, context["model"], context["headline"])
    return html


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml drift",
        description="Compare the last records of every partition of the readings topic with the serving model's "
        "training data, feature by feature (PSI, Kolmogorov-Smirnov, share outside the training range), and write "
        "an HTML report with a PNG of the distributions. Prints the HTML file's path.",
    )
    add_settings_arguments(parser, DriftSettings)
    settings = settings_from_args(DriftSettings, parser.parse_args(argv))
    setup_logging()
    log.info("drift with %s", describe(settings))
    print(run(settings))
    return 0
