"""python -m bridge, or the console script `car-bridge`: MQTT to Kafka (bridge/README.md)."""

from typing import NoReturn

from bridge.app import main
from common.lifecycle import run_main


def run() -> NoReturn:
    """The console script `car-bridge`: `python -m bridge`, with run_main's exit codes."""
    run_main(main)


if __name__ == "__main__":
    run()
