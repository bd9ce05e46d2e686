"""The `ml_read` section: records/s read AND decoded through the tensorflow-io reader beside the confluent-kafka
reader, on the same bounded range in the same run (both feed tf.data; ml/source.py), plus the raw read rates."""

from __future__ import annotations

import logging
import time

from common.errors import KafkaError
from scripts.bench.context import BenchContext
from scripts.testkit.readings import write_readings
from simulator.fleet import generate_readings

log = logging.getLogger(__name__)

PARTITIONS = 3


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def run(ctx: BenchContext) -> dict:
    from ml.source import raw_dataset, read_records, resolve_range

    cars, per_car = (50, 200) if ctx.quick else (100, 500)
    topic = "bench-ml-read"
    kafka = (ctx.bootstrap, ctx.kafka_security)
    written = write_readings(*kafka, topic, generate_readings(cars, per_car), PARTITIONS)
    topic_range = resolve_range(*kafka, topic)
    best: dict[str, float] = {}
    for _ in range(2):  # alternate the readers, keep each one's best run: the machine is shared
        for reader in ("confluent", "tfio"):
            started = time.monotonic()
            with raw_dataset(*kafka, topic_range, reader) as dataset:
                raw = sum(len(chunk["message"]) for chunk in dataset.as_numpy_iterator())
            best[f"{reader}_raw"] = max(best.get(f"{reader}_raw", 0.0), _rate(raw, time.monotonic() - started))
            result = read_records(*kafka, topic_range, reader)
            if len(result.records) != written:
                raise KafkaError(f"{reader} read {len(result.records)} of {written} records")
            best[reader] = max(best.get(reader, 0.0), _rate(written, result.seconds))
    return {
        "records": written,
        "partitions": PARTITIONS,
        "tfio_records_per_s": best["tfio"],
        "confluent_records_per_s": best["confluent"],
        "tfio_to_confluent_ratio": round(best["tfio"] / best["confluent"], 3),
        "tfio_raw_records_per_s": best["tfio_raw"],
        "confluent_raw_records_per_s": best["confluent_raw"],
    }
