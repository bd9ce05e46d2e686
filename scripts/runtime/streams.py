"""The Java serving program (ml/streams/, a Kafka Streams application): where `make setup` builds it, and the
command that runs it as a local process. Its settings are the Python predictor's environment variables
(ml/streams/README.md), so a caller sets them as it does for `python -m ml predict`."""

from __future__ import annotations

from common.errors import DependencyMissingError
from scripts.runtime.local import ROOT, require

STREAMS_DIR = ROOT / "ml" / "streams"
STREAMS_JAR = STREAMS_DIR / "target" / "car-failure-streams.jar"


def java_serving_command() -> list[str]:
    """`java -jar .../car-failure-streams.jar`, or a DependencyMissingError when the jar is not built."""
    if not STREAMS_JAR.is_file():
        raise DependencyMissingError(f"{STREAMS_JAR.relative_to(ROOT)} is not built: run `make setup`")
    return [require("java"), "-jar", str(STREAMS_JAR)]
