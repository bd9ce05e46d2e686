"""python -m dashboard, or the console script `car-dashboard`: the fleet's page (dashboard/README.md)."""

from typing import NoReturn

from common.lifecycle import run_main
from dashboard.cli import main


def run() -> NoReturn:
    """The console script `car-dashboard`: `python -m dashboard`, with run_main's exit codes."""
    run_main(main)


if __name__ == "__main__":
    run()
