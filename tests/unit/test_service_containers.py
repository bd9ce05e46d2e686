"""How the demo's compose runtime runs a service in a container: the command, not a Docker engine (the compose
stack test and `make demo RUNTIME=compose` run it for real)."""

import os
from pathlib import Path

from scripts.runtime.services import Containers


def test_a_service_runs_in_the_foreground_on_the_stack_network_with_its_folders_and_environment(tmp_path: Path):
    runs = Containers("car-stream-ml:0.1.0", "car-stream-ml_default", [tmp_path / "logs"], "car-stream-ml-run1")
    command = runs.command("bridge", "bridge", ["--help"], {"MQTT_HOST": "mosquitto", "BRIDGE_CLIENT_ID": "b-1"}, {})
    assert command[1:3] == ["run", "--rm"] and "--detach" not in command and "-d" not in command
    assert "--init" in command  # SIGTERM reaches python through an init process, and the CLI passes it on
    assert "--name=car-stream-ml-run1-bridge" in command and "--network=car-stream-ml_default" in command
    assert f"--user={os.getuid()}:{os.getgid()}" in command
    assert f"--volume={tmp_path / 'logs'}:{tmp_path / 'logs'}" in command  # same path inside: arguments hold
    assert {"--env=MQTT_HOST=mosquitto", "--env=BRIDGE_CLIENT_ID=b-1"} <= set(command)
    image = command.index("car-stream-ml:0.1.0")
    assert command[image + 1 :] == ["python", "-m", "bridge", "--help"]


def test_a_published_port_reaches_the_host_on_loopback_only(tmp_path: Path):
    runs = Containers("car-stream-ml:0.1.0", "car-stream-ml_default", [], "car-stream-ml-run1")
    command = runs.command("dashboard", "dashboard", [], {}, {8050: 18050})
    assert "--publish=127.0.0.1:18050:8050" in command
    assert command.index("--publish=127.0.0.1:18050:8050") < command.index("car-stream-ml:0.1.0")


def test_another_image_runs_its_own_entrypoint_with_the_arguments(tmp_path: Path):
    """The Java serving program's image: `docker run ... <image> <args>`, no `python -m`."""
    runs = Containers("car-stream-ml:0.1.0", "car-stream-ml_default", [], "car-stream-ml-run1")
    command = runs.command("predictor", "", [], {"ML_TOPIC": "car-sensor"}, {}, image="car-stream-ml-streams:0.1.0")
    assert command[-1] == "car-stream-ml-streams:0.1.0" and "car-stream-ml:0.1.0" not in command
    assert "--name=car-stream-ml-run1-predictor" in command and "--env=ML_TOPIC=car-sensor" in command
