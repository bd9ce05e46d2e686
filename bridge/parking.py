"""Where a rejected message goes when the DLQ itself refuses it for good.

Kafka fails a DLQ delivery only for errors that retrying does not cure (the record too large for the topic, no
authorization, the topic gone and not re-created): the producer retries everything else itself. Holding such a
message unacknowledged would take one MQTT slot per bad message until the bridge stalls, so it is parked instead:
appended as one JSON line to a local file and flushed to disk, and only then acknowledged. The file is bounded in
bytes; when it is full (or cannot be written), the message stays unacknowledged and is offered to the DLQ again
later, with a throttled error in the log and the `bridge_dlq_held` gauge saying how many wait.

Each line: {"parked_at", "kafka_error", "headers": {name: text}, "value_base64"}; the headers are the DLQ
contract's (common/dlq.py), so a parked message can be produced to the DLQ by hand once it accepts it again.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from common import dlq

log = logging.getLogger(__name__)


class ParkingFile:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def park(self, value: bytes, headers: list[tuple[str, bytes]], kafka_error: str) -> bool:
        """Append the message durably; False when the file is full or cannot be written."""
        line = (
            json.dumps(
                {
                    "parked_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "kafka_error": kafka_error,
                    "headers": dlq.parse(headers),
                    "value_base64": base64.b64encode(value).decode(),
                }
            ).encode()
            + b"\n"
        )
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(line) > self.max_bytes:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())  # acknowledged only once it is on disk
        except OSError as exc:
            log.error("cannot write the parking file %s: %s", self.path, exc)
            return False
        return True
