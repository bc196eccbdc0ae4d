"""Listening TCP sockets bound here, not by a server library: IPv6 for a host written with colons, IPv4 otherwise.
The parent of ``--api-processes`` hands them to its children; the open metrics port serves on one in either mode."""

from __future__ import annotations

import socket


def listen(host: str, port: int, *, inheritable: bool = False, backlog: int = 2048) -> socket.socket:
    """A socket listening on ``host:port`` (port 0 picks a free port); ``inheritable`` for one shared with children."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(inheritable)
    return sock
