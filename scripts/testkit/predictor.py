"""The predictor under test: `python -m ml predict` as a child service, and a Stream of one test's topics that
writes readings (keeping the offset each got) and reads the predictions back, counted by (car_id, seq); the
challenger's shadow predictions go to a topic of the stream's own too (`shadow_predictions`)."""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from common import schemas
from common.avro import AvroCodec
from scripts.runtime.local import free_port
from scripts.runtime.streams import java_serving_command
from scripts.testkit.kafka import read_to_end
from scripts.testkit.services import ChildService, python_env

WAIT_S = 90


class Stream:
    """Topics of one test, readings written to them (and the offset each got), predictions read back.

    `topic_factory(prefix, partitions)` makes a topic, `consumer_factory(topic)` a consumer subscribed to it (the
    fixtures of tests/conftest.py). `input_topic` reads an existing topic (a reference run over the same records,
    in a group of its own)."""

    def __init__(
        self,
        bootstrap: str,
        topic_factory: Callable[[str, int], str],
        consumer_factory: Callable[..., Consumer],
        group: str,
        partitions: int = 2,
        input_topic: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.input = input_topic or topic_factory("readings", partitions)
        self.output = topic_factory("predictions", partitions)
        self.shadow = topic_factory("shadow", partitions)
        self.dlq = topic_factory("dlq", 1)
        self.group = group
        self.codec = AvroCodec(schemas.READING, self.input)
        self.prediction_codec = AvroCodec(schemas.PREDICTION, self.output)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
        self.predictions_consumer: Consumer = consumer_factory(self.output)
        self.predictions: list[dict] = []
        self.offsets: dict[tuple[str, int], tuple[int, int]] = {}
        """(car_id, seq) -> (partition, offset) of each reading written."""

    def write(self, readings: list[dict]) -> None:
        def written(error, message, key) -> None:
            assert error is None, error
            self.offsets[key] = (message.partition(), message.offset())

        for reading in readings:
            key = (reading["car_id"], reading["seq"])
            self.producer.produce(
                self.input,
                self.codec.encode(reading),
                reading["car_id"].encode(),
                on_delivery=lambda error, message, key=key: written(error, message, key),
            )
            self.producer.poll(0)
        assert self.producer.flush(60) == 0

    def committed(self, partitions: int) -> list[int]:
        """The predictors' group's committed offset of each input partition (-1001: none yet)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})  # never joins the group
        try:
            found = consumer.committed([TopicPartition(self.input, p) for p in range(partitions)], timeout=30)
            return [tp.offset for tp in found]
        finally:
            consumer.close()

    def high_watermarks(self, partitions: int, topic: str | None = None) -> list[int]:
        """Where each partition of the input (or `topic`) ends now (read_committed: its last stable offset)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "watermarks"})
        try:
            tps = [TopicPartition(topic or self.input, p) for p in range(partitions)]
            return [consumer.get_watermark_offsets(tp, 30)[1] for tp in tps]
        finally:
            consumer.close()

    def collect(self, until: Callable[[list[dict]], bool], timeout: float = WAIT_S) -> list[dict]:
        """Read predictions until until(predictions) holds; returns every prediction read so far."""
        deadline = time.monotonic() + timeout
        while not until(self.predictions) and time.monotonic() < deadline:
            for message in self.predictions_consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is None:
                    prediction = self.prediction_codec.decode(message.value())
                    assert message.key() == prediction["car_id"].encode()
                    self.predictions.append(prediction)
        return self.predictions

    def shadow_predictions(self) -> list[tuple[bytes, dict]]:
        """Every shadow prediction written so far, with its key (read to the end of the shadow topic)."""
        codec = AvroCodec(schemas.PREDICTION, self.shadow)
        return [(m.key(), codec.decode(m.value())) for m in read_to_end(self.bootstrap, self.shadow)]


def covered(readings: list[dict]) -> Callable[[list[dict]], bool]:
    """A Stream.collect condition: every reading of `readings` has a prediction."""
    wanted = {(r["car_id"], r["seq"]) for r in readings}
    return lambda predictions: wanted <= {(p["car_id"], p["seq"]) for p in predictions}


def assert_served_in_phases(
    stream: Stream, partitions: int, phases: Sequence[list[dict]], versions: Sequence[str]
) -> None:
    """The output topic of `partitions` partitions, read to its end, holds exactly one prediction of every reading
    of `phases` (each phase written once the version to serve had switched to the next), the readings of
    `phases[i]` predicted by `versions[i]`, and each partition's predictions, in offset order, go through the
    versions in that order: a reading predicted before a switch never comes after one predicted after it."""
    messages = read_to_end(stream.bootstrap, stream.output)
    predictions = [(m.partition(), stream.prediction_codec.decode(m.value())) for m in messages]
    counts = collections.Counter((p["car_id"], p["seq"]) for _, p in predictions)
    assert set(counts) == {(r["car_id"], r["seq"]) for phase in phases for r in phase}
    assert max(counts.values()) == 1, "every reading has exactly one prediction"
    served = {(p["car_id"], p["seq"]): p["model_version"] for _, p in predictions}
    for number, (phase, expected) in enumerate(zip(phases, versions, strict=True)):
        assert {served[(r["car_id"], r["seq"])] for r in phase} == {expected}, f"phase {number}"
    by_partition = collections.defaultdict(list)
    for partition, prediction in predictions:
        by_partition[partition].append(prediction["model_version"])
    order = [version for version, _ in itertools.groupby(versions)]
    assert sorted(by_partition) == list(range(partitions)), "every partition holds predictions"
    for partition, found in by_partition.items():
        assert [version for version, _ in itertools.groupby(found)] == order, f"partition {partition}"


def serving_settings(stream: Stream, model_dir: Path, port: int, **env: str) -> dict[str, str]:
    """What either serving program is given in the tests: `stream`'s topics, the models of `model_dir`, metrics on
    `port`, reloading every 0.5 s, a session timeout of 6 s, unless `env` says otherwise."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stream.bootstrap,
        "ML_MODEL_DIR": str(model_dir),
        "ML_TOPIC": stream.input,
        "ML_OUTPUT_TOPIC": stream.output,
        "ML_SHADOW_TOPIC": stream.shadow,
        "ML_DLQ_TOPIC": stream.dlq,
        "ML_METRICS_PORT": str(port),
        "ML_RELOAD_INTERVAL": "0.5",
        "ML_SESSION_TIMEOUT_MS": "6000",
        **env,
    }


def start_predictor(stream: Stream, model_dir: Path, log_dir: Path, name: str, **env: str) -> ChildService:
    """`python -m ml predict` (serving_settings) in `stream`'s group, batches of at most 200 readings unless `env`
    says otherwise."""
    port = free_port()
    own = {"ML_GROUP_ID": stream.group, "ML_MAX_BATCH": "200"}
    settings = serving_settings(stream, model_dir, port, **{**own, **env})
    return ChildService(name, "ml", ("predict",), python_env(**settings), log_dir, metrics_port=port).start()


TOLERANCE = 1e-5  # the same window through the same model: equal up to float rounding across batch shapes


def probabilities(predictions: list[dict]) -> dict[tuple[str, int], list[float]]:
    """Each (car_id, seq)'s failure probabilities, one per prediction of it."""
    found: dict[tuple[str, int], list[float]] = {}
    for p in predictions:
        found.setdefault((p["car_id"], p["seq"]), []).append(p["failure_probability"])
    return found


def assert_same_as_reference(predictions: list[dict], reference: list[dict]) -> None:
    """Each prediction of (car_id, seq) equals the reference's: the window it was made on was the same."""
    expected = {key: values[0] for key, values in probabilities(reference).items()}
    for key, values in probabilities(predictions).items():
        for value in values:
            assert abs(value - expected[key]) <= TOLERANCE, f"{key}: {value} != reference {expected[key]}"


def start_java_predictor(stream: Stream, model_dir: Path, log_dir: Path, name: str, **env: str) -> ChildService:
    """The Java serving program (ml/streams/, serving_settings), `stream.group` its application id, its state under
    `log_dir`, predicting every 0.05 s unless `env` says otherwise."""
    port = free_port()
    own = {
        "ML_STREAMS_APPLICATION_ID": stream.group,
        "ML_STREAMS_STATE_DIR": str(log_dir / f"{name}-state"),
        "ML_BATCH_LINGER": "0.05",
    }
    settings = serving_settings(stream, model_dir, port, **{**own, **env})
    return ChildService(
        name, "", (), python_env(**settings), log_dir, metrics_port=port, program=java_serving_command()
    ).start()
