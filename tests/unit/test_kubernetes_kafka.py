"""The Kafka of the Kubernetes manifests (compose/kubernetes/kafka/): each component renders with the stack, runs
three KRaft nodes (controller and broker) on persistent storage, keeps the stack's topics at three replicas with
min.insync.replicas 2, and every workload's bootstrap names the chosen cluster's Service, by a name the server
certificate holds. No cluster here: kustomize renders offline."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from admin.policy import KAFKA_ACLS
from admin.settings import AdminSettings, parse_topics
from common.topics import TOPIC_PARTITIONS
from scripts.runtime.secured import SERVER_HOSTS

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = ROOT / "compose" / "kubernetes"
STRIMZI, STATEFULSET = "kafka/strimzi", "kafka/statefulset"
NODES = 3
REPLICAS, MIN_IN_SYNC = 3, 2
# Strimzi's ACL vocabulary for admin/policy.py's grants.
STRIMZI_RESOURCES = {"topic": "topic", "group": "group", "transactional_id": "transactionalId"}


@pytest.fixture
def variant(render, tmp_path):
    """The stack rendered with `component` as its Kafka (None: no Kafka, the ConfigMap names yours), as
    {(kind, name): document}."""

    def rendered(component: str | None) -> dict[tuple[str, str], dict]:
        folder = tmp_path / (component or "none").replace("/", "-")
        shutil.copytree(MANIFEST_DIR, folder)
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        kustomization["components"] = [component] if component else []
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return {(doc["kind"], doc["metadata"]["name"]): doc for doc in render(folder)}

    return rendered


def bootstrap(documents: dict) -> str:
    return documents[("ConfigMap", "car-stream-ml-connections")]["data"]["KAFKA_BOOTSTRAP_SERVERS"]


def workloads(documents: dict) -> dict[str, dict]:
    return {name: doc for (kind, name), doc in documents.items() if kind in ("Deployment", "Job")}


def check_workloads_take_their_bootstrap_from_the_config_map(documents: dict) -> None:
    for name, workload in workloads(documents).items():
        spec = workload["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            own = [item for item in container.get("env", []) if item["name"] == "KAFKA_BOOTSTRAP_SERVERS"]
            sources = [item["configMapRef"]["name"] for item in container.get("envFrom", []) if "configMapRef" in item]
            assert not own and "car-stream-ml-connections" in sources, f"{name}/{container['name']}"


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def test_the_stack_names_strimzi_by_default(variant):
    """The recommended Kafka (README.md, "Kafka") is what `kubectl apply -k compose/kubernetes/` runs."""
    assert yaml.safe_load((MANIFEST_DIR / "kustomization.yaml").read_text())["components"] == [STRIMZI]
    readme = (MANIFEST_DIR / "README.md").read_text()
    assert f"components:\n  - {STRIMZI}\n" in readme and f"(`{STRIMZI}`, the default and the recommendation)" in readme


@pytest.mark.parametrize("component", [STRIMZI, STATEFULSET, None])
def test_each_variant_renders_and_labels_everything_as_part_of_the_stack(variant, component):
    documents = variant(component)
    for (kind, name), doc in documents.items():
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "car-stream-ml", f"{kind}/{name}"
    check_workloads_take_their_bootstrap_from_the_config_map(documents)
    kafka_kinds = {kind for kind, _ in documents if kind.startswith("Kafka")}
    assert (kafka_kinds == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}) == (component == STRIMZI)
    assert (("StatefulSet", "kafka") in documents) == (component == STATEFULSET)


def test_strimzi_runs_three_kraft_nodes_of_both_roles_on_claims(variant):
    documents = variant(STRIMZI)
    [(_, cluster)] = [key for key in documents if key[0] == "Kafka"]
    kafka = documents[("Kafka", cluster)]
    annotations = kafka["metadata"]["annotations"]
    assert annotations["strimzi.io/kraft"] == annotations["strimzi.io/node-pools"] == "enabled"
    [pool] = [doc for (kind, _), doc in documents.items() if kind == "KafkaNodePool"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert pool["spec"]["replicas"] == NODES and set(pool["spec"]["roles"]) == {"controller", "broker"}
    volumes = pool["spec"]["storage"]["volumes"]
    assert [volume["type"] for volume in volumes] == ["persistent-claim"] and volumes[0]["kraftMetadata"] == "shared"
    assert pool["metadata"]["annotations"]["strimzi.io/next-node-ids"] == f"[0-{NODES - 1}]"
    # The tensorflow-io reader needs Kafka 3.9.x or older (the main README).
    assert kafka["spec"]["kafka"]["version"].startswith("3.9.")
    config = kafka["spec"]["kafka"]["config"]
    assert (config["default.replication.factor"], config["min.insync.replicas"]) == (REPLICAS, MIN_IN_SYNC)
    assert config["offsets.topic.replication.factor"] == REPLICAS and config["auto.create.topics.enable"] is False


def test_strimzi_s_bootstrap_and_advertised_hosts_are_the_workloads_and_the_certificate_s(variant):
    """The workloads reach the listener by the bootstrap Service Strimzi makes (<cluster>-kafka-bootstrap), then
    each node by its advertised host; the stack's server certificate (scripts/runtime/secured.py) names each."""
    documents = variant(STRIMZI)
    [(_, cluster)] = [key for key in documents if key[0] == "Kafka"]
    kafka = documents[("Kafka", cluster)]["spec"]["kafka"]
    [pool] = [doc for (kind, _), doc in documents.items() if kind == "KafkaNodePool"]
    host, port = bootstrap(documents).split(":")
    assert host == f"{cluster}-kafka-bootstrap" and host in SERVER_HOSTS
    [listener] = [item for item in kafka["listeners"] if item["port"] == int(port)]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    certificate = listener["configuration"]["brokerCertChainAndKey"]
    assert (certificate["secretName"], certificate["certificate"]) == ("car-stream-ml-brokers", "server.crt")
    advertised = {item["broker"]: item["advertisedHost"] for item in listener["configuration"]["brokers"]}
    pods = f"{cluster}-{pool['metadata']['name']}"
    assert advertised == {node: f"{pods}-{node}.{cluster}-kafka-brokers" for node in range(NODES)}
    assert set(advertised.values()) <= set(SERVER_HOSTS)
    assert ("Job", "admin") not in documents, "the operator deletes the users and ACLs it does not hold"


def test_strimzi_keeps_every_topic_at_three_replicas_with_two_in_sync(variant):
    documents = variant(STRIMZI)
    [(_, cluster)] = [key for key in documents if key[0] == "Kafka"]
    topics = {name: doc for (kind, name), doc in documents.items() if kind == "KafkaTopic"}
    assert set(topics) == set(TOPIC_PARTITIONS)
    for name, topic in topics.items():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster, name
        spec = topic["spec"]
        assert (spec["partitions"], spec["replicas"]) == (TOPIC_PARTITIONS[name], REPLICAS), name
        assert int(spec["config"]["min.insync.replicas"]) == MIN_IN_SYNC, name


def test_strimzi_users_carry_the_workloads_passwords_and_admin_policy_s_acls(variant):
    """The user operator deletes what it does not hold: each service's KafkaUser holds exactly KAFKA_ACLS'
    grants, with the password of the Secret the workload logs in with; admin is the super user."""
    documents = variant(STRIMZI)
    [(_, cluster)] = [key for key in documents if key[0] == "Kafka"]
    users = {name: doc for (kind, name), doc in documents.items() if kind == "KafkaUser"}
    assert set(users) == {"admin", *KAFKA_ACLS}
    assert documents[("Kafka", cluster)]["spec"]["kafka"]["authorization"]["superUsers"] == ["admin"]
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster, name
        authentication = user["spec"]["authentication"]
        assert authentication["type"] == "scram-sha-512"
        secret = authentication["password"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": f"car-stream-ml-{name}", "key": "KAFKA_SASL_PASSWORD"}, name
        acls = {
            (acl["resource"]["type"], acl["resource"]["name"], acl["resource"]["patternType"], operation)
            for acl in user["spec"].get("authorization", {}).get("acls", [])
            for operation in acl["operations"]
        }
        policy = {
            (STRIMZI_RESOURCES[g.resource], g.name, "prefix" if g.prefixed else "literal", g.operation.capitalize())
            for g in KAFKA_ACLS.get(name, [])
        }
        assert acls == policy, name
    # Every workload's identity is a user of the cluster (the simulator's speaks MQTT only).
    for name, workload in workloads(documents).items():
        if name == "simulator":
            continue
        [container] = workload["spec"]["template"]["spec"]["containers"]
        for item in container["envFrom"]:
            if "secretRef" in item:
                assert item["secretRef"]["name"].removeprefix("car-stream-ml-") in users, name


def test_the_statefulset_is_a_quorum_of_three_named_by_its_headless_service(variant):
    documents = variant(STATEFULSET)
    statefulset = documents[("StatefulSet", "kafka")]
    spec = statefulset["spec"]
    node = properties(documents[("ConfigMap", "kafka-node")]["data"]["server.properties"])
    headless = documents[("Service", spec["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    # The voters are the pods by their stable names, ids the ordinals start.sh gives them.
    assert spec["replicas"] == NODES and spec["podManagementPolicy"] == "Parallel"
    voters = dict(voter.split("@") for voter in node["controller.quorum.voters"].split(","))
    controller_port = re.search(r"CONTROLLER://:(\d+)", node["listeners"]).group(1)
    assert voters == {
        str(ordinal): f"kafka-{ordinal}.{spec['serviceName']}:{controller_port}" for ordinal in range(spec["replicas"])
    }
    start = documents[("ConfigMap", "kafka-node")]["data"]["start.sh"]
    assert "id=${HOSTNAME##*-}" in start and 'echo "node.id=$id"' in start
    assert f"$HOSTNAME.{spec['serviceName']}:9092" in start
    assert {f"kafka-{ordinal}.{spec['serviceName']}" for ordinal in range(NODES)} <= set(SERVER_HOSTS)
    assert node["process.roles"] == "broker,controller"
    assert (int(node["default.replication.factor"]), int(node["min.insync.replicas"])) == (REPLICAS, MIN_IN_SYNC)
    assert int(node["offsets.topic.replication.factor"]) == REPLICAS
    # Each node's log on a claim of its own.
    [claim] = spec["volumeClaimTemplates"]
    [container] = spec["template"]["spec"]["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert node["log.dirs"].startswith(mount["mountPath"] + "/")
    budget = documents[("PodDisruptionBudget", "kafka")]["spec"]
    assert budget["maxUnavailable"] == NODES - MIN_IN_SYNC
    assert budget["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_the_statefulset_s_bootstrap_is_its_service_and_the_admin_job_makes_the_topics(variant):
    documents = variant(STATEFULSET)
    spec = documents[("StatefulSet", "kafka")]["spec"]
    host, port = bootstrap(documents).split(":")
    service = documents[("Service", host)]["spec"]
    assert host != spec["serviceName"] and host in SERVER_HOSTS
    assert service["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    [container] = spec["template"]["spec"]["containers"]
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}
    [service_port] = service["ports"]
    assert service_port["port"] == int(port) == ports[service_port["targetPort"]]
    assert ("Job", "admin") in documents, "users, topics and ACLs: python -m admin apply"
    # The stack's topics, every one: the Job names none, so admin's default, which is common/topics.py's.
    [admin] = documents[("Job", "admin")]["spec"]["template"]["spec"]["containers"]
    assert "ADMIN_TOPICS" not in {item["name"] for item in admin.get("env", [])}
    assert parse_topics(AdminSettings.model_fields["topics"].default) == TOPIC_PARTITIONS


def test_without_a_component_the_config_map_names_the_reader_s_kafka(variant):
    documents = variant(None)
    assert bootstrap(documents) == "kafka:9092"
    assert not {kind for kind, _ in documents if kind.startswith("Kafka") or kind == "StatefulSet"}
