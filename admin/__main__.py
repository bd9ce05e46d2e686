"""python -m admin, or the console script `car-admin`: the secured mode's Kafka set-up (SECURITY.md)."""

from typing import NoReturn

from admin.cli import main
from common.lifecycle import run_main


def run() -> NoReturn:
    """The console script `car-admin`: `python -m admin`, with run_main's exit codes."""
    run_main(main)


if __name__ == "__main__":
    run()
