"""HTTP server plumbing that the CRM and Slack simulators share.

Each simulator subclasses ``ServedSimulator`` for its start/stop lifecycle and
``SimulatorRequestHandler`` for its own request parsing. The handler reads bodies by
``Content-Length`` only, keeps connections alive (HTTP/1.1) and writes ``Response`` values.
``take_due_fault`` counts requests against the failures that a test queued with ``fail_next``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol, Self, TypeVar

logger = logging.getLogger(__name__)

# Seconds between the server loop's checks for stop(). Python's default of 0.5 s makes every
# stop() in a test suite wait that long.
SHUTDOWN_POLL_INTERVAL = 0.05


class QueuedFault(Protocol):
    """Injected failure that lets ``skip`` requests through, then fails ``remaining`` requests."""

    skip: int
    remaining: int


FaultT = TypeVar("FaultT", bound=QueuedFault)


@dataclass
class Response:
    """HTTP response that a simulator sends after waiting ``delay`` seconds."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class SimulatorServer(ThreadingHTTPServer):
    """Threaded HTTP server whose request handlers reach their simulator as ``server.simulator``."""

    daemon_threads = True
    # Concurrency tests open many connections at once. With socketserver's default backlog of
    # 5 the kernel drops some of them, and their clients retry only after about a second.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        simulator: Any,
        handler_class: type[SimulatorRequestHandler],
    ) -> None:
        self.simulator = simulator
        super().__init__(address, handler_class)


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    """Request handler base with keep-alive, body reading and response writing."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes. With Nagle's algorithm on, each response on
    # a kept-alive connection would wait for the client's delayed ACK, about 40 ms on Linux.
    disable_nagle_algorithm = True
    server: SimulatorServer
    # Name of the simulator in log lines, such as "CRM simulator".
    label: ClassVar[str] = "Simulator"

    def read_body(self) -> bytes:
        """Read the request body that ``Content-Length`` announces.

        A chunked body or an invalid ``Content-Length`` marks the connection for closing, because
        the unread body would corrupt the next request, and raises ValueError.
        """
        length_header = self.headers.get("Content-Length") or "0"
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ValueError("Chunked request bodies are not supported; send Content-Length")
        if not length_header.isdigit():
            self.close_connection = True
            raise ValueError(f"Content-Length must be a number, got {length_header!r}")
        return self.rfile.read(int(length_header))

    def write(self, response: Response) -> None:
        """Send a response, or log and drop it when the client has already disconnected."""
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError) as error:
            # Expected when a client times out during an injected delay.
            logger.info("%s client disconnected before the response: %s", self.label, error)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s: %s", self.label, self.address_string(), format % args)


class ServedSimulator:
    """Base of a simulator that serves HTTP from a daemon thread.

    A subclass sets ``label`` and ``thread_name``, calls ``super().__init__`` with its handler
    class, and may override ``_stop_companions`` to stop servers that run beside the HTTP server.
    """

    # Name of the simulator in log lines, such as "CRM simulator".
    label: ClassVar[str]
    thread_name: ClassVar[str]

    def __init__(self, host: str, port: int, handler_class: type[SimulatorRequestHandler]) -> None:
        self._host = host
        self._port = port
        self._handler_class = handler_class
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start serving in a daemon thread and return self."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running; call stop() first")

        self._server = SimulatorServer((self._host, self._port), self, self._handler_class)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_INTERVAL},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        logger.info("%s listening on %s", self.label, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket. Does nothing when not running."""
        if self._server is None:
            return

        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._stop_companions()
        logger.info("%s on %s stopped", self.label, self.url)
        self._server = None
        self._thread = None

    def _stop_companions(self) -> None:
        """Stop servers that run beside the HTTP server. Called by stop() after it stops."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the running server, such as ``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


def take_due_fault(queue: deque[FaultT] | None) -> FaultT | None:
    """Count one request against the first fault in ``queue`` and return it if it applies.

    The fault leaves the queue after its last failure. The caller holds the simulator's lock.
    """
    if not queue:
        return None

    fault = queue[0]
    if fault.skip > 0:
        fault.skip -= 1
        return None

    fault.remaining -= 1
    if fault.remaining == 0:
        queue.popleft()
    return fault
