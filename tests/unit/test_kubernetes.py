"""The Kubernetes manifests of compose/kubernetes/, checked by structure (no cluster here): what each workload
runs, how the cluster probes it, what it may use, and that labels, selectors and references fit together."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from common.defaults import BRIDGE_METRICS_PORT, DASHBOARD_PORT, PREDICTOR_METRICS_PORT
from common.topics import READINGS_TOPIC, TOPIC_PARTITIONS
from ml.training.cluster import cluster_from
from scripts.runtime.streams import STREAMS_IMAGE

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = ROOT / "compose" / "kubernetes"
PART_OF = "car-stream-ml"
DEPLOYMENTS = {
    "simulator": ["python", "-m", "simulator"],
    "bridge": ["python", "-m", "bridge"],
    "predictor": ["python", "-m", "ml", "predict"],
    "predictor-java": ["java", "-jar", "/opt/car-failure-streams/car-failure-streams.jar"],
    "continual": ["python", "-m", "ml", "continual"],
    "dashboard": ["python", "-m", "dashboard"],
}
# Deployments that serve no endpoint a probe could ask: the kubelet restarts them when their process exits.
PROCESS_ONLY = {"continual"}
# The serving programs: the Python predictor serves by default, the Java one (its own image) in its place when asked.
SERVING = {"predictor": 1, "predictor-java": 0}
JOBS = {"trainer": ["python", "-m", "ml", "train"], "admin": ["python", "-m", "admin", "apply"]}
METRICS = {
    "bridge": ("BRIDGE_METRICS_PORT", BRIDGE_METRICS_PORT),
    "predictor": ("ML_METRICS_PORT", PREDICTOR_METRICS_PORT),
    "predictor-java": ("ML_METRICS_PORT", PREDICTOR_METRICS_PORT),
}
# The Service in front of each workload's metrics: both serving programs' pods are behind predictor-metrics.
METRICS_SERVICES = {"bridge": "bridge-metrics", "predictor": "predictor-metrics", "predictor-java": "predictor-metrics"}
# Who mounts the model claim, where its setting says: the trainer and continual write versions (continual the
# registry too), the others only read them.
MODEL_DIRS = {
    "trainer": "ML_MODEL_DIR",
    "continual": "ML_MODEL_DIR",
    "predictor": "ML_MODEL_DIR",
    "predictor-java": "ML_MODEL_DIR",
    "dashboard": "DASHBOARD_MODEL_DIR",
}
MODEL_WRITERS = {"trainer", "continual"}
# The identity (Secret car-stream-ml-<identity>) of each workload whose name is not its identity's.
IDENTITIES = {"predictor-java": "streams-predictor"}
CONNECTION_SETTINGS = {"KAFKA_BOOTSTRAP_SERVERS", "MQTT_HOST", "MQTT_PORT", "SCHEMA_REGISTRY_URL"}
QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?")
UNITS = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
# Where Kubernetes puts an indexed Job's pod's index (the downward API reads it into ML_WORKER_INDEX).
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def quantity(value: str | int) -> float:
    match = QUANTITY.fullmatch(str(value))
    assert match, f"not a quantity: {value}"
    return float(match.group(1)) * UNITS[match.group(2)]


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], dict]:
    documents = {}
    for path in sorted(MANIFEST_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in documents, f"{key} defined twice"
            documents[key] = document
    return documents


def workloads(resources: dict) -> dict[str, dict]:
    return {name: doc for (kind, name), doc in resources.items() if kind in ("Deployment", "Job")}


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def main_container(workload: dict) -> dict:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return container


def env(container: dict) -> dict[str, str]:
    """The settings given as values (not those from the downward API, `valueFrom`)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((MANIFEST_DIR / "kustomization.yaml").read_text())["resources"]
    files = {path.name for path in MANIFEST_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(files)


def test_each_service_has_its_workload(resources):
    for name in DEPLOYMENTS:
        assert ("Deployment", name) in resources, name
    for name in JOBS:
        assert ("Job", name) in resources, name
        assert resources[("Job", name)]["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_workloads_run_their_modules(resources):
    for name, command in {**DEPLOYMENTS, **JOBS}.items():
        assert main_container(workloads(resources)[name])["command"] == command, name


def test_labels_are_consistent_and_selectors_match_their_pods(resources):
    for (kind, name), doc in resources.items():
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == PART_OF, f"{kind}/{name}"
    for name, workload in workloads(resources).items():
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["app.kubernetes.io/name"] == name
        assert workload["metadata"]["labels"]["app.kubernetes.io/name"] == name
        if workload["kind"] == "Deployment":
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_labels.items(), f"{name}: the selector does not select its pods"


def test_every_container_has_requests_within_limits(resources):
    for name, workload in workloads(resources).items():
        for container in containers(workload):
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            for resource in ("cpu", "memory"):
                assert quantity(requests[resource]) <= quantity(limits[resource]), f"{name}/{container['name']}"


def test_every_deployment_is_probed(resources):
    for name in DEPLOYMENTS:
        container = main_container(resources[("Deployment", name)])
        if name in PROCESS_ONLY:  # a probe of a port it does not open would restart it for ever
            assert not {"livenessProbe", "readinessProbe", "startupProbe", "ports"} & set(container), name
            continue
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container and ({"httpGet", "exec", "tcpSocket"} & set(container[probe])), f"{name}"


def test_metrics_probes_and_services_reach_the_metrics_port(resources):
    for name, (setting, port) in METRICS.items():
        container = main_container(resources[("Deployment", name)])
        ports = {item["name"]: item["containerPort"] for item in container["ports"]}
        assert int(env(container)[setting]) == port, f"{name} serves its metrics on another port"
        # Liveness restarts a hung loop; readiness says whether the service can do its job (common/health.py).
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = container[probe]["httpGet"]
            assert http["path"] == path and ports.get(http["port"], http["port"]) == port, f"{name} {probe}"
        service = resources[("Service", METRICS_SERVICES[name])]
        pod_labels = resources[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items(), f"{service} does not select {name}'s pods"
        [service_port] = service["spec"]["ports"]
        assert service_port["port"] == port and ports.get(service_port["targetPort"]) == port


def test_connection_settings_come_from_the_config_map(resources):
    config_maps = {name for kind, name in resources if kind == "ConfigMap"}
    for (kind, name), doc in resources.items():
        if kind == "ConfigMap":
            assert set(doc["data"]) >= CONNECTION_SETTINGS, name
    for name, workload in workloads(resources).items():
        sources = [
            item["configMapRef"]["name"]
            for item in main_container(workload).get("envFrom", [])
            if "configMapRef" in item
        ]
        assert sources and set(sources) <= config_maps, f"{name} takes its connection settings from nowhere"


def test_trainer_continual_predictor_and_dashboard_share_the_model_volume(resources):
    claims = set()
    for name, setting in MODEL_DIRS.items():
        workload = workloads(resources)[name]
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in workload["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        container = main_container(workload)
        model_dir = env(container)[setting]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == model_dir]
        assert mount.get("readOnly", False) == (name not in MODEL_WRITERS), f"{name}: who writes model versions"
        claims.add(volumes[mount["name"]])
    assert len(claims) == 1 and ("PersistentVolumeClaim", claims.pop()) in resources


def test_every_workload_logs_in_with_its_own_secret_and_trusts_the_ca(resources):
    """Secured by default: each workload's identity is the Secret made from its env file (README.md), and the CA is
    mounted where the ConfigMap's *_CA_* settings say."""
    [config] = [doc for (kind, _), doc in resources.items() if kind == "ConfigMap"]
    ca_dir = config["data"]["KAFKA_SSL_CA_LOCATION"].rsplit("/", 1)[0]
    for name, workload in workloads(resources).items():
        secrets = [item["secretRef"]["name"] for item in main_container(workload)["envFrom"] if "secretRef" in item]
        assert secrets == [f"car-stream-ml-{IDENTITIES.get(name, name)}"], name
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        [mount] = [m for m in main_container(workload)["volumeMounts"] if m["mountPath"] == ca_dir]
        assert mount["readOnly"] and volumes[mount["name"]]["secret"]["secretName"] == "car-stream-ml-ca", name


def test_dashboard_serves_its_page_in_the_cluster_and_is_probed_on_healthz(resources):
    container = main_container(resources[("Deployment", "dashboard")])
    settings = env(container)
    # 127.0.0.1 by default: the probes and the Service reach the pod's address only when it listens on every one.
    assert settings["DASHBOARD_HOST"] == "0.0.0.0" and int(settings["DASHBOARD_PORT"]) == DASHBOARD_PORT
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz" and ports.get(http["port"], http["port"]) == DASHBOARD_PORT, probe
    # It scrapes the bridge and the predictor through their metrics Services.
    for name, url in (item.split("=", 1) for item in settings["DASHBOARD_METRICS_URLS"].split(",")):
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)/metrics", url).groups()
        assert host == METRICS_SERVICES[name], f"the dashboard reads {name} through {METRICS_SERVICES[name]}"
        assert int(port) == METRICS[name][1] and [p["port"] for p in resources[("Service", host)]["spec"]["ports"]] == [
            int(port)
        ]
    service = resources[("Service", "dashboard")]
    pod_labels = resources[("Deployment", "dashboard")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "the page is reached by port-forward, not exposed"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [service_port] = service["spec"]["ports"]
    assert service_port["port"] == DASHBOARD_PORT and ports.get(service_port["targetPort"]) == DASHBOARD_PORT
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert (requests["cpu"], requests["memory"], limits["cpu"], limits["memory"]) == ("250m", "256Mi", "1", "1Gi")


def test_the_admin_job_sets_kafka_up_with_the_services_passwords_mounted_for_it_alone(resources):
    """The secured mode's policy runs from the services' image (python -m admin apply); the services' Kafka
    passwords are a Secret mounted into that Job only, where ADMIN_USERS_FILE says."""
    container = main_container(resources[("Job", "admin")])
    users_file = env(container)["ADMIN_USERS_FILE"]
    volumes = {v["name"]: v for v in resources[("Job", "admin")]["spec"]["template"]["spec"]["volumes"]}
    [mount] = [m for m in container["volumeMounts"] if users_file.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] and volumes[mount["name"]]["secret"]["secretName"] == "car-stream-ml-kafka-users"
    for name, workload in workloads(resources).items():
        secrets = {v["secret"]["secretName"] for v in workload["spec"]["template"]["spec"]["volumes"] if "secret" in v}
        assert name == "admin" or "car-stream-ml-kafka-users" not in secrets, f"{name} may read the passwords"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


def test_services_run_the_image_of_the_compose_stack_and_every_image_is_pinned(resources, compose):
    def compose_image(service: str) -> str:
        return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", compose["services"][service]["image"])

    images = {name: main_container(workload)["image"] for name, workload in workloads(resources).items()}
    assert images.pop("predictor-java") == compose_image("predictor-java") == STREAMS_IMAGE
    assert set(images.values()) == {compose_image("bridge")}
    for name, workload in workloads(resources).items():
        for container in containers(workload):
            tag = container["image"].rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{name}/{container['name']}: {container['image']} is not pinned"


def test_trainer_waits_for_readings_as_in_the_secured_compose_stack(resources, compose):
    """The manifests are secured by default: the trainer's wait is the secured compose override's (as admin)."""
    [wait] = resources[("Job", "trainer")]["spec"]["template"]["spec"]["initContainers"]
    secured = yaml.safe_load((ROOT / "compose" / "docker-compose.secure.yml").read_text())
    compose_wait = {**compose["services"]["training-data"], **secured["services"]["training-data"]}
    # compose names the image by a variable (${KAFKA_IMAGE:-default}); the manifests use its default.
    assert wait["image"] == re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", compose_wait["image"])
    assert wait["command"] == compose_wait["entrypoint"] + [compose_wait["command"][0].replace("$$", "$")]
    assert int(env(wait)["TRAIN_MIN_RECORDS"]) >= 1


def test_simulator_probe_is_the_compose_healthcheck(resources, compose):
    healthcheck = compose["services"]["simulator"]["healthcheck"]["test"]
    container = main_container(resources[("Deployment", "simulator")])
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == healthcheck[1:], probe


def test_one_serving_program_runs_by_default_and_both_are_behind_the_predictors_metrics(resources):
    """Two serving programs would predict every reading twice: the Java one has no replica until asked for. The
    Service predictor-metrics (the dashboard's) selects the pods of either."""
    for name, replicas in SERVING.items():
        deployment = resources[("Deployment", name)]
        assert deployment["spec"]["replicas"] == replicas, name
        assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "predictor"
    java, python = (main_container(resources[("Deployment", name)]) for name in ("predictor-java", "predictor"))
    assert env(java) == {**env(python), "ML_STREAMS_STATE_DIR": "/state"}, "the predictor's settings"
    assert [item["configMapRef"] for item in java["envFrom"] if "configMapRef" in item] == [
        item["configMapRef"] for item in python["envFrom"] if "configMapRef" in item
    ]
    [state] = [m for m in java["volumeMounts"] if m["mountPath"] == "/state"]
    volumes = {v["name"]: v for v in resources[("Deployment", "predictor-java")]["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[state["name"]], "its state stores: restored from their changelog topics"
    assert java["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_kustomize_builds_every_manifest(resources, render, tmp_path):
    """The manifests build into the resources here when no Kafka component is chosen (your own Kafka); each
    component is tested in tests/unit/test_kubernetes_kafka.py."""
    shutil.copytree(MANIFEST_DIR, tmp_path / "kubernetes")
    kustomization = tmp_path / "kubernetes" / "kustomization.yaml"
    kustomization.write_text(yaml.safe_dump({**yaml.safe_load(kustomization.read_text()), "components": []}))
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in render(kustomization.parent)}
    assert kinds == set(resources)


def test_the_readme_s_replicas_put_the_java_program_in_the_predictor_s_place(render, tmp_path):
    """README.md, "The Java serving program": these lines in kustomization.yaml serve with the Java program."""
    replicas = "replicas:\n  - name: predictor\n    count: 0\n  - name: predictor-java\n    count: 1\n"
    assert replicas in (MANIFEST_DIR / "README.md").read_text()
    shutil.copytree(MANIFEST_DIR, tmp_path / "kubernetes")
    kustomization = tmp_path / "kubernetes" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + replicas)
    counts = {
        doc["metadata"]["name"]: doc["spec"]["replicas"]
        for doc in render(kustomization.parent)
        if doc["kind"] == "Deployment"
    }
    assert counts == {
        "simulator": 1,
        "bridge": 1,
        "predictor": 0,
        "predictor-java": 1,
        "continual": 1,
        "dashboard": 1,
    }


def test_continual_is_one_pod_at_a_time_on_the_predictor_s_claim(resources):
    """Two continual pods would race on the registry: one replica, and a new pod only once the old one has
    stopped (Recreate; a rolling update starts the new pod first). It mounts the claim of the trainer and the
    predictor, with the predictor's settings but its metrics (it serves none)."""
    deployment = resources[("Deployment", "continual")]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    [claim] = {
        volume["persistentVolumeClaim"]["claimName"]
        for name in ("continual", "predictor")
        for volume in resources[("Deployment", name)]["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    assert ("PersistentVolumeClaim", claim) in resources
    served = env(main_container(resources[("Deployment", "predictor")]))
    assert env(main_container(deployment)) == {key: value for key, value in served.items() if "METRICS" not in key}


def check_training_cluster(job: dict, service: dict) -> int:
    """The trainer Job and its headless Service name one cluster of workers (ml/training/cluster.py); returns how
    many workers."""
    spec, pod = job["spec"], job["spec"]["template"]
    container = main_container(job)
    workers = int(env(container)["ML_WORKERS"])
    # One pod per worker, all at once: the workers wait for each other in the first collective.
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == workers
    # A worker lost fails the run: no pod is retried into a cluster whose other workers have given up.
    assert pod["spec"]["restartPolicy"] == "Never" and spec["backoffLimit"] == 0
    [index] = [item for item in container["env"] if item["name"] == "ML_WORKER_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == COMPLETION_INDEX
    # ML_WORKER_HOSTS, as the program expands it, names pod i by its hostname (<job>-<i>) in the Service's subdomain.
    [port] = container["ports"]
    service_name = service["metadata"]["name"]
    assert pod["spec"]["subdomain"] == service_name
    hosts = cluster_from(env(container)["ML_WORKER_HOSTS"], 0, workers).hosts
    names = tuple(f"{job['metadata']['name']}-{i}.{service_name}:{port['containerPort']}" for i in range(workers))
    assert hosts == names
    # Headless, with every pod's record from its start, and those of the Job's pods only.
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [service_port] = service["spec"]["ports"]
    assert service_port["port"] == port["containerPort"] and service_port["targetPort"] == port["name"]
    return workers


def test_the_trainer_is_an_indexed_job_of_two_workers_behind_a_headless_service(resources):
    job, service = resources[("Job", "trainer")], resources[("Service", "trainer-workers")]
    workers = check_training_cluster(job, service)
    assert 2 == workers <= TOPIC_PARTITIONS[READINGS_TOPIC], "each worker reads its share of the partitions"
    for name, workload in workloads(resources).items():
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        selects = service["spec"]["selector"].items() <= pod_labels.items()
        assert selects == (name == "trainer"), f"trainer-workers selects {name}'s pods"


def test_the_readme_s_patches_change_the_number_of_workers_and_the_claim_s_access_mode(render, tmp_path):
    """README.md, "Training workers": the patch changes the three numbers together; the next one makes the model
    claim ReadWriteMany."""
    readme = (MANIFEST_DIR / "README.md").read_text()
    [patch] = re.findall(r"```yaml\n(patches:\n.*?)```", readme, re.DOTALL)
    [claim_patch] = re.findall(
        r"```yaml\n(  - patch: \|-\n\s+apiVersion: v1\n\s+kind: PersistentVolumeClaim\n.*?)```", readme, re.DOTALL
    )
    shutil.copytree(MANIFEST_DIR, tmp_path / "kubernetes")
    kustomization = tmp_path / "kubernetes" / "kustomization.yaml"

    def workers() -> int:
        rendered = {(doc["kind"], doc["metadata"]["name"]): doc for doc in render(kustomization.parent)}
        return check_training_cluster(rendered[("Job", "trainer")], rendered[("Service", "trainer-workers")])

    assert workers() == 2
    kustomization.write_text(kustomization.read_text() + patch)
    assert workers() == 4
    kustomization.write_text(kustomization.read_text() + claim_patch)
    [claim] = [doc for doc in render(kustomization.parent) if doc["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and workers() == 4
