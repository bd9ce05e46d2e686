"""The demo's runtime option: local processes by default, as for `make up`; compose only when asked."""

import pytest

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
