"""The open ``--metrics-port`` listener: the app's metrics registry without auth, on a port of its own.

A prometheus_client WSGI server on a daemon thread, started and closed by ``server.run_server`` (or, under
``--api-processes``, by the engine process on the socket its parent bound); it serves ``/metrics`` only (any other
path is a 404).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from embedserve.listening import listen
from embedserve.metrics import Metrics

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """The listener's WSGI server and the thread that runs it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def only_metrics_path(app: WSGIApp) -> WSGIApp:
    """prometheus_client answers every path with the metrics; this port answers ``/metrics`` and 404s the rest."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in ("/metrics", "/metrics/"):
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not found: this port serves only /metrics.\n"]

    return guarded


def serve_metrics_port(metrics: Metrics, *, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` without auth on ``host:port`` (0 picks a free port), at ``/metrics`` only (any other path
    is a 404); ``close()`` it on shutdown."""
    return serve_metrics_socket(metrics, listen(host, port, backlog=128))  # IPv6 hosts too (make_server: IPv4 only)


def serve_metrics_socket(metrics: Metrics, sock: socket.socket) -> MetricsServer:
    """As ``serve_metrics_port``, on ``sock``, already bound and listening: under ``--api-processes`` the parent binds
    the port before the model loads, and holds it while the engine process that serves it is replaced."""
    host, port = sock.getsockname()[:2]
    server = ThreadingWSGIServer((host, port), _SilentHandler, bind_and_activate=False)
    server.socket.close()  # the one it made in place of ours
    server.socket = sock
    # What server_bind would have set (without its reverse DNS lookup of the host).
    server.server_address = (host, port)
    server.server_name, server.server_port = host, port
    server.setup_environ()
    server.set_app(only_metrics_path(make_wsgi_app(metrics.registry)))
    return _start(server)


def _start(server: WSGIServer) -> MetricsServer:
    thread = threading.Thread(target=server.serve_forever, name="embedserve-metrics-port", daemon=True)
    thread.start()
    return MetricsServer(server=server, thread=thread)
