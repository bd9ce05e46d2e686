"""The training cluster: which worker this process is, TensorFlow's MultiWorkerMirroredStrategy across the
workers, and the few numbers the chief (worker 0) hands the others.

A cluster is named the way TensorFlow names one, by TF_CONFIG (`{"cluster": {"worker": [...]}, "task": {...}}`), or
by this project's settings, from which TF_CONFIG is written: ML_WORKER_HOSTS (`host:port,...`, the same list on every
worker) and ML_WORKER_INDEX (this worker's place in it). A host with `{index}` in it stands for ML_WORKERS hosts,
the index counting from 0 (`trainer-{index}.trainer-workers:2222`: a Kubernetes indexed Job's pods behind a headless
Service). ML_WORKER_HOSTS=`dns:SERVICE:PORT` finds the workers as the addresses a DNS name resolves to, sorted, and
this worker as its own address among them: compose's replicas of one service, which know no index of their own.

Every exchange between workers is a collective of TensorFlow's own (an all-reduce through the strategy), so no
channel of ours stands beside the engine's. A worker that dies stops the others' next collective: the
coordination service reports its missed heartbeats after 10 s and the collective fails with UnavailableError.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import tensorflow as tf

from common.errors import CarStreamError, ConfigError
from common.lifecycle import interrupt_on_signals

log = logging.getLogger(__name__)

STRATEGY = "MultiWorkerMirroredStrategy"
ONE_PROCESS = "one process (the default strategy)"
DNS_PREFIX = "dns:"
DNS_WAIT_S = 120.0
INDEX_FIELD = "{index}"


class WorkerLost(CarStreamError):
    """Another worker of the cluster stopped (crashed, killed, preempted) while this one needed it."""


LOST_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.InternalError)
"""What a collective raises when a worker it waits for is gone."""


@dataclass(frozen=True)
class Cluster:
    hosts: tuple[str, ...]
    index: int

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def name(self) -> str:
        return f"worker {self.index} of {self.size}"

    def tf_config(self) -> str:
        return json.dumps({"cluster": {"worker": list(self.hosts)}, "task": {"type": "worker", "index": self.index}})


SINGLE = Cluster(("localhost",), 0)
"""One process, no cluster: the default strategy."""


def _dns_hosts(service: str, port: int, workers: int) -> tuple[tuple[str, ...], int]:
    """Every replica's address of a DNS name (waits until `workers` answer), sorted, and this host's place."""
    own = socket.gethostbyname(socket.gethostname())
    deadline = time.monotonic() + DNS_WAIT_S
    while True:
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(service, port, socket.AF_INET)})
        except socket.gaierror:
            addresses = []
        if len(addresses) >= workers and own in addresses:
            return tuple(f"{address}:{port}" for address in addresses[:workers]), addresses.index(own)
        if time.monotonic() > deadline:
            raise ConfigError(
                f"{service!r} resolves to {len(addresses)} of {workers} workers after {DNS_WAIT_S:.0f} s "
                f"({', '.join(addresses) or 'none'}; this worker is {own})"
            )
        time.sleep(1.0)


def cluster_from(hosts: str | None, index: int | None, workers: int) -> Cluster:
    """The cluster TF_CONFIG names, else the one the settings name, else SINGLE."""
    if "TF_CONFIG" in os.environ:
        config = json.loads(os.environ["TF_CONFIG"])
        listed = tuple(config.get("cluster", {}).get("worker", ()))
        task = config.get("task", {})
        if not listed or task.get("type") != "worker":
            raise ConfigError("TF_CONFIG must name a cluster of workers and this task as one of them")
        return Cluster(listed, int(task.get("index", 0)))
    if not hosts:
        return SINGLE
    if hosts.startswith(DNS_PREFIX):
        service, _, port = hosts[len(DNS_PREFIX) :].rpartition(":")
        if not service or not port.isdigit():
            raise ConfigError(f"worker hosts {hosts!r}: expected dns:SERVICE:PORT")
        return Cluster(*_dns_hosts(service, int(port), workers))
    if INDEX_FIELD in hosts:
        hosts = ",".join(hosts.replace(INDEX_FIELD, str(i)) for i in range(workers))
    listed = tuple(host.strip() for host in hosts.split(",") if host.strip())
    if index is None or not 0 <= index < len(listed):
        raise ConfigError(f"worker index {index} is not a place in the {len(listed)} worker hosts {hosts!r}")
    return Cluster(listed, index)


class Collective:
    """The strategy of a cluster (the default strategy for SINGLE), and the two exchanges training needs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        if cluster.size == 1:
            self.strategy = tf.distribute.get_strategy()
            return
        os.environ["TF_CONFIG"] = cluster.tf_config()
        log.info("joining the cluster %s as worker %d", ", ".join(cluster.hosts), cluster.index)
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        # The strategy's coordination agent takes SIGTERM for its preemption notifier, which nothing here uses:
        # a worker would ignore every polite stop (the launcher's, Kubernetes'). SIGTERM interrupts again.
        interrupt_on_signals()
        log.info("%d replicas in sync", self.strategy.num_replicas_in_sync)

    def total(self, value: np.ndarray | float) -> np.ndarray:
        """The sum of every worker's `value` (the same shape on each), as float64."""
        value = np.asarray(value, np.float64)
        if self.cluster.size == 1:
            return value
        try:
            per_replica = self.strategy.run(lambda: tf.constant(value))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
        except LOST_ERRORS as exc:
            raise WorkerLost(lost_message(self.cluster, exc)) from exc

    def from_chief(self, value: np.ndarray | float | None, shape: tuple[int, ...] = ()) -> np.ndarray:
        """The chief's `value` on every worker; the others pass None and the shape they expect. Exact for
        integers below 2**53 (float64)."""
        if self.cluster.is_chief:
            return self.total(value)
        return self.total(np.zeros(shape, np.float64))

    def array_from_chief(self, value: np.ndarray | None) -> np.ndarray:
        """A 1-D array of the chief's, of a length the others do not know."""
        length = int(self.from_chief(None if value is None else len(value)))
        return self.from_chief(value, (length,))


def leave(code: int) -> NoReturn:
    """End this worker of a cluster now, its output flushed. A normal exit runs TensorFlow's coordination-service
    shutdown, which waits for every worker at a barrier: measured in `make bench`, the processes of a run outlived
    its model by 9 s with two workers and 44 s with four, doing nothing. Everything is written by now: the
    artifact is complete (renamed when whole) and the Kafka readers are closed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


LOSS_SIGNS = ("heartbeat timeout", "Socket closed", "Connection reset", "Connection refused", "aborted")


def lost_message(cluster: Cluster, exc: Exception) -> str:
    """What the failed collective says about the lost worker: TensorFlow's message is pages of graph context
    around one telling line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = next((line for line in lines if any(sign in line for sign in LOSS_SIGNS)), type(exc).__name__)
    return (
        f"another worker of the {cluster.size} stopped mid-training ({said[:240]}); the run is abandoned and no "
        "model is written: start the training again"
    )
