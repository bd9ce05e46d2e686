"""Who holds a TCP port, for the local runtime's "port in use" error: the process when this user may see it, and
what to do about it. A system Mosquitto on 1883 is the common case (Debian starts one with the package)."""

from __future__ import annotations

import pwd
import re
import shutil
import subprocess
from pathlib import Path


def listener(port: int) -> tuple[str, int] | None:
    """The process listening on `port` as (name, pid), from `ss` (Linux) or `lsof` (macOS); None when neither names
    it (`ss` hides another user's process from a user without CAP_SYS_PTRACE)."""
    if shutil.which("ss"):
        found = re.search(r'users:\(\("([^"]+)",pid=(\d+)', _output(["ss", "-Hltnp", f"sport = :{port}"]))
        if found:
            return found.group(1), int(found.group(2))
    if shutil.which("lsof"):
        found = _output(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"])
        pid, name = re.search(r"^p(\d+)", found, re.M), re.search(r"^c(.+)", found, re.M)
        if pid and name:
            return name.group(1), int(pid.group(1))
    return None


def processes_named(name: str) -> list[int]:
    """Pids of the live processes called `name` (zombies left out), from Linux's /proc, which shows every user's."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            state = (comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if comm.read_text().strip() == name and state != "Z":
                pids.append(int(comm.parent.name))
        except (OSError, IndexError):
            continue
    return sorted(pids)


def system_mosquitto(pid: int) -> bool:
    """Whether `pid` is the system's Mosquitto: Debian's service runs as the user `mosquitto`, or systemd runs it."""
    try:
        if pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name == "mosquitto":
            return True
    except (OSError, KeyError):
        pass
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return False
    return subprocess.run(["systemctl", "is-active", "--quiet", "mosquitto"], capture_output=True).returncode == 0


def port_taken_message(port: int, server: str, moved_by: str) -> str:
    """Why `server` cannot start on `port` and what to do: stop the holder, or move the stack (`moved_by`)."""
    holder = listener(port)
    if holder is None and server == "mosquitto" and processes_named("mosquitto"):
        holder = ("mosquitto", processes_named("mosquitto")[0])  # hidden from ss, but /proc names it
    move = f"or move this stack to other ports, e.g. `{moved_by} make up` (or make demo)" if moved_by else "or free it"
    if holder is None:
        return (
            f"port {port} ({server}) is taken by a process this user cannot see (`sudo ss -ltnp 'sport = :{port}'` or "
            f"`sudo lsof -i :{port}` names it). Stop it, {move}"
        )
    name, pid = holder
    if name == "mosquitto" and system_mosquitto(pid):
        return (
            f"port {port} ({server}) is taken by the system's Mosquitto service (pid {pid}; Debian starts one with the "
            f"package). Stop it for good with `sudo systemctl disable --now mosquitto`, {move}"
        )
    return (
        f"port {port} ({server}) is taken by {name} (pid {pid}). Stop that process (`make down` in its checkout if it "
        f"is another `make up`), {move}"
    )


def _output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
