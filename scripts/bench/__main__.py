"""make bench: run every benchmark section against private servers, write one JSON file, print a table.

Sections live in scripts/bench/<name>.py, each with `run(ctx) -> dict`. Figures are measured, never asserted:
the machine is shared and noisy, so each section reports its ceiling or peer measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common.logs import setup_logging
from scripts.bench.context import BenchContext
from scripts.runtime.local import KafkaNode, MosquittoNode, free_port

log = logging.getLogger("bench")

SECTIONS = [
    "machine", "simulator", "bridge", "ml_read", "training", "distributed_training", "predictor", "java_serving", "e2e",
    "dashboard", "security",
]  # fmt: skip


def _is_records(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _shown(value: object) -> str:
    """Rates and seconds with one decimal; scores and shares (below 10) with three, so 0.55 and 0.60 differ;
    smaller ones with three significant digits."""
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    if not isinstance(value, float):
        return str(value)
    if 0 < abs(value) < 0.01:
        return f"{value:.3g}"  # seconds per reading
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def _records_table(title: str, records: list[dict]) -> Table:
    """A list of records (a section's runs) as a table of its own: a row per figure, a column per record."""
    table = Table(title=title, show_header=False)
    table.add_column("figure")
    for _ in records:
        table.add_column(justify="right")
    for name in records[0]:
        table.add_row(name, *(_shown(record.get(name)) for record in records))
    return table


def available_sections() -> list[str]:
    here = Path(__file__).resolve().parent
    return [name for name in SECTIONS if (here / f"{name}.py").exists()]


def other_commands_keys(path: Path) -> dict:
    """What other commands wrote into the same JSON (`make chaos`: "chaos"): kept; this run's sections replace
    every section of an earlier bench run."""
    try:
        earlier = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {k: v for k, v in earlier.items() if k not in SECTIONS} if isinstance(earlier, dict) else {}


def print_table(results: dict, console: Console) -> None:
    table = Table(title="make bench")
    table.add_column("section")
    table.add_column("figure")
    table.add_column("value", justify="right")
    records = []
    for section, figures in results.items():
        first = section  # the section's name on its first row only
        for key, value in figures.items():
            if _is_records(value):
                records.append(_records_table(f"{section}.{key}", value))
                value = "(table below)"
            for name, shown in value.items() if isinstance(value, dict) else [("", value)]:
                table.add_row(first, f"{key}.{name}" if name else key, _shown(shown))
                first = ""
    console.print(table)
    for each in records:
        console.print(each)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results.json", help="where to write the JSON (default: %(default)s)")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run these sections only (machine always runs)")
    parser.add_argument("--quick", action="store_true", help="short runs, for trying the harness out")
    args = parser.parse_args(argv)
    setup_logging()
    sections = [s for s in available_sections() if not args.only or s in args.only or s == "machine"]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        kafka = KafkaNode(work / "runtime", port=free_port(), controller_port=free_port(), heap="2g")
        mosquitto = MosquittoNode(work / "runtime", port=free_port())
        try:
            for node in (kafka, mosquitto):
                node.start()
                node.wait_ready()
            ctx = BenchContext(kafka, mosquitto, work, quick=args.quick, results=results)
            for name in sections:
                log.info("bench section %s ...", name)
                started = time.monotonic()
                try:
                    results[name] = importlib.import_module(f"scripts.bench.{name}").run(ctx)
                except Exception as exc:
                    log.error("section %s failed: %s\n%s", name, exc, traceback.format_exc())
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                log.info("bench section %s done in %.0f s", name, time.monotonic() - started)
        finally:
            kafka.stop()
            mosquitto.stop()
    Path(args.out).write_text(json.dumps({**other_commands_keys(Path(args.out)), **results}, indent=2) + "\n")
    print_table(results, Console())
    print(f"figures written to {args.out}")
    return 1 if any("error" in figures for figures in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
