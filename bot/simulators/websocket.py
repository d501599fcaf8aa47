"""Local WebSocket server of the Slack simulator, for Socket Mode.

A Socket Mode client calls ``apps.connections.open`` with its app-level token and gets a
``wss://`` URL back. It opens a WebSocket there, receives a ``hello`` message, and then
receives envelopes (``{"envelope_id", "type", "payload", "accepts_response_payload"}``) that
it must acknowledge by sending ``{"envelope_id": ...}`` back, with a ``payload`` when the
envelope accepts one.

``SocketModeServer`` serves that protocol on 127.0.0.1 with plain ``ws://``. It implements
the part of RFC 6455 that slack_sdk's builtin client uses: the opening handshake, text, ping,
pong and close frames, masked frames from the client and unmasked frames from the server.
Fragmented messages are not supported, and slack_sdk does not send them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass
from socketserver import StreamRequestHandler, ThreadingTCPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

# The GUID that RFC 6455 section 1.3 appends to Sec-WebSocket-Key.
HANDSHAKE_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

MAX_HEADER_BYTES = 16 * 1024
MAX_FRAME_BYTES = 1024 * 1024


@dataclass
class SocketAck:
    """Acknowledgement of an envelope, as the client sent it."""

    envelope_id: str
    payload: Any
    time: float


class _ClientGone(Exception):
    """The client closed the connection or sent something this server cannot read."""


class SocketModeServer:
    """WebSocket endpoint that hands out envelopes and records their acknowledgements."""

    def __init__(self, app_id: str, host: str = "127.0.0.1") -> None:
        self.app_id = app_id
        self.acks: list[SocketAck] = []
        self._host = host
        self._lock = threading.Condition()
        self._tickets: set[str] = set()
        self._connections: list[_Connection] = []
        self._server = _Server((host, 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="slack-socket-mode", daemon=True)
        self._thread.start()
        logger.info("Slack simulator Socket Mode server listening on %s", self.base_url)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"ws://{host}:{port}"

    def new_url(self) -> str:
        """Return a single-use connection URL, as apps.connections.open does."""
        ticket = secrets.token_urlsafe(16)
        with self._lock:
            self._tickets.add(ticket)
        return f"{self.base_url}/link/?ticket={ticket}&app_id={self.app_id}"

    def stop(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # Envelopes

    def wait_for_connection(self, timeout: float = 10.0) -> None:
        """Block until a client has completed the handshake, or raise AssertionError."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._connections, timeout=timeout):
                raise AssertionError(f"No Socket Mode client connected within {timeout} s")

    def send_envelope(self, envelope_type: str, payload: dict, *, accepts_response_payload: bool = True) -> str:
        """Send an envelope to the newest connection and return its envelope_id.

        ``envelope_type`` is ``slash_commands``, ``interactive`` or ``events_api``.
        """
        envelope_id = secrets.token_hex(16)
        message = {"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                   "accepts_response_payload": accepts_response_payload}
        with self._lock:
            if not self._connections:
                raise RuntimeError("No Socket Mode client is connected; call wait_for_connection() first")
            connection = self._connections[-1]
        connection.send_text(json.dumps(message))
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> SocketAck:
        """Return the acknowledgement of an envelope, waiting up to ``timeout`` seconds."""
        def find() -> SocketAck | None:
            return next((ack for ack in self.acks if ack.envelope_id == envelope_id), None)

        with self._lock:
            ack = self._lock.wait_for(find, timeout=timeout)
        if ack is None:
            raise AssertionError(f"Envelope {envelope_id} was not acknowledged within {timeout} s")
        return ack

    # Called by connections

    def _accept_ticket(self, path: str) -> bool:
        ticket = parse_qs(urlsplit(path).query).get("ticket", [""])[0]
        with self._lock:
            if ticket not in self._tickets:
                return False
            self._tickets.discard(ticket)
            return True

    def _opened(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.append(connection)
            self._lock.notify_all()

    def _closed(self, connection: _Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def _received(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            logger.warning("Slack simulator received a Socket Mode message that is not JSON")
            return
        if not isinstance(message, dict) or "envelope_id" not in message:
            return
        with self._lock:
            self.acks.append(SocketAck(str(message["envelope_id"]), message.get("payload"), time.time()))
            self._lock.notify_all()


class _Server(ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoint: SocketModeServer) -> None:
        self.endpoint = endpoint
        super().__init__(address, _Connection)


class _Connection(StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._send_lock = threading.Lock()

    def handle(self) -> None:
        endpoint = self.server.endpoint
        if not self._handshake():
            return

        endpoint._opened(self)
        try:
            self.send_text(json.dumps({
                "type": "hello", "num_connections": 1,
                "debug_info": {"host": "slack-simulator", "approximate_connection_time": 3600},
                "connection_info": {"app_id": endpoint.app_id},
            }))
            self._read_frames()
        except (_ClientGone, OSError) as error:
            logger.debug("Socket Mode connection ended: %s", error)
        finally:
            endpoint._closed(self)

    def close(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # Opening handshake (RFC 6455 section 4.2)

    def _handshake(self) -> bool:
        request_line = self.rfile.readline(MAX_HEADER_BYTES).decode("latin-1").strip()
        headers = {}
        while True:
            line = self.rfile.readline(MAX_HEADER_BYTES).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        method, _, rest = request_line.partition(" ")
        path = rest.rpartition(" ")[0]
        key = headers.get("sec-websocket-key", "")
        if method != "GET" or headers.get("upgrade", "").lower() != "websocket" or not key:
            self._reject("400 Bad Request")
            return False
        if not self.server.endpoint._accept_ticket(path):
            self._reject("401 Unauthorized")
            return False

        accept = base64.b64encode(hashlib.sha1((key + HANDSHAKE_GUID).encode()).digest()).decode()
        self.wfile.write((
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode())
        self.wfile.flush()
        return True

    def _reject(self, status: str) -> None:
        logger.info("Slack simulator rejected a Socket Mode handshake: %s", status)
        self.wfile.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())

    # Frames (RFC 6455 section 5)

    def _read_frames(self) -> None:
        while True:
            opcode, payload = self._read_frame()
            if opcode == OPCODE_TEXT:
                self.server.endpoint._received(payload.decode("utf-8", "replace"))
            elif opcode == OPCODE_PING:
                self._send_frame(OPCODE_PONG, payload)
            elif opcode == OPCODE_CLOSE:
                self._send_frame(OPCODE_CLOSE, payload[:2])
                return

    def _read_frame(self) -> tuple[int, bytes]:
        first, second = self._read_exactly(2)
        opcode = first & 0x0F
        masked = second & 0x80
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exactly(8))
        if length > MAX_FRAME_BYTES:
            raise _ClientGone(f"frame of {length} bytes is too large")
        if not masked:
            # Section 5.1: a server must close the connection on an unmasked client frame.
            raise _ClientGone("client frame is not masked")

        mask = self._read_exactly(4)
        data = self._read_exactly(length)
        return opcode, bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise _ClientGone("connection closed")
        return data

    def send_text(self, text: str) -> None:
        self._send_frame(OPCODE_TEXT, text.encode())

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([127]) + struct.pack("!Q", len(payload))
        with self._send_lock:
            self.wfile.write(header + payload)
            self.wfile.flush()
