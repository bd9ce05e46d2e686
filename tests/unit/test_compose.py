"""The docker compose stack and the Dockerfile, checked by structure: no Docker engine runs here, so these tests
parse compose/docker-compose.yml, Dockerfile and .dockerignore and check what a user with Docker relies on."""

from __future__ import annotations

import fnmatch
import glob
import re
import shlex
import socket
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from graphlib import TopologicalSorter
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from admin.policy import KAFKA_ACLS, SECURED_TOPICS
from admin.settings import parse_topics
from common.defaults import (
    BRIDGE_METRICS_PORT,
    KAFKA_PORT,
    MQTT_PORT,
    MQTT_TLS_PORT,
    PREDICTOR_METRICS_PORT,
    SCHEMA_REGISTRY_PORT,
)
from common.topics import READINGS_TOPIC, TOPIC_PARTITIONS
from ml.training.cluster import DNS_PREFIX
from scripts.runtime.streams import STREAMS_IMAGE, STREAMS_JAR

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SECURE_FILE = COMPOSE_DIR / "docker-compose.secure.yml"
POM = ROOT / "scripts" / "runtime" / "kafka" / "pom.xml"

HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
ONE_SHOTS = {"topics", "training-data", "trainer"}
APP_SERVICES = {"simulator", "bridge", "trainer", "predictor", "continual"}
REQUIRED_SERVICES = {"kafka", "mosquitto", "schema-registry", *ONE_SHOTS, *APP_SERVICES}
APP_COMMANDS = {
    "simulator": ["python", "-m", "simulator"],
    "bridge": ["python", "-m", "bridge"],
    "trainer": ["python", "-m", "ml", "train"],
    "predictor": ["python", "-m", "ml", "predict"],
    "continual": ["python", "-m", "ml", "continual"],
}
# Long-running services that serve no HTTP endpoint and open no connection a check could see at all times: their
# health is their process (compose restarts it when it exits), and nothing waits for them to be healthy.
PROCESS_ONLY = {"continual"}
# Who waits for whom, and for what; a service may wait for more, never for less.
DEPENDENCIES = {
    "schema-registry": {"kafka": HEALTHY},
    "topics": {"kafka": HEALTHY},
    "bridge": {"kafka": HEALTHY, "mosquitto": HEALTHY, "schema-registry": HEALTHY, "topics": COMPLETED},
    "simulator": {"mosquitto": HEALTHY, "bridge": HEALTHY},
    "training-data": {"topics": COMPLETED, "simulator": HEALTHY},
    "trainer": {"kafka": HEALTHY, "schema-registry": HEALTHY, "topics": COMPLETED, "training-data": COMPLETED},
    "predictor": {"kafka": HEALTHY, "schema-registry": HEALTHY, "topics": COMPLETED, "trainer": COMPLETED},
    "continual": {"kafka": HEALTHY, "schema-registry": HEALTHY, "topics": COMPLETED},
}
# The ports a user reaches from the host (docs/contracts.md, README.md "Ports").
# service: (container port, host port), published on loopback only.
PUBLISHED_PORTS = {
    "kafka": (KAFKA_PORT, KAFKA_PORT),
    "mosquitto": (MQTT_PORT, MQTT_PORT),
    "schema-registry": (8080, SCHEMA_REGISTRY_PORT),
    "bridge": (BRIDGE_METRICS_PORT, BRIDGE_METRICS_PORT),
    "predictor": (PREDICTOR_METRICS_PORT, PREDICTOR_METRICS_PORT),
}

# ${NAME}, ${NAME:-default} (the default when unset), ${NAME:+text} (the text when set, nothing otherwise)
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-+])([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """What docker compose makes of the file when no variable is set: ${NAME:-default} becomes its default."""
    if isinstance(value, str):
        unset = VARIABLE.sub(lambda match: match.group(3) if match.group(2) in ("-", ":-") else "", value)
        return unset.replace("$$", "$")
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    return value


def defaulted_variable(value: Any) -> str | None:
    """The NAME when `value` is exactly ${NAME:-default} with a default, else None."""
    match = VARIABLE.fullmatch(str(value))
    return match.group(1) if match and match.group(2) == ":-" and match.group(3) else None


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def published(service: dict) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port), from the short `ADDRESS:HOST:CONTAINER` syntax."""
    ports = {}
    for entry in service.get("ports", []):
        address, host, container = str(entry).split(":") if str(entry).count(":") == 2 else ("", *str(entry).split(":"))
        ports[int(container)] = (address, int(host))
    return ports


def image_tag(image: str) -> str | None:
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def kafka_version_of_local_runtime() -> str:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    return ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=namespace)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def stack(raw: dict) -> dict:
    return interpolate(raw)


@pytest.fixture(scope="module")
def services(stack: dict) -> dict[str, dict]:
    return stack["services"]


def test_every_service_of_the_stack_is_defined(services):
    assert set(services) >= REQUIRED_SERVICES, f"missing: {REQUIRED_SERVICES - set(services)}"


def test_every_image_is_pinned_to_a_version(services):
    for name, service in services.items():
        assert "image" in service, f"{name} names no image"
        tag = image_tag(service["image"])
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {service['image']} is not pinned"


def test_kafka_runs_the_version_of_the_local_runtime(raw, services):
    version = kafka_version_of_local_runtime()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    for name in ("kafka", "topics", "training-data"):
        assert services[name]["image"] == f"apache/kafka:{version}", name
        assert defaulted_variable(raw["services"][name]["image"]) == "KAFKA_IMAGE", name


def test_mosquitto_and_schema_registry_images(services):
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", services["mosquitto"]["image"])
    assert re.fullmatch(r"apicurio/apicurio-registry:\d+\.\d+\.\d+", services["schema-registry"]["image"])


def test_app_services_are_built_from_the_repository_dockerfile(services):
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, f"one image for the four services, got {images}"
    for name in APP_SERVICES:
        build = services[name]["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == ROOT / "Dockerfile", name


def test_app_services_run_their_modules(services):
    for name, expected in APP_COMMANDS.items():
        assert command(services[name]) == expected, name


def listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` -> {NAME: host:port}."""
    return dict(item.split("://", 1) for item in value.split(","))


def test_kafka_is_a_single_kraft_node_with_a_container_and_a_host_listener(services):
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound, advertised = listeners(env["KAFKA_LISTENERS"]), listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(bound) == set(protocols), "every listener needs a security protocol"
    assert bound[controller].endswith(":9093")
    assert controller not in advertised, "the controller listener is never advertised to clients"
    assert sorted(advertised.values()) == ["kafka:19092", f"localhost:{KAFKA_PORT}"]
    for name, address in advertised.items():
        assert bound[name].rsplit(":", 1)[1] == address.rsplit(":", 1)[1], f"{name} binds another port"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"
    host_listener = next(name for name, address in advertised.items() if address.startswith("localhost:"))
    assert published(services["kafka"])[int(bound[host_listener].rsplit(":", 1)[1])] == ("127.0.0.1", KAFKA_PORT)


def test_services_reach_the_servers_inside_the_stack(services):
    advertised = listeners(environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]).values()
    [internal] = [address for address in advertised if address.startswith("kafka:")]
    assert internal == "kafka:19092"
    for name in APP_SERVICES:
        env = environment(services[name])
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == internal, name
        assert env["MQTT_HOST"] == "mosquitto" and env["MQTT_HOST"] in services, name
        assert env["MQTT_PORT"] == str(MQTT_PORT), name
        assert env["SCHEMA_REGISTRY_URL"] == "http://schema-registry:8080/apis/ccompat/v7", name
    registry = environment(services["schema-registry"])
    assert registry["APICURIO_STORAGE_KIND"] == "kafkasql"  # schemas kept in Kafka: they survive a restart
    assert registry["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"] == internal


def test_bridge_keeps_its_mqtt_session_across_container_restarts(services):
    client_id = environment(services["bridge"]).get("BRIDGE_CLIENT_ID") or services["bridge"].get("hostname")
    assert client_id, "the default client id holds the container's hostname, which changes when it is recreated"


def test_ports_of_the_contract_are_published(services):
    for name, (container, host) in PUBLISHED_PORTS.items():
        assert published(services[name]).get(container) == ("127.0.0.1", host), f"{name}: {services[name]['ports']}"
    for name, service in services.items():
        assert all(address == "127.0.0.1" for address, _ in published(service).values()), f"{name} beyond loopback"
    assert environment(services["bridge"])["BRIDGE_METRICS_PORT"] == str(BRIDGE_METRICS_PORT)
    assert environment(services["predictor"])["ML_METRICS_PORT"] == str(PREDICTOR_METRICS_PORT)


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if name in ONE_SHOTS:
            assert service.get("restart") == "no", f"{name} is a one-shot and must not restart"
            continue
        if name in PROCESS_ONLY:
            assert "healthcheck" not in service and service["restart"] == "unless-stopped", name
            waiting = [other for other, s in services.items() if name in (s.get("depends_on") or {})]
            assert not waiting, f"{waiting} wait for {name}, which has no health check to wait for"
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL"), name


def healthcheck_text(service: dict) -> str:
    return " ".join(service["healthcheck"]["test"][1:])


def test_healthchecks_probe_what_each_server_serves(services):
    kafka_script = r"/opt/kafka/bin/kafka-(broker-api-versions|topics)\.sh .*kafka:19092"
    assert re.search(kafka_script, healthcheck_text(services["kafka"]))
    assert re.match(r"mosquitto_(sub|pub) ", healthcheck_text(services["mosquitto"]))
    assert "http://localhost:8080/apis/ccompat/v7/" in healthcheck_text(services["schema-registry"])
    for name, port in (("bridge", BRIDGE_METRICS_PORT), ("predictor", PREDICTOR_METRICS_PORT)):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], f"{name}: the slim image has no curl"
        assert f"http://localhost:{port}/readyz" in test[3], f"{name}: healthy means ready (common/health.py)"
        compile(test[3], name, "exec")


def run_simulator_healthcheck(services: dict, mqtt_port: int) -> int:
    code = services["simulator"]["healthcheck"]["test"][-1]
    env = {"MQTT_PORT": str(mqtt_port)}
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=30).returncode


def quiet_listener() -> socket.socket:
    """A listening socket on a port no connection of this host uses yet. The healthcheck looks at every connection
    of its network namespace, here the host's: a port that is also some client's local port (a listener may share
    it) shows as the remote port of that client's peer, and once made the check pass with no connection of ours."""
    for _ in range(50):
        server = socket.create_server(("127.0.0.1", 0))
        port = f":{server.getsockname()[1]:04X}"
        tables = [Path(path).read_text().splitlines()[1:] for path in glob.glob("/proc/net/tcp*")]
        rows = [line.split() for table in tables for line in table]
        if not any(row[2].endswith(port) or (row[1].endswith(port) and row[3] != "0A") for row in rows):
            return server
        server.close()
    raise AssertionError("no quiet port in 50 tries")


def test_simulator_healthcheck_tells_a_connected_simulator_from_a_disconnected_one(services):
    with quiet_listener() as broker:
        port = broker.getsockname()[1]
        assert run_simulator_healthcheck(services, port) == 1, "healthy without a connection to the broker"
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted = broker.accept()[0]
            assert run_simulator_healthcheck(services, port) == 0, "unhealthy while connected to the broker"
            client.close()  # the closed side lingers in TIME_WAIT, which is no connection
            accepted.close()
        assert run_simulator_healthcheck(services, port) == 1, "healthy after the connection closed"


def test_depends_on_always_names_a_condition(services):
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert isinstance(spec, dict) and "condition" in spec, f"{name} -> {target} without a condition"
            expected = COMPLETED if target in ONE_SHOTS else HEALTHY
            assert spec["condition"] == expected, f"{name} -> {target}: {spec['condition']}"


def test_dependency_graph_is_complete_and_acyclic(services):
    for name, needed in DEPENDENCIES.items():
        declared = {target: spec["condition"] for target, spec in services[name].get("depends_on", {}).items()}
        for target, condition in needed.items():
            assert declared.get(target) == condition, f"{name} must wait for {target} ({condition})"
    graph = {name: set(service.get("depends_on") or {}) for name, service in services.items()}
    order = list(TopologicalSorter(graph).static_order())
    assert order.index("trainer") < order.index("predictor")


def test_topics_are_created_with_partitions_from_variables(raw, services):
    """The stack's topics (common/topics.py), each with a variable whose default is its partitions there."""
    script = "\n".join(command(services["topics"]))
    created = dict(re.findall(r"create ([\w-]+) \"\$(\w+)\"", script))
    assert set(created) == set(TOPIC_PARTITIONS)
    raw_env = raw["services"]["topics"]["environment"]
    for topic, variable in created.items():
        assert defaulted_variable(raw_env[variable]), f"{variable} is not a variable with a default"
        assert int(environment(services["topics"])[variable]) == TOPIC_PARTITIONS[topic], topic


def test_training_waits_for_enough_readings(raw, services):
    script = "\n".join(command(services["training-data"]))
    assert f"--topic {READINGS_TOPIC}" in script and '"$TRAIN_MIN_RECORDS"' in script
    assert defaulted_variable(raw["services"]["training-data"]["environment"]["TRAIN_MIN_RECORDS"])


def test_one_shot_scripts_are_valid_bash(services):
    for name in ("topics", "training-data"):
        entrypoint = services[name]["entrypoint"]
        assert entrypoint[0] == "/bin/bash", name
        checked = subprocess.run(["bash", "-n", "-c", command(services[name])[0]], capture_output=True, text=True)
        assert checked.returncode == 0, f"{name}: {checked.stderr}"


def test_every_variable_has_a_default():
    text = COMPOSE_FILE.read_text()
    without_default = [m.group(0) for m in VARIABLE.finditer(text) if not m.group(2)]
    assert not without_default, f"variables without a default: {without_default}"


def test_knobs_are_variables(raw):
    simulator = raw["services"]["simulator"]["environment"]
    for variable in ("CARS", "RATE", "SPEEDUP"):
        assert defaulted_variable(simulator[f"SIMULATOR_{variable}"]) == variable
    # Unset (empty), the simulator runs until stopped; set, it stops after DURATION seconds.
    assert simulator["SIMULATOR_DURATION"] == "${DURATION:-}"
    # docker-compose 1.29 rejects ${NAME:+...} and a top-level `name`: the file stays loadable by it.
    assert ":+" not in COMPOSE_FILE.read_text() and "name" not in raw
    assert defaulted_variable(raw["volumes"]["models"]["name"])


def volume_mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """target -> (source, read only), from the short `SOURCE:TARGET[:ro]` syntax."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts[target] = (source, mode == ["ro"])
    return mounts


def test_model_directory_is_a_named_volume_shared_by_trainer_and_predictor(stack, services):
    """The trainer and continual training write model versions (continual the registry too), the predictor reads."""
    sources = {}
    for name in ("trainer", "predictor", "continual"):
        model_dir = environment(services[name])["ML_MODEL_DIR"]
        source, read_only = volume_mounts(services[name])[model_dir]
        assert source in stack["volumes"], f"{name}: {source} is not a named volume"
        assert read_only == (name == "predictor")
        sources[name] = source
    assert len(set(sources.values())) == 1, sources


def test_the_java_serving_program_takes_the_predictors_place_in_the_profile_java(raw, stack, services):
    java, predictor = services["predictor-java"], services["predictor"]
    assert java["profiles"] == ["java"] and "profiles" not in predictor, "the Python predictor serves by default"
    # What the predictor has, so that it can stand in for it: settings, port, dependencies, readiness, models.
    assert environment(java) == {**environment(predictor), "ML_STREAMS_STATE_DIR": "/state"}
    assert published(java) == published(predictor) and java["depends_on"] == predictor["depends_on"]
    assert f"http://localhost:{PREDICTOR_METRICS_PORT}/readyz" in healthcheck_text(java)
    mounts = volume_mounts(java)
    assert mounts["/models"] == volume_mounts(predictor)["/models"]
    state, read_only = mounts["/state"]
    assert state in stack["volumes"] and not read_only, "its state stores outlive the container"
    # The dashboard scrapes http://predictor:9109/metrics: whichever program serves answers there.
    assert java["networks"]["default"]["aliases"] == ["predictor"]
    # Its image: the jar and lib/ that `make setup` built, named as `make images` names it.
    assert java["image"] == STREAMS_IMAGE and defaulted_variable(raw["services"]["predictor-java"]["image"])
    context = (COMPOSE_DIR / java["build"]["context"]).resolve()
    dockerfile = (context / java["build"]["dockerfile"]).resolve()
    assert context == STREAMS_JAR.parent and dockerfile == COMPOSE_DIR / "images" / "streams" / "Dockerfile"
    instructions = [line.split(None, 1) for line in dockerfile.read_text().splitlines() if line[:1].isupper()]
    copied = {arguments.split()[0] for keyword, arguments in instructions if keyword == "COPY"}
    assert copied == {"lib/", STREAMS_JAR.name}, "the context holds the jar and its lib/ only"


def test_continual_training_runs_once_beside_the_stack_in_the_profile_continual(services):
    """Not in the default stack: only with its profile. One container (two would race on the registry), with the
    predictor's connection settings; the secured override gives it its own identity, `continual`."""
    continual, predictor = services["continual"], services["predictor"]
    assert continual["profiles"] == ["continual"]
    assert not {"deploy", "scale"} & set(continual) and "container_name" not in continual
    assert continual["image"] == predictor["image"] and "ports" not in continual
    assert environment(continual) == {
        key: value for key, value in environment(predictor).items() if not key.startswith("ML_METRICS_")
    }
    secured = yaml.safe_load(SECURE_FILE.read_text())["services"]
    assert secured["continual"]["env_file"] == "${SECURE_DIR}/env/continual.env" and "continual" in KAFKA_ACLS
    assert secured["continual"]["environment"] == secured["predictor"]["environment"], "the CA where it is mounted"
    assert secured["continual"]["volumes"] == secured["predictor"]["volumes"]


WORKER_SETTINGS = {"ML_WORKERS", "ML_WORKER_HOSTS", "ML_WORKER_INDEX", "TF_CONFIG"}


def test_the_trainer_runs_train_workers_containers_as_one_cluster(raw, services):
    """TRAIN_WORKERS replicas of the trainer, each a worker of one cluster (ml/training/cluster.py): the replicas and
    ML_WORKERS are the one variable, and replicas, which have no index of their own, find each other as the
    addresses the service's own name resolves to on the stack's network."""
    trainer, raw_trainer = services["trainer"], raw["services"]["trainer"]
    replicas, workers = raw_trainer["deploy"]["replicas"], raw_trainer["environment"]["ML_WORKERS"]
    assert replicas == workers and defaulted_variable(replicas) == "TRAIN_WORKERS", "replicas and ML_WORKERS agree"
    env = environment(trainer)
    assert env["ML_WORKER_HOSTS"].startswith(DNS_PREFIX)
    name, port = env["ML_WORKER_HOSTS"].removeprefix(DNS_PREFIX).split(":")
    assert name == "trainer" and int(port) > 0, "the name of the trainer's own replicas"
    aliases = {
        alias
        for other, service in services.items()
        if other != name and isinstance(service.get("networks"), dict)
        for network in service["networks"].values()
        for alias in (network or {}).get("aliases", [])
    }
    assert name not in aliases, f"only the trainer's replicas answer to {name}"
    assert not {"ML_WORKER_INDEX", "TF_CONFIG"} & set(env), "the index comes from the address"
    assert "container_name" not in trainer, "replicas need names of their own"
    # Each worker reads its share of car-sensor's partitions: at most one worker per partition.
    assert 1 <= int(trainer["deploy"]["replicas"]) <= int(environment(services["topics"])["CAR_SENSOR_PARTITIONS"])
    # The secured stack trains the same way: its override leaves the cluster alone.
    secured = yaml.safe_load(SECURE_FILE.read_text())["services"]["trainer"]
    assert not {"deploy", "scale"} & set(secured) and not WORKER_SETTINGS & set(environment(secured))


def test_mosquitto_runs_with_the_repository_config_and_keeps_its_data(services):
    mounts = volume_mounts(services["mosquitto"])
    source, _ = mounts["/mosquitto/config/mosquitto.conf"]
    assert (COMPOSE_DIR / source).resolve() == COMPOSE_DIR / "mosquitto" / "mosquitto.conf"
    config = dict(line.split(None, 1) for line in (COMPOSE_DIR / source).read_text().splitlines() if line[:1].isalpha())
    if config.get("persistence") == "true":
        location = config["persistence_location"].rstrip("/")
        assert location in mounts and not mounts[location][0].startswith("."), "persistence outside a volume"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, the first one (the ARGs before any FROM) included."""
    stages: list[list[tuple[str, str]]] = [[]]
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, arguments))
    return stages


def test_dockerfile_builds_from_python_311_slim_and_installs_from_the_lock_file():
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "ARG" and instructions[1] == ("FROM", "${PYTHON_IMAGE} AS base")
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11(\.\d+)?-slim(-\w+)?", instructions[0][1])
    image = dockerfile_stages()[-1]
    assert image[0] == ("FROM", "base"), "the image is the last stage, on the same Python base"
    runs = [arguments for keyword, arguments in image if keyword == "RUN"]
    dependencies = next(i for i, run in enumerate(runs) if re.search(r"pip install -c \S*requirements\.lock -r ", run))
    project = next(i for i, run in enumerate(runs) if re.search(r"pip install --no-deps \S*car_stream_ml-\*\.whl", run))
    assert dependencies < project, "the dependencies' layer first, pinned to the lock file; then the wheel"
    assert not any(re.search(r"pip (install|wheel) .*\.\[", run) for run in runs), "no extras (dev) in the image"


def test_dockerfile_installs_the_wheel_not_the_sources_and_runs_as_a_user():
    wheel_stage = next(stage for stage in dockerfile_stages() if stage[0] == ("FROM", "base AS wheel"))
    assert ("COPY", ". ./") in wheel_stage, "the wheel is built from the context; pyproject picks the packages"
    assert any(re.search(r"pip wheel --no-deps ", arguments) for keyword, arguments in wheel_stage if keyword == "RUN")
    image = dockerfile_stages()[-1]
    assert not [arguments for keyword, arguments in image if keyword in ("COPY", "ADD")], "no sources in the image"
    environment = " ".join(arguments for keyword, arguments in dockerfile_instructions() if keyword == "ENV")
    assert "PYTHONPATH" not in environment, "the installed packages find their schemas themselves"
    users = [arguments for keyword, arguments in image if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the services must not run as root"


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_local_state_out_and_what_the_build_copies_in():
    patterns = dockerignore_patterns()
    assert {".venv", ".run", ".deps", "artifacts", ".git"} <= set(patterns)
    assert {"scripts", "tests"} <= set(patterns), "the checkout's tooling and tests are never in the image"
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    needed = [name for name in find["include"] if "." not in name]
    needed += ["pyproject.toml", "requirements.lock", "README.md", "LICENSE"]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in patterns), f"{path}: ignored, the build needs it"
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY":
            continue
        for source in arguments.split()[:-1]:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {path}: not in the repository"
            assert not any(fnmatch.fnmatch(path, pattern) for pattern in patterns), f"COPY {path}: ignored"


def test_the_secured_stack_sets_kafka_up_with_the_code_of_the_services_image():
    """The secured mode's policy (users, topics, ACLs) runs from the services' image, `python -m admin apply`, never
    from a source folder mounted into it: as admin (its env file), with the services' passwords from the material
    that the secure-files one-shot hands it, readable by its group only."""
    base = yaml.safe_load(COMPOSE_FILE.read_text())
    secure = yaml.safe_load(SECURE_FILE.read_text())
    topics = interpolate(secure["services"]["topics"])
    assert topics["image"] == interpolate(base["services"]["bridge"]["image"]), "the services' image"
    assert topics["entrypoint"] == ["python", "-m", "admin", "apply"]
    [given] = [arg.split("=", 1)[1] for arg in topics["command"] if arg.startswith("--topics=")]
    assert parse_topics(given) == SECURED_TOPICS, "the same topics as the local runtime's secured start"
    for name, service in secure["services"].items():
        for volume in service.get("volumes", []):
            assert not volume.startswith("."), f"{name} mounts a folder of the repository: {volume}"
    assert secure["services"]["topics"]["env_file"] == "${SECURE_DIR}/env/admin.env"
    users_file = PurePosixPath(environment(topics)["ADMIN_USERS_FILE"])
    copies = "\n".join(command(secure["services"]["secure-files"]))
    setup = re.search(rf"put {users_file.parent.name} (\d+) (.*)", copies)
    assert setup and users_file.name in setup.group(2).split(), "secure-files puts the users file where admin reads it"
    assert setup.group(1) in topics["group_add"], "admin's container joins the group that may read it"
    assert environment(topics)["KAFKA_SSL_CA_LOCATION"].startswith("/secure/")


def test_the_secured_stack_publishes_mqtt_over_tls_on_the_usual_port():
    mosquitto = interpolate(yaml.safe_load(SECURE_FILE.read_text())["services"]["mosquitto"])
    assert published(mosquitto)[MQTT_TLS_PORT] == ("127.0.0.1", MQTT_TLS_PORT)
