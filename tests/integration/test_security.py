"""The secured mode against the real servers: a private Kafka (SASL_SSL, SCRAM, the standard authorizer) and a
private Mosquitto (TLS only, a password per car, ACLs), both as set up by scripts/runtime/secured.py and started by
scripts/runtime/local.py, probed with real clients (`mosquitto_pub`, `kcat`, confluent-kafka, paho).

Every refusal is paired with the same call done right, so that a test cannot pass because nothing works."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from common import schemas
from common.avro import AvroCodec
from common.errors import DecodeError
from common.kafka import ensure_topics
from common.security import car_password, client_tls_context, make_certificates
from common.topics import (
    DLQ_TOPIC,
    ML_READER_GROUP_PREFIX,
    MODEL_DECISIONS_TOPIC,
    MQTT_TOPIC_FILTER,
    PREDICTIONS_TOPIC,
    PREDICTOR_GROUP,
    READINGS_TOPIC,
    SHADOW_PREDICTIONS_TOPIC,
    STREAMS_APPLICATION_ID,
    TOPIC_PARTITIONS,
    car_id,
    mqtt_topic,
)
from ml.registry import Registry
from scripts.runtime.local import ROOT, KafkaNode, MosquittoNode, free_port, start_nodes
from scripts.runtime.secured import SecureMaterial
from scripts.testkit.bridge import start_bridge
from scripts.testkit.kafka import end_offsets, read_to_end, read_until
from scripts.testkit.predictor import start_java_predictor, start_predictor
from scripts.testkit.readings import reading, readings, write_readings, write_records
from scripts.testkit.registry import champion_and_challenger
from scripts.testkit.rule_models import as_written, fleet, noisy_oracle, oracle
from scripts.testkit.services import ChildService, run_module

pytestmark = pytest.mark.integration

CARS = 25  # the password file's cars: the chain test's live fleet and history fleet fit in
DEMO_CARS = 3
REFUSED_READ = ("TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED")


@dataclass
class Secured:
    material: SecureMaterial
    kafka: KafkaNode
    mosquitto: MosquittoNode

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    def kafka_as(self, identity: str) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap, **self.material.kafka_client_config(identity)}

    @property
    def admin(self) -> dict[str, str]:
        """The admin identity's client properties: other tests of this module leave probes in the topics."""
        return self.material.kafka_client_config("admin")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    run_dir = tmp_path_factory.mktemp("secured")
    material = SecureMaterial(run_dir / "secure")
    kafka = KafkaNode(run_dir, port=free_port(), controller_port=free_port(), heap="512m", secure=material)
    mosquitto = MosquittoNode(run_dir, port=free_port(), secure=material)
    started = start_nodes(kafka, mosquitto, cars=CARS)
    try:
        yield Secured(material, kafka, mosquitto)
    finally:
        for node in reversed(started):
            node.stop()


def mosquitto_pub(secured: Secured, *args: str, payload: bytes = b"{}", topic: str | None = None) -> tuple[int, str]:
    """One QoS 1 MQTT 5 publish with the real client; returns its exit code and output."""
    command = [
        shutil.which("mosquitto_pub") or "mosquitto_pub",
        "-h", "127.0.0.1", "-p", str(secured.mosquitto.port), "-V", "mqttv5", "-q", "1",
        "-t", topic or mqtt_topic(car_id(1)), "-s", *args,
    ]  # fmt: skip
    result = subprocess.run(command, input=payload, capture_output=True, timeout=30)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def as_car(secured: Secured, number: int, password: str | None = None) -> list[str]:
    car = car_id(number)
    return ["--cafile", str(secured.material.ca_file), "-u", car, "-P", password or car_password_of(secured, car)]


def car_password_of(secured: Secured, car: str) -> str:
    return car_password(secured.material.fleet_secret, car)


def reading_of(car: str, seq: int) -> bytes:
    return json.dumps(reading(car_id=car, seq=seq)).encode()


def read_decodable(secured: Secured, topic: str, schema: dict) -> list[tuple[int, int, dict]]:
    """Every record of `topic` that decodes with `schema`, as (partition, offset, value), read as admin (other
    tests of this module leave probes of their own in the topics)."""
    codec = AvroCodec(schema, topic)
    records = []
    for message in read_to_end(secured.bootstrap, topic, **secured.admin):
        with contextlib.suppress(DecodeError):
            records.append((message.partition(), message.offset(), codec.decode(message.value())))
    return records


@pytest.mark.parametrize(("serving", "train_workers"), [("python", 1), ("java", 2)])
def test_the_whole_chain_with_security_on_predicts_every_live_reading(
    secured: Secured, tmp_path: Path, serving: str, train_workers: int
) -> None:
    """`make demo SECURE=1 [SERVING=java TRAIN_WORKERS=2]` on these servers: every service with its own identity
    (simulator: a login per car; two training workers, each as trainer; the Java serving program as
    streams-predictor, after its application's reset), every (car_id, seq) published arrives in car-sensor and
    gets its prediction."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": secured.bootstrap,
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(secured.mosquitto.port),
        "SECURE_DIR": str(secured.material.folder),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "scripts.demo", "--runtime", "external", "--secure", "--plain",
        "--cars", str(DEMO_CARS), "--duration", "20", "--history-cars", "20", "--history-readings", "150",
        "--epochs", "2", "--model-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "logs"),
        "--serving", serving, "--train-workers", str(train_workers),
    ]  # fmt: skip
    process = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-5000:]
    summary = json.loads((tmp_path / "logs" / "summary.json").read_text())
    assert summary["predicted"] == summary["in_kafka"] == summary["published"] > 0
    assert summary["serving"] == serving
    assert summary["model"]["training"]["workers"] == train_workers
    assert "secured (Kafka SASL_SSL + ACLs, MQTT TLS + a password per car)" in output

    published = summary["published"]
    expected = {(car_id(n % DEMO_CARS + 1), n // DEMO_CARS) for n in range(published)}
    start = {int(p): offset for p, offset in summary["live_start_offsets"].items()}
    live = [r for p, o, r in read_decodable(secured, READINGS_TOPIC, schemas.READING) if o >= start[p]]
    arrived = {(r["car_id"], r["seq"]): r["event_time"] for r in live}
    assert set(arrived) == expected, f"lost: {sorted(expected - set(arrived))[:10]}"
    predictions = [p for _, _, p in read_decodable(secured, PREDICTIONS_TOPIC, schemas.PREDICTION)]
    predicted = {key for p in predictions if arrived.get(key := (p["car_id"], p["seq"])) == p["event_time"]}
    assert predicted == expected, f"without a prediction: {sorted(expected - predicted)[:10]}"
    logs = tmp_path / "logs"
    assert "mqtt_username=bridge" in (logs / "bridge.log").read_text()
    assert f"connecting {DEMO_CARS} MQTT client(s)" in (logs / "simulator.log").read_text(), "one login per car"


def test_mqtt_refuses_anonymous_clients_and_wrong_passwords_and_lets_a_car_in_with_its_own(secured: Secured) -> None:
    code, output = mosquitto_pub(secured, "--cafile", str(secured.material.ca_file))
    assert code != 0 and "not authori" in output.lower(), output
    code, output = mosquitto_pub(secured, *as_car(secured, 1, password="not-its-password"))
    assert code != 0 and "not authori" in output.lower(), output
    code, output = mosquitto_pub(secured, *as_car(secured, CARS + 1))  # a car the password file does not hold
    assert code != 0 and "not authori" in output.lower(), output
    code, output = mosquitto_pub(secured, *as_car(secured, 1), payload=reading_of(car_id(1), 0))
    assert code == 0, output


def test_mqtt_has_no_plaintext_listener_and_a_client_that_does_not_trust_the_ca_cannot_connect(
    secured: Secured, tmp_path: Path
) -> None:
    make_certificates(tmp_path, ["localhost", "127.0.0.1"])  # another CA, with a server certificate of its own
    code, output = mosquitto_pub(secured, *as_car(secured, 1)[2:], "--cafile", str(tmp_path / "ca.crt"))
    assert code != 0 and "tls error" in output.lower(), output
    paho_client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"untrusting-{uuid.uuid4().hex[:6]}")
    paho_client.tls_set_context(client_tls_context(str(tmp_path / "ca.crt")))
    paho_client.username_pw_set(car_id(1), car_password_of(secured, car_id(1)))
    with pytest.raises(ssl.SSLCertVerificationError):
        paho_client.connect("127.0.0.1", secured.mosquitto.port)
    code, output = mosquitto_pub(secured, *as_car(secured, 1)[2:])  # no TLS at all: the TLS listener hangs up
    assert code != 0, output
    code, output = mosquitto_pub(secured, *as_car(secured, 1))
    assert code == 0, output


def test_kafka_refuses_plaintext_wrong_passwords_and_untrusted_cas_on_the_secured_listener(
    secured: Secured, tmp_path: Path
) -> None:
    def metadata(config: dict[str, str]) -> set[str]:
        return set(AdminClient({**config, "log_level": 0}).list_topics(timeout=8).topics)

    with pytest.raises(KafkaException):
        metadata({"bootstrap.servers": secured.bootstrap})
    with pytest.raises(KafkaException):
        metadata({**secured.kafka_as("bridge"), "sasl.password": "not-its-password"})
    make_certificates(tmp_path, ["localhost", "127.0.0.1"])
    with pytest.raises(KafkaException):
        metadata({**secured.kafka_as("admin"), "ssl.ca.location": str(tmp_path / "ca.crt")})
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is installed by .ci/run and make setup's apt list"
    plain = subprocess.run([kcat, "-b", secured.bootstrap, "-L", "-m", "8"], capture_output=True, text=True)
    assert plain.returncode != 0, plain.stdout
    assert {READINGS_TOPIC, PREDICTIONS_TOPIC, DLQ_TOPIC} <= metadata(secured.kafka_as("admin"))


def test_admin_apply_sets_kafka_up_as_admin_and_is_refused_as_a_service(secured: Secured) -> None:
    """`python -m admin apply` as a process, as the compose stack's `topics` and the Kubernetes Job `admin` run it
    from the services' image: its identity from the environment (an env file of the material), the services'
    passwords from the material's users file. As a service's identity, the same command is refused, and says so."""
    topic = f"admin-apply-{uuid.uuid4().hex[:6]}"
    base = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": secured.bootstrap,
        "ADMIN_USERS_FILE": str(secured.material.kafka_users_file),
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "admin", "apply", "--topics", f"{topic}=3", "--timeout", "20"]

    def topics() -> dict:
        return AdminClient({**secured.kafka_as("admin"), "log_level": 0}).list_topics(timeout=10).topics

    as_bridge = subprocess.run(
        command, env={**base, **secured.material.env("bridge")}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert as_bridge.returncode == 2 and "as bridge failed" in as_bridge.stderr, as_bridge.stderr
    assert topic not in topics()
    as_admin = subprocess.run(
        command, env={**base, **secured.material.env("admin")}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert as_admin.returncode == 0, as_admin.stderr
    assert "kafka_security=SASL_SSL (SCRAM-SHA-512) as admin" in as_admin.stderr, "it logs who it is"
    assert len(topics()[topic].partitions) == 3
    output = as_admin.stdout + as_admin.stderr + as_bridge.stderr
    for identity in ("admin", "bridge"):
        assert secured.material.kafka_password(identity) not in output, f"{identity}'s password was logged"


def read_error(config: dict[str, str], topic: str, timeout: float = 20.0) -> str | None:
    """Subscribe to `topic` and return the first error's name, or None when records or the end came instead."""
    consumer = Consumer({**config, "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 0})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                return message.error().name()
            return None
        return None
    finally:
        consumer.close()


def write_error(config: dict[str, str], topic: str) -> str | None:
    """Produce one record; the delivery error's name, or None when Kafka took it."""
    errors: list = []
    producer = Producer({**config, "message.timeout.ms": 20_000, "log_level": 0})
    producer.produce(topic, b"probe", key=b"probe", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(30)
    assert len(errors) == 1, "the delivery report came"
    return errors[0].name() if errors[0] is not None else None


def assigned_read_error(config: dict[str, str], topic: str, timeout: float = 20.0) -> str | None:
    """Read `topic` from its start as the dashboard does, by assign(): no group joined, nothing committed. The
    refusal's name (the topic's metadata error: an assigned consumer is told of no refusal, it just reads nothing;
    else the first consumer error), or None when a record or a partition's end came."""
    consumer = Consumer({**config, "enable.partition.eof": True, "enable.auto.commit": False, "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            return metadata.error.name()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            return None if error is None or error.code() == KafkaError._PARTITION_EOF else error.name()
        return "_TIMED_OUT"
    finally:
        consumer.close()


def committed_offsets(config: dict[str, str], group: str, partitions: list[TopicPartition]) -> dict:
    """`group`'s committed offsets of `partitions` as the dashboard's lag chart reads them: OffsetFetch by a consumer
    of that group that never joins it."""
    consumer = Consumer({**config, "group.id": group, "log_level": 0})
    try:
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=15)}
    finally:
        consumer.close()


def group_offsets_refusal(config: dict[str, str], group: str) -> str | None:
    """The refusal's name when asking for `group`'s committed offsets with the admin API (a consumer refused its
    coordinator only times out), or None. Only where it is refused or the coordinator is up: on a fresh Kafka
    librdkafka 2.16's list_consumer_group_offsets crashes the process (SIGSEGV) on NOT_COORDINATOR."""
    admin = AdminClient({**config, "log_level": 0})
    try:
        admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=15)[group].result(20)
    except KafkaException as exc:
        return exc.args[0].name()
    return None


def commit_readings_ends(secured: Secured, group: str) -> list[TopicPartition]:
    """As the predictor, `group`'s offsets committed at car-sensor's ends now; returns them."""
    ends = end_offsets(secured.bootstrap, READINGS_TOPIC, **secured.admin)
    commits = [TopicPartition(READINGS_TOPIC, p, end) for p, end in ends.items()]
    predictor = Consumer({**secured.kafka_as("predictor"), "group.id": group, "log_level": 0})
    try:
        assert all(tp.error is None for tp in predictor.commit(offsets=commits, asynchronous=False))
    finally:
        predictor.close()
    return commits


def test_each_kafka_identity_may_do_its_job_and_nothing_else(secured: Secured) -> None:
    group = {
        "predictor": "car-stream-predictor-test",
        "trainer": "ml-reader-test",
        "bridge": "bridge-test",
        "dashboard": "car-stream-predictor-dashboard-test",  # its DESCRIBE prefix: the coordinator lookup passes
    }

    def reader(identity: str) -> dict[str, str]:
        return {**secured.kafka_as(identity), "group.id": f"{group.get(identity, 'admin')}-{uuid.uuid4().hex[:6]}"}

    # Predictions: written by the predictor only, read by none of the services (the operator, admin, may).
    assert write_error(secured.kafka_as("predictor"), PREDICTIONS_TOPIC) is None
    for identity in ("bridge", "trainer", "dashboard"):
        assert write_error(secured.kafka_as(identity), PREDICTIONS_TOPIC) == "TOPIC_AUTHORIZATION_FAILED", identity
    for identity in ("trainer", "predictor"):
        assert read_error(reader(identity), PREDICTIONS_TOPIC) == "TOPIC_AUTHORIZATION_FAILED", identity
    assert read_error(reader("bridge"), PREDICTIONS_TOPIC) in REFUSED_READ  # no group of its own either
    assert read_error(reader("admin"), PREDICTIONS_TOPIC) is None
    # Readings: written by the bridge only, read by the trainer and the predictor in their groups only.
    assert write_error(secured.kafka_as("bridge"), DLQ_TOPIC) is None
    for identity in ("trainer", "predictor", "dashboard"):
        assert write_error(secured.kafka_as(identity), READINGS_TOPIC) == "TOPIC_AUTHORIZATION_FAILED", identity
    assert write_error(secured.kafka_as("dashboard"), DLQ_TOPIC) == "TOPIC_AUTHORIZATION_FAILED"
    assert read_error(reader("bridge"), READINGS_TOPIC) in REFUSED_READ
    outside_its_groups = {**secured.kafka_as("trainer"), "group.id": f"not-ml-{uuid.uuid4().hex[:6]}"}
    assert read_error(outside_its_groups, READINGS_TOPIC) == "GROUP_AUTHORIZATION_FAILED"
    # The dashboard: an observer of the three topics by assign() (the trainer may not read the two it has no part in).
    for topic in (READINGS_TOPIC, PREDICTIONS_TOPIC, DLQ_TOPIC):
        assert assigned_read_error(reader("dashboard"), topic) is None, topic
    for topic in (PREDICTIONS_TOPIC, DLQ_TOPIC):
        assert assigned_read_error(reader("trainer"), topic) == "TOPIC_AUTHORIZATION_FAILED", topic
    # ... and of nothing else: a topic beside the stack's, which admin reads.
    other = f"not-the-dashboards-{uuid.uuid4().hex[:6]}"
    ensure_topics(secured.bootstrap, secured.material.kafka_security("admin"), {other: 1})
    assert assigned_read_error(reader("dashboard"), other) == "TOPIC_AUTHORIZATION_FAILED"
    assert assigned_read_error(reader("admin"), other) is None
    # No group READ: it cannot join the predictors' group (and take partitions from them), nor commit in it.
    in_predictor_group = {**secured.kafka_as("dashboard"), "group.id": f"{PREDICTOR_GROUP}-{uuid.uuid4().hex[:6]}"}
    assert read_error(in_predictor_group, READINGS_TOPIC) == "GROUP_AUTHORIZATION_FAILED"
    # The lag chart: the predictors' committed offsets (OffsetFetch, DESCRIBE on their groups), fetched as the
    # dashboard; any other group's are refused to it, and the predictors' to the trainer.
    predictor_group = f"{PREDICTOR_GROUP}-{uuid.uuid4().hex[:6]}"
    commits = commit_readings_ends(secured, predictor_group)
    expected = {(tp.topic, tp.partition): tp.offset for tp in commits}
    partitions = [TopicPartition(topic, p) for topic, p in expected]
    assert committed_offsets(secured.kafka_as("dashboard"), predictor_group, partitions) == expected
    assert group_offsets_refusal(secured.kafka_as("dashboard"), predictor_group) is None
    dashboard = Consumer({**secured.kafka_as("dashboard"), "group.id": predictor_group, "log_level": 0})
    try:
        with pytest.raises(KafkaException) as refused:
            dashboard.commit(offsets=[TopicPartition(READINGS_TOPIC, 0, 0)], asynchronous=False)
        assert refused.value.args[0].name() == "GROUP_AUTHORIZATION_FAILED"
    finally:
        dashboard.close()
    assert committed_offsets(secured.kafka_as("predictor"), predictor_group, partitions) == expected, "as committed"
    for identity, other_group in (("dashboard", f"ml-reader-{uuid.uuid4().hex[:6]}"), ("trainer", predictor_group)):
        assert group_offsets_refusal(secured.kafka_as(identity), other_group) == "GROUP_AUTHORIZATION_FAILED", identity
    # Nothing creates topics but the admin: auto-creation is off and no service may create.
    assert write_error(secured.kafka_as("bridge"), f"not-a-topic-{uuid.uuid4().hex[:6]}") in (
        "TOPIC_AUTHORIZATION_FAILED",
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_TOPIC",
    )


def collect_as_admin(secured: Secured, topic: str, until, timeout: float = 60.0) -> list:
    """Records of `topic` from the start until `until(records)` holds (or the timeout)."""
    return read_until(secured.bootstrap, topic, until, timeout=timeout, **secured.admin)


def test_a_car_cannot_publish_for_another_car_and_nothing_it_sends_for_one_reaches_car_sensor(
    secured: Secured, tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": secured.bootstrap,
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(secured.mosquitto.port),
        **secured.material.env("bridge"),
    }
    bridge = start_bridge(tmp_path, env, f"secure-bridge-{uuid.uuid4().hex[:6]}")
    try:
        victim, intruder = car_id(2), car_id(1)
        marker = uuid.uuid4().int % 1_000_000 + 1_000
        # The chain test's fleet published car 2 legitimately: only what arrives from here on counts.
        before = end_offsets(secured.bootstrap, READINGS_TOPIC, **secured.admin)
        # On the victim's topic with the victim's data: the broker refuses it (MQTT 5 PUBACK 0x87).
        code, output = mosquitto_pub(
            secured, *as_car(secured, 1), topic=mqtt_topic(victim), payload=reading_of(victim, marker)
        )
        assert "not authorized" in output.lower(), output
        # On its own topic, naming the victim in the payload: the bridge dead-letters it.
        code, output = mosquitto_pub(secured, *as_car(secured, 1), payload=reading_of(victim, marker + 1))
        assert code == 0, output
        # Then a reading of its own, which must arrive: once it did, everything before it was decided.
        code, output = mosquitto_pub(secured, *as_car(secured, 1), payload=reading_of(intruder, marker + 2))
        assert code == 0, output
        codec = AvroCodec(schemas.READING, READINGS_TOPIC)
        collect_as_admin(
            secured, READINGS_TOPIC, lambda ms: any(codec.decode(m.value())["seq"] == marker + 2 for m in ms)
        )
        # Every partition read to its end, not just until the marker showed up in its own partition.
        records = [r for p, o, r in read_decodable(secured, READINGS_TOPIC, schemas.READING) if o >= before[p]]
        assert (intruder, marker + 2) in {(r["car_id"], r["seq"]) for r in records}
        assert not [r for r in records if r["car_id"] == victim], "a reading for car 2 sent by car 1 reached Kafka"

        def mismatched(messages: list) -> list:
            return [m for m in messages if dict(m.headers() or []).get("error") == b"car_id_mismatch"]

        dead = mismatched(collect_as_admin(secured, DLQ_TOPIC, mismatched))
        assert [(json.loads(m.value())["car_id"], json.loads(m.value())["seq"]) for m in dead] == [(victim, marker + 1)]
    finally:
        bridge.stop_ok(timeout=60)


def test_the_bridge_identity_reads_every_car_through_a_shared_subscription(secured: Secured) -> None:
    """Scale-out (BRIDGE_SHARED_GROUP) works under the ACLs: `topic read` of the filter covers its $share form."""
    received: list[bytes] = []
    login = secured.material.mqtt_settings("bridge")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"shared-{uuid.uuid4().hex[:6]}")
    login.configure_client(client)
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    acknowledged: list = []
    client.on_subscribe = lambda _c, _u, _mid, reasons, _p: acknowledged.extend(reasons)
    client.connect("127.0.0.1", secured.mosquitto.port)
    client.loop_start()
    try:
        sent = client.subscribe(f"$share/secured-test/{MQTT_TOPIC_FILTER}", qos=1)
        assert sent[0] == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + 10
        while not acknowledged:  # readings published before the SUBACK would have no subscriber
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.05)
        assert not acknowledged[0].is_failure, f"the shared subscription was refused: {acknowledged[0]}"
        payloads = [reading_of(car_id(number), 900_000 + number) for number in (3, 4)]
        for number, payload in zip((3, 4), payloads, strict=True):
            code, output = mosquitto_pub(
                secured, *as_car(secured, number), topic=mqtt_topic(car_id(number)), payload=payload
            )
            assert code == 0, output
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(received) == sorted(payloads)
    finally:
        client.disconnect()
        client.loop_stop()


CONTINUAL_IDENTITY = "continual"


def test_the_continual_identity_reads_the_readings_and_both_predictions_and_writes_the_decisions_only(
    secured: Secured,
) -> None:
    """`python -m ml continual`'s and `python -m ml judge`'s identity: the stack's topics as admin made them, the
    three it judges on read in the ml readers' groups, the decisions written; the readings, the product, the shadow
    and the DLQ never written, nothing else read, no topic created. The shadow is the predictor's alone to write."""
    admin_view = AdminClient({**secured.kafka_as("admin"), "log_level": 0}).list_topics(timeout=10).topics
    assert {name: len(admin_view[name].partitions) for name in TOPIC_PARTITIONS} == TOPIC_PARTITIONS
    continual = secured.kafka_as(CONTINUAL_IDENTITY)
    tag = uuid.uuid4().hex[:6]
    in_its_groups = {**continual, "group.id": f"{ML_READER_GROUP_PREFIX}judge-{tag}"}
    for topic in (READINGS_TOPIC, PREDICTIONS_TOPIC, SHADOW_PREDICTIONS_TOPIC):
        assert assigned_read_error(in_its_groups, topic) is None, topic
    assert read_error({**continual, "group.id": f"not-ml-{tag}"}, READINGS_TOPIC) == "GROUP_AUTHORIZATION_FAILED"
    for topic in (DLQ_TOPIC, MODEL_DECISIONS_TOPIC):
        assert assigned_read_error(in_its_groups, topic) == "TOPIC_AUTHORIZATION_FAILED", topic
    assert write_error(continual, MODEL_DECISIONS_TOPIC) is None
    for topic in (READINGS_TOPIC, PREDICTIONS_TOPIC, SHADOW_PREDICTIONS_TOPIC, DLQ_TOPIC):
        assert write_error(continual, topic) == "TOPIC_AUTHORIZATION_FAILED", topic
    assert create_error(continual, f"not-continual-s-{tag}") == "TOPIC_AUTHORIZATION_FAILED"
    # The shadow and the decisions have one writer each.
    assert write_error(secured.kafka_as("predictor"), SHADOW_PREDICTIONS_TOPIC) is None
    for identity in ("bridge", "trainer", "dashboard", STREAMS_IDENTITY):
        for topic in (SHADOW_PREDICTIONS_TOPIC, MODEL_DECISIONS_TOPIC):
            assert write_error(secured.kafka_as(identity), topic) == "TOPIC_AUTHORIZATION_FAILED", (identity, topic)
    assert write_error(secured.kafka_as("predictor"), MODEL_DECISIONS_TOPIC) == "TOPIC_AUTHORIZATION_FAILED"


def decisions_of(secured: Secured, versions: set[str]) -> list[tuple[str, dict]]:
    """The decisions topic's records of `versions` (key, value), in order, read as admin (probes left out)."""
    messages = read_to_end(secured.bootstrap, MODEL_DECISIONS_TOPIC, **secured.admin)
    keyed = [(m.key().decode(), m.value()) for m in messages if m.key() and m.key().decode() in versions]
    return [(key, json.loads(value.decode("utf-8"))) for key, value in keyed]


def test_the_judge_as_continual_promotes_on_the_stack_s_topics_and_the_registry_command_produces_as_continual(
    secured: Secured, service_factory, tmp_path: Path
) -> None:
    """`python -m ml judge` as `continual`, on the stack's topics under their default names: a fleet's readings
    written as the bridge, the champion's predictions and the challenger's shadow predictions written as the
    predictor (an idempotent producer, as its shadow output's), and the better challenger promoted, the decision on
    car-sensor-model-decisions as in the registry's file. Then the operator's `python -m ml registry rollback` with
    Kafka, as `continual`, produces its decision there too. The cars are this test's own: the other tests of the
    module leave readings and predictions in the same topics, which the judge reads too and cannot judge."""
    horizon, window = 30, 10  # the rule models' (as tests/integration/test_ml_judge_live.py)
    models = tmp_path / "models"
    champion, challenger = champion_and_challenger(models, window, horizon)
    tag = uuid.uuid4().hex[:6]
    records = [{**r, "car_id": f"judged-{tag}-{r['car_id']}"} for r in fleet(cars=20, per_car=360, seed=11)]
    write_readings(secured.bootstrap, secured.material.kafka_security("bridge"), READINGS_TOPIC, records)
    predictor = secured.material.kafka_security("predictor")
    for topic, written in (
        (PREDICTIONS_TOPIC, noisy_oracle(records, horizon, window, seed=11, version=champion)),
        (SHADOW_PREDICTIONS_TOPIC, oracle(records, horizon, window, version=challenger)),
    ):
        write_records(secured.bootstrap, predictor, topic, as_written(written, records, horizon), schemas.PREDICTION)
    identity = secured.material.env(CONTINUAL_IDENTITY)
    judge = service_factory(
        "judge", "ml", "judge", KAFKA_BOOTSTRAP_SERVERS=secured.bootstrap, ML_MODEL_DIR=str(models),
        ML_JUDGE_INTERVAL="1", **identity,
    )  # fmt: skip
    registry = Registry(models)
    judge.wait_until(lambda: registry.champion() == challenger, f"{challenger} promoted", timeout=240)
    judge.wait_for_log(f"decision promote {challenger} produced to {MODEL_DECISIONS_TOPIC}")
    judge.stop_ok()
    assert f"SASL_SSL (SCRAM-SHA-512) as {CONTINUAL_IDENTITY}" in judge.log()
    run_module(
        "ml", "registry", "rollback", "--reason", "the operator's", "--decisions-timeout", "20",
        KAFKA_BOOTSTRAP_SERVERS=secured.bootstrap, ML_MODEL_DIR=str(models), **identity,
    )  # fmt: skip
    promoted, rolled_back = registry.history()[-2:]
    assert (promoted.action, promoted.version, rolled_back.action, rolled_back.version) == (
        "promote", challenger, "rollback", champion,
    )  # fmt: skip
    assert decisions_of(secured, {champion, challenger}) == [
        (challenger, json.loads(promoted.to_json())),
        (champion, json.loads(rolled_back.to_json())),
    ], "the file's decisions, in its order"


def stack_topics(secured: Secured, group: str) -> SimpleNamespace:
    """The stack's own topics, which the ACLs name, as the test kit's serving programs read a Stream, and `group`."""
    return SimpleNamespace(
        bootstrap=secured.bootstrap,
        input=READINGS_TOPIC,
        output=PREDICTIONS_TOPIC,
        shadow=SHADOW_PREDICTIONS_TOPIC,
        dlq=DLQ_TOPIC,
        group=group,
    )


def predicted_by(messages: list, version: str, keys: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (car_id, seq) of `keys` that `version` predicted in `messages` of a predictions topic (probes skipped)."""
    codec = AvroCodec(schemas.PREDICTION, "predictions")
    found = set()
    for message in messages:
        with contextlib.suppress(DecodeError):
            prediction = codec.decode(message.value())
            if prediction["model_version"] == version and (key := (prediction["car_id"], prediction["seq"])) in keys:
                found.add(key)
    return found


def test_the_predictor_writes_the_challenger_s_shadow_predictions_under_its_own_identity(
    secured: Secured, tmp_path: Path
) -> None:
    """`python -m ml predict` as `predictor` with a challenger in the registry, on the stack's topics: the shadow
    topic, made by admin, is its to write (it may create none), so it scores the challenger beside the champion on
    the same readings."""
    models = tmp_path / "models"
    champion, challenger = champion_and_challenger(models, window=6, horizon=5)
    group = f"{PREDICTOR_GROUP}-shadow-{uuid.uuid4().hex[:6]}"
    commit_readings_ends(secured, group)  # the readings other tests left are not this test's
    topics = stack_topics(secured, group)
    predictor = start_predictor(topics, models, tmp_path, "predictor", **secured.material.env("predictor"))
    try:
        predictor.wait_for_log(f"scoring challenger {challenger} in the shadow")  # from the first batch on
        written = new_cars(secured, uuid.uuid4().hex[:6])
        shadow = collect_as_admin(
            secured, SHADOW_PREDICTIONS_TOPIC, lambda ms: predicted_by(ms, challenger, written) == written, timeout=180
        )
        assert predictor.metric("predictor_shadow_undelivered_batches_total") == 0
        predictor.stop_ok(timeout=60)
    finally:
        predictor.kill()
    assert predicted_by(shadow, challenger, written) == written, "the challenger scored every reading"
    product = read_to_end(secured.bootstrap, PREDICTIONS_TOPIC, **secured.admin)
    assert predicted_by(product, champion, written) == written, "the champion served them"


STREAMS_IDENTITY = "streams-predictor"


def start_streams(
    secured: Secured, model_dir: Path, log_dir: Path, name: str, application_id: str = ""
) -> ChildService:
    """The Java serving program (ml/streams/) on the stack's topics, which the ACLs name, as `streams-predictor`;
    application_id "": its own default, which the policy names too."""
    topics = stack_topics(secured, application_id)
    return start_java_predictor(topics, model_dir, log_dir, name, **secured.material.env(STREAMS_IDENTITY))


def new_cars(secured: Secured, tag: str) -> set[tuple[str, int]]:
    """Readings of three cars no other test has, written to car-sensor as the bridge; their (car_id, seq)."""
    records = [{**r, "car_id": f"streams-{tag}-{r['car_id']}"} for r in readings(3, 20)]
    write_readings(secured.bootstrap, secured.material.kafka_security("bridge"), READINGS_TOPIC, records)
    return {(r["car_id"], r["seq"]) for r in records}


def predictions_of(secured: Secured, keys: set[tuple[str, int]]) -> Counter:
    """How many predictions car-sensor-predictions holds of each of `keys`."""
    found = (p for _, _, p in read_decodable(secured, PREDICTIONS_TOPIC, schemas.PREDICTION))
    return Counter(key for p in found if (key := (p["car_id"], p["seq"])) in keys)


def test_the_java_serving_program_predicts_every_reading_exactly_once_under_its_own_identity(
    secured: Secured, model_dir: Path, tmp_path: Path
) -> None:
    """As `streams-predictor`, with exactly the grants of admin/policy.py: its group, its changelogs (created at its
    first start), its transactions. Every reading gets one committed prediction."""
    written = new_cars(secured, uuid.uuid4().hex[:6])
    streams = start_streams(secured, model_dir, tmp_path, "streams")
    try:
        streams.wait_until(lambda: written <= set(predictions_of(secured, written)), "every prediction", timeout=180)
        streams.stop_ok(timeout=60)
    finally:
        streams.kill()
    counts = predictions_of(secured, written)
    assert set(counts) == written
    assert {key: n for key, n in counts.items() if n != 1} == {}, "predicted more than once"
    assert f"as SASL_SSL (SCRAM-SHA-512) as {STREAMS_IDENTITY}," in streams.log()
    changelogs = AdminClient({**secured.kafka_as("admin"), "log_level": 0}).list_topics(timeout=10).topics
    assert f"{STREAMS_APPLICATION_ID}-windows-changelog" in changelogs


def create_error(config: dict[str, str], topic: str) -> str | None:
    """Create `topic`; the refusal's name, or None when Kafka made it."""
    admin = AdminClient({**config, "log_level": 0})
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    except KafkaException as exc:
        return exc.args[0].name()
    return None


def test_the_java_serving_programs_identity_may_do_its_job_and_nothing_else(
    secured: Secured, model_dir: Path, tmp_path: Path
) -> None:
    streams = secured.kafka_as(STREAMS_IDENTITY)
    tag = uuid.uuid4().hex[:6]
    assert write_error(streams, DLQ_TOPIC) is None
    assert write_error(streams, READINGS_TOPIC) == "TOPIC_AUTHORIZATION_FAILED"
    # Reads car-sensor, and no other topic (by assign(): its group may hold a stopped program's member still).
    in_its_group = {**streams, "group.id": STREAMS_APPLICATION_ID}
    assert assigned_read_error(in_its_group, READINGS_TOPIC) is None
    for topic in (PREDICTIONS_TOPIC, DLQ_TOPIC):
        assert assigned_read_error(in_its_group, topic) == "TOPIC_AUTHORIZATION_FAILED", topic
    # Topics under its application id's prefix only: its changelogs.
    assert create_error(streams, f"{STREAMS_APPLICATION_ID}-probe-{tag}") is None
    assert create_error(streams, f"not-its-{tag}") == "TOPIC_AUTHORIZATION_FAILED"
    # Another application id, even one under that prefix: its group is refused, the program stops and predicts
    # nothing (the readings it was given stay without a prediction).
    written = new_cars(secured, tag)
    other = start_streams(secured, model_dir, tmp_path, "streams-other", f"{STREAMS_APPLICATION_ID}-{tag}")
    try:
        code = other.wait(timeout=120)
    finally:
        other.kill()
    log = other.log()
    assert code == 1, other.failure(f"exited with code {code}, expected 1")
    assert f"GroupAuthorizationException: Not authorized to access group: {STREAMS_APPLICATION_ID}-{tag}" in log, log
    assert not predictions_of(secured, written)


def test_on_a_secured_three_broker_cluster_the_acls_hold_and_a_cars_reading_has_three_copies(
    kafka_cluster_factory, tmp_path: Path
) -> None:
    material = SecureMaterial(tmp_path / "secure")
    cluster = kafka_cluster_factory(3, secure=material)
    mosquitto = MosquittoNode(tmp_path / "mqtt", port=free_port(), secure=material)
    started = start_nodes(cluster, mosquitto, cars=CARS)  # users, topics and ACLs set once, as admin, for all three
    try:
        on_cluster = Secured(material, cluster, mosquitto)
        # Between the brokers SASL_SSL: each broker's inter-broker listener is the secured one.
        assert all("inter.broker.listener.name=SASL_SSL" in node.properties() for node in cluster.nodes)
        # What the ACLs allow is taken (by the in-sync copies: acks=all) once every broker applied them (each
        # follows the controllers' metadata log in its own time); what they deny stays denied.
        deadline = time.monotonic() + 60
        while write_error(on_cluster.kafka_as("bridge"), DLQ_TOPIC) is not None:
            assert time.monotonic() < deadline, "the bridge may not write the DLQ on the cluster within 60 s"
            time.sleep(0.5)
        assert write_error(on_cluster.kafka_as("trainer"), READINGS_TOPIC) == "TOPIC_AUTHORIZATION_FAILED"
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": str(mosquitto.port),
            **material.env("bridge"),
        }
        bridge = start_bridge(tmp_path, env, f"cluster-bridge-{uuid.uuid4().hex[:6]}")
        try:
            car, other = car_id(1), car_id(2)
            code, output = mosquitto_pub(on_cluster, *as_car(on_cluster, 1), topic=mqtt_topic(other))
            assert "not authorized" in output.lower(), output
            code, output = mosquitto_pub(on_cluster, *as_car(on_cluster, 1), payload=reading_of(car, 7))
            assert code == 0, output
            codec = AvroCodec(schemas.READING, READINGS_TOPIC)
            collect_as_admin(
                on_cluster, READINGS_TOPIC, lambda ms: any(codec.decode(m.value())["seq"] == 7 for m in ms)
            )
        finally:
            bridge.stop_ok(timeout=60)
        records = read_decodable(on_cluster, READINGS_TOPIC, schemas.READING)
        assert [(r["car_id"], r["seq"]) for _p, _o, r in records] == [(car, 7)], "only car 1's own reading came"
        partition = records[0][0]
        admin = AdminClient(on_cluster.kafka_as("admin"))
        held = admin.list_topics(READINGS_TOPIC, timeout=30).topics[READINGS_TOPIC].partitions[partition]
        assert sorted(held.isrs) == [1, 2, 3], "three copies in sync"
        # Its leader dies: the reading is still there, on the two others.
        assert cluster.node(held.leader).kill()
        survivors = ",".join(node.bootstrap_servers for node in cluster.nodes if node.node_id != held.leader)
        survivors_admin = AdminClient({**on_cluster.kafka_as("admin"), "bootstrap.servers": survivors})
        deadline = time.monotonic() + 60
        while leader_of(survivors_admin, READINGS_TOPIC, partition) in (held.leader, -1):
            assert time.monotonic() < deadline, "no new leader within 60 s"
            time.sleep(0.5)
        survived = [
            codec.decode(m.value())
            for m in read_to_end(survivors, READINGS_TOPIC, **material.kafka_client_config("admin"))
            if m.partition() == partition
        ]
        assert [(r["car_id"], r["seq"]) for r in survived] == [(car, 7)]
    finally:
        for node in reversed(started):
            node.stop()


def leader_of(admin: AdminClient, topic: str, partition: int) -> int:
    """The broker that leads `partition` of `topic` now, as the metadata says (-1: none)."""
    return admin.list_topics(topic, timeout=30).topics[topic].partitions[partition].leader
