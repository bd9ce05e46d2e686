"""A Kafka cluster under test: numbered records written at a steady pace by the project's producer, acknowledgements
timed, so that a test or a study can count what a broker's death lost and measure how long writes stalled; and
a wait until every replica of a topic is in sync again (the next broker may die without costing an in-sync copy).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, PartitionMetadata

from common.kafka import client_config, producer_config
from common.settings import PLAINTEXT, KafkaSecurity
from common.topics import car_id
from scripts.testkit.kafka import read_to_end


class SequenceProducer:
    """Writes 0, 1, 2, ... to `topic` (key: one of `keys` car ids in turn, value: the number) at about `rate` per
    second with common/kafka.py's producer_config (acks=all, idempotent), in a thread; records when each number
    was acknowledged and which failed."""

    def __init__(
        self, bootstrap: str, topic: str, rate: float = 500.0, keys: int = 20, security: KafkaSecurity = PLAINTEXT
    ) -> None:
        self.topic, self.rate, self.keys = topic, rate, keys
        self.producer = Producer(producer_config(bootstrap, security, log_level=0))
        self.sent = 0
        self.acked: dict[int, float] = {}  # number -> time.monotonic() of its acknowledgement
        self.failed: dict[int, str] = {}
        self._acked_lock = threading.Lock()  # the producer's thread adds to `acked` while a test reads it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sequence-producer", daemon=True)

    def start(self) -> SequenceProducer:
        self._thread.start()
        return self

    def _delivered(self, error: KafkaError | None, message) -> None:
        number = int(message.value())
        if error is None:
            with self._acked_lock:
                self.acked[number] = time.monotonic()
        else:
            self.failed[number] = error.str()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due and not self._stop.is_set():
                key = car_id(self.sent % self.keys + 1).encode()
                try:
                    self.producer.produce(self.topic, str(self.sent).encode(), key, on_delivery=self._delivered)
                except BufferError:  # the queue is full while a broker is away: wait for room, never drop
                    self.producer.poll(0.1)
                    continue
                self.sent += 1
            self.producer.poll(0.01)

    def wait_acked(self, count: int, timeout: float = 120.0) -> None:
        """Until `count` numbers more than now are acknowledged: writes go on."""
        target, deadline = len(self.acked) + count, time.monotonic() + timeout
        while len(self.acked) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.acked)} of {target} acknowledged within {timeout:.0f} s; {self}")
            time.sleep(0.1)

    def finish(self, timeout: float = 120.0) -> None:
        """Stop writing; wait until every record sent is acknowledged or failed."""
        self._stop.set()
        self._thread.join(timeout)
        left = self.producer.flush(timeout)
        assert left == 0, f"{left} records neither acknowledged nor failed within {timeout:.0f} s; {self}"

    def stall_after(self, moment: float) -> float:
        """The longest wait between two acknowledgements in the minute after `moment` (a kill): how long writes
        stalled."""
        with self._acked_lock:
            acked = list(self.acked.values())
        times = sorted(t for t in acked if moment - 1 <= t <= moment + 60)
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def __str__(self) -> str:
        return f"sent {self.sent}, acknowledged {len(self.acked)}, failed {len(self.failed)}"


def numbers_in(bootstrap: str, topic: str, security: KafkaSecurity = PLAINTEXT) -> Counter:
    """How often each number is in `topic`, read to its end."""
    return Counter(int(message.value()) for message in read_to_end(bootstrap, topic, security=security))


def wait_fully_replicated(
    bootstrap: str, topic: str, replicas: int, security: KafkaSecurity = PLAINTEXT, timeout: float = 120.0
) -> dict[int, PartitionMetadata]:
    """Until each partition of `topic` has `replicas` replicas, all in sync; returns the partitions' metadata then
    (another client may still ask a broker that has not learned of a new topic yet)."""
    admin = AdminClient(client_config(bootstrap, security, log_level=0))
    deadline, behind = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
        behind = {p: (m.replicas, m.isrs) for p, m in partitions.items() if len(m.isrs) < replicas or m.error}
        if partitions and not behind:
            return partitions
        time.sleep(0.5)
    raise AssertionError(f"{topic}: partitions not in sync on {replicas} replicas within {timeout:.0f} s: {behind}")
