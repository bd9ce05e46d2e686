"""The dashboard's champion/challenger panel (dashboard/registry_panel.py) on a real registry in a folder: without one
it says how to adopt it; the champion alone; both with the judge's judgement beside them, until a decision makes
it an earlier pair's; the history newest first and bounded; files re-read only when they change; a corrupt file
shown as a problem and logged once, never an error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dashboard.model import ModelReports
from dashboard.registry_panel import HISTORY_SHOWN, RegistryPanel
from ml import artifact
from ml.registry import Registry

A, B, C = "20240101T000000Z", "20240102T000000Z", "20240103T000000Z"


def version(model_dir: Path, name: str, threshold: float, warned: int | None = None) -> None:
    """A version whose metadata reads and, given `warned`, a report at the operating point (ml/training/report.py's
    keys that dashboard/model.py reads)."""
    folder = model_dir / name
    (folder / "report").mkdir(parents=True)
    metadata = dict.fromkeys(artifact.REQUIRED_METADATA, {}) | {
        "window": 6, "horizon": 30, "features": ["a"], "threshold": threshold, "created_at": "2024-01-01T00:00:00Z",
        "model": {"type": "lstm"},
    }  # fmt: skip
    (folder / artifact.METADATA_FILE).write_text(json.dumps(metadata))
    if warned is None:
        return
    episodes = {
        "episodes": 17, "warned": warned, "warned_share": warned / 17, "median_lead_s": 235.0, "false_alerts": 1,
        "healthy_car_hours": 14.4, "false_alerts_per_healthy_car_hour": 0.07,
    }  # fmt: skip
    report = {
        "models": {
            "lstm": {"pr_auc": 0.618, "threshold": threshold, "episodes": episodes},
            "gbm": {"pr_auc": 0.55, "threshold": 0.8, "episodes": {**episodes, "warned": 1}},
        },
        "comparison": {"difference": 0.068, "low": -0.03, "high": 0.16, "resamples": 200},
    }
    (folder / "report" / "report.json").write_text(json.dumps(report))


def live(version_name: str, warned: int, pr_auc: float | None) -> dict:
    return {
        "model_version": version_name, "matured_readings": 7200, "unjudged": 0, "episodes": 12, "warned": warned,
        "lead_s": [100.0, 300.0], "median_lead_s": 200.0, "false_alerts": 2, "healthy_car_hours": 19.5,
        "false_alerts_per_car_hour": 0.1, "pr_auc": pr_auc,
    }  # fmt: skip


@pytest.fixture
def models(tmp_path: Path) -> Path:
    version(tmp_path, A, 0.6, warned=14)
    version(tmp_path, B, 0.7, warned=15)
    version(tmp_path, C, 0.5)  # no report
    return tmp_path


def panel_of(models: Path) -> RegistryPanel:
    return RegistryPanel(models, ModelReports(str(models)))


def test_without_a_registry_folder_the_panel_says_it_is_not_in_use_and_how_to_adopt_it(models) -> None:
    shown = panel_of(models).describe()
    assert shown["in_use"] is False
    assert "not in use" in shown["note"] and "python -m ml registry register VERSION" in shown["note"]
    assert panel_of(models / "missing").describe()["in_use"] is False


def test_the_champion_alone_with_its_offline_figures_and_the_history_newest_first(models) -> None:
    registry = Registry(models)
    panel = panel_of(models)
    registry.register_challenger(A, "the first model")
    registry.promote("adopted")
    shown = panel.describe()
    assert (shown["in_use"], shown["problems"], shown["challenger"], shown["judgement"]) == (True, [], None, None)
    champion = shown["champion"]
    assert (champion["version"], champion["threshold"], champion["horizon"], champion["window"]) == (A, 0.6, 30, 6)
    assert champion["offline"] == {
        "model": "the LSTM", "episodes": 17, "warned": 14, "warned_share": 14 / 17, "median_lead_s": 235.0,
        "false_alerts_per_healthy_car_hour": 0.07, "pr_auc": 0.618,
    }  # fmt: skip
    assert champion["live"] is None
    assert [(d["action"], d["version"], d["reason"]) for d in shown["history"]] == [
        ("promote", A, "adopted"),
        ("register", A, "the first model"),
    ]
    assert shown["history"][0]["time"] == registry.history()[-1].time


def test_both_versions_with_the_judges_figures_until_a_decision_makes_it_an_earlier_pair(models) -> None:
    registry = Registry(models)
    panel = panel_of(models)
    registry.register_challenger(A, "the first model")
    registry.promote("adopted")
    registry.register_challenger(C, "retrained")
    assert panel.describe()["challenger"]["offline"] is None  # C has no report
    gate = {"horizon": 30, "window": 6, "rule": {"min_episodes": 10, "pr_auc_margin": 0.02, "false_alert_margin": 0}}
    figures = {"champion": live(A, 9, 0.41), "challenger": live(C, 11, None), "gate": gate}
    written = registry.write_judgement(A, C, "wait", "wait: PR-AUC not known yet", figures)

    shown = panel.describe()
    assert (shown["champion"]["version"], shown["challenger"]["version"]) == (A, C)
    assert shown["champion"]["live"] == {
        "matured_readings": 7200, "episodes": 12, "warned": 9, "median_lead_s": 200.0,
        "false_alerts_per_car_hour": 0.1, "pr_auc": 0.41,
    }  # fmt: skip
    assert (shown["challenger"]["live"]["warned"], shown["challenger"]["live"]["pr_auc"]) == (11, None)
    assert shown["judgement"] == {
        "time": written.time, "champion": A, "challenger": C, "verdict": "wait", "reason": "wait: PR-AUC not known yet",
        "current": True, "horizon": 30, "window": 6, "rule": gate["rule"],
    }  # fmt: skip

    registry.reject("by hand")  # the judgement now describes the pair before
    shown = panel.describe()
    assert shown["challenger"] is None and shown["champion"]["live"] is None
    assert shown["judgement"]["current"] is False and shown["judgement"]["challenger"] == C
    assert [d["action"] for d in shown["history"]] == ["reject", "register", "promote", "register"]


def test_the_history_is_bounded_and_files_are_read_again_only_when_they_change(models) -> None:
    registry = Registry(models)
    for number in range(HISTORY_SHOWN):
        registry.register_challenger(B, f"try {number}")
        registry.reject(f"no {number}")
    panel = panel_of(models)
    reads: list[str] = []
    for name in ("aliases", "judgement", "history"):
        watched = getattr(panel, name)
        watched.read = lambda read=watched.read, name=name: reads.append(name) or read()
    first = panel.describe()
    assert len(first["history"]) == HISTORY_SHOWN and first["history"][0]["reason"] == f"no {HISTORY_SHOWN - 1}"
    assert first["history"][-1]["reason"] == f"try {HISTORY_SHOWN // 2}", "the newest 20 of 40"
    for _ in range(5):
        assert panel.describe() == first
    assert sorted(reads) == ["aliases", "history", "judgement"], "read once while nothing changed"
    registry.register_challenger(B, "again")
    assert panel.describe()["history"][0]["reason"] == "again"
    assert sorted(reads) == ["aliases", "aliases", "history", "history", "judgement"]


@pytest.mark.parametrize("name", ["aliases.json", "judgement.json", "decisions.jsonl"])
def test_a_corrupt_file_is_a_problem_in_the_panel_logged_once_and_never_an_error(models, caplog, name) -> None:
    registry = Registry(models)
    registry.register_challenger(A, "first")
    registry.promote("adopted")
    registry.write_judgement(A, B, "wait", "an earlier pair", {"champion": live(A, 1, 0.2)})
    path = registry.folder / name
    good = path.read_bytes()
    panel = panel_of(models)
    path.write_bytes(b'{"champion": "2024\nnot json\n')
    with caplog.at_level(logging.WARNING, logger="dashboard.registry_panel"):
        for _ in range(3):
            shown = panel.describe()
            assert shown["in_use"] is True and len(shown["problems"]) == 1
            assert str(path) in shown["problems"][0]
    assert sum(str(path) in record.getMessage() for record in caplog.records) == 1, "logged once per change"
    others = {"aliases.json": "champion", "judgement.json": "judgement", "decisions.jsonl": "history"}
    assert not shown[others[name]], "the corrupt file's part is left empty"
    assert shown["champion" if name != "aliases.json" else "history"], "the other files still show"
    path.write_bytes(good)
    assert panel.describe()["problems"] == []
