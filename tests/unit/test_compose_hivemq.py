"""The compose stack with HiveMQ CE in Mosquitto's place (compose/docker-compose.hivemq.yml on
compose/docker-compose.yml, MQTT_BROKER=hivemq): rendered by the compose CLI, which merges the files without a Docker
engine, and checked for the broker service running the image `make images` builds, its data on a volume of its own,
a health check, and every service reaching it where it reached Mosquitto; and without the override, Mosquitto as
before."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from common.defaults import MQTT_PORT
from scripts.runtime import compose, images
from scripts.runtime.hivemq import hivemq_xml
from scripts.testkit.compose_files import mounts, published_ports, settings

DOCKERFILE = images.IMAGES_DIR / "hivemq" / "Dockerfile"
BROKER = "mosquitto"  # the service's name, whichever broker runs behind it


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, compose_render) -> dict[str, dict[str, dict]]:
    """The stack as compose.command() layers it for each broker."""
    return {
        "mosquitto": compose_render(tmp_path_factory.mktemp("stack"), compose.COMPOSE_FILE),
        "hivemq": compose_render(tmp_path_factory.mktemp("stack"), compose.COMPOSE_FILE, compose.HIVEMQ_FILE),
    }


def image_home() -> str:
    """HiveMQ's home folder in the image: the --home its entry point passes."""
    return re.search(r"--home (\S+)", DOCKERFILE.read_text()).group(1)


def test_the_broker_service_runs_the_hivemq_image_with_its_data_on_a_volume(stacks):
    broker = stacks["hivemq"][BROKER]
    assert broker["image"] == images.HIVEMQ  # the default names what `make images` tags
    data = [mount for mount in mounts(broker) if mount["target"] == f"{image_home()}/data"]
    assert [mount["source"] for mount in data] == ["hivemq-data"]
    assert "hivemq" in broker["networks"]["default"]["aliases"]
    # The image's configuration listens where the services connect, on every interface of the container.
    listener = ET.fromstring(hivemq_xml(MQTT_PORT, bind_address="0.0.0.0")).find("listeners/tcp-listener")
    assert (listener.findtext("port"), listener.findtext("bind-address")) == (str(MQTT_PORT), "0.0.0.0")
    assert [target for _, _, target in published_ports(broker)] == [MQTT_PORT]


def test_the_health_check_is_a_publish_that_hivemq_acknowledges(stacks):
    check = stacks["hivemq"][BROKER]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "mosquitto_pub"]
    assert check[check.index("-p") + 1] == str(MQTT_PORT) and check[check.index("-q") + 1] == "1"
    assert "mosquitto-clients" in DOCKERFILE.read_text()  # the image has the client the check runs


def test_every_service_reaches_hivemq_where_it_reached_mosquitto(stacks):
    hivemq, mosquitto = stacks["hivemq"], stacks["mosquitto"]
    assert set(hivemq) == set(mosquitto), "the override adds no service and removes none"
    assert hivemq[BROKER]["hostname"] == BROKER
    users = {name for name, service in hivemq.items() if "MQTT_HOST" in settings(service)}
    assert {"bridge", "simulator"} <= users
    for name in users:
        env = settings(hivemq[name])
        assert (env["MQTT_HOST"], env["MQTT_PORT"]) == (BROKER, str(MQTT_PORT)), name
        assert env == settings(mosquitto[name]), name
        assert hivemq[name]["depends_on"] == mosquitto[name]["depends_on"], name
    waiting = [name for name, service in hivemq.items() if BROKER in (service.get("depends_on") or {})]
    assert {"bridge", "simulator"} <= set(waiting)


def test_without_the_override_the_broker_is_mosquitto(stacks):
    broker = stacks["mosquitto"][BROKER]
    assert "mosquitto" in broker["image"] and "hivemq" not in str(broker)
    assert broker["healthcheck"]["test"][1] == "mosquitto_sub"


def test_mqtt_broker_picks_the_files_of_each_compose_command(monkeypatch):
    """MQTT_BROKER=hivemq layers the override on every command, after the cluster's; the secured mode refuses it."""
    monkeypatch.setattr(compose, "compose_cli", lambda: ["compose"])
    monkeypatch.setenv("BROKERS", "3")
    for value, layered in (("", False), ("mosquitto", False), ("hivemq", True)):
        monkeypatch.setenv("MQTT_BROKER", value)
        files = [part for part in compose.command("ps") if part.endswith(".yml")]
        expected = [compose.COMPOSE_FILE, compose.CLUSTER_FILE, *([compose.HIVEMQ_FILE] if layered else [])]
        assert files == [str(layer) for layer in expected], value
    monkeypatch.setenv("SECURE_DIR", "/nonexistent/material")  # only named: command() reads no file
    with pytest.raises(compose.LocalRuntimeError, match="plain mode only"):
        compose.command("ps", secure=True)


def test_images_env_names_the_hivemq_image(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "ENV_FILE", tmp_path / "images.env")
    images.write_env_file()
    assert f"HIVEMQ_IMAGE={images.HIVEMQ}" in (tmp_path / "images.env").read_text().splitlines()
    assert "${HIVEMQ_IMAGE:-" in compose.HIVEMQ_FILE.read_text()
