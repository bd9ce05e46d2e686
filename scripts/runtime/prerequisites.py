"""`make setup`'s first step: the OS programs the stack needs, installed with the OS's package manager when missing.

    python3 -m scripts.runtime.prerequisites --for demo   # Java 17+ with javac, Maven, Mosquitto (make demo, up, setup)
    python3 -m scripts.runtime.prerequisites --for test   # and mosquitto_pub, kcat, Chromium (make test)

Quiet when everything is there. Otherwise: Debian and Ubuntu install with apt-get, as root or through passwordless
sudo (`sudo -n`); macOS with Homebrew. Where it cannot install (no root, no passwordless sudo, no Homebrew, another
OS) it prints one line naming what to install and exits 2.

It never leaves a system service on the stack's ports: Debian starts and enables the Mosquitto service on 1883
when the package is installed. While it installs, a temporary /usr/sbin/policy-rc.d forbids starting any service
(only where none exists), and on a systemd machine the Mosquitto service it installed is then disabled and stopped,
which it says.

Standard library only: the system python3 runs it before .venv exists.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

MIN_JAVA = 17  # the schema registry (Apicurio 3) needs 17; Kafka 3.9 and Maven run on it; ml/streams is Java 17
SBIN = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")  # servers live there, often off a user's PATH
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
DENY_SERVICE_STARTS = "#!/bin/sh\n# Written by `make setup` while it installs packages: start no service.\nexit 101\n"


@dataclass(frozen=True)
class Tool:
    """A program the stack runs, and the packages that provide it."""

    name: str  # the command, as messages name it
    what: str  # for the one line that names what to install
    apt: tuple[str, ...]  # Debian/Ubuntu packages that provide it, in order of preference
    brew: tuple[str, ...] = ()  # `brew install` arguments
    folders: tuple[str, ...] = ()  # looked in beside PATH
    service: str | None = None  # the system service the package starts and enables on Debian


JAVA = Tool(
    "java",
    f"a Java {MIN_JAVA}+ runtime",
    ("openjdk-17-jre-headless", "openjdk-21-jre-headless", "default-jre-headless"),
    ("openjdk@17",),
    # Homebrew's openjdk@17 is keg-only: not on PATH, nor behind macOS's /usr/bin/java stub.
    ("/opt/homebrew/opt/openjdk@17/bin", "/usr/local/opt/openjdk@17/bin"),
)
# `make setup` compiles the Java serving program (ml/streams/) with Maven, which needs a JDK: a runtime has no javac.
JAVAC = Tool(
    "javac",
    f"a Java {MIN_JAVA}+ JDK (javac)",
    ("openjdk-17-jdk-headless", "openjdk-21-jdk-headless", "default-jdk-headless"),
    JAVA.brew,
    JAVA.folders,
)
MAVEN = Tool("mvn", "Apache Maven", ("maven",), ("maven",))
MOSQUITTO = Tool("mosquitto", "the Mosquitto MQTT broker", ("mosquitto",), ("mosquitto",), SBIN, service="mosquitto")
MOSQUITTO_PUB = Tool("mosquitto_pub", "Mosquitto's clients", ("mosquitto-clients",), ("mosquitto",))
KCAT = Tool("kcat", "kcat, a Kafka client", ("kcat", "kafkacat"), ("kcat",))
CHROMIUM = Tool("chromium", "Chromium (or set CHROMIUM to a browser)", ("chromium",), ("--cask", "chromium"))
DEBOOTSTRAP = Tool("debootstrap", "debootstrap (make images)", ("debootstrap",), (), SBIN)

TOOLS = {tool.name: tool for tool in (JAVA, JAVAC, MAVEN, MOSQUITTO, MOSQUITTO_PUB, KCAT, CHROMIUM, DEBOOTSTRAP)}
NEEDS = {
    # the local runtime (Kafka from Maven Central's jars, Mosquitto) and the Java serving program, built by setup
    "demo": (JAVA, JAVAC, MAVEN, MOSQUITTO),
    "test": (JAVA, JAVAC, MAVEN, MOSQUITTO, MOSQUITTO_PUB, KCAT, CHROMIUM),  # the tests' own clients and browser too
}


@dataclass(frozen=True)
class Host:
    """What decides how to install: the package manager, and whether this user may use it."""

    os: str  # "apt" (Debian, Ubuntu and their derivatives), "macos", or "other"
    root: bool = False
    sudo: bool = False  # `sudo -n true` succeeds: passwordless sudo
    brew: bool = False
    apt_packages: frozenset[str] | None = None  # packages apt can install; None: unknown (no package lists)


@dataclass(frozen=True)
class Plan:
    """How to get the missing tools: commands to run, or the one line to print when this host cannot."""

    missing: tuple[Tool, ...]
    packages: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    refusal: str | None = None
    privilege: tuple[str, ...] = ()  # the prefix that makes a command run as root: () or ("sudo", "-n")
    unavailable: tuple[Tool, ...] = ()  # no package of these in the host's apt sources


def apt_package(tool: Tool, known: frozenset[str] | None) -> str | None:
    """The first of the tool's packages that apt can install; the first one when apt's lists are unknown."""
    if known is None:
        return tool.apt[0]
    return next((package for package in tool.apt if package in known), None)


def one_line(missing: Sequence[Tool], command: str) -> str:
    return f"error: missing {', '.join(tool.name for tool in missing)}; install them: {command}"


def plan(missing: Sequence[Tool], host: Host) -> Plan:
    """Pure: which commands install `missing` on `host`, or the one line that names what to install."""
    missing = tuple(missing)
    if not missing:
        return Plan(())
    if host.os == "apt":
        chosen = [(tool, apt_package(tool, host.apt_packages)) for tool in missing]
        packages = tuple(dict.fromkeys(package for _, package in chosen if package))
        unavailable = tuple(tool for tool, package in chosen if not package)
        if not (host.root or host.sudo):
            command = f"sudo apt-get install {' '.join(packages)}" if packages else "as root"
            if unavailable:
                command += "; not in your apt sources: " + ", ".join(tool.what for tool in unavailable)
            return Plan(missing, packages, refusal=one_line(missing, command), unavailable=unavailable)
        privilege = () if host.root else ("sudo", "-n")
        install = (*privilege, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q")
        commands = ((*install, "--no-install-recommends", *packages),) if packages else ()
        return Plan(missing, packages, commands, privilege=privilege, unavailable=unavailable)
    # One formula can serve two tools (mosquitto and mosquitto_pub): each is named once.
    formulae = tuple(dict.fromkeys(tool.brew[0] for tool in missing if tool.brew and tool.brew[0] != "--cask"))
    casks = tuple(tool.brew[1] for tool in missing if tool.brew[:1] == ("--cask",))
    brew = [("brew", "install", *formulae)] if formulae else []
    brew += [("brew", "install", "--cask", *casks)] if casks else []
    if host.os == "macos" and host.brew:
        return Plan(missing, formulae + casks, tuple(brew))
    if host.os == "macos":
        return Plan(missing, refusal=one_line(missing, "with Homebrew, " + "; ".join(" ".join(c) for c in brew)))
    return Plan(missing, refusal=one_line(missing, "; ".join(tool.what for tool in missing)))


def find(tool: Tool) -> str | None:
    """The tool's path: on PATH, in its extra folders (JAVA_HOME/bin first for Java), or CHROMIUM for Chromium."""
    if tool is CHROMIUM:
        browser = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # what the dashboard's browser test launches
        return browser if os.access(browser, os.X_OK) else None
    folders = tool.folders
    if tool in (JAVA, JAVAC) and os.environ.get("JAVA_HOME"):
        folders = (str(Path(os.environ["JAVA_HOME"]) / "bin"), *folders)
    if tool in (JAVA, JAVAC):  # JAVA_HOME and Homebrew's keg before macOS's stubs in /usr/bin, which run no Java
        return shutil.which(tool.name, path=os.pathsep.join(folders)) or shutil.which(tool.name)
    return shutil.which(tool.name) or shutil.which(tool.name, path=os.pathsep.join(folders))


def java_major(version_output: str) -> int | None:
    """The major version in `java -version`'s or `javac -version`'s output: 8 for "1.8.0_402", 17 for "17.0.15" and
    for "javac 17.0.15"; None if there is none."""
    found = re.search(r'(?:version "|^javac )(\d+)(?:\.(\d+))?', version_output, re.MULTILINE)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_version(java: str) -> int | None:
    """The major version of `java` (or `javac`), None when it runs no Java (macOS's stub without a JDK exits 1)."""
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return java_major(result.stderr + result.stdout) if result.returncode == 0 else None


def present(tool: Tool) -> bool:
    path = find(tool)
    if tool in (JAVA, JAVAC):
        return path is not None and (java_version(path) or 0) >= MIN_JAVA
    return path is not None


def install_hint(tool: Tool) -> str:
    """How to install one tool by hand, for errors raised when it is missing after all."""
    brew = f", macOS `brew install {' '.join(tool.brew)}`" if tool.brew else ""
    return f"{tool.what}: Debian/Ubuntu `sudo apt-get install {tool.apt[0]}`{brew} (`make setup` installs it as root)"


def detect_host() -> Host:
    if platform.system() == "Darwin":
        return Host("macos", brew=shutil.which("brew") is not None)
    if platform.system() != "Linux" or not shutil.which("apt-get"):
        return Host("other")
    root = os.geteuid() == 0
    sudo = not root and shutil.which("sudo") is not None and run_quietly(("sudo", "-n", "true"))
    return Host("apt", root=root, sudo=sudo)


def say(line: str) -> None:
    print(line, flush=True)  # now, not when the buffer fills: an install takes a while and make shows it as it goes


def run_quietly(command: Sequence[str]) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


def apt_installable(packages: Sequence[str]) -> frozenset[str] | None:
    """Which of `packages` apt has a candidate for; None when apt has no package lists at all."""
    result = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True)
    known, current = set(), None
    for line in result.stdout.splitlines():
        if not line.startswith(" "):
            current = line.rstrip(":")
        elif line.strip().startswith("Candidate:") and line.split()[-1] != "(none)":
            known.add(current)
    lists = Path("/var/lib/apt/lists")
    return frozenset(known) if known or any(lists.glob("*_Packages*")) else None


def run(command: Sequence[str]) -> None:
    """Run an install command; its output is shown only when it fails."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"error: `{' '.join(command)}` failed (exit {result.returncode})")


@contextmanager
def services_held_back(privilege: tuple[str, ...]) -> Iterator[None]:
    """No package starts its service meanwhile: a policy-rc.d that forbids every start, unless one exists (an
    administrator's own policy stays as it is); removed afterwards."""
    if POLICY_RC_D.exists():
        yield
        return
    with tempfile.NamedTemporaryFile("w", suffix=".policy-rc.d") as policy:
        policy.write(DENY_SERVICE_STARTS)
        policy.flush()
        run((*privilege, "install", "-m", "0755", policy.name, str(POLICY_RC_D)))
    try:
        yield
    finally:
        run((*privilege, "rm", "-f", str(POLICY_RC_D)))


def disable_services(tools: Sequence[Tool], privilege: tuple[str, ...]) -> None:
    """On systemd, Debian enables the services of what it installs (policy-rc.d only stops the start): disable and
    stop them, so that none takes the stack's ports now or after the next boot."""
    if not Path("/run/systemd/system").is_dir():
        return
    for tool in tools:
        if tool.service and run_quietly((*privilege, "systemctl", "is-enabled", "--quiet", tool.service)):
            run((*privilege, "systemctl", "disable", "--now", "--quiet", tool.service))
            say(
                f"prerequisites: disabled and stopped the system service {tool.service} that the package installs, "
                f"so that the stack's own {tool.name} gets its port (`sudo systemctl enable --now {tool.service}` "
                "brings it back)"
            )


def ensure(tools: Sequence[Tool]) -> int:
    """Install what is missing of `tools`; 0 when all are there afterwards, 2 when this host cannot install."""
    missing = [tool for tool in tools if not present(tool)]
    if not missing:
        return 0
    host = detect_host()
    names = ", ".join(tool.name for tool in missing)
    started = time.monotonic()
    if host.os == "apt":
        if host.root or host.sudo:
            say(f"prerequisites: missing {names}; updating apt's package lists")
            run((*(() if host.root else ("sudo", "-n")), "apt-get", "update", "-q"))
        host = Host(host.os, host.root, host.sudo, apt_packages=apt_installable([p for t in missing for p in t.apt]))
    steps = plan(missing, host)
    if steps.refusal:
        print(steps.refusal, file=sys.stderr)
        return 2
    manager = "apt-get" if host.os == "apt" else "Homebrew"
    say(f"prerequisites: missing {names}; installing {' '.join(steps.packages)} with {manager}")
    with services_held_back(steps.privilege) if host.os == "apt" else nullcontext():
        for command in steps.commands:
            run(command)
    if host.os == "apt":
        disable_services(steps.missing, steps.privilege)
    still = [tool for tool in missing if not present(tool)]
    say(f"prerequisites: installed in {time.monotonic() - started:.0f} s")
    if still:
        print(f"error: still missing after the install: {'; '.join(install_hint(t) for t in still)}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m scripts.runtime.prerequisites",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--for",
        dest="purpose",
        choices=sorted(NEEDS),
        default="demo",
        help="demo: Java with javac, Maven, Mosquitto (make setup, up, demo); test: and mosquitto_pub, kcat, Chromium "
        "(make test) (default: demo)",
    )
    args = parser.parse_args(argv)
    return ensure(NEEDS[args.purpose])


if __name__ == "__main__":
    raise SystemExit(main())
