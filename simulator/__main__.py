"""python -m simulator: the car fleet simulator.

    python -m simulator [options]                     live: publish the fleet's readings over MQTT
    python -m simulator replay FILE.csv [options]     publish a recorded CSV, one reading per row
    python -m simulator offline --out FILE [options]  write the readings to a CSV or JSON-lines file, no MQTT

Every flag falls back to an environment variable ([env: NAME] in --help). See simulator/README.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from common.cli import add_settings_arguments, describe, settings_from_args
from common.lifecycle import run_main
from common.logs import setup_logging
from simulator.live import run_live
from simulator.offline import write_offline
from simulator.replay import run_replay
from simulator.reporting import RunSummary
from simulator.settings import LiveSettings, OfflineSettings, ReplaySettings

log = logging.getLogger("simulator")
MODES = __doc__.split("\n\n")[1]


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"modes:\n{MODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _report(summary: RunSummary, summary_file: Path | None) -> int:
    log.info("%s", summary.line())
    if summary_file is not None:
        summary.write(summary_file)
    return 0 if summary.unacknowledged == 0 else 1


def live_main(argv: list[str]) -> int:
    parser = _parser(
        "python -m simulator",
        "Simulate a fleet of cars and publish their sensor readings over MQTT, on topic "
        "vehicles/sensor/data/<car_id>, as JSON. Runs until --count or --duration is reached, or Ctrl-C.",
    )
    add_settings_arguments(parser, LiveSettings)
    settings = settings_from_args(LiveSettings, parser.parse_args(argv))
    log.info("live settings: %s", describe(settings))
    return _report(run_live(settings), settings.summary_file)


def replay_main(argv: list[str]) -> int:
    parser = _parser(
        "python -m simulator replay",
        "Publish a recorded CSV over MQTT, one reading per row. Layouts: the seed's "
        "(time,car,<18 sensors>[,failure_occurred]; time in epoch seconds) or the offline mode's.",
    )
    parser.add_argument("file", type=Path, help="the CSV file to publish")
    add_settings_arguments(parser, ReplaySettings)
    args = parser.parse_args(argv)
    settings = settings_from_args(ReplaySettings, args)
    log.info("replay settings: %s", describe(settings))
    return _report(run_replay(settings, args.file), settings.summary_file)


def offline_main(argv: list[str]) -> int:
    parser = _parser(
        "python -m simulator offline",
        "Write the fleet's readings to a file (CSV or JSON lines) without MQTT: training data and tests. "
        "The same seed gives the same file.",
    )
    add_settings_arguments(parser, OfflineSettings)
    settings = settings_from_args(OfflineSettings, parser.parse_args(argv))
    log.info("offline settings: %s", describe(settings))
    write_offline(settings)
    return 0


def dispatch(args: list[str]) -> int:
    """Run the mode that `args` name (logging already set up)."""
    if args and args[0] == "replay":
        return replay_main(args[1:])
    if args and args[0] == "offline":
        return offline_main(args[1:])
    return live_main(args)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    return dispatch(sys.argv[1:] if argv is None else argv)


def run() -> NoReturn:
    """The console script `car-simulator`: `python -m simulator`, with run_main's exit codes."""
    run_main(main)


if __name__ == "__main__":
    run()
