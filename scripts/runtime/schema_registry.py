"""A real schema registry with the Confluent REST API, as a local process: Apicurio Registry.

    python -m scripts.runtime.schema_registry install   # resolve the registry from Maven Central (make setup does this)

Apicurio Registry serves the Confluent schema registry API (subjects, versions, schema ids, per-subject
compatibility levels and the compatibility check) under `/apis/ccompat/v7`, so the stack's registry clients
(confluent-kafka's SchemaRegistryClient, AvroSerializer, AvroDeserializer) talk to it unchanged; `url` is the
address to give them as SCHEMA_REGISTRY_URL. The distribution is the `all` tar.gz attached to
`io.apicurio:apicurio-registry-app` on Maven Central (a built Quarkus application), unpacked into the git-ignored
`.deps/`. Version 3.0.9 is the newest that runs on Java 17 (3.1 and later need Java 21).

With `kafka_bootstrap` the registry keeps its schemas in a Kafka topic (its `kafkasql` storage, as a Confluent
registry keeps them in `_schemas`), so it survives restarts; without, in an in-memory database.
Karapace, the Python alternative, is not published on PyPI.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.defaults import SCHEMA_REGISTRY_PORT
from common.errors import CarStreamError, LocalRuntimeError
from common.logs import setup_logging
from scripts.runtime.local import ROOT, ServerProcess, require

log = logging.getLogger(__name__)

APICURIO_VERSION = "3.0.9"
APICURIO_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
REGISTRY_HOME = ROOT / ".deps" / f"apicurio-registry-{APICURIO_VERSION}"
CCOMPAT_PATH = "/apis/ccompat/v7"


def install_schema_registry() -> Path:
    """Resolve and unpack the registry once; later calls return at once."""
    stamp = REGISTRY_HOME / ".complete"
    if stamp.exists():
        return REGISTRY_HOME
    mvn = require("mvn")
    log.info("resolving Apicurio Registry %s with Maven into %s", APICURIO_VERSION, REGISTRY_HOME)
    REGISTRY_HOME.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REGISTRY_HOME.parent, prefix=".registry-") as tmp:
        result = subprocess.run(
            [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={APICURIO_ARTIFACT}", f"-DoutputDirectory={tmp}"],
            capture_output=True,
            text=True,
        )
        archives = list(Path(tmp).glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise LocalRuntimeError(
                f"Maven could not resolve the schema registry {APICURIO_ARTIFACT}: {_first_error(result)}"
            )
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archives[0]) as archive:
            # the "data" filter (no absolute paths, no links out of the folder) where Python has it (3.11.4+)
            archive.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        shutil.rmtree(REGISTRY_HOME, ignore_errors=True)
        unpacked.rename(REGISTRY_HOME)
    if not list(REGISTRY_HOME.glob("*-runner.jar")):
        raise LocalRuntimeError(f"no *-runner.jar in {APICURIO_ARTIFACT}; see {REGISTRY_HOME}")
    stamp.touch()
    return REGISTRY_HOME


def _first_error(result: subprocess.CompletedProcess) -> str:
    """Maven's first [ERROR] line (the reason), without colour codes."""
    for line in re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr).splitlines():
        if line.startswith("[ERROR]") and line[7:].strip():
            return line[7:].strip()
    return f"exit status {result.returncode}, no archive"


class SchemaRegistryNode(ServerProcess):
    """Apicurio Registry on 127.0.0.1:`port`, storing its schemas in Kafka when `kafka_bootstrap` is given
    (in the topic `journal_topic`, and `<journal_topic>-snapshots`), in memory otherwise."""

    moved_by = "SCHEMA_REGISTRY_PORT=18081"

    def __init__(
        self,
        run_dir: Path,
        port: int = SCHEMA_REGISTRY_PORT,
        kafka_bootstrap: str | None = None,
        journal_topic: str = "_schemas-apicurio",
        heap: str = "256m",
    ) -> None:
        super().__init__("schema-registry", run_dir, port)
        self.kafka_bootstrap = kafka_bootstrap
        self.journal_topic = journal_topic
        self.heap = heap

    @property
    def url(self) -> str:
        """The Confluent-compatible API: the SCHEMA_REGISTRY_URL of the stack's clients."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    @property
    def topics(self) -> list[str]:
        """The Kafka topics the registry keeps its schemas in (none with in-memory storage)."""
        return [self.journal_topic, f"{self.journal_topic}-snapshots"] if self.kafka_bootstrap else []

    @property
    def work_dir(self) -> Path:
        return self.run_dir / "schema-registry"

    def prepare(self) -> None:
        (self.work_dir / "tmp").mkdir(parents=True, exist_ok=True)

    def properties(self) -> dict[str, str]:
        props = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": str(self.port),
            "apicurio.import.work-dir": str(self.work_dir),
            "apicurio.storage.snapshot.location": str(self.work_dir),
        }
        if self.kafka_bootstrap:
            props |= {
                "apicurio.storage.kind": "kafkasql",
                "apicurio.kafkasql.bootstrap.servers": self.kafka_bootstrap,
                "apicurio.kafkasql.topic": self.journal_topic,
                "apicurio.kafkasql.snapshots.topic": f"{self.journal_topic}-snapshots",
                "apicurio.kafkasql.consumer.poll.timeout": "500",
            }
        return props

    def command(self) -> list[str]:
        home = install_schema_registry()
        return [
            require("java"),
            f"-Xmx{self.heap}",
            "-XX:TieredStopAtLevel=1",  # C1 only: a faster start, and plenty for a test registry's load
            "-XX:+UseSerialGC",
            f"-Djava.io.tmpdir={self.work_dir / 'tmp'}",
            *(f"-D{key}={value}" for key, value in self.properties().items()),
            "-jar",
            str(next(home.glob("*-runner.jar"))),
        ]

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.runtime.schema_registry",
        description="Install the local schema registry (Apicurio Registry, Confluent-compatible API).",
    )
    parser.add_argument("action", choices=["install"], help="what to do")
    parser.parse_args(argv)
    setup_logging()
    started = time.monotonic()
    try:
        require("java")
        home = install_schema_registry()
    except CarStreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Apicurio Registry {APICURIO_VERSION} in {home} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
