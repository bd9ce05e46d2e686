"""The distribution as users install it: a console script per service, and a wheel that works outside the checkout.

The console scripts are checked in the installed distribution (`make setup`'s editable install): each one resolves
to the callable that `python -m <package>` runs, and answers `--help` with exit 0, from any working directory. The
wheel is built from a copy of the checkout and installed into a fresh virtual environment: it holds the product's
packages only (no scripts/, no tests/), finds its Avro schemas as package data, and parses and encodes a reading
with the working directory outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "car-stream-ml"
SERVICES = {
    "car-simulator": "simulator",
    "car-bridge": "bridge",
    "car-ml": "ml",
    "car-dashboard": "dashboard",
    "car-admin": "admin",
}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The product's packages are pyproject's to name (packages.find): a new one is one line there, and this test follows.
PRODUCT_PACKAGES = {name for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] if "." not in name}
CHECKOUT_ONLY = {"scripts", "tests"}  # the repository's tooling and tests, never installed
LOCAL_STATE = (".git", ".venv", ".deps", ".run", "artifacts", "build", "dist", "*.egg-info", "__pycache__", ".*cache")
BIN = Path(sys.executable).parent


def run(command: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `command` without PYTHONPATH (nothing may come from the checkout by accident); fail with its output."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    shown = " ".join(str(part) for part in command)[:200]
    assert done.returncode == 0, f"{shown} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def console_scripts() -> dict[str, str]:
    return {ep.name: ep.value for ep in distribution(DISTRIBUTION).entry_points if ep.group == "console_scripts"}


def test_pyproject_declares_one_console_script_per_service_and_the_installed_distribution_has_them():
    declared = PYPROJECT["project"]["scripts"]
    assert declared == {name: f"{package}.__main__:run" for name, package in SERVICES.items()}
    assert console_scripts() == declared, "the installed distribution is stale: run `make setup`"


def test_each_console_script_resolves_to_a_callable():
    for entry_point in distribution(DISTRIBUTION).entry_points:
        if entry_point.group == "console_scripts":
            assert callable(entry_point.load()), entry_point


@pytest.mark.parametrize("script", sorted(SERVICES))
def test_each_console_script_answers_help_like_python_m(script: str, tmp_path: Path):
    scripted = run([BIN / script, "--help"], cwd=tmp_path)
    assert "usage:" in scripted.stdout
    as_module = run([sys.executable, "-m", SERVICES[script], "--help"], cwd=ROOT)
    assert scripted.stdout == as_module.stdout


CHECK_INSTALLED = """
import json, sys
from importlib.metadata import distribution
from pathlib import Path

from bridge.validation import parse_reading
from common import schemas
from common.avro import AvroCodec
from simulator.fleet import generate_readings
from simulator.payload import encode_reading

reading = next(generate_readings(cars=1, readings_per_car=1))
record = parse_reading(reading["car_id"], encode_reading(reading), max_bytes=65536)
codec = AvroCodec(schemas.READING, "car-sensor")
files = distribution("car-stream-ml").files
print(json.dumps({
    "common_from": schemas.__file__,
    "schemas_from": str(schemas.SCHEMA_FILES),
    "schema_files": sorted(str(f) for f in files if f.suffix == ".avsc"),
    "top_level": sorted({f.parts[0] for f in files if not f.parts[0].startswith("..")}),
    "previous_versions": schemas.previous_versions(schemas.READING),
    "sensor_fields": len(schemas.SENSOR_FIELDS),
    "round_trip": codec.decode(codec.encode(record)) == record,
    "cwd": str(Path.cwd()),
    "path": sys.path,
}))
"""


def test_the_wheel_carries_its_schemas_and_works_outside_the_checkout(tmp_path: Path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LOCAL_STATE))
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", wheels, source], cwd=tmp_path)
    (wheel,) = wheels.glob("car_stream_ml-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {"common", "schemas", "simulator", "bridge", "ml", "dashboard"} <= PRODUCT_PACKAGES
    assert not PRODUCT_PACKAGES & CHECKOUT_ONLY
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == PRODUCT_PACKAGES
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    venv_python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", venv_python, "install", "-q", "--no-deps", wheel], cwd=tmp_path)
    site = Path(
        run([venv_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).stdout.strip()
    )
    # The dependencies (TensorFlow and the rest) from this environment, behind the wheel's own packages: a plain path
    # in a .pth file, so this environment's editable-install finder is not loaded.
    dependencies = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "zz_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -I: no PYTHONPATH, no working directory on sys.path; what imports must come from the installed wheel.
    found = json.loads(run([venv_python, "-I", "-c", CHECK_INSTALLED], cwd=elsewhere).stdout)
    assert Path(found["common_from"]) == site / "common" / "schemas.py", found
    assert Path(found["schemas_from"]) == site / "schemas", found
    assert found["schema_files"] == [
        "schemas/car_failure_prediction.avsc",
        "schemas/car_sensor_reading.avsc",
        "schemas/previous/car_failure_prediction.v1.avsc",
        "schemas/previous/car_failure_prediction.v2.avsc",
        "schemas/previous/car_sensor_reading.v1.avsc",
        "schemas/previous/car_sensor_reading.v2.avsc",
    ]
    assert set(found["top_level"]) == PRODUCT_PACKAGES | {wheel.name.split("-py3")[0] + ".dist-info"}
    assert found["previous_versions"] == ["v1", "v2"] and found["sensor_fields"] == 22 and found["round_trip"]
    assert str(ROOT) not in found["path"] and found["cwd"] == str(elsewhere)
    for script in SERVICES:
        assert "usage:" in run([venv / "bin" / script, "--help"], cwd=elsewhere).stdout
