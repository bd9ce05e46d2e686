"""The whole compose stack on a Docker engine, end to end: `make test-compose` (pytest --compose-stack).

compose/docker-compose.yml runs as a project of its own (its own name, free host ports, its own model volume):
Kafka, Mosquitto and the schema registry, the topics, a simulator fleet of CARS cars for DURATION seconds, the
bridge, the trainer's TRAIN_WORKERS=2 containers, one cluster, once enough readings are in, the predictor. The two
trainer containers must have trained one model together; every reading the simulator had acknowledged must
be in car-sensor and get a prediction, counted by (car_id, seq); the Java serving program of the profile `java`
must predict each of them too, into topics of its own; then `down --volumes` must leave no container, network or
volume of the project behind. Images: those `make images` named in compose/images.env, else the
official ones.

The secured mode (compose/docker-compose.secure.yml on top, material in a temporary SECURE_DIR) runs the same way
with fewer cars and one trainer container: every service logs in as itself, and the count is read as admin; an
anonymous MQTT client is refused on the published TLS port where a car with its password is let in.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from common.avro import AvroCodec
from common.kafka import ensure_topics
from common.schemas import PREDICTION, READING
from common.security import car_password
from common.settings import PLAINTEXT
from common.topics import MQTT_TOPIC_PREFIX, PREDICTIONS_TOPIC, READINGS_TOPIC, car_id
from ml.serving.settings import PredictorSettings
from ml.training.cluster import STRATEGY
from scripts.runtime import compose
from scripts.runtime.local import free_port
from scripts.runtime.secured import SecureMaterial
from scripts.testkit.kafka import read_to_end

CARS, DURATION, SPEEDUP = 40, 60, 60  # 240 readings/s for 60 s: about 14,400 readings
TRAIN_WORKERS = 2  # the trainer service's replicas, one cluster (compose/README.md, "Training workers")
TRAIN_MIN_RECORDS = 9000
SECURE_CARS, SECURE_DURATION, SECURE_TRAIN_MIN_RECORDS = 20, 60, 5000  # 120 readings/s for 60 s: 7,200 readings
PREDICTOR_GROUP = PredictorSettings.model_fields["group_id"].default  # the group the stack's predictor commits in
ACKNOWLEDGED = re.compile(r"published ([\d,]+) readings.*?; acknowledged ([\d,]+),")


@pytest.fixture(scope="module")
def stack(monkeypatch_module):
    project = f"car-stream-ml-test-{uuid.uuid4().hex[:6]}"
    names = ("KAFKA", "MQTT", "SCHEMA_REGISTRY", "BRIDGE_METRICS", "PREDICTOR_METRICS", "DASHBOARD")
    ports = {name: free_port() for name in names}
    settings = {f"{name}_HOST_PORT": str(port) for name, port in ports.items()}
    settings |= {
        "COMPOSE_PROJECT_NAME": project,
        "ML_MODEL_VOLUME": f"{project}-models",
        "CARS": str(CARS),
        "DURATION": str(DURATION),
        "SPEEDUP": str(SPEEDUP),
        "TRAIN_MIN_RECORDS": str(TRAIN_MIN_RECORDS),
        "TRAIN_WORKERS": str(TRAIN_WORKERS),
        "BRIDGE_CLIENT_ID": f"{project}-bridge",
    }
    for key, value in settings.items():
        monkeypatch_module.setenv(key, value)
    started = time.monotonic()
    try:
        compose.up([], timeout=900)
        print(f"compose stack {project} up and trained in {time.monotonic() - started:.0f} s")
        registry = f"http://127.0.0.1:{ports['SCHEMA_REGISTRY']}/apis/ccompat/v7"
        yield f"127.0.0.1:{ports['KAFKA']}", registry, project, f"http://127.0.0.1:{ports['DASHBOARD']}/"
    finally:
        print(compose.compose("logs", "--tail", "5", "trainer", "predictor", "simulator", "dashboard")[-4000:])
        compose.down()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# Run in the predictor's container, which mounts the models volume: every entry of the volume, and the training
# section of the newest version's metadata.
MODELS_VOLUME = """
import json, os
from ml.artifact import latest, read_metadata
newest = latest("/models")
print(json.dumps({"entries": sorted(os.listdir("/models")), "training": read_metadata(newest)["training"]}))
"""


def test_the_trainer_s_containers_trained_one_model_together(stack):
    """TRAIN_WORKERS trainer containers, replicas of one service, found each other by the service's name and trained
    as one cluster: each exited 0, the models volume holds one version (only the chief writes), and its metadata
    names the strategy, the workers and the partitions each one read."""
    bootstrap, _, project, _ = stack
    trainers = compose.compose("ps", "-q", "trainer").split()
    assert len(trainers) == TRAIN_WORKERS
    assert [container_state(container, "ExitCode") for container in trainers] == ["0"] * TRAIN_WORKERS
    [predictor] = compose.compose("ps", "-q", "predictor").split()
    found = subprocess.run(
        ["docker", "exec", predictor, "python", "-c", MODELS_VOLUME], capture_output=True, text=True, check=True
    )
    volume = json.loads(found.stdout.splitlines()[-1])
    training = volume["training"]
    print(
        f"{project}: models volume {volume['entries']}; trained by {training['workers']} workers in "
        f"{training['seconds']} s, partitions {training['partitions_per_worker']}"
    )
    assert len(volume["entries"]) == 1, f"one version, nothing else: {volume['entries']}"
    assert training["strategy"] == STRATEGY and training["workers"] == TRAIN_WORKERS
    shares, partitions = training["partitions_per_worker"], stored_offsets(bootstrap)[0]
    assert len(shares) == TRAIN_WORKERS and all(shares) and sorted(sum(shares, [])) == sorted(partitions)


def acknowledged_by_simulator(timeout: float, secure: bool = False) -> int:
    """Wait for the simulator's closing summary (it runs for DURATION seconds) and return what it had acknowledged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ACKNOWLEDGED.search(compose.compose("logs", "--no-color", "simulator", secure=secure))
        if found:
            published, acknowledged = (int(group.replace(",", "")) for group in found.groups())
            assert published == acknowledged, found.group(0)
            return acknowledged
        time.sleep(5)
    raise AssertionError(f"the simulator printed no summary within {timeout:.0f} s")


def keys_in(bootstrap: str, topic: str, decode, **client: str) -> Counter:
    """(car_id, seq) of every record of `topic`, read from the beginning to the end offsets of now (as `client`:
    an identity's properties, when secured)."""
    return Counter(decode(message.value()) for message in read_to_end(bootstrap, topic, timeout=120, **client))


def key_of(codec: AvroCodec):
    def key(value: bytes) -> tuple[str, int]:
        record = codec.decode(value)
        return record["car_id"], record["seq"]

    return key


def test_every_acknowledged_reading_is_in_kafka_and_predicted_and_the_dashboard_shows_as_much(stack):
    bootstrap, registry, project, dashboard = stack
    acknowledged = acknowledged_by_simulator(timeout=DURATION + 300)
    readings, predictions = check_every_reading_predicted(bootstrap, registry, project, acknowledged)
    # The dashboard service (up since before the first reading) counts what the topics hold, sees every car and
    # reaches both services' metrics inside the stack's network.
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(dashboard + "api/snapshot", timeout=10) as response:
            snapshot = json.loads(response.read())
        totals = {stage["name"]: stage["total"] for stage in snapshot["stages"]}
        shown = (totals["car_sensor"], totals["predictions"], snapshot["fleet"]["cars"])
        if shown == (sum(readings.values()), sum(predictions.values()), CARS) or time.monotonic() > deadline:
            break
        time.sleep(2)
    print(f"{project}: the dashboard shows car-sensor {shown[0]:,}, predictions {shown[1]:,}, cars {shown[2]:,}")
    assert shown == (sum(readings.values()), sum(predictions.values()), CARS)
    assert {s["name"]: s["up"] for s in snapshot["services"]} == {"bridge": True, "predictor": True}
    assert totals["mqtt_in"] >= acknowledged


def check_every_reading_predicted(
    bootstrap: str, registry: str | None, project: str, acknowledged: int, **client
) -> tuple[Counter, Counter]:
    """car-sensor holds each acknowledged (car_id, seq), and car-sensor-predictions (within 5 minutes) each of them;
    returns the records of both by (car_id, seq)."""
    readings = keys_in(bootstrap, READINGS_TOPIC, key_of(AvroCodec(READING, READINGS_TOPIC, registry)), **client)
    assert sum(readings.values()) >= acknowledged and len(readings) == acknowledged
    predictions = predictions_covering(readings, bootstrap, PREDICTIONS_TOPIC, registry, **client)
    missing = set(readings) - set(predictions)
    print(
        f"{project}: simulator acknowledged {acknowledged:,}; car-sensor {sum(readings.values()):,} records, "
        f"{len(readings):,} distinct (car_id, seq); predictions {sum(predictions.values()):,} records, "
        f"{len(predictions):,} distinct; unpredicted {len(missing):,}"
    )
    assert not missing, f"{len(missing)} readings without a prediction, e.g. {sorted(missing)[:5]}"
    return readings, predictions


def predictions_covering(
    readings: Counter, bootstrap: str, topic: str, registry: str | None, check=lambda: None, **client
) -> Counter:
    """The predictions on `topic` by (car_id, seq), read again until they cover `readings` or 5 minutes have
    passed; `check()` before each read fails fast when what writes them has died."""
    decode = key_of(AvroCodec(PREDICTION, topic, registry))
    deadline = time.monotonic() + 300
    while True:
        check()
        predictions = keys_in(bootstrap, topic, decode, **client)
        if set(predictions) >= set(readings) or time.monotonic() > deadline:
            return predictions
        time.sleep(5)


def test_the_java_serving_program_of_the_profile_java_predicts_every_reading_of_the_stack(stack):
    """Runs after the first test. The profile's predictor-java (its image, the stack's model volume) on car-sensor
    into topics of its own, beside the predictor that serves car-sensor-predictions: every reading gets a
    prediction, its health check (/readyz) turns healthy, and its metrics say that the Java program serves."""
    bootstrap, registry, project, _ = stack
    run = uuid.uuid4().hex[:6]
    output, dead_letters = f"java-predictions-{run}", f"java-dlq-{run}"
    ensure_topics(bootstrap, PLAINTEXT, {output: 4, dead_letters: 1})
    settings = {"ML_OUTPUT_TOPIC": output, "ML_DLQ_TOPIC": dead_letters, "ML_STREAMS_APPLICATION_ID": f"java-{run}"}
    variables = [argument for key, value in settings.items() for argument in ("-e", f"{key}={value}")]
    container = f"{project}-predictor-java-{run}"
    started = time.monotonic()
    # --no-deps: its dependencies ran already (the trainer must not train again)
    compose.compose("--profile", "java", "run", "-d", "--no-deps", f"--name={container}", *variables, "predictor-java")
    try:
        readings = keys_in(bootstrap, READINGS_TOPIC, key_of(AvroCodec(READING, READINGS_TOPIC, registry)))

        def running() -> None:
            assert container_state(container, "Status") == "running", f"{container} stopped"

        predictions = predictions_covering(readings, bootstrap, output, registry, check=running)
        missing = set(readings) - set(predictions)
        print(
            f"{project}: the Java serving program predicted {len(predictions):,} of {len(readings):,} readings "
            f"({sum(predictions.values()):,} records) in {time.monotonic() - started:.0f} s"
        )
        assert not missing, f"{len(missing)} readings without a prediction, e.g. {sorted(missing)[:5]}"
        deadline = time.monotonic() + 120  # the health check runs every 10 s
        while container_state(container, "Health.Status") == "starting" and time.monotonic() < deadline:
            time.sleep(2)
        assert container_state(container, "Health.Status") == "healthy"
        scraped = subprocess.run(
            ["docker", "exec", container, "curl", "--silent", "http://localhost:9109/metrics"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert 'predictor_serving_info{program="java"} 1' in scraped
    finally:
        logs = subprocess.run(["docker", "logs", "--tail", "5", container], capture_output=True, text=True)
        print(logs.stdout + logs.stderr)
        subprocess.run(["docker", "rm", "--force", container], capture_output=True)


def container_state(container: str, field: str) -> str:
    """A field of the container's state: Status (running, exited), Health.Status (starting, healthy, unhealthy)."""
    return subprocess.run(
        ["docker", "inspect", "--format", f"{{{{.State.{field}}}}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def stored_offsets(bootstrap: str) -> tuple[dict[int, int], dict[int, int]]:
    """car-sensor's end offsets, and the predictor group's committed offsets on it, per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": PREDICTOR_GROUP, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(READINGS_TOPIC, timeout=30).topics[READINGS_TOPIC].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(READINGS_TOPIC, p), timeout=30)[1] for p in partitions}
        committed = consumer.committed([TopicPartition(READINGS_TOPIC, p) for p in partitions], timeout=30)
        return ends, {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def test_kafka_keeps_topics_and_offsets_across_down_and_up_and_down_v_leaves_nothing(stack):
    """Runs after the first test. `down` without -v, then Kafka up again: the data volume gives back the readings
    and the predictor's committed offsets. Then `down --volumes` leaves no container, network or volume."""
    bootstrap, _, project, _ = stack
    before = stored_offsets(bootstrap)
    assert sum(before[0].values()) > 0 and all(offset >= 0 for offset in before[1].values()), before
    compose.compose("down")
    compose.up(["kafka"])
    assert stored_offsets(bootstrap) == before
    compose.down()
    for kind in ("ps -a", "network ls", "volume ls"):
        listed = subprocess.run(
            ["docker", *kind.split(), "--filter", f"label=com.docker.compose.project={project}", "-q"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert listed == [], f"{kind}: {listed}"
    volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True, check=True).stdout
    assert f"{project}-models" not in volumes.split()


@pytest.fixture(scope="module")
def secured_stack(tmp_path_factory):
    """The secured stack, up and trained: (Kafka on the host, the published MQTT TLS port, material, project)."""
    project = f"car-stream-ml-secure-{uuid.uuid4().hex[:6]}"
    names = ("KAFKA", "MQTT", "MQTT_TLS", "SCHEMA_REGISTRY", "BRIDGE_METRICS", "PREDICTOR_METRICS", "DASHBOARD")
    ports = {name: free_port() for name in names}
    settings = {f"{name}_HOST_PORT": str(port) for name, port in ports.items()}
    settings |= {
        "COMPOSE_PROJECT_NAME": project,
        "ML_MODEL_VOLUME": f"{project}-models",
        "SECURE_DIR": str(tmp_path_factory.mktemp("secure")),
        "CARS": str(SECURE_CARS),
        "DURATION": str(SECURE_DURATION),
        "SPEEDUP": str(SPEEDUP),
        "TRAIN_MIN_RECORDS": str(SECURE_TRAIN_MIN_RECORDS),
        "TRAIN_WORKERS": "1",  # whatever the caller's environment says (make exports TRAIN_WORKERS)
        "BRIDGE_CLIENT_ID": f"{project}-bridge",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)
        started = time.monotonic()
        try:
            compose.up([], timeout=900, secure=True, cars=SECURE_CARS)
            print(f"secured compose stack {project} up and trained in {time.monotonic() - started:.0f} s")
            material = SecureMaterial(Path(settings["SECURE_DIR"]))
            yield f"127.0.0.1:{ports['KAFKA']}", ports["MQTT_TLS"], material, project
        finally:
            logs = compose.compose("logs", "--tail", "5", "topics", "trainer", "predictor", "simulator", secure=True)
            print(logs[-4000:])
            compose.down(secure=True)


def test_secured_stack_every_acknowledged_reading_is_in_kafka_and_predicted(secured_stack):
    """Simulator (a login per car), bridge, trainer and predictor each as its own identity, through TLS and ACLs."""
    bootstrap, _, material, project = secured_stack
    acknowledged = acknowledged_by_simulator(timeout=SECURE_DURATION + 300, secure=True)
    assert acknowledged > 0
    # No schema registry in this mode: single-object encoding; read as admin (the topics' ACLs admit no one else).
    check_every_reading_predicted(bootstrap, None, project, acknowledged, **material.kafka_client_config("admin"))


def test_secured_stack_refuses_an_anonymous_mqtt_client(secured_stack):
    _, mqtt_port, material, _ = secured_stack
    car = car_id(1)

    def publish(*login: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "--cafile", str(material.ca_file), *login]
            + ["-t", f"{MQTT_TOPIC_PREFIX}/{car}", "-m", "{}", "-q", "1"],
            capture_output=True,
            text=True,
            timeout=30,
        )

    anonymous = publish()
    assert anonymous.returncode != 0 and "not authori" in anonymous.stderr.lower(), anonymous
    # The same connection with the car's own login goes through: the refusal is the missing identity's.
    assert publish("-u", car, "-P", car_password(material.fleet_secret, car)).returncode == 0
