"""The champion/challenger panel: the model registry of the model folder (ml/registry.py) as the page shows it.

- the champion and the challenger side by side, each with its offline figures (its report at the operating point,
  read by dashboard/model.py) and its live figures from the judge's latest round (registry/judgement.json, written
  by `python -m ml judge`), shown beside a version only while that round judged the current pair;
- the gate's verdict and reason of that round, with its time and whether it judged the current pair;
- the last HISTORY_SHOWN decisions of decisions.jsonl, newest first.

The files are read through ml/registry.py (its format lives there), each only when its stat changed (mtime, size,
inode), the history from the end of its file: a refresh a second costs three stats. A file that does not read is a
problem shown in the panel and logged once per change of the file; it never breaks the page. Without a registry
folder the panel says the registry is not in use and how to adopt it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dashboard.model import ModelReports
from ml.registry import REGISTRY_DIR, Registry, RegistryError, read_aliases, read_judgement

log = logging.getLogger(__name__)

HISTORY_SHOWN = 20
ADOPT = (
    "python -m ml registry register VERSION, then python -m ml registry promote: the version in service becomes "
    "the champion, and a new version is served only once promoted"
)
# The judge's live figures shown per model (ml/live_eval.py LiveFigures), without the lead of every episode.
LIVE_FIGURES = ("matured_readings", "episodes", "warned", "median_lead_s", "false_alerts_per_car_hour", "pr_auc")
# A report's figures at the operating point shown per model (dashboard/model.py operating_point).
OFFLINE_FIGURES = ("episodes", "warned", "warned_share", "median_lead_s", "false_alerts_per_healthy_car_hour")


class Watched:
    """One file, read again only when its stat changes; its value and the problem reading it (None: none)."""

    def __init__(self, path: Path, read: Callable[[], Any]) -> None:
        self.path = path
        self.read = read
        self._stat: object = ()  # never a stat: the first look reads
        self.value: Any = None
        self.problem: str | None = None

    def refresh(self) -> None:
        try:
            info = os.stat(self.path)
            stat: object = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stat = None
        except OSError as exc:
            stat = str(exc)
        if stat == self._stat:
            return
        self._stat = stat
        try:
            self.value, self.problem = self.read(), None
        except (RegistryError, OSError, ValueError) as exc:
            self.value, self.problem = None, str(exc)
            log.warning("registry panel: %s", exc)  # once: the file is read again only when it changes


class RegistryPanel:
    """The panel's data (`describe`), from the registry files of `model_dir` and the versions' reports."""

    def __init__(self, model_dir: str | Path, reports: ModelReports) -> None:
        self.model_dir = Path(model_dir)
        self.reports = reports
        registry = Registry(self.model_dir)
        self.folder = registry.folder
        self.aliases = Watched(registry.aliases_file, lambda: read_aliases(self.model_dir))
        self.judgement = Watched(registry.judgement_file, lambda: read_judgement(self.model_dir))
        self.history = Watched(registry.decisions_file, lambda: registry.recent(HISTORY_SHOWN))
        self.lock = threading.Lock()  # pages refresh from several threads

    def describe(self) -> dict[str, Any]:
        if not self.folder.is_dir():
            return {
                "in_use": False,
                "note": f"the model registry is not in use (no {REGISTRY_DIR}/ in {self.model_dir}): the newest "
                f"version is served. To adopt it: {ADOPT}",
            }
        with self.lock:
            for watched in (self.aliases, self.judgement, self.history):
                watched.refresh()
            aliases, judgement, decisions = self.aliases.value, self.judgement.value, self.history.value or []
            problems = [w.problem for w in (self.aliases, self.judgement, self.history) if w.problem]
        champion = aliases.champion if aliases else None
        challenger = aliases.challenger if aliases else None
        current = judgement is not None and (judgement.champion, judgement.challenger) == (champion, challenger)
        figures = judgement.figures if current else {}
        return {
            "in_use": True,
            "problems": problems,
            "champion": self._side(champion, figures.get("champion")),
            "challenger": self._side(challenger, figures.get("challenger")),
            "judgement": _judgement(judgement, current),
            "history": [
                {key: getattr(d, key) for key in ("time", "action", "version", "previous_champion", "reason")}
                for d in reversed(decisions)
            ],
        }

    def _side(self, version: str | None, live: Any) -> dict[str, Any] | None:
        if version is None:
            return None
        model = self.reports.describe(version) or {}
        return {
            "version": version,
            **{key: model.get(key) for key in ("created_at", "threshold", "horizon", "window")},
            "offline": offline_figures(model.get("operating_point")),
            "live": {key: live.get(key) for key in LIVE_FIGURES} if isinstance(live, dict) else None,
        }


def offline_figures(point: dict[str, Any] | None) -> dict[str, Any] | None:
    """The served model's figures at the operating point of its report (the LSTM where the metadata names none)."""
    if not point or not point.get("models"):
        return None
    column = next((c for c in point["models"] if c["serving"]), point["models"][0])
    return {
        "model": column["label"],
        **{key: column.get(key) for key in OFFLINE_FIGURES},
        "pr_auc": point["comparison"]["pr_auc"].get(column["model"]),
    }


def _judgement(judgement: Any, current: bool) -> dict[str, Any] | None:
    if judgement is None:
        return None
    gate = judgement.figures.get("gate") if isinstance(judgement.figures.get("gate"), dict) else {}
    return {
        "time": judgement.time,
        "champion": judgement.champion,
        "challenger": judgement.challenger,
        "verdict": judgement.verdict,
        "reason": judgement.reason,
        "current": current,
        "horizon": gate.get("horizon"),
        "window": gate.get("window"),
        "rule": gate.get("rule"),
    }
