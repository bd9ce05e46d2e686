"""`make images`: build, without any image registry, every image the compose stack and the container tests need.

Users with Docker Hub access do not need this: the compose file defaults to the official images (apache/kafka,
eclipse-mosquitto, apicurio/apicurio-registry, python:3.11-slim-bookworm). Where no image can be pulled, this
builds equivalents from what the host's package sources and Maven Central provide:

- a Debian bookworm base from the host's apt mirror (`debootstrap`, then `docker import`);
- Kafka from the local runtime's Maven Central jars (scripts/runtime/kafka/pom.xml) and a JRE from Debian;
- Mosquitto and Python 3.11 from Debian's packages;
- Apicurio Registry from its Maven Central artifact (scripts/runtime/schema_registry.py);
- the services from the repository's Dockerfile on that Python base;
- the Java serving program from the jar and lib/ that `make setup` built (ml/streams/target/) and a JRE from Debian;
- HiveMQ CE embedded (MQTT_BROKER=hivemq) from the jar and lib/ that `make setup` built
  (scripts/runtime/hivemq/target/), the configuration of scripts/runtime/hivemq.py, and a JRE from Debian.

It then writes compose/images.env, which `make` passes to compose and the container tests read, naming these
images. Built once: the base is reused when present and Docker's layer cache makes a second run take seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.defaults import MQTT_PORT
from common.errors import DependencyMissingError, LocalRuntimeError
from common.logs import setup_logging
from scripts.runtime.hivemq import HIVEMQ_VERSION, build_hivemq, hivemq_xml
from scripts.runtime.local import ROOT, install_kafka_jars, require
from scripts.runtime.schema_registry import install_schema_registry
from scripts.runtime.streams import STREAMS_IMAGE, built_jar

log = logging.getLogger("images")

IMAGES_DIR = ROOT / "compose" / "images"
ENV_FILE = ROOT / "compose" / "images.env"
PREFIX = "car-stream-ml"
BASE = f"{PREFIX}/debian:bookworm"
PYTHON = f"{PREFIX}/python:3.11"
KAFKA = f"{PREFIX}/kafka:3.9.2"
MOSQUITTO = f"{PREFIX}/mosquitto:bookworm"
REGISTRY = f"{PREFIX}/apicurio-registry:3.0.9"
HIVEMQ = f"{PREFIX}/hivemq:{HIVEMQ_VERSION}"
APP = "car-stream-ml:0.1.0"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def docker_cli() -> str:
    """A docker CLI that builds with BuildKit (build secrets): one with the buildx plugin, or one older than 23.0,
    whose builder is built in. The first such `docker` on PATH; DOCKER_CLI names one explicitly."""
    if os.environ.get("DOCKER_CLI"):
        return os.environ["DOCKER_CLI"]
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        cli = Path(folder) / "docker"
        if not os.access(cli, os.X_OK):
            continue
        if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
            return str(cli)
        version = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        major = version.stdout.strip().split(".")[0]
        if major.isdigit() and int(major) < 23:
            return str(cli)
    raise LocalRuntimeError(
        "no docker CLI that can build with BuildKit: install the buildx plugin, or Debian's docker.io (its CLI "
        "has the builder built in), or name one with DOCKER_CLI"
    )


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([docker_cli(), *args], check=True, **kwargs)


def image_exists(name: str) -> bool:
    return subprocess.run([docker_cli(), "image", "inspect", name], capture_output=True).returncode == 0


def apt_mirror() -> str:
    """The host's Debian mirror (the first URIs of its apt sources): the base gets the packages the host gets."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines() if APT_SOURCES[0].exists() else []:
        parts = line.split()
        if parts[:1] == ["deb"]:
            return next(part for part in parts[1:] if "://" in part)
    raise LocalRuntimeError("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources")


def build_base() -> None:
    """debootstrap a minimal bookworm with the host's apt sources, and import it as an image."""
    if image_exists(BASE):
        log.info("%s: present, reused", BASE)
        return
    debootstrap = require("debootstrap")
    with tempfile.TemporaryDirectory(prefix="rootfs-") as rootfs:
        log.info("%s: debootstrap bookworm (about a minute)", BASE)
        subprocess.run(
            [debootstrap, "--variant=minbase", "bookworm", rootfs, apt_mirror()], check=True, capture_output=True
        )
        shutil.rmtree(Path(rootfs) / "etc/apt/sources.list.d", ignore_errors=True)
        (Path(rootfs) / "etc/apt/sources.list").unlink(missing_ok=True)
        for source in APT_SOURCES:
            if source.is_dir():
                shutil.copytree(source, Path(rootfs) / "etc/apt/sources.list.d", dirs_exist_ok=True)
            elif source.exists():
                shutil.copy(source, Path(rootfs) / "etc/apt/sources.list")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (Path(rootfs) / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        docker("import", "--change", 'CMD ["bash"]', "-", BASE, stdin=tar.stdout, capture_output=True)
        if tar.wait() != 0:
            raise LocalRuntimeError("tar of the debootstrapped root file system failed")


def build(tag: str, context: Path, dockerfile: Path | None = None, **build_args: str) -> None:
    started = time.monotonic()
    args = ["build", "--quiet", "-t", tag, *(f"--build-arg={k}={v}" for k, v in build_args.items())]
    if dockerfile:
        args += ["-f", str(dockerfile)]
    pip_cert = pip_certificate()
    if pip_cert:
        args += ["--secret", f"id=pip_cert,src={pip_cert}"]
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    docker(*args, str(context), env=env, capture_output=True)
    log.info("%s: built in %.0f s", tag, time.monotonic() - started)


def pip_certificate() -> str | None:
    """The CA bundle pip is configured with on this host (PIP_CERT or pip's config), if any."""
    cert = os.environ.get("PIP_CERT")
    if not cert:
        found = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True
        )
        cert = found.stdout.strip() if found.returncode == 0 else None
    return cert if cert and Path(cert).is_file() else None


def build_with_files(tag: str, name: str, files: dict[str, Path]) -> None:
    """Build compose/images/<name>/ with extra files or folders (name in the context -> path here) beside it."""
    with tempfile.TemporaryDirectory(prefix=f"{name}-context-") as context:
        shutil.copytree(IMAGES_DIR / name, context, dirs_exist_ok=True)
        for target, source in files.items():
            if source.is_dir():
                shutil.copytree(source, Path(context) / target, copy_function=os.link)
            else:
                os.link(source, Path(context) / target)
        build(tag, Path(context), BASE_IMAGE=BASE)


def write_env_file() -> None:
    ENV_FILE.write_text(
        "# Written by `make images`: the compose stack and the container tests use these locally built images.\n"
        f"KAFKA_IMAGE={KAFKA}\nMOSQUITTO_IMAGE={MOSQUITTO}\nSCHEMA_REGISTRY_IMAGE={REGISTRY}\n"
        f"PYTHON_IMAGE={PYTHON}\nAPP_IMAGE={APP}\nSTREAMS_IMAGE={STREAMS_IMAGE}\nHIVEMQ_IMAGE={HIVEMQ}\n"
    )


def build_all() -> None:
    build_base()
    build(PYTHON, IMAGES_DIR / "python", BASE_IMAGE=BASE)
    build(MOSQUITTO, IMAGES_DIR / "mosquitto", BASE_IMAGE=BASE)
    build_with_files(KAFKA, "kafka", {"libs": install_kafka_jars()})
    build_with_files(REGISTRY, "registry", {"app": install_schema_registry()})
    build(APP, ROOT, ROOT / "Dockerfile", PYTHON_IMAGE=PYTHON)
    jar = built_jar()
    build_with_files(STREAMS_IMAGE, "streams", {jar.name: jar, "lib": jar.parent / "lib"})
    build_hivemq_image()
    write_env_file()


def build_hivemq_image() -> None:
    """HiveMQ with the local runtime's configuration, but listening on every interface of its container."""
    jar = build_hivemq()
    with tempfile.TemporaryDirectory(prefix="hivemq-config-") as folder:
        config = Path(folder) / "config.xml"
        config.write_text(hivemq_xml(MQTT_PORT, bind_address="0.0.0.0"))
        build_with_files(HIVEMQ, "hivemq", {jar.name: jar, "lib": jar.parent / "lib", config.name: config})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.runtime.images", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-only", action="store_true", help=f"build only the Debian base ({BASE}; .ci/bare-machine starts it)"
    )
    args = parser.parse_args(argv)
    setup_logging("INFO")
    started = time.monotonic()
    try:
        build_base() if args.base_only else build_all()
    except subprocess.CalledProcessError as error:
        output = (error.stderr or b"").decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr
        log.error("%s failed:\n%s", " ".join(error.cmd[:3]), (output or "")[-4000:])
        return 1
    except (LocalRuntimeError, DependencyMissingError) as error:
        log.error("%s", error)
        return 1
    done = f"{BASE} ready" if args.base_only else "images ready; compose/images.env names them"
    log.info("%s after %.0f s", done, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
