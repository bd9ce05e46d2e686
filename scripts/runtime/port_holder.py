"""Who holds a TCP port, for the local runtime's "port in use" error: the process when this user may see it, and
what to do about it. A system Mosquitto on 1883 is the common case (Debian starts one with the package)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def listener(port: int) -> str | None:
    """The process listening on `port` as "name (pid N)", from `ss` (Linux) or `lsof` (macOS); None when neither
    names it (another user's process is hidden from `ss` without root)."""
    if shutil.which("ss"):
        found = _output(["ss", "-Hltnp", f"sport = :{port}"])
        match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', found)
        if match:
            return f"{match.group(1)} (pid {match.group(2)})"
    if shutil.which("lsof"):
        found = _output(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"])
        pid, name = re.search(r"^p(\d+)", found, re.M), re.search(r"^c(.+)", found, re.M)
        if pid and name:
            return f"{name.group(1)} (pid {pid.group(1)})"
    return None


def system_service_active(name: str) -> bool:
    """Whether systemd runs `name` as a system service here."""
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return False
    return subprocess.run(["systemctl", "is-active", "--quiet", name], capture_output=True).returncode == 0


def port_taken_message(port: int, server: str, moved_by: str) -> str:
    """Why `server` cannot start on `port` and what to do: stop the holder, or move the stack (`moved_by`)."""
    holder = listener(port)
    move = f"or move this stack to other ports, e.g. `{moved_by} make up` (or make demo)" if moved_by else "or free it"
    if server == "mosquitto" and ((holder or "").startswith("mosquitto") or system_service_active("mosquitto")):
        return (
            f"port {port} (mosquitto) is taken by the system's Mosquitto service{f', {holder}' if holder else ''}. "
            f"Stop it for good with `sudo systemctl disable --now mosquitto`, {move}"
        )
    if holder:
        return (
            f"port {port} ({server}) is taken by {holder}. Stop that process (`make down` in its checkout if it is "
            f"another `make up`), {move}"
        )
    return (
        f"port {port} ({server}) is taken by a process this user cannot see (`sudo ss -ltnp 'sport = :{port}'` or "
        f"`sudo lsof -i :{port}` names it). Stop it, {move}"
    )


def _output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
