"""`python -m ml drift` without Kafka: per-feature statistics, verdicts, and the report a person opens."""

import json

import numpy as np
import pytest

from common.errors import ConfigError
from ml import ood
from ml.__main__ import main
from ml.training.drift import DRIFT, OK, OUT_OF_RANGE, DriftSettings, compare, headline, psi
from ml.training.drift_report import write_drift_report

NAMES = ["steady", "other_units", "shifted"]


def data() -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    trained = np.column_stack([rng.normal(10, 1, 5000), rng.normal(12, 0.5, 5000), rng.normal(0, 1, 5000)])
    recent = np.column_stack([rng.normal(10, 1, 3000), rng.normal(1200, 50, 3000), rng.normal(1.0, 1, 3000)])
    metadata = {"version": "v1", "features": NAMES, ood.STATS_KEY: ood.training_statistics(trained, NAMES)}
    return metadata, ood.training_sample(trained, seed=0), recent


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    values = np.random.default_rng(1).normal(0, 1, 20_000)
    assert psi(values[:10_000], values[10_000:]) < 0.01
    assert 0.1 < psi(values[:10_000], values[10_000:] + 0.5) < psi(values[:10_000], values[10_000:] + 1.0)
    assert psi(np.repeat([28.0, 30.0, 32.0], 100), np.repeat([28.0, 30.0, 32.0], 50)) == pytest.approx(0)


def test_verdicts_tell_other_units_from_a_shift_from_nothing():
    metadata, sample, recent = data()
    features = {f.name: f for f in compare(metadata, sample, recent, DriftSettings())}
    assert {name: f.verdict for name, f in features.items()} == {
        "steady": OK,
        "other_units": OUT_OF_RANGE,
        "shifted": DRIFT,
    }
    assert features["other_units"].out_of_distribution == 1.0 and features["other_units"].ks == 1.0
    assert features["steady"].outside_range < 0.01 and features["steady"].psi < 0.05
    assert features["shifted"].out_of_distribution == 0.0 and features["shifted"].psi > 0.25
    assert features["other_units"].recent["mean"] == pytest.approx(1200, rel=0.01)
    assert headline(list(features.values())) == "of 3 features: 1 out of range (other_units); 1 drift (shifted)"


def test_a_model_without_statistics_cannot_be_compared():
    metadata, sample, recent = data()
    with pytest.raises(ConfigError, match="retrain it"):
        compare({"version": "old", "features": NAMES}, sample, recent, DriftSettings())
    with pytest.raises(ConfigError, match="retrain it"):
        compare(metadata, None, recent, DriftSettings())


def test_the_report_is_a_page_a_picture_and_numbers(tmp_path):
    metadata, sample, recent = data()
    features = compare(metadata, sample, recent, DriftSettings())
    context = {
        "created_at": "2026-01-01T00:00:00Z",
        "model": "v1",
        "model_path": "models/v1",
        "topic": "car-sensor",
        "offsets": {"0": [10, 3010]},
        "readings": 3000,
        "rejected": 0,
        "training_readings": 5000,
        "headline": headline(features),
        "settings": {"psi_threshold": 0.25, "ood_share": 0.01, "ood_threshold": 1.0},
        "features": [],
    }
    page = write_drift_report(tmp_path / "report", context, sample, recent, features)
    text = page.read_text()
    assert page.name == "drift.html" and '<tr class="out"><td>other_units</td><td>OUT OF RANGE</td>' in text
    assert '<tr class="drift"><td>shifted</td>' in text and '<img src="drift.png"' in text
    assert (page.parent / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((page.parent / "drift.json").read_text())["headline"] == context["headline"]


def test_drift_is_a_command_with_its_own_help(capsys):
    assert main(["--help"]) == 0
    assert "python -m ml drift" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["drift", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--recent-records" in out and "[env: ML_RECENT_RECORDS]" in out and "--psi-threshold" in out
