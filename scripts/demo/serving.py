"""The program that serves the model in the demo: the Python predictor (`python -m ml predict`, the default) or the
Java serving program (ml/streams/, a Kafka Streams application, `--serving java`).

Both take the same ML_* settings, serve the same metrics (the dashboard's), /healthz and /readyz on ML_METRICS_PORT
and write the same predictions. The Java program's consumer group is its application id, which is also the prefix
of its changelog topics and transactional ids: the run's predictor group (ML_GROUP_ID) becomes that id, so that it
starts at the offsets the demo committed for the live fleet. In the secured mode its ACLs name one application id,
which the demo resets first (`reset_application`). Its state goes to the run's log folder. On the local
runtime it is `java -jar` (scripts/runtime/streams.py); on the compose runtime a container of its image.
"""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

from confluent_kafka.admin import AdminClient

from common.defaults import PREDICTOR_METRICS_PORT
from common.kafka import client_config
from common.settings import KafkaSecurity
from common.topics import STREAMS_APPLICATION_ID
from scripts.runtime import compose
from scripts.runtime.local import free_port
from scripts.runtime.services import Service, ServiceGroup, wait_for
from scripts.runtime.streams import java_serving_command

log = logging.getLogger(__name__)

PROGRAMS = ("python", "java")
DEFAULT_PROGRAM = "python"
DESCRIPTION = {
    "python": "the predictor (python -m ml predict, TensorFlow loads the model)",
    "java": "the Java serving program (Kafka Streams, TensorFlow Java loads the model)",
}


IDENTITY = {"python": "predictor", "java": "streams-predictor"}
"""The Kafka identity each program serves under in the secured mode (admin/policy.py)."""


def group_id(program: str, secure: bool, run_group: str) -> str:
    """The consumer group the program serves in: the run's own group, except for the Java program in the secured
    mode, whose ACLs name its one application id (the demo resets that id first: `reset_application`)."""
    return STREAMS_APPLICATION_ID if program == "java" and secure else run_group


def reset_application(bootstrap: str, security: KafkaSecurity, application_id: str) -> None:
    """What Kafka Streams' application reset does, as the operator: delete the application's internal topics (its
    changelogs: the windows and pending readings of an earlier run on this Kafka), so that it starts from the
    offsets the demo commits for its group and from no state. Its group's offsets are committed afterwards."""
    admin = AdminClient(client_config(bootstrap, security))
    internal = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{application_id}-")]
    for topic, future in admin.delete_topics(internal, operation_timeout=30).items() if internal else ():
        future.result()
        log.info("deleted %s, left by an earlier run of %s", topic, application_id)
    # topic deletion completes in the background: wait until the broker no longer lists them
    wait_for(lambda: not set(internal) & set(admin.list_topics(timeout=30).topics), 60, what="the deletions")


class Predictor:
    """The serving program of a run, started in `group` (local processes or containers)."""

    def __init__(self, program: str, group: ServiceGroup, state_dir: Path) -> None:
        self.program = program
        self.group = group
        self.state_dir = state_dir
        self.service: Service | None = None
        self._ready_url: str | None = None

    def start(self, **env: str) -> Service:
        """`env`: the Python predictor's settings (ML_GROUP_ID, ML_METRICS_PORT, ...) and identity."""
        if self.program == "python":
            self.service = self.group.start("predictor", "ml", "predict", **env)
            return self.service
        env |= {"ML_STREAMS_APPLICATION_ID": env["ML_GROUP_ID"], "ML_STREAMS_STATE_DIR": str(self.state_dir)}
        if self.group.containers is None:
            self._ready_url = f"http://127.0.0.1:{env['ML_METRICS_PORT']}/readyz"
            self.service = self.group.start("predictor", "", program=java_serving_command(), **env)
        else:  # its readiness, for this process: the metrics port published on a free one of the host
            port = free_port()
            self._ready_url = f"http://127.0.0.1:{port}/readyz"
            image = compose.streams_image()
            self.service = self.group.start("predictor", "", image=image, publish={PREDICTOR_METRICS_PORT: port}, **env)
        return self.service

    def wait_serving(self, timeout: float) -> None:
        """Until it holds its partitions: the Python predictor logs each partition it is assigned (its /readyz
        answers once it has subscribed, before); the Java program's /readyz answers 200 once Kafka Streams runs,
        its tasks assigned."""
        assert self.service is not None, "start() first"
        service = self.service
        if self.program == "python":
            text = "assigned partition"
            condition, what = lambda: any(text in line for line in service.log_lines()), f"it to log {text!r}"
        else:
            condition, what = lambda: ready(self._ready_url), f"{self._ready_url} to answer 200"
        wait_for(condition, timeout, what=f"{service.name}: {what} (see {service.log_file})", check=self.group.check)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:  # refused, or 503 (an HTTPError)
        return False
