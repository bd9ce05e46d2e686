"""The ml command line: dispatch, flags that fall back to ML_* variables, times and clear errors."""

import argparse

import pytest

from common.cli import add_settings_arguments, settings_from_args
from common.defaults import MODEL_DIR
from common.errors import ConfigError
from ml.__main__ import main
from ml.training.settings import SeedFormSettings, TrainSettings
from ml.training.train import parse_time


def test_usage_names_every_command(capsys):
    assert main(["--help"]) == 0
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "python -m ml train" in out and "python -m ml predict" in out and "START_OFFSET" in out


def test_flags_fall_back_to_ml_variables(monkeypatch):
    monkeypatch.setenv("ML_WINDOW", "30")
    monkeypatch.setenv("ML_READER", "confluent")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:19092")
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, TrainSettings)
    settings = settings_from_args(TrainSettings, parser.parse_args(["--horizon", "30"]))
    assert (settings.window, settings.horizon, settings.reader) == (30, 30, "confluent")
    assert settings.kafka_bootstrap_servers == "kafka:19092"
    assert settings.model_dir == MODEL_DIR
    assert SeedFormSettings().train_records == 1000 and SeedFormSettings().predict_records == 200
    # The seed form fits W and H to its records unless given (ml/training/seed_fit.py); ML_WINDOW gives W.
    assert (SeedFormSettings().window, SeedFormSettings().horizon) == (30, None)


def test_invalid_settings_are_one_clear_error(monkeypatch):
    monkeypatch.setenv("ML_READER", "kafka-python")
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, TrainSettings)
    with pytest.raises(ConfigError, match="--reader"):
        settings_from_args(TrainSettings, parser.parse_args([]))


def test_start_time_in_iso_or_epoch_milliseconds():
    assert parse_time("1704067200000") == 1_704_067_200_000
    assert parse_time("2024-01-01T00:00:00Z") == 1_704_067_200_000
    assert parse_time("2024-01-01T01:00:00+01:00") == 1_704_067_200_000
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_time("yesterday")
