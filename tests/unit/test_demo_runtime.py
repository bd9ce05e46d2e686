"""The demo's runtime option: local processes by default, as for `make up`; compose only when asked. Its serving
program: the Python predictor by default, the Java one when asked, and not in the secured mode yet."""

import subprocess
import sys

import pytest

from scripts.demo.pipeline import build_parser
from scripts.runtime.local import ROOT


def test_the_demo_runs_on_local_processes_unless_told_otherwise() -> None:
    assert build_parser().parse_args([]).runtime == "local"


@pytest.mark.parametrize("runtime", ["local", "compose", "external"])
def test_each_runtime_can_be_asked_for(runtime: str) -> None:
    assert build_parser().parse_args(["--runtime", runtime]).runtime == runtime


def test_auto_is_gone_so_that_a_docker_engine_never_picks_the_runtime(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--runtime", "auto"])
    assert "invalid choice: 'auto'" in capsys.readouterr().err


def test_the_python_predictor_serves_unless_the_java_program_is_asked_for() -> None:
    assert build_parser().parse_args([]).serving == "python"
    assert build_parser().parse_args(["--serving", "java"]).serving == "java"


def test_the_secured_demo_refuses_the_java_program_before_it_starts_anything() -> None:
    demo = [sys.executable, "-m", "scripts.demo", "--serving", "java", "--secure", "--plain"]
    refused = subprocess.run(demo, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: SERVING=java with SECURE=1 is not supported yet"), refused.stderr
