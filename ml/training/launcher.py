"""`python -m ml train --workers N` on one machine: N worker processes, a cluster on loopback ports.

Each worker is `python -m ml train` itself with ML_WORKER_HOSTS and ML_WORKER_INDEX set (ml/training/cluster.py);
worker 0, the chief, prints the artifact's path. The run succeeds when every worker exits 0. When one fails or is
killed, the others are stopped at once (they would fail by themselves at their next collective, after the
coordination service's 10 s heartbeat timeout) and the run exits 1: the chief writes the artifact only after the
last step, into a staging folder renamed when complete (ml/artifact.py), so a run cut short leaves no model.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from common.lifecycle import EXIT_FAILED, EXIT_INTERRUPTED
from common.ports import free_port

log = logging.getLogger(__name__)

POLL_S = 0.2
STOP_GRACE_S = 15.0
PR_SET_PDEATHSIG = 1
LAUNCHER_PID = "ML_TRAIN_LAUNCHER_PID"


def follow_launcher() -> None:
    """In a worker the launcher started: SIGTERM when the launcher dies, even by SIGKILL (Linux's parent-death
    signal), so that no worker is left waiting for a cluster that is gone. Set by the worker itself (a preexec_fn
    in the launcher, which has TensorFlow's threads, could deadlock the fork); a launcher already gone ends it."""
    launcher = os.environ.get(LAUNCHER_PID)
    if launcher is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(launcher):
        raise SystemExit(EXIT_INTERRUPTED)


def _exit_reason(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def failure_report(failed: list[tuple[int, int]]) -> str:
    """The failed workers, (index, exit code) each, those killed by a signal first: a killed worker's peers fail
    at once, and by the next look the launcher may see them all; the killed one is the cause."""
    ordered = sorted(failed, key=lambda failure: (failure[1] > 0, failure[0]))
    return ", ".join(f"worker {index} {_exit_reason(code)}" for index, code in ordered)


def _stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def launch_local_workers(count: int, python_args: list[str]) -> int:
    """Run `python <python_args>` as `count` workers of one cluster; 0 when all succeed, else EXIT_FAILED."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in (free_port() for _ in range(count)))
    log.info("starting %d training workers on %s", count, hosts)
    workers = []
    for index in range(count):
        env = {**os.environ, "ML_WORKER_HOSTS": hosts, "ML_WORKER_INDEX": str(index), LAUNCHER_PID: str(os.getpid())}
        env.pop("TF_CONFIG", None)
        workers.append(subprocess.Popen([sys.executable, *python_args], env=env))
    try:
        while True:
            codes = [worker.poll() for worker in workers]
            failed = [(index, code) for index, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                log.error("training %s: stopping the other workers; no model was written", failure_report(failed))
                _stop(workers)
                return EXIT_FAILED
            if all(code == 0 for code in codes):
                log.info("all %d training workers finished", count)
                return 0
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        log.info("interrupted: stopping the training workers")
        _stop(workers)
        return EXIT_INTERRUPTED
