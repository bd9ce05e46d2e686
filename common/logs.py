"""Logging, configured once at each entry point."""

import logging
import os

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | None = None, tag: str | None = None) -> None:
    """Log to stderr with timestamps. LOG_LEVEL (default INFO) sets the level when none is given; `tag` starts
    every message (which of several processes logs: `worker 1 of 2`)."""
    shown = FORMAT.replace("%(message)s", f"[{tag}] %(message)s") if tag else FORMAT
    logging.basicConfig(level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(), format=shown, force=True)
    # librdkafka and TensorFlow have their own channels; keep Python's third-party chatter down.
    for noisy in ("urllib3", "matplotlib", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
