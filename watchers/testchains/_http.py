"""A tiny threaded HTTP/1.1 server shared by the local test chains (stdlib only).

Each chain registers one `handle(method, path, body) -> Reply` callable; this module owns the
socket, keep-alive, content length and the "ready <url>" line. Handlers run in worker threads,
so the chain objects lock around their own state. Nothing here is meant for production.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: status, body bytes and content type."""

    status: int
    body: bytes
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[str, str, bytes], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    chain_handler: Handler


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus the client's
    # delayed ACK holds every keep-alive answer back ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            reply = self.server.chain_handler(method, self.path, body)
        except Exception:  # a bug in a chain handler must not kill the server thread
            log.exception("test chain handler failed on %s %s", method, self.path)
            reply = Reply(500, b"internal error in test chain")
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests spawn many requests
        log.debug("%s " + format, self.address_string(), *args)


class ChainHTTPServer:
    """Serves one chain handler on host:port (port 0 picks a free one) in a background thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _RequestHandler)
        self._server.chain_handler = handler
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="chain-http", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class PeriodicMiner:
    """Calls `mine()` every `block_time_s` seconds on a daemon thread until `stop()`.

    A failed round is logged and the next one still happens (a test chain keeps its clock).
    """

    def __init__(self, mine: Callable[[], object], block_time_s: float, name: str) -> None:
        self._mine = mine
        self._block_time_s = block_time_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._block_time_s):
            try:
                self._mine()
            except Exception:
                log.exception("periodic mining failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class FaultInjector:
    """Makes the next `count` requests wait `delay_s` and, when `status` is set, answer with it
    (body from `bodies`, else "injected fault"): how tests play a rate-limiting or failing node."""

    def __init__(self, bodies: dict[int, bytes]) -> None:
        self._bodies = bodies
        self._lock = threading.Lock()
        self._count = 0
        self._status: int | None = None
        self._delay_s = 0.0

    def set(self, count: int, status: int | None, delay_s: float) -> None:
        with self._lock:
            self._count, self._status, self._delay_s = count, status, delay_s

    def take(self) -> Reply | None:
        """The injected answer for this request, or None to serve it normally."""
        with self._lock:
            if self._count <= 0:
                return None
            self._count -= 1
            status, delay_s = self._status, self._delay_s
        if delay_s:
            time.sleep(delay_s)
        if status is None:
            return None
        return Reply(status, self._bodies.get(status, b"injected fault"), "text/plain")
