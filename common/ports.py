"""Local TCP ports for servers this project starts: one free now, or whether one is taken."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# Ports handed out below the kernel's ephemeral range: a port the kernel chose (bind to 0) is free only until a
# client's outgoing connection takes it as its local port, which happened to a cluster's broker in CI between the
# pick and the broker's own bind ("Address already in use"). Below the range no connection can take it.
_PORTS_FROM = 20000
_handed_out: set[int] = set()


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152  # the IANA range, which macOS and Windows use


def free_port() -> int:
    """A local TCP port that is free now, not handed out before by this process, and outside the ephemeral range."""
    below = min(_ephemeral_ports_start(), 32768)
    candidates = range(_PORTS_FROM, below)
    for _ in range(200 if candidates else 0):
        port = random.choice(candidates)
        if port not in _handed_out and not port_in_use(port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
