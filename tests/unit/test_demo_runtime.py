"""The demo's runtime option: local processes by default, as for `make up`; compose only when asked. Its serving
program: the Python predictor by default, the Java one when asked, in the secured mode as its own identity."""

from __future__ import annotations

import pytest

from admin.policy import KAFKA_ACLS
from common.topics import STREAMS_APPLICATION_ID
from scripts.demo import serving
from scripts.demo.pipeline import build_parser


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


def test_the_secured_demo_serves_the_java_program_in_its_one_application_id_as_its_own_identity() -> None:
    # its ACLs name one application id; the run's own group serves everywhere else
    assert serving.group_id("java", True, "car-stream-predictor-demo-x") == STREAMS_APPLICATION_ID
    assert serving.group_id("java", False, "car-stream-predictor-demo-x") == "car-stream-predictor-demo-x"
    assert serving.group_id("python", True, "car-stream-predictor-demo-x") == "car-stream-predictor-demo-x"
    assert (serving.IDENTITY["python"], serving.IDENTITY["java"]) == ("predictor", "streams-predictor")
    assert set(serving.IDENTITY.values()) <= set(KAFKA_ACLS)
