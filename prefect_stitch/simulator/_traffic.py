"""The API's traffic: faults queued per endpoint, every request received, the jobs budget used.

Not thread-safe: `SimulatorState` calls it under its lock.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prefect_stitch.simulator._faults import ENDPOINTS, Fault


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received (faulted and rejected ones too).

    The access token never appears here: the `authorization` header reads `"Bearer ***"` and any
    other occurrence of the token is replaced by `***`.

    Attributes:
        method: HTTP method.
        path: URL path, without the query string.
        query: Query parameters (last value wins).
        endpoint: Endpoint name, e.g. `"trigger"` or `"extractions"`.
        status: HTTP status sent, or None when the connection was dropped.
        fault: Kind of the fault applied, if any.
        authorization_present: Whether an Authorization header was sent.
        authorization_valid: Whether it was exactly `Bearer <token>`.
        at: `time.monotonic()` at arrival.
        wall: `time.time()` at arrival.
        headers: Request headers with lower-case names, token masked.

    Examples:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> import urllib.request
        >>> with StitchSimulator() as sim:
        ...     _ = urllib.request.urlopen(sim.base_url + "/_simulator/jobs")
        ...     sim.requests  # the control API is not recorded
        []
    """

    method: str
    path: str
    query: dict[str, str] = field(hash=False)
    endpoint: str
    status: int | None
    fault: str | None
    authorization_present: bool
    authorization_valid: bool
    at: float
    wall: float
    headers: dict[str, str] = field(hash=False)

    def as_dict(self) -> dict[str, Any]:
        """The request as a JSON-ready dict (what `GET /_simulator/requests` returns).

        Returns:
            A dict of all fields.

        Examples:
            >>> from prefect_stitch.simulator import RecordedRequest
            >>> r = RecordedRequest("GET", "/v4/sources", {}, "list_sources", 200, None,
            ...                     True, True, 0.0, 0.0, {})
            >>> r.as_dict()["endpoint"]
            'list_sources'
        """
        return {
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "endpoint": self.endpoint,
            "status": self.status,
            "fault": self.fault,
            "authorization_present": self.authorization_present,
            "authorization_valid": self.authorization_valid,
            "at": self.at,
            "wall": self.wall,
            "headers": dict(self.headers),
        }


def _check_endpoint(endpoint: str) -> None:
    """Raise ValueError unless `endpoint` is one of `ENDPOINTS`."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")


class Traffic:
    """The faults still to serve, the requests seen, and the jobs requests' sliding window.

    Example:
        >>> from prefect_stitch.simulator import Fault
        >>> from prefect_stitch.simulator._traffic import Traffic
        >>> traffic = Traffic()
        >>> traffic.inject("trigger", Fault.drop(), times=1)
        >>> traffic.take_fault("trigger").kind, traffic.take_fault("trigger")
        ('drop', None)
    """

    def __init__(self) -> None:
        self._faults: dict[str, deque[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._jobs_arrivals: list[float] = []
        self._jobs_accepted: deque[float] = deque()
        self.violations = 0

    def inject(self, endpoint: str, fault: Fault, times: int) -> None:
        """Queue the fault for the next `times` requests to `endpoint` (FIFO per endpoint)."""
        _check_endpoint(endpoint)
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults.setdefault(endpoint, deque()).extend([fault] * times)

    def take_fault(self, endpoint: str) -> Fault | None:
        """The next fault queued for `endpoint`, off its queue; None if there is none."""
        queue = self._faults.get(endpoint)
        return queue.popleft() if queue else None

    def record(self, request: RecordedRequest) -> None:
        """Add a request to the log."""
        self._requests.append(request)

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """The recorded requests (to one endpoint), in arrival order."""
        if endpoint is not None:
            _check_endpoint(endpoint)
        ordered = sorted(self._requests, key=lambda r: r.at)
        return [r for r in ordered if endpoint in (None, r.endpoint)]

    def count_jobs_request(
        self, at: float, *, limit: int, period: float, enforce: bool, intercepted: bool
    ) -> int | None:
        """Count a jobs request in the window; return Retry-After seconds if it must get 429.

        Args:
            at: Its arrival (`time.monotonic()`).
            limit: The requests allowed per window.
            period: The window's length in seconds.
            enforce: Whether a request over the limit gets 429.
            intercepted: Whether a fault answers it instead (then it never gets 429).

        Returns:
            The Retry-After seconds of a 429, or None when the request goes through.
        """
        self._jobs_arrivals.append(at)
        while self._jobs_accepted and self._jobs_accepted[0] <= at - period:
            self._jobs_accepted.popleft()
        full = len(self._jobs_accepted) >= limit
        if full:
            self.violations += 1
        if full and enforce and not intercepted:
            return max(1, math.ceil(self._jobs_accepted[0] + period - at))
        self._jobs_accepted.append(at)
        return None

    def most_in_window(self, period: float) -> int:
        """The most jobs requests seen in any sliding window of `period` seconds."""
        times = sorted(self._jobs_arrivals)
        # the window [t, t + period) from each arrival t holds every later arrival before its end
        return max((bisect_left(times, t + period) - i for i, t in enumerate(times)), default=0)
