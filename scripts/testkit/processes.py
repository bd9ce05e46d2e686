"""Processes seen through /proc: a process's children, and which training worker a child of `python -m ml train
--workers N` is (the launcher gives each its ML_WORKER_INDEX). For the tests and the bench that kill or measure
the workers of a run."""

from __future__ import annotations

from pathlib import Path

WORKER_INDEX = b"ML_WORKER_INDEX="


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the field after the state: the parent's pid
            found.append(int(entry.name))
    return found


def worker_index(pid: int) -> int | None:
    """ML_WORKER_INDEX of a launched training worker (None before its exec, or for any other process)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    value = next((item[len(WORKER_INDEX) :] for item in environ if item.startswith(WORKER_INDEX)), None)
    return int(value) if value is not None else None
