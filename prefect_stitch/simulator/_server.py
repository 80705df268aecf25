"""The server: `StitchSimulator`, two stdlib listeners in front of the simulator's state.

The API listener serves the documented Connect API under `/v4` plus an unauthenticated control
API under `/_simulator`. The logs listener, on another port (another origin, like S3), serves
the pre-signed log URLs that `GET /v4/{client}/extractions/{job_name}` redirects to; it streams
each log (chunked transfer encoding, generated line by line), so a log of hundreds of megabytes
never sits in memory. Every response of both listeners carries a `Date` header from Stitch's
clock (`now()`, which includes `clock_offset_seconds`).

The parts: `_http` (the listeners), `_exchange` (each request's fault, budget and record),
`_api` (Stitch's endpoints and the log links), `_control` (the control API).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from types import TracebackType

from prefect_stitch.simulator._api import StitchAPI, route
from prefect_stitch.simulator._control import ControlAPI
from prefect_stitch.simulator._exchange import Exchange
from prefect_stitch.simulator._http import Listener
from prefect_stitch.simulator._state import SimulatorState
from prefect_stitch.simulator._traffic import RecordedRequest
from prefect_stitch.simulator._wire import Request, Response


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
        load_stream_ids: Every load record also carries its stream's `stream_id` (as
            `/streams` shows it); default off (the Load object documents no `stream_id`).
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
        load_stream_ids: bool = False,
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
            load_stream_ids=load_stream_ids,
        )
        self.host = host
        self.on_request = on_request
        self._requested_port = port
        self._lifecycle = threading.Lock()
        self._listeners: list[Listener] = []
        self._threads: list[threading.Thread] = []
        self._exchange = Exchange(self, self._account)
        self._api = StitchAPI(self, self._account)
        self._control = ControlAPI(self, self._account)

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
            api = Listener((self.host, self._requested_port), "api", self._answer_api, self.now)
            try:
                logs = Listener((self.host, 0), "logs", self._answer_logs, self.now)
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

    def _listener(self, role: str) -> Listener:
        """The started listener of a role; RuntimeError before `start()`."""
        for listener in self._listeners:
            if listener.role == role:
                return listener
        raise RuntimeError("the simulator is not started; call start() or use `with`")

    def _url_host(self) -> str:
        """The host of the base URLs (127.0.0.1 for an unspecified interface)."""
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

        Give it to `StitchCredentials(base_url=...)` to point the client at the simulator.

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

        The logs endpoint redirects there, to a pre-signed URL with a token per link.

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

    def _answer_api(self, request: Request) -> Response:
        """Answer a request to the API listener: the control API, or Stitch's endpoints."""
        if request.path == "/_simulator" or request.path.startswith("/_simulator/"):
            return self._control.answer(request)
        endpoint, params = route(request.method, request.path)
        return self._exchange.serve(
            endpoint,
            request,
            lambda retry_after: self._api.answer(endpoint, params, request, retry_after),
        )

    def _answer_logs(self, request: Request) -> Response:
        """Answer a request to the logs listener: a pre-signed log download."""
        return self._exchange.serve(
            "log_download", request, lambda _retry_after: self._api.log_download(request)
        )
