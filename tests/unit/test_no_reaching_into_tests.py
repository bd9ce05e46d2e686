"""Helpers that several tests or the benchmark share live in the test kit (scripts/testkit/), fixtures in
conftest.py: no test module reaches into another test module, a conftest, or the benchmark, and neither the
benchmark nor the kit imports from tests/. Checked on the source with ast, so that it cannot come back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts.runtime.local import ROOT

TESTS = ROOT / "tests"
CHECKED = (TESTS, ROOT / "scripts" / "bench", ROOT / "scripts" / "testkit")
TEST_MODULES = {path.stem for path in TESTS.rglob("*.py")}
"""Every module name under tests/: pytest puts their folders on sys.path, so `import bridge_process` would work."""


def imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) of every import statement; relative imports as their dotted tail."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(("." * node.level + (node.module or ""), [alias.name for alias in node.names]))
    return found


def violations(path: Path, source: str) -> list[str]:
    """What `source` (the file at `path`) imports that it may not."""
    in_tests = TESTS in path.parents
    is_conftest = path.name == "conftest.py"
    wrong = []
    for module, names in imports(source):
        top = module.split(".")[0]
        if module.startswith("."):
            wrong.append(f"relative import {module}")
        elif top == "tests":
            helper = module.split(".")[-1]
            # conftest.py may use a helper module of tests/ that nothing else uses (tests/containers.py)
            if not (is_conftest and not helper.startswith("test_") and helper != "conftest"):
                wrong.append(f"{module}: a module of tests/")
        elif top in TEST_MODULES:
            wrong.append(f"{module}: a module of tests/ on pytest's path")
        elif in_tests and module.startswith("scripts.bench"):
            wrong.append(f"{module}: the benchmark (shared helpers belong in scripts/testkit)")
        private = [name for name in names if name.startswith("_")]
        if private and module.startswith(("scripts.bench", "scripts.testkit")):
            wrong.append(f"{module}: private {', '.join(private)} (make it public where it is shared)")
    return wrong


def checked_files() -> list[Path]:
    return sorted(path for folder in CHECKED for path in folder.rglob("*.py"))


def test_the_checked_folders_hold_the_tests_the_bench_and_the_kit() -> None:
    names = {str(path.relative_to(ROOT)) for path in checked_files()}
    assert {"tests/conftest.py", "tests/integration/test_ml_predict.py", "scripts/bench/e2e.py"} <= names
    assert "scripts/testkit/kafka.py" in names and len(names) > 60


def test_no_file_imports_another_test_module_a_conftest_or_the_bench_into_tests() -> None:
    found = {str(path.relative_to(ROOT)): violations(path, path.read_text()) for path in checked_files()}
    assert {path: wrong for path, wrong in found.items() if wrong} == {}


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("tests/integration/test_a.py", "from test_ml_predict import Stream"),
        ("tests/integration/test_a.py", "import test_ml_predict"),
        ("tests/integration/test_a.py", "from tests.conftest import unique"),
        ("tests/integration/test_a.py", "from conftest import unique"),
        ("tests/integration/test_a.py", "from containers import kafka_and_mosquitto"),
        ("tests/integration/test_a.py", "from scripts.bench.ml_read import write_readings"),
        ("tests/integration/test_a.py", "from . import helpers"),
        ("tests/conftest.py", "from tests.integration.test_e2e import read_topic"),
        ("scripts/bench/dashboard.py", "from tests.containers import image"),
        ("scripts/bench/dashboard.py", "from scripts.bench.e2e import _drain"),
    ],
)
def test_the_check_catches_each_kind_of_reaching_in(where: str, source: str) -> None:
    assert violations(ROOT / where, source), source


def test_the_check_lets_the_kit_fixtures_and_conftests_helper_through() -> None:
    allowed = "from scripts.testkit.kafka import read_to_end\nfrom scripts.bench.context import BenchContext"
    assert violations(ROOT / "scripts/bench/e2e.py", allowed) == []
    assert violations(ROOT / "tests/conftest.py", "from tests.containers import kafka_and_mosquitto") == []
    assert violations(ROOT / "tests/integration/test_a.py", "from scripts.testkit.bridge import start_bridge") == []


def test_no_two_test_modules_share_a_name() -> None:
    # pytest imports test modules by their name (rootdir, no packages): a second tests/*/test_x.py stops the whole
    # suite's collection ("import file mismatch"), as it did twice when a unit and an integration test met.
    stems: dict[str, list[str]] = {}
    for path in TESTS.rglob("test_*.py"):
        stems.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    assert not {stem: paths for stem, paths in stems.items() if len(paths) > 1}
