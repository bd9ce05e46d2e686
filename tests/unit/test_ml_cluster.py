"""How a training process learns its place in a cluster (ml/training/cluster.py), which partitions each worker
reads (ml/training/train.py), and the launcher's ports and exit reasons (ml/training/launcher.py)."""

from __future__ import annotations

import json
import socket

import pytest

from common.errors import ConfigError
from ml.source import PartitionRange, TopicRange
from ml.training.cluster import SINGLE, Cluster, cluster_from
from ml.training.launcher import _exit_reason, failure_report
from ml.training.train import car_key, worker_share


@pytest.fixture(autouse=True)
def no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)


def test_no_hosts_is_one_process():
    assert cluster_from(None, None, 1) == SINGLE


def test_an_explicit_host_list_and_index():
    cluster = cluster_from("a:2222, b:2222,c:2222", 2, 3)
    assert cluster == Cluster(("a:2222", "b:2222", "c:2222"), 2)
    assert not cluster.is_chief and cluster.size == 3 and cluster.name == "worker 2 of 3"


def test_an_index_template_stands_for_every_worker():
    cluster = cluster_from("trainer-{index}.trainer-workers:2222", 0, 3)
    assert cluster.hosts == tuple(f"trainer-{i}.trainer-workers:2222" for i in range(3))
    assert cluster.is_chief


@pytest.mark.parametrize("index", [None, 2, -1])
def test_an_index_outside_the_hosts_is_refused(index):
    with pytest.raises(ConfigError, match="worker index"):
        cluster_from("a:1,b:1", index, 2)


def test_tf_config_wins_over_the_settings(monkeypatch):
    config = {"cluster": {"worker": ["x:1", "y:1"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert cluster_from("a:1,b:1,c:1", 0, 3) == Cluster(("x:1", "y:1"), 1)
    assert json.loads(Cluster(("x:1", "y:1"), 1).tf_config()) == config


def test_tf_config_of_a_parameter_server_task_is_refused(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        cluster_from(None, None, 1)


def test_dns_discovery_finds_this_host_among_the_addresses():
    """This host's name resolves to its own address: a one-worker cluster found by DNS."""
    cluster = cluster_from(f"dns:{socket.gethostname()}:2222", None, 1)
    assert cluster.size == 1 and cluster.index == 0 and cluster.hosts[0].endswith(":2222")


def test_dns_discovery_needs_a_port():
    with pytest.raises(ConfigError, match="dns:SERVICE:PORT"):
        cluster_from("dns:trainer", None, 2)


def test_each_worker_reads_every_size_th_partition():
    topic_range = TopicRange("t", tuple(PartitionRange(p, 0, 10) for p in range(5)))
    shares = [[p.partition for p in worker_share(topic_range, Cluster(("a", "b"), i)).partitions] for i in range(2)]
    assert shares == [[0, 2, 4], [1, 3]]


def test_car_keys_are_stable_exact_in_float64_and_apart():
    keys = {car_key(f"car-{n:05d}") for n in range(100_000)}
    assert len(keys) == 100_000
    assert all(key < 2**48 and float(key) == key for key in keys)
    assert car_key("car-00001") == car_key("car-00001")


def test_exit_reasons_name_the_signal():
    assert _exit_reason(-9) == "was killed by SIGKILL"
    assert _exit_reason(2) == "exited with code 2"


def test_a_killed_worker_is_named_first_among_the_failed():
    """Its peers fail within the same look of the launcher: the report starts with the cause."""
    assert failure_report([(0, 1), (1, -9)]) == "worker 1 was killed by SIGKILL, worker 0 exited with code 1"
    assert failure_report([(2, 1), (0, 2)]) == "worker 0 exited with code 2, worker 2 exited with code 1"
