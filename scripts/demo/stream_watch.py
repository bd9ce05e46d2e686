"""Watch the pipeline from the outside: read `car-sensor` and `car-sensor-predictions` from given offsets.

A background thread decodes both topics (either Avro framing) and keeps what the demo's live view, the end-to-end
tests and the benchmark need: counts and rates per stage, every reading by (car_id, seq) with its ground truth
(failure_occurred), every prediction by (car_id, seq), the latest predictions and alerts, and publish→prediction
latencies. It reads with `assign()` at explicit offsets and commits nothing: it is an observer, never a member of
a service's consumer group.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Message, TopicPartition

from common import schemas
from common.avro import AvroCodec
from common.errors import DecodeError
from common.kafka import client_config
from common.schemas import SEQ_FROM_CONTENT
from common.settings import KafkaSecurity, MqttSettings
from common.topics import MQTT_TOPIC_FILTER

log = logging.getLogger(__name__)
T = TypeVar("T")


def end_offsets(
    bootstrap: str, security: KafkaSecurity, topics: list[str], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """The current end offset of every partition of `topics` (absent topics have none)."""
    consumer = Consumer(client_config(bootstrap, security, **{"group.id": "stream-watch-offsets", "log_level": 0}))
    try:
        metadata = consumer.list_topics(timeout=timeout)
        offsets = {}
        for topic in topics:
            if topic not in metadata.topics:
                continue
            for partition in metadata.topics[topic].partitions:
                offsets[(topic, partition)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )[1]
        return offsets
    finally:
        consumer.close()


class Reading(NamedTuple):
    event_time: int
    kafka_time: int
    """The record's Kafka timestamp: when the bridge produced it."""
    failure: bool
    hashed: bool
    """seq is a content hash (seq_origin SEQ_FROM_CONTENT): an identity, not an order (ml/features.py)."""


class Prediction(NamedTuple):
    probability: float
    predicted: bool
    predicted_at: int
    model_version: str
    horizon: int
    suppressed: bool = False
    """alert_suppressed (prediction schema version 3): at or above the threshold, but the car reported a failure."""


def commit_group_offsets(
    bootstrap: str, security: KafkaSecurity, group_id: str, offsets: dict[tuple[str, int], int], topic: str
) -> None:
    """Start consumer group `group_id` on `topic` at the given offsets: a new predictor group then begins with
    this run's readings instead of a topic's whole past."""
    consumer = Consumer(client_config(bootstrap, security, **{"group.id": group_id, "enable.auto.commit": False}))
    try:
        positions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items()) if t == topic]
        if positions:
            consumer.commit(offsets=positions, asynchronous=False)
    finally:
        consumer.close()


@dataclass
class StreamState:
    """What has been seen so far. Guarded by the watcher's lock while the thread runs.

    Predictions are keyed by (car_id, seq, event_time): a prediction for a reading of an earlier run on the same
    topic (same car and seq, another event_time) then never passes for one of this run.
    """

    readings: dict[tuple[str, int], Reading] = field(default_factory=dict)
    predictions: dict[tuple[str, int, int], Prediction] = field(default_factory=dict)
    reading_records: int = 0
    prediction_records: int = 0
    duplicates: int = 0
    undecodable: int = 0
    latest: deque = field(default_factory=lambda: deque(maxlen=12))
    alerts: deque = field(default_factory=lambda: deque(maxlen=12))
    alert_count: int = 0

    def prediction_for(self, key: tuple[str, int]) -> Prediction | None:
        reading = self.readings.get(key)
        return None if reading is None else self.predictions.get((*key, reading.event_time))

    def missing(self) -> list[tuple[str, int]]:
        """Readings of this run without a prediction (yet)."""
        return [key for key, r in self.readings.items() if (*key, r.event_time) not in self.predictions]

    def predicted_count(self) -> int:
        return sum(1 for key, r in self.readings.items() if (*key, r.event_time) in self.predictions)

    def alerts_by_reading(self) -> dict[tuple[str, int], tuple[bool, bool]]:
        """(failure_predicted, alert_suppressed) of this run's predicted readings."""
        joined = {}
        for key, reading in self.readings.items():
            prediction = self.predictions.get((*key, reading.event_time))
            if prediction is not None:
                joined[key] = (prediction.predicted, prediction.suppressed)
        return joined

    def latencies_ms(self, clock: str = "event_time", since_ms: int | None = None) -> list[int]:
        """predicted_at minus the reading's event_time (publish time at speedup 1) or its Kafka timestamp; with
        `since_ms`, of the readings whose event_time is not earlier only."""
        out = []
        for key, reading in self.readings.items():
            if since_ms is not None and reading.event_time < since_ms:
                continue
            prediction = self.predictions.get((*key, reading.event_time))
            if prediction is not None:
                start = reading.event_time if clock == "event_time" else reading.kafka_time
                out.append(prediction.predicted_at - start)
        return out


class StreamWatcher:
    """Reads the readings and predictions topics in a thread; `snapshot()`-style accessors for the view."""

    def __init__(
        self,
        bootstrap: str,
        security: KafkaSecurity,
        readings_topic: str,
        predictions_topic: str,
        start: dict[tuple[str, int], int] | None = None,
        registry_url: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.readings_topic = readings_topic
        self.predictions_topic = predictions_topic
        self.start_offsets = dict(start or {})
        self.readings_codec = AvroCodec(schemas.READING, readings_topic, registry_url)
        self.predictions_codec = AvroCodec(schemas.PREDICTION, predictions_topic, registry_url)
        self.state = StreamState()
        self.lock = threading.Lock()
        self._rates: deque[tuple[float, int, int]] = deque(maxlen=120)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-watch", daemon=True)
        self._consumer = Consumer(
            client_config(
                bootstrap,
                security,
                **{
                    "group.id": "stream-watch",  # required by librdkafka; nothing is committed
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 100,
                    "topic.metadata.refresh.interval.ms": 2000,
                    "log_level": 0,
                },
            )
        )

    def start(self) -> StreamWatcher:
        self._assign()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()

    def _assign(self) -> None:
        """Every partition of both topics: from the given start offsets, from the beginning for partitions that
        did not exist at the start (a topic the services create later)."""
        metadata = self._consumer.list_topics(timeout=10)
        assignment = []
        for topic in (self.readings_topic, self.predictions_topic):
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                continue
            for partition in metadata.topics[topic].partitions:
                offset = self.start_offsets.get((topic, partition), 0)
                assignment.append(TopicPartition(topic, partition, offset))
        self._assigned = {(tp.topic, tp.partition) for tp in assignment}
        self._consumer.assign(assignment)

    def _reassign_if_new_partitions(self) -> None:
        metadata = self._consumer.list_topics(timeout=5)
        current = {
            (topic, p)
            for topic in (self.readings_topic, self.predictions_topic)
            if topic in metadata.topics and metadata.topics[topic].error is None
            for p in metadata.topics[topic].partitions
        }
        new = current - self._assigned
        if new:
            log.debug("watching new partitions %s", sorted(new))
            self._consumer.incremental_assign(
                [TopicPartition(t, p, self.start_offsets.get((t, p), 0)) for t, p in sorted(new)]
            )
            self._assigned |= new

    def _run(self) -> None:
        last_metadata = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_metadata > 2.0:
                try:
                    self._reassign_if_new_partitions()
                except Exception as exc:  # the broker may be busy; try again on the next round
                    log.debug("metadata refresh failed: %s", exc)
                last_metadata = time.monotonic()
            messages = self._consumer.consume(num_messages=5000, timeout=0.2)
            with self.lock:
                for message in messages:
                    if message.error() is None:
                        self._take(message)
                self._rates.append((time.monotonic(), self.state.reading_records, self.state.prediction_records))

    def _take(self, message: Message) -> None:
        state = self.state
        try:
            if message.topic() == self.readings_topic:
                record = self.readings_codec.decode(message.value())
                state.reading_records += 1
                state.readings[(record["car_id"], record["seq"])] = Reading(
                    record["event_time"],
                    message.timestamp()[1],
                    bool(record["failure_occurred"]),
                    record.get("seq_origin") == SEQ_FROM_CONTENT,
                )
                return
            record = self.predictions_codec.decode(message.value())
        except DecodeError as exc:
            state.undecodable += 1
            log.debug("undecodable record on %s: %s", message.topic(), exc)
            return
        state.prediction_records += 1
        key = (record["car_id"], record["seq"], record["event_time"])
        if key in state.predictions:
            state.duplicates += 1
            return
        prediction = Prediction(
            record["failure_probability"],
            record["failure_predicted"],
            record["predicted_at"],
            record["model_version"],
            record["horizon"],
            record["alert_suppressed"],
        )
        state.predictions[key] = prediction
        state.latest.appendleft((key, prediction))
        if prediction.predicted:
            state.alert_count += 1
            state.alerts.appendleft((key, prediction))

    def rates(self, window: float = 5.0) -> tuple[float, float]:
        """Readings/s and predictions/s over the last `window` seconds."""
        with self.lock:
            samples = [sample for sample in self._rates if self._rates[-1][0] - sample[0] <= window]
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return 0.0, 0.0
        (then, old_readings, old_predictions), (now, readings, predictions) = samples[0], samples[-1]
        return (readings - old_readings) / (now - then), (predictions - old_predictions) / (now - then)

    def read(self, function: Callable[[StreamState], T]) -> T:
        """`function(state)` under the lock: a consistent look at what was seen."""
        with self.lock:
            return function(self.state)

    def wait_until(self, condition: Callable[[StreamState], bool], timeout: float, interval: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.read(condition):
                return True
            time.sleep(interval)
        return self.read(condition)


class MqttCounter:
    """Counts the readings the simulator publishes, as a second subscriber to the same topics (QoS 0)."""

    def __init__(
        self, host: str, port: int, topic_filter: str = MQTT_TOPIC_FILTER, login: MqttSettings | None = None
    ) -> None:
        self.count = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=240)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-counter-{uuid.uuid4().hex[:8]}")
        if login is not None:
            login.configure_client(self._client)
        self._client.on_connect = lambda client, _u, _f, _rc, _p: client.subscribe(topic_filter, qos=0)
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)

    def _on_message(self, _client: mqtt.Client, _userdata: object, _message: mqtt.MQTTMessage) -> None:
        self.count += 1

    def start(self) -> MqttCounter:
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def rate(self, window: float = 5.0) -> float:
        now = time.monotonic()
        self._samples.append((now, self.count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= window:
            self._samples.popleft()
        then, old = self._samples[0]
        return (self.count - old) / (now - then) if now > then else 0.0
