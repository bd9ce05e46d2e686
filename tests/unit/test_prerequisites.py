"""`make setup`'s OS programs: which commands install what is missing on each kind of host, or the one line that
names it; and the local runtime's "port taken" error, which names the process holding the port."""

import os
import socket
from pathlib import Path

import pytest

from common.errors import LocalRuntimeError
from scripts.runtime.local import MosquittoNode
from scripts.runtime.port_holder import port_taken_message, processes_named
from scripts.runtime.prerequisites import (
    CHROMIUM,
    JAVA,
    JAVAC,
    KCAT,
    MAVEN,
    MOSQUITTO,
    MOSQUITTO_PUB,
    NEEDS,
    Host,
    find,
    java_major,
    plan,
    present,
)

DEMO = NEEDS["demo"]
APT_INSTALL = ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--no-install-recommends")


def test_nothing_missing_plans_nothing() -> None:
    steps = plan([], Host("apt", root=True))
    assert steps.commands == () and steps.refusal is None


def test_the_demo_needs_the_runtime_and_a_jdk_and_the_tests_their_own_clients_and_browser_too() -> None:
    assert [tool.name for tool in NEEDS["demo"]] == ["java", "javac", "mvn", "mosquitto"]
    assert [tool.name for tool in NEEDS["test"]] == [
        "java", "javac", "mvn", "mosquitto", "mosquitto_pub", "kcat", "chromium"
    ]  # fmt: skip


def test_root_on_debian_installs_with_apt_get_directly() -> None:
    steps = plan(DEMO, Host("apt", root=True))
    packages = ("openjdk-17-jre-headless", "openjdk-17-jdk-headless", "maven", "mosquitto")
    assert steps.packages == packages
    assert steps.commands == ((*APT_INSTALL, *packages),)
    assert steps.privilege == () and steps.refusal is None


def test_passwordless_sudo_installs_through_sudo_without_a_prompt() -> None:
    steps = plan([MOSQUITTO], Host("apt", sudo=True))
    assert steps.commands == (("sudo", "-n", *APT_INSTALL, "mosquitto"),)
    assert steps.privilege == ("sudo", "-n")


def test_without_root_or_sudo_one_line_names_what_to_install() -> None:
    steps = plan(DEMO, Host("apt"))
    assert steps.commands == ()
    assert steps.refusal == (
        "error: missing java, javac, mvn, mosquitto; install them: "
        "sudo apt-get install openjdk-17-jre-headless openjdk-17-jdk-headless maven mosquitto"
    )


def test_a_runtime_without_a_compiler_gets_the_jdk() -> None:
    """A JRE runs Kafka but cannot build ml/streams: javac alone is missing, and the JDK package provides it."""
    steps = plan([JAVAC], Host("apt"))
    assert steps.refusal == "error: missing javac; install them: sudo apt-get install openjdk-17-jdk-headless"


def test_the_first_package_apt_can_install_is_chosen() -> None:
    # Debian 13 has no Java 17 but 21; older releases call kcat kafkacat.
    known = frozenset(
        {"openjdk-21-jre-headless", "openjdk-21-jdk-headless", "default-jre-headless", "kafkacat", "maven"}
    )
    steps = plan([JAVA, JAVAC, KCAT, MAVEN], Host("apt", root=True, apt_packages=known))
    assert steps.packages == ("openjdk-21-jre-headless", "openjdk-21-jdk-headless", "kafkacat", "maven")


def test_a_tool_apt_has_no_package_for_is_left_out_and_named() -> None:
    known = frozenset({"mosquitto-clients"})
    installing = plan([MOSQUITTO_PUB, CHROMIUM], Host("apt", root=True, apt_packages=known))
    assert installing.packages == ("mosquitto-clients",) and installing.unavailable == (CHROMIUM,)
    refused = plan([MOSQUITTO_PUB, CHROMIUM], Host("apt", apt_packages=known))
    assert refused.refusal is not None
    assert refused.refusal.endswith("sudo apt-get install mosquitto-clients; not in your apt sources: " + CHROMIUM.what)


def test_macos_installs_with_homebrew_each_formula_once() -> None:
    steps = plan(NEEDS["test"], Host("macos", brew=True))
    assert steps.commands == (
        ("brew", "install", "openjdk@17", "maven", "mosquitto", "kcat"),
        ("brew", "install", "--cask", "chromium"),
    )


def test_macos_without_homebrew_and_other_systems_get_one_line() -> None:
    mac = plan(DEMO, Host("macos"))
    assert mac.commands == ()
    assert mac.refusal == (
        "error: missing java, javac, mvn, mosquitto; install them: "
        "with Homebrew, brew install openjdk@17 maven mosquitto"
    )
    other = plan([MAVEN], Host("other"))
    assert other.commands == () and other.refusal == "error: missing mvn; install them: Apache Maven"


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("javac 17.0.15", 17),
        ("javac 1.8.0_402", 8),
        ("Picked up JAVA_TOOL_OPTIONS: -Xmx1g\njavac 21.0.2", 21),
        ("The operation couldn't be completed. Unable to locate a Java Runtime.", None),
    ],
)
def test_the_java_version_is_read_from_java_or_javac_dash_version(output: str, major: int | None) -> None:
    assert java_major(output) == major


def test_javac_is_found_in_java_home_first_and_must_be_17_or_newer(tmp_path, monkeypatch) -> None:
    """JAVA_HOME's javac before the one on PATH, and a javac older than 17 does not count: ml/streams is Java 17."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    javac = bin_dir / "javac"
    javac.write_text("#!/bin/sh\necho 'javac 11.0.22'\n")
    javac.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    assert find(JAVAC) == str(javac)
    assert not present(JAVAC)
    javac.write_text("#!/bin/sh\necho 'javac 17.0.15'\n")
    assert present(JAVAC)


@pytest.fixture
def held_port():
    """A port this test process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_the_port_taken_error_names_the_holder_and_how_to_move_the_stack(held_port: int) -> None:
    message = port_taken_message(held_port, "mosquitto", "MQTT_PORT=1884")
    assert f"port {held_port} (mosquitto) is taken by python" in message
    assert f"(pid {os.getpid()})" in message
    assert "`MQTT_PORT=1884 make up`" in message


def test_the_local_runtime_refuses_a_taken_port_with_that_error(held_port: int, tmp_path) -> None:
    with pytest.raises(LocalRuntimeError, match=f"taken by python.*pid {os.getpid()}.*MQTT_PORT=1884"):
        MosquittoNode(tmp_path, port=held_port).start()


def test_processes_are_found_by_name_where_ss_may_not_name_them() -> None:
    own_name = Path("/proc/self/comm").read_text().strip()
    assert os.getpid() in processes_named(own_name)
