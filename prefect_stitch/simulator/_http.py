"""The transport: a stdlib threading HTTP listener and its request handler.

It knows nothing of Stitch: each listener hands every request, read whole, to its `answer`
callable and sends back the `Response` (a body, a body streamed with chunked transfer encoding,
or a dropped connection). Every response carries a `Date` header from the listener's clock.
"""

from __future__ import annotations

import contextlib
import email.utils
import selectors
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from prefect_stitch.simulator._wire import Request, Response, error_response

Answer = Callable[[Request], Response]


class Listener(ThreadingHTTPServer):
    """One listening socket, serving each connection on its own daemon thread.

    Args:
        address: The (host, port) to bind; port 0 picks a free one.
        role: What it serves (`"api"` or `"logs"`), for thread names and look-ups.
        answer: Answers each request.
        clock: The time of the `Date` header (Stitch's clock).

    Example:
        >>> from prefect_stitch.simulator._http import Listener
        >>> from prefect_stitch.simulator._wire import Response
        >>> listener = Listener(("127.0.0.1", 0), "api", lambda r: Response(204), lambda: 0.0)
        >>> listener.server_address[1] > 0
        True
        >>> listener.server_close()
    """

    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 refuses bursts of concurrent clients (hundreds
    # of syncs triggering at once); Stitch's front end does not.
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], role: str, answer: Answer, clock: Callable[[], float]
    ) -> None:
        self.role = role
        self.answer = answer
        self.clock = clock
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self._wake_reader, self._wake_writer = socket.socketpair()
        try:
            super().__init__(address, _Handler)
        except OSError:
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def serve_until_stopped(self) -> None:
        """Like `serve_forever`, but woken at once by `request_stop` instead of polling."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is self._wake_reader for key, _ in ready):
                    return
                try:
                    request, client_address = self.get_request()
                except OSError:
                    continue
                try:
                    self.process_request(request, client_address)
                except Exception:
                    self.handle_error(request, client_address)
                    self.shutdown_request(request)

    def request_stop(self) -> None:
        """Wake `serve_until_stopped` to return."""
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    def server_close(self) -> None:
        """Close the listening socket and the wake-up pair."""
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def close_connections(self) -> None:
        """Shut down every open connection (keep-alive ones too)."""
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request whole, has the listener answer it, and sends the response."""

    protocol_version = "HTTP/1.1"
    server_version = "StitchSimulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

    def version_string(self) -> str:
        """The `Server` header."""
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header: Stitch's clock (the simulator's `now()`), RFC 7231 format."""
        moment = self.listener.clock() if timestamp is None else timestamp
        return email.utils.formatdate(moment, usegmt=True)

    @property
    def listener(self) -> Listener:
        """The listener that accepted the connection."""
        return cast(Listener, self.server)

    def setup(self) -> None:
        """Track the connection, so that stopping can close it."""
        super().setup()
        with self.listener.connections_lock:
            self.listener.connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        try:
            super().finish()
        finally:
            with self.listener.connections_lock:
                self.listener.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep stderr quiet; the CLI prints requests through `on_request`."""
        return

    def do_GET(self) -> None:
        """Answer any method the same way."""
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        """The request body, by Content-Length or chunked; ValueError on bad framing."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0"))
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length)

    def _serve(self) -> None:
        """Read, answer and send one request; a failing answer becomes a 500."""
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(error_response(400, "bad_request", "Malformed request body framing"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            response = self.listener.answer(Request.read(self.command, self.path, headers, body))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            response = error_response(
                500, "simulator_error", "The simulator failed on this request"
            )
        self._send(response)

    def _send(self, response: Response) -> None:
        """Send the response (or drop the connection); a vanished client is not an error."""
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            chunked = response.stream is not None and self.request_version != "HTTP/1.0"
            if response.stream is None:
                self.send_header("Content-Length", str(len(response.body)))
            elif chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.close_connection = True  # HTTP/1.0: no chunks, the body ends at close
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if response.stream is None:
                self.wfile.write(response.body)
                return
            for chunk in response.stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
