"""`python -m ml predict` under faults, against the real Kafka, counted by (car_id, seq):

- SIGKILL after a batch's predictions were produced but before its offsets were committed, observed from outside:
  the predictor is frozen (SIGSTOP) the moment new predictions arrive, and killed only if, frozen, the
  predictions topic holds predictions of readings at or past the group's committed offset. The restarted predictor
  predicts every reading; those readings are predicted twice, on the same windows.
- Two predictors in one group: the second joins mid-stream (a rebalance), the first is SIGKILLed later while the
  stream goes on. Every reading is predicted, and every prediction equals a single predictor's (a reference run
  in a group of its own over the same records): after each rebalance the history was rebuilt in full.
- A failed delivery (the predictions topic refuses every record for a while: max.message.bytes too small): nothing
  is committed past the last delivered batch, and once the topic takes records again every reading is predicted,
  on the windows it would have had without the failure (the history is rebuilt up to the commit).
- Partitions assigned while Kafka does not answer (the broker frozen with SIGSTOP): taking them on fails, they
  stay pending, and once Kafka answers they are taken on and read in full, without waiting for a rebalance.
- A stop while an assignment is in flight (the other member just left; the coordinator handed its partitions over
  and the member did not poll since): leaving the group takes nothing on and does not fail.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from common.kafka import ensure_topics
from common.settings import PLAINTEXT
from ml.serving.partitions import Partitions
from ml.serving.settings import PredictorSettings
from scripts.testkit.kafka import alter_topic_config
from scripts.testkit.predictor import TOLERANCE, WAIT_S, Stream, assert_same_as_reference, covered
from simulator.fleet import generate_readings


def metric(process, name: str) -> float:
    """A metric's value; 0 while the process does not serve its metrics yet (TensorFlow still loading)."""
    try:
        return process.metric(name)
    except OSError:
        return 0.0


def predicted_batch(stream: Stream, committed: list[int], batch: int) -> bool:
    """Whether the predictor's next batch past its commit, [committed, committed + batch) of every partition, has a
    prediction for every reading: a batch delivered and not committed."""
    at = {where: key for key, where in stream.offsets.items()}
    predicted = {(p["car_id"], p["seq"]) for p in stream.predictions}
    keys = [at.get((p, offset)) for p, done in enumerate(committed) for offset in range(done, done + batch)]
    return None not in keys and all(key in predicted for key in keys)


def kill_with_a_batch_uncommitted(stream: Stream, start, partitions: int, batch: int, timeout: float = 60) -> list:
    """SIGKILL the predictor `start()` started at a moment when a whole batch of its predictions is on the
    predictions topic and the batch's offsets are not committed.

    Whenever new predictions arrive, the process is frozen (SIGSTOP: it can neither produce nor commit), the
    committed offsets are read and the predictions topic is read to its end. A whole batch past the commit:
    SIGKILL. Otherwise it goes on (SIGCONT) until the next arrival. Should a commit sent just before the freeze
    land after the look, a new predictor is started and watched the same way. Returns the committed offsets after
    the kill."""
    process = start()
    committed_reader = Consumer({"bootstrap.servers": stream.bootstrap, "group.id": stream.group})  # never joins
    tps = [TopicPartition(stream.input, p) for p in range(partitions)]
    deadline = time.monotonic() + timeout
    looks = 0
    try:
        while True:
            assert time.monotonic() < deadline, f"never caught the predictor between delivery and commit ({looks})"
            process.assert_running()
            arrived = stream.predictions_consumer.poll(0.5)  # returns at the first new prediction, unlike consume()
            if arrived is None or arrived.error() is not None:
                continue
            os.kill(process.pid, signal.SIGSTOP)
            looks += 1
            stream.predictions.append(stream.prediction_codec.decode(arrived.value()))
            committed = [max(tp.offset, 0) for tp in committed_reader.committed(tps, timeout=30)]
            produced = sum(stream.high_watermarks(partitions, stream.output))
            stream.collect(lambda predictions, n=produced: len(predictions) >= n, timeout=30)
            if not predicted_batch(stream, committed, batch):
                os.kill(process.pid, signal.SIGCONT)
                continue
            process.kill()
            after = [max(tp.offset, 0) for tp in committed_reader.committed(tps, timeout=30)]
            if predicted_batch(stream, after, batch):
                print(f"caught after {looks} looks")
                return after
            process = start()
    finally:
        committed_reader.close()


BATCH = 500


def test_sigkill_between_delivery_and_commit_predicts_the_batch_again(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, model_dir, predictors
):
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    readings = list(generate_readings(cars=20, readings_per_car=600, seed=29))
    stream.write(readings[:2000])
    stop_writing = threading.Event()

    def write_on() -> None:  # a live stream, so that batches keep coming while the test watches
        for i in range(2000, len(readings), 200):
            if stop_writing.is_set():
                return
            stream.write(readings[i : i + 200])

    writer = threading.Thread(target=write_on)
    writer.start()
    try:
        committed = kill_with_a_batch_uncommitted(
            stream, lambda: predictors(stream, model_dir, ML_MAX_BATCH=str(BATCH)), partitions=2, batch=BATCH
        )
    finally:
        stop_writing.set()
        writer.join()
    written = [r for r in readings if (r["car_id"], r["seq"]) in stream.offsets]
    uncommitted = {
        (p["car_id"], p["seq"])
        for p in stream.predictions
        if stream.offsets[(p["car_id"], p["seq"])][1] >= committed[stream.offsets[(p["car_id"], p["seq"])][0]]
    }
    assert len(uncommitted) >= 2 * BATCH, f"committed {committed}: the kill proved nothing"
    before_kill = len(stream.predictions)

    second = predictors(stream, model_dir, ML_MAX_BATCH=str(BATCH))
    predictions = stream.collect(covered(written))
    counts = collections.Counter((p["car_id"], p["seq"]) for p in predictions)
    assert set(counts) == {(r["car_id"], r["seq"]) for r in written}, "a reading lost its prediction"
    again = {key for key in uncommitted if counts[key] >= 2}
    assert again == uncommitted, f"{len(uncommitted - again)} uncommitted predictions were not made again"
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"killed with {len(uncommitted)} predictions past the commit {committed}, "
        f"{before_kill} predictions before the kill; {len(written)} readings, {duplicates} duplicates"
    )
    by_key: dict[tuple, list[float]] = collections.defaultdict(list)
    for p in predictions:
        by_key[(p["car_id"], p["seq"])].append(p["failure_probability"])
    spread = max(max(by_key[key]) - min(by_key[key]) for key in uncommitted)
    assert spread <= TOLERANCE, "a batch predicted again saw another window"
    second.stop_ok()


def test_a_rebalance_and_a_sigkill_mid_stream_keep_every_window_full(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, model_dir, predictors
):
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=4)
    reference = Stream(kafka_bootstrap, topic_factory, consumer_factory, f"{group_id}-ref", input_topic=stream.input)
    readings = list(generate_readings(cars=16, readings_per_car=60, seed=31))
    one = predictors(stream, model_dir, ML_MAX_BATCH="20")
    predictors(reference, model_dir)
    stream.write(readings[:240])
    stream.collect(lambda predictions: len(predictions) >= 100)

    two = predictors(stream, model_dir, ML_MAX_BATCH="20")  # joins the group mid-stream: a rebalance
    two.wait_for_log("predicting ")  # subscribed: TensorFlow's start, however slow, is not part of the rebalance
    written = 240
    deadline = time.monotonic() + WAIT_S
    while metric(two, "predictor_predictions_total") == 0 or metric(one, "predictor_assigned_partitions") == 4:
        assert time.monotonic() < deadline, f"the second predictor never took part:\n{two.log()[-3000:]}"
        if written < 720:  # the stream goes on, slowly, while the group rebalances
            stream.write(readings[written : written + 4])
            written += 4
        time.sleep(0.25)
    shared = one.metric("predictor_predictions_total"), two.metric("predictor_predictions_total")
    stream.write(readings[written:720])
    one.kill()  # its partitions go to the second once its session expires (6 s); its uncommitted batch too
    stream.write(readings[720:])

    predictions = stream.collect(covered(readings))
    counts = collections.Counter((p["car_id"], p["seq"]) for p in predictions)
    assert set(counts) == {(r["car_id"], r["seq"]) for r in readings}, "a reading lost its prediction"
    assert_same_as_reference(predictions, reference.collect(covered(readings)))
    assert shared[0] > 0 and shared[1] > 0
    assert two.log().count("rebuilt history from") >= 4, "two partitions rebuilt at the rebalance, two after the kill"
    print(f"predictions before the kill (one, two): {shared}; {sum(n - 1 for n in counts.values())} duplicates")
    two.stop_ok()


def refused(stream: Stream, timeout: float = 30) -> bool:
    """Whether the broker refuses a prediction-sized record on the predictions topic yet (the config applies
    asynchronously); a probe that got through is an extra prediction of car "probe"."""
    producer = Producer({"bootstrap.servers": stream.bootstrap})
    errors: list = []
    probe = {
        "car_id": "probe", "seq": -1, "event_time": 0, "predicted_at": 0, "failure_probability": 0.0,
        "failure_predicted": False, "model_version": "probe", "horizon": 0,
    }  # fmt: skip
    producer.produce(
        stream.output, stream.prediction_codec.encode(probe), b"probe", on_delivery=lambda e, m: errors.append(e)
    )
    producer.flush(timeout)
    return bool(errors) and errors[0] is not None and errors[0].name() == "MSG_SIZE_TOO_LARGE"


def test_a_failed_delivery_commits_nothing_and_rewinds(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, model_dir, predictors
):
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    reference = Stream(kafka_bootstrap, topic_factory, consumer_factory, f"{group_id}-ref", input_topic=stream.input)
    readings = list(generate_readings(cars=8, readings_per_car=40, seed=37))
    predictor = predictors(stream, model_dir, ML_MAX_BATCH="20")
    predictors(reference, model_dir)
    stream.write(readings[:120])
    stream.collect(covered(readings[:120]))
    deadline = time.monotonic() + WAIT_S
    while stream.committed(2) != stream.high_watermarks(2):
        assert time.monotonic() < deadline, "the first readings were never committed"
        time.sleep(0.2)
    delivered = stream.committed(2)

    alter_topic_config(kafka_bootstrap, stream.output, **{"max.message.bytes": "64"})  # no prediction fits any more
    deadline = time.monotonic() + WAIT_S
    while not refused(stream):
        assert time.monotonic() < deadline, "the broker never applied max.message.bytes"
    outputs = stream.high_watermarks(2, stream.output)
    stream.write(readings[120:240])
    deadline = time.monotonic() + WAIT_S
    while predictor.metric("predictor_undelivered_batches_total") < 3:  # tried, failed, and again after a pause
        assert time.monotonic() < deadline, f"no failed delivery:\n{predictor.log()[-3000:]}"
        time.sleep(0.2)
    assert stream.committed(2) == delivered, "committed past predictions Kafka refused"
    assert stream.high_watermarks(2, stream.output) == outputs
    predictor.assert_running()

    alter_topic_config(kafka_bootstrap, stream.output, **{"max.message.bytes": None})
    stream.write(readings[240:])
    predictions = [p for p in stream.collect(covered(readings)) if p["car_id"] != "probe"]
    assert {(p["car_id"], p["seq"]) for p in predictions} == {(r["car_id"], r["seq"]) for r in readings}
    deadline = time.monotonic() + WAIT_S
    while stream.committed(2) != stream.high_watermarks(2):
        assert time.monotonic() < deadline, "the rest was never committed"
        time.sleep(0.2)
    assert_same_as_reference(predictions, reference.collect(covered(readings)))
    assert "re-reading from offset" in predictor.log()
    predictor.stop_ok()


def test_a_predictor_fenced_by_a_static_member_with_its_id_exits_1_and_the_other_predicts_everything(
    kafka_bootstrap, topic_factory, consumer_factory, group_id, model_dir, predictors
):
    """A fatal consumer error (here: another member takes the same group.instance.id) ends the client for good:
    the predictor must exit (1) so that a supervisor starts it again, not stay alive predicting nothing."""
    stream = Stream(kafka_bootstrap, topic_factory, consumer_factory, group_id, partitions=2)
    readings = list(generate_readings(cars=4, readings_per_car=40, seed=5))
    first = predictors(stream, model_dir, ML_INSTANCE_ID="same-id")
    stream.write(readings[:80])
    stream.collect(covered(readings[:80]))
    second = predictors(stream, model_dir, ML_INSTANCE_ID="same-id")
    assert first.wait(WAIT_S) == 1, first.failure("expected exit code 1")
    assert "failed for good" in first.log()
    stream.write(readings[80:])
    predictions = stream.collect(covered(readings))
    assert {(p["car_id"], p["seq"]) for p in predictions} == {(r["car_id"], r["seq"]) for r in readings}
    second.stop_ok()


def test_partitions_assigned_while_kafka_does_not_answer_are_taken_on_once_it_answers(kafka_node_factory):
    kafka = kafka_node_factory()
    topic, per_partition = "take-on-readings", 10
    ensure_topics(kafka.bootstrap_servers, PLAINTEXT, {topic: 2})
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for partition in (0, 1):
        for i in range(per_partition):
            producer.produce(topic, f"record {i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    settings = PredictorSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, topic=topic, group_id="take-on")
    revoked: list[int] = []
    partitions = Partitions(settings, on_revoke=revoked.append)
    try:
        partitions.subscribe()
        deadline = time.monotonic() + WAIT_S
        while partitions.pending != {0, 1} and time.monotonic() < deadline:
            partitions.poll()
            time.sleep(0.1)
        assert partitions.pending == {0, 1} and not partitions.owned, "assigned, not yet taken on"
        broker = kafka.pid()
        os.kill(broker, signal.SIGSTOP)
        try:
            with pytest.raises(KafkaException):
                partitions.take_on(timeout=2)
        finally:
            os.kill(broker, signal.SIGCONT)
        assert partitions.pending == {0, 1} and not partitions.owned
        partitions.poll()
        partitions.take_on()
        assert set(partitions.owned) == {0, 1} and not partitions.pending and not revoked, "no rebalance needed"
        records = partitions.read().records
        read = sorted((record.partition, record.offset) for record in records)
        assert read == [(p, offset) for p in (0, 1) for offset in range(per_partition)]
    finally:
        partitions.close()


def group_view(admin: AdminClient, group: str) -> tuple[str, list[int]]:
    """The coordinator's view of a group: its state and how many partitions each member was given."""
    found = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return found.state.name, sorted(len(member.assignment.topic_partitions) for member in found.members)


def settle(members: list[Partitions], owned_each: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while any(len(member.owned) != owned_each for member in members):
        assert time.monotonic() < deadline, [sorted(member.owned) for member in members]
        for member in members:
            member.poll()
            member.take_on()
        time.sleep(0.05)


def test_an_assignment_arriving_while_a_predictor_leaves_does_not_fail_its_stop(
    kafka_bootstrap, topic_factory, group_id, caplog
):
    """The predictor's SIGTERM path (loop._close -> Partitions.close) right after its peer left the group: the
    peer's partitions were assigned to it after its last poll(), so consumer.close() serves that assignment to the
    rebalance callback. It used to take the partitions on there (consumer.committed() answered _DESTROY, the
    client being destroyed) and the error came out of close(): exit 1 instead of 0. The assignment is caught in
    flight by waiting until the coordinator has handed it over and not polling; the stop must succeed and take
    nothing on. Up to three attempts, in case librdkafka had not yet received the hand-over when close() began."""
    topic = topic_factory("leaving-readings", 4)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    caplog.set_level(logging.INFO, logger="ml.serving.partitions")
    served_while_leaving = 0
    for attempt in range(3):
        group = f"{group_id}-{attempt}"
        settings = PredictorSettings(
            kafka_bootstrap_servers=kafka_bootstrap, topic=topic, group_id=group, reader="confluent"
        )
        leaving = Partitions(settings, on_revoke=lambda partition: None)
        staying = Partitions(settings, on_revoke=lambda partition: None)
        try:
            for member in (leaving, staying):
                member.subscribe()
            settle([leaving, staying], owned_each=2)
            leaving.close()
            settle([staying], owned_each=0)  # the eager protocol revokes everything before the new assignment
            deadline = time.monotonic() + WAIT_S
            while group_view(admin, group) != ("STABLE", [4]):  # handed over; `staying` does not poll
                assert time.monotonic() < deadline, group_view(admin, group)
                time.sleep(0.05)
            caplog.clear()
            staying.close()  # the stop under test: it raised the callback's error before the fix
        finally:
            leaving.close()  # no-ops for a member closed already
            staying.close()
        assert not staying.owned and not staying.pending, "nothing is taken on while leaving"
        served_while_leaving += sum("while leaving the group" in record.getMessage() for record in caplog.records)
        if served_while_leaving:
            print(f"an assignment was in flight at close() in attempt {attempt + 1}")
            break
    assert served_while_leaving == 1, "close() never met an assignment in flight: the test proved nothing"
