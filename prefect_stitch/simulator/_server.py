"""HTTP layer of the Stitch simulator: two stdlib listeners in front of `SimulatorState`.

The API listener serves the documented Connect API under `/v4` plus an unauthenticated control
API under `/_simulator`. The logs listener, on another port (another origin, like S3), serves
the pre-signed log URLs that `GET /v4/{client}/extractions/{job_name}` redirects to; it streams
each log (chunked transfer encoding, generated line by line), so a log of hundreds of megabytes
never sits in memory. Every response of both listeners carries a `Date` header from Stitch's
clock (`now()`, which includes `clock_offset_seconds`).
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import ipaddress
import json
import re
import secrets
import selectors
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from prefect_stitch.simulator._state import (
    DELETED_SOURCE_MESSAGE,
    EXTRACTION_NOT_FOUND_MESSAGE,
    JOBS_ENDPOINTS,
    LOG_BUCKET,
    SERVER_ERROR_MESSAGE,
    UNAUTHORIZED_MESSAGE,
    Fault,
    Outcome,
    RecordedRequest,
    SimulatorState,
)

Role = Literal["api", "logs"]

_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/v4/sources/(\d+)/sync"), "trigger"),
    ("DELETE", re.compile(r"/v4/sources/(\d+)/sync"), "stop"),
    ("GET", re.compile(r"/v4/sources"), "list_sources"),
    ("GET", re.compile(r"/v4/sources/(\d+)"), "source"),
    ("GET", re.compile(r"/v4/sources/(\d+)/streams"), "streams"),
    ("GET", re.compile(r"/v4/destinations"), "destinations"),
    ("PUT", re.compile(r"/v4/sources/(\d+)"), "update_source"),
    ("GET", re.compile(r"/v4/(\d+)/extractions"), "extractions"),
    ("GET", re.compile(r"/v4/(\d+)/extractions/([^/]+)"), "logs"),
    ("GET", re.compile(r"/v4/(\d+)/loads"), "loads"),
)
_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_AUTH_MECHANISM_MESSAGE = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query"
    " string parameter or the Authorization header should be specified"
)
_SOURCE_KWARGS = frozenset(
    {
        "name",
        "display_name",
        "type",
        "paused",
        "deleted",
        "streams",
        "selected",
        "deselected",
        "log_lines",
        "log_line_bytes",
    }
)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False
    stream: Iterable[bytes] | None = None  # a body sent chunk by chunk instead of `body`


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, json.dumps(payload).encode(), "application/json", list(headers))


def _error(status: int, kind: str, message: str) -> _Response:
    return _json(status, {"error": {"type": kind, "message": message}})


def _xml_error(status: int, code: str, message: str) -> _Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return _Response(status, body.encode(), "application/xml")


def _route(method: str, path: str) -> tuple[str, tuple[str, ...]]:
    for route_method, pattern, endpoint in _ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            return endpoint, match.groups()
    return "unknown", ()


def _page_number(query: Mapping[str, str]) -> int | None:
    raw = query.get("page", "1")
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


def _paginate(items: list[dict[str, Any]], page: int, size: int, path: str) -> dict[str, Any]:
    start = (page - 1) * size
    links: dict[str, str] = {}
    if start + size < len(items):
        links["next"] = f"{path}?page={page + 1}"
    if page > 1:
        links["previous"] = f"{path}?page={page - 1}"
    return {"data": items[start : start + size], "page": page, "total": len(items), "links": links}


def _fault_response(fault: Fault, endpoint: str) -> _Response:
    if fault.kind == "drop":
        return _Response(0, drop=True)
    if fault.kind == "malformed_json":
        return _Response(200, b'{"data": [', "application/json")
    if fault.kind == "wrong_shape":
        default: Any = [1, 2] if endpoint == "list_sources" else {"unexpected": [1, 2]}
        return _json(200, default if fault.body is None else fault.body)
    code = cast(int, fault.code)
    if isinstance(fault.body, str):
        return _Response(code, fault.body.encode(), "text/html; charset=utf-8", list(fault.headers))
    if fault.body is not None:
        return _json(code, fault.body, fault.headers)
    if code == 401:
        message = UNAUTHORIZED_MESSAGE
    elif code >= 500:
        message = SERVER_ERROR_MESSAGE
    else:
        try:
            message = HTTPStatus(code).phrase
        except ValueError:
            message = "Error"
    payload = {"error": {"type": _ERROR_TYPES.get(code, "error"), "message": message}}
    return _json(code, payload, fault.headers)


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 refuses bursts of concurrent clients (hundreds
    # of syncs triggering at once); Stitch's front end does not.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], sim: StitchSimulator, role: Role) -> None:
        self.sim = sim
        self.role = role
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
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def close_connections(self) -> None:
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "StitchSimulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header: Stitch's clock (the simulator's `now()`), RFC 7231 format."""
        moment = self.listener.sim.now() if timestamp is None else timestamp
        return email.utils.formatdate(moment, usegmt=True)

    @property
    def listener(self) -> _Listener:
        return cast(_Listener, self.server)

    def setup(self) -> None:
        super().setup()
        with self.listener.connections_lock:
            self.listener.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.listener.connections_lock:
                self.listener.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep stderr quiet; the CLI prints requests through on_request

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _read_body(self) -> bytes:
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
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(_error(400, "bad_request", "Malformed request body framing"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        listener = self.listener
        try:
            response = listener.sim._handle(listener.role, self.command, self.path, headers, body)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            response = _error(500, "simulator_error", "The simulator failed on this request")
        self._send(response)

    def _send(self, response: _Response) -> None:
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


class StitchSimulator(SimulatorState):
    """A local HTTP server that behaves like Stitch's documented Connect API.

    It serves `/v4/...` on `base_url` and pre-signed log downloads on a second port. All the
    state methods (`add_source`, `seed_completed`, `schedule_job`, `seed_load`, `inject`,
    `requests`, ...) are documented on `SimulatorState`. Use it as a context manager, or call
    `start()` and `stop()`.

    Args:
        token: The access token the API accepts (`Authorization: Bearer <token>`).
        client_id: The Stitch client (account) ID of the token.
        host: Interface to listen on (IPv4).
        port: API port; 0 picks a free one.
        page_size: Records per page of the extractions and loads lists.
        jobs_rate_limit: Jobs requests allowed per sliding window.
        jobs_rate_period_seconds: Length of the sliding window.
        enforce_rate_limit: Answer 429 with `Retry-After` when the window is full.
        list_running_jobs: List running jobs in the extractions list (an undocumented variant).
        stop_when_idle_status: HTTP status of a stop request when nothing runs (200 or 404).
        tap_field: Name of the tap field of extraction records (`"source_type"`/`"tap_name"`).
        clock_offset_seconds: Added to the wall clock to give Stitch's clock (`now()`): the
            `Date` header and every timestamp the simulator emits.
        stop_delay_seconds: Time between a stop request (answered 200 at once) and the job
            ending as terminated; until then it still runs.
        on_request: Called with each `RecordedRequest` (e.g. to print it), outside the lock.

    Examples:
        >>> import json, urllib.request
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> with StitchSimulator(token="sim-token") as sim:
        ...     _ = sim.add_source(1001)
        ...     request = urllib.request.Request(
        ...         sim.base_url + "/v4/sources/1001/sync", method="POST",
        ...         headers={"Authorization": "Bearer sim-token"})
        ...     body = json.load(urllib.request.urlopen(request))
        >>> body["job_name"].startswith("116078.1001.sync.")
        True
    """

    def __init__(
        self,
        token: str = "sim-token",  # noqa: S107 - the simulator's well-known test token
        client_id: int = 116078,
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int = 100,
        jobs_rate_limit: int = 30,
        jobs_rate_period_seconds: float = 600.0,
        enforce_rate_limit: bool = False,
        list_running_jobs: bool = False,
        stop_when_idle_status: int = 200,
        tap_field: str = "source_type",
        clock_offset_seconds: float = 0.0,
        *,
        stop_delay_seconds: float = 0.0,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        super().__init__(
            token=token,
            client_id=client_id,
            page_size=page_size,
            jobs_rate_limit=jobs_rate_limit,
            jobs_rate_period_seconds=jobs_rate_period_seconds,
            enforce_rate_limit=enforce_rate_limit,
            list_running_jobs=list_running_jobs,
            stop_when_idle_status=stop_when_idle_status,
            tap_field=tap_field,
            clock_offset_seconds=clock_offset_seconds,
            stop_delay_seconds=stop_delay_seconds,
        )
        self.host = host
        self.on_request = on_request
        self._requested_port = port
        self._lifecycle = threading.Lock()
        self._listeners: list[_Listener] = []
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        where = self.base_url if self.running else "not started"
        return f"StitchSimulator({where}, client_id={self.client_id})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> StitchSimulator:
        """Bind both listeners and serve them on daemon threads (no-op if already started).

        Returns:
            The simulator itself.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator().start()
            >>> sim.base_url.startswith("http://127.0.0.1:")
            True
            >>> sim.stop()
        """
        with self._lifecycle:
            if self._listeners:
                return self
            api = _Listener((self.host, self._requested_port), self, "api")
            try:
                logs = _Listener((self.host, 0), self, "logs")
            except OSError:
                api.server_close()
                raise
            self._listeners = [api, logs]
            for listener in self._listeners:
                thread = threading.Thread(
                    target=listener.serve_until_stopped,
                    name=f"stitch-simulator-{listener.role}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and free both ports (idempotent).

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator().start()
            >>> sim.stop()
            >>> sim.running
            False
        """
        with self._lifecycle:
            listeners, self._listeners = self._listeners, []
            threads, self._threads = self._threads, []
        for listener in listeners:
            listener.request_stop()
        for thread in threads:
            thread.join(timeout=5)
        for listener in listeners:
            listener.server_close()
            listener.close_connections()

    def __enter__(self) -> StitchSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the simulator is serving.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().running
            False
        """
        return bool(self._listeners)

    def _listener(self, role: Role) -> _Listener:
        for listener in self._listeners:
            if listener.role == role:
                return listener
        raise RuntimeError("the simulator is not started; call start() or use `with`")

    def _url_host(self) -> str:
        try:
            unspecified = ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            unspecified = not self.host
        return "127.0.0.1" if unspecified else self.host

    @property
    def port(self) -> int:
        """The API port (useful when constructed with `port=0`).

        Raises:
            RuntimeError: If the simulator is not started.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> with StitchSimulator() as sim:
            ...     sim.port > 0
            True
        """
        return int(self._listener("api").server_address[1])

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. `http://127.0.0.1:8765` (no `/v4`).

        Raises:
            RuntimeError: If the simulator is not started.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> with StitchSimulator(port=0) as sim:
            ...     sim.base_url == f"http://127.0.0.1:{sim.port}"
            True
        """
        return f"http://{self._url_host()}:{self.port}"

    @property
    def logs_base_url(self) -> str:
        """Base URL of the log-download listener (the stand-in for S3), another origin.

        Raises:
            RuntimeError: If the simulator is not started.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> with StitchSimulator() as sim:
            ...     sim.logs_base_url != sim.base_url
            True
        """
        port = int(self._listener("logs").server_address[1])
        return f"http://{self._url_host()}:{port}"

    # -- request handling ---------------------------------------------------------------------

    def _handle(
        self, role: Role, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> _Response:
        split = urlsplit(target)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        if role == "logs":
            return self._run(
                "log_download",
                (),
                method,
                path,
                query,
                headers,
                lambda _retry: self._answer_log_download(method, path, query, headers),
            )
        if path == "/_simulator" or path.startswith("/_simulator/"):
            return self._handle_control(method, path, body)
        endpoint, params = _route(method, path)
        authorized = self._authorized(headers.get("authorization"))
        return self._run(
            endpoint,
            params,
            method,
            path,
            query,
            headers,
            lambda retry: self._answer(
                endpoint, params, method, path, query, body, authorized, retry
            ),
        )

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        scheme, _, credential = header.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        )

    def _run(
        self,
        endpoint: str,
        params: tuple[str, ...],
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        answer: Callable[[int | None], _Response],
    ) -> _Response:
        """Apply the next fault of `endpoint` around `answer`, count and record the request."""
        at, wall = time.monotonic(), time.time()
        fault = self._take_fault(endpoint)
        retry_after = None
        if endpoint in JOBS_ENDPOINTS:
            retry_after = self._count_jobs_request(at, fault is not None and fault.intercepts)
        if fault is not None and fault.intercepts:
            response = _fault_response(fault, endpoint)
        else:
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.seconds)
            if fault is not None and fault.kind == "mutate":
                with self._lock:
                    response = answer(retry_after)
                    if fault.fn is not None:
                        fault.fn(self)
            else:
                response = answer(retry_after)
            if fault is not None and fault.kind == "start_then_drop":
                response = _Response(0, drop=True)
        recorded = RecordedRequest(
            method=method,
            path=self._mask(path),
            query={key: self._mask(value) for key, value in query.items()},
            endpoint=endpoint,
            status=None if response.drop else response.status,
            fault=None if fault is None else fault.kind,
            authorization_present="authorization" in headers,
            authorization_valid=self._authorized(headers.get("authorization")),
            at=at,
            wall=wall,
            headers=self._masked_headers(headers),
        )
        self._record(recorded)
        if self.on_request is not None:
            try:
                self.on_request(recorded)
            except Exception:
                traceback.print_exc(file=sys.stderr)
        return response

    def _mask(self, value: str) -> str:
        return value.replace(self.token, "***")

    def _masked_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        masked = {}
        for name, value in headers.items():
            if name == "authorization":
                masked[name] = "Bearer ***"
            elif name == "proxy-authorization":
                masked[name] = "***"
            else:
                masked[name] = self._mask(value)
        return masked

    def _answer(
        self,
        endpoint: str,
        params: tuple[str, ...],
        method: str,
        path: str,
        query: dict[str, str],
        body: bytes,
        authorized: bool,
        retry_after: int | None,
    ) -> _Response:
        if endpoint == "unknown":
            return _error(404, "not_found", f"No such endpoint: {method} {path}")
        if not authorized:
            return _error(401, "unauthorized", UNAUTHORIZED_MESSAGE)
        if endpoint in JOBS_ENDPOINTS:
            if int(params[0]) != self.client_id:
                return _error(401, "unauthorized", UNAUTHORIZED_MESSAGE)
            if retry_after is not None:
                message = (
                    f"Rate limit exceeded: {self.jobs_rate_limit} jobs requests per "
                    f"{self.jobs_rate_period_seconds:g} seconds"
                )
                response = _error(429, "rate_limited", message)
                response.headers.append(("Retry-After", str(retry_after)))
                return response
        if endpoint == "trigger":
            return self._answer_trigger(int(params[0]))
        if endpoint == "stop":
            return self._answer_stop(int(params[0]))
        if endpoint == "list_sources":
            return _json(200, self._source_objects())
        if endpoint == "source":
            try:
                return _json(200, self.source(int(params[0])))
            except KeyError:
                return _error(404, "not_found", f"source not found ({params[0]})")
        if endpoint == "update_source":
            return self._answer_update_source(int(params[0]), body)
        if endpoint == "streams":
            try:
                return _json(200, self.streams(int(params[0])))
            except KeyError:
                return _error(404, "not_found", f"source not found ({params[0]})")
        if endpoint == "destinations":
            return _json(200, self.destinations())
        if endpoint == "logs":
            return self._answer_logs(unquote(params[1]))
        page = _page_number(query)
        if page is None:
            return _error(400, "bad_request", "page must be a positive integer")
        extractions = endpoint == "extractions"
        records = self._extraction_records() if extractions else self._load_records()
        listing = f"/v4/{self.client_id}/{endpoint}"
        return _json(200, _paginate(records, page, self.page_size, listing))

    def _answer_trigger(self, source_id: int) -> _Response:
        result, job_name = self._trigger(source_id)
        if result == "started":
            return _json(200, {"job_name": job_name})
        if result == "already_running":
            message = (
                f"Did not create job for client-id: {self.client_id}; "
                f"connection-id: {source_id} because one already exists"
            )
            return _json(200, {"error": {"type": "already_running", "message": message}})
        if result == "deleted":
            return _error(400, "invalid_source", DELETED_SOURCE_MESSAGE)
        return self._invalid_source(source_id)

    def _invalid_source(self, source_id: int) -> _Response:
        message = f"Unable to locate source({source_id}) for client ({self.client_id})"
        return _error(400, "invalid_source", message)

    def _answer_stop(self, source_id: int) -> _Response:
        result = self._stop(source_id)
        if result == "unknown":
            return self._invalid_source(source_id)
        code = 200 if result == "stopped" else self.stop_when_idle_status
        if 200 <= code < 300:
            return _json(code, {"status": code})
        kind = "not_found" if code == 404 else "no_running_job"
        return _error(code, kind, f"No replication job is running for source({source_id})")

    def _answer_update_source(self, source_id: int, body: bytes) -> _Response:
        invalid_id = _json(
            400, {"error": "InvalidId", "data": {"message": f"source not found ({source_id})"}}
        )
        with self._lock:
            if source_id not in self._sources:
                return invalid_id
        try:
            payload = json.loads(body.decode() or "null")
            if not isinstance(payload, dict):
                raise ValueError("the request body must be a JSON object")
        except ValueError as exc:
            message = f"Invalid request body: {exc}"
            return _json(400, {"error": "InvalidBody", "data": {"message": message}})
        try:
            return _json(200, self._set_source_fields(source_id, payload))
        except KeyError:
            return invalid_id

    def _answer_logs(self, job_name: str) -> _Response:
        if not self._has_job(job_name):
            return _error(404, "not_found", EXTRACTION_NOT_FOUND_MESSAGE)
        token = secrets.token_urlsafe(24)
        self._issue_log_token(job_name, token)
        location = (
            f"{self.logs_base_url}/{LOG_BUCKET}/{quote(job_name)}?x-amz-security-token={token}"
        )
        return _Response(302, headers=[("Location", location)])

    def _answer_log_download(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> _Response:
        if method != "GET":
            return _xml_error(405, "MethodNotAllowed", "The specified method is not allowed")
        if "authorization" in headers:
            return _xml_error(400, "InvalidArgument", _AUTH_MECHANISM_MESSAGE)
        bucket, _, key = path.lstrip("/").partition("/")
        token = query.get("x-amz-security-token", "")
        job_name = self._log_token_job(token) if token else None
        if bucket != LOG_BUCKET or job_name is None or job_name != unquote(key):
            return _xml_error(403, "AccessDenied", "Access Denied")
        plan = self._log_plan(job_name)
        return _Response(200, content_type="text/plain; charset=utf-8", stream=plan.chunks())

    # -- control API --------------------------------------------------------------------------

    def _handle_control(self, method: str, path: str, body: bytes) -> _Response:
        action = path.removeprefix("/_simulator").strip("/")
        try:
            payload = json.loads(body.decode() or "{}")
        except ValueError:
            return _json(400, {"error": "the body must be JSON"})
        if method == "POST" and not isinstance(payload, dict):
            return _json(400, {"error": "the body must be a JSON object"})
        try:
            if method == "GET" and action == "requests":
                return _json(200, [r.as_dict() for r in self.requests])
            if method == "GET" and action == "jobs":
                return _json(200, self.jobs())
            if method == "GET" and action == "sources":
                return _json(200, self._source_objects())
            if method == "GET" and action == "scheduled_skips":
                with self._lock:
                    ids = sorted(self._sources)
                return _json(200, {str(i): self.scheduled_skips(i) for i in ids})
            if method == "GET" and action == "rate":
                return _json(
                    200,
                    {
                        "max_in_window": self.jobs_requests_in_window(),
                        "violations": self.rate_limit_violations,
                        "limit": self.jobs_rate_limit,
                        "period_seconds": self.jobs_rate_period_seconds,
                    },
                )
            if method == "POST":
                return self._control_post(action, payload)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return _json(400, {"error": str(message)})
        return _json(404, {"error": f"unknown control request {method} {path}"})

    def _control_post(self, action: str, payload: dict[str, Any]) -> _Response:
        if action == "sources":
            options = dict(payload)
            source_id = int(options.pop("source_id"))
            raw_outcomes = options.pop("outcomes", None)
            unknown = set(options) - _SOURCE_KWARGS
            if unknown:
                raise ValueError(f"unknown source fields: {sorted(unknown)}")
            outcomes = None
            if raw_outcomes is not None:
                outcomes = [Outcome.from_json(item) for item in raw_outcomes]
            return _json(201, self.add_source(source_id, outcomes=outcomes, **options))
        if action == "faults":
            times = int(payload.get("times", 1))
            self.inject(str(payload["endpoint"]), Fault.from_json(payload["fault"]), times=times)
            return _json(200, {"queued": times})
        if action == "reset":
            self.reset()
            return _json(200, {"status": "reset"})
        if action == "start_job":
            job_name = self.start_job(int(payload["source_id"]), _outcome_of(payload))
            return _json(200, {"job_name": job_name})
        if action == "schedule_job":
            self.schedule_job(
                int(payload["source_id"]),
                in_seconds=float(payload.get("in_seconds", 0.0)),
                outcome=_outcome_of(payload),
            )
            return _json(200, {"status": "scheduled"})
        if action == "run_after_current":
            self.run_after_current(
                int(payload["source_id"]),
                outcome=_outcome_of(payload),
                gap_seconds=float(payload.get("gap_seconds", 0.0)),
            )
            return _json(200, {"status": "armed"})
        if action == "seed_load":
            error = payload.get("error")
            self.seed_load(
                int(payload["source_id"]),
                str(payload["stream"]),
                loaded_ago_seconds=float(payload.get("loaded_ago_seconds", 3600)),
                error=None if error is None else str(error),
            )
            return _json(200, {"status": "seeded"})
        if action == "destination":
            return _json(200, self.set_destination(**payload))
        if action == "remove_destination":
            self.remove_destination()
            return _json(200, {"status": "removed"})
        if action == "finish_job":
            self.finish_job(int(payload["source_id"]))
            return _json(200, {"status": "finished"})
        if action == "seed_completed":
            job_name = self.seed_completed(
                int(payload["source_id"]),
                _outcome_of(payload),
                started_ago_seconds=float(payload.get("started_ago_seconds", 3600)),
                duration_seconds=float(payload.get("duration_seconds", 60)),
                job_name=payload.get("job_name"),
            )
            return _json(200, {"job_name": job_name})
        return _json(404, {"error": f"unknown control request POST /_simulator/{action}"})


def _outcome_of(payload: Mapping[str, Any]) -> Outcome | None:
    raw = payload.get("outcome")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError("outcome must be a JSON object")
    return Outcome.from_json(raw)
