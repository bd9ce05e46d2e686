"""The Java serving program (ml/streams/, a Kafka Streams application): where `make setup` builds it, the command
that runs it as a local process, and its image. Its settings are the Python predictor's environment variables
(ml/streams/README.md), so a caller sets them as it does for `python -m ml predict`."""

from __future__ import annotations

from pathlib import Path

from common.errors import DependencyMissingError
from scripts.runtime.local import ROOT, require

STREAMS_DIR = ROOT / "ml" / "streams"
STREAMS_JAR = STREAMS_DIR / "target" / "car-failure-streams.jar"
# compose/images/streams/Dockerfile on that jar: `make images` builds it (STREAMS_IMAGE in compose/images.env), the
# compose file's predictor-java service and the demo's compose runtime run it.
STREAMS_IMAGE = "car-stream-ml-streams:0.1.0"


def built_jar() -> Path:
    """STREAMS_JAR (its lib/ beside it), or a DependencyMissingError when it is not built."""
    if not STREAMS_JAR.is_file():
        raise DependencyMissingError(f"{STREAMS_JAR.relative_to(ROOT)} is not built: run `make setup`")
    return STREAMS_JAR


def java_serving_command() -> list[str]:
    """`java -jar .../car-failure-streams.jar`, or a DependencyMissingError when the jar is not built."""
    return [require("java"), "-jar", str(built_jar())]
