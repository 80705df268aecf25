"""Faults: misbehaviours queued for the next request(s) to one endpoint; the endpoints' names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

if TYPE_CHECKING:
    from prefect_stitch.simulator._server import StitchSimulator

FaultKind = Literal[
    "status", "drop", "slow", "malformed_json", "wrong_shape", "start_then_drop", "mutate"
]
Endpoint = Literal[
    "trigger",
    "stop",
    "list_sources",
    "source",
    "update_source",
    "streams",
    "destinations",
    "extractions",
    "logs",
    "log_download",
    "loads",
    "unknown",
]

ENDPOINTS: frozenset[str] = frozenset(get_args(Endpoint))
"""Every endpoint name accepted by `inject`, `requests_for` and `RecordedRequest.endpoint`."""
JOBS_ENDPOINTS: frozenset[str] = frozenset({"extractions", "logs", "loads"})
"""The endpoints Stitch counts against the "jobs" rate limit (30 requests per 10 minutes)."""


_INTERCEPTING_FAULTS = frozenset({"status", "drop", "malformed_json", "wrong_shape"})


@dataclass(frozen=True)
class Fault:
    """A misbehaviour injected into the next request(s) to one endpoint.

    Build one with the class methods; queue it with `StitchSimulator.inject`.

    Attributes:
        kind: Which misbehaviour (`"status"`, `"drop"`, `"slow"`, `"malformed_json"`,
            `"wrong_shape"`, `"start_then_drop"`, `"mutate"`).
        code: HTTP status of a `status` fault.
        body: Body of a `status` fault (dict → JSON, str → text/html, None → a JSON error
            body fitting the code) or of a `wrong_shape` fault (None → a default per endpoint).
        headers: Extra response headers of a `status` fault.
        seconds: Delay of a `slow` fault.
        fn: Callback of a `mutate` fault, called with the simulator under its lock.

    Examples:
        >>> from prefect_stitch.simulator import Fault
        >>> Fault.status(502, body="<html>Bad Gateway</html>").code
        502
    """

    kind: FaultKind
    code: int | None = None
    body: Any = field(default=None, hash=False)
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    fn: Callable[[StitchSimulator], None] | None = field(default=None, hash=False, compare=False)

    @property
    def intercepts(self) -> bool:
        """Whether the fault replaces the answer (the request never reaches the API logic).

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.drop().intercepts, Fault.slow(0.1).intercepts
            (True, False)
        """
        return self.kind in _INTERCEPTING_FAULTS

    @classmethod
    def status(
        cls,
        code: int,
        body: dict[str, Any] | list[Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with HTTP `code` instead of processing the request.

        Args:
            code: HTTP status code (200-599).
            body: A dict/list is sent as JSON, a str as `text/html`, None as a JSON error body
                `{"error": {"type": ..., "message": ...}}` fitting the code.
            headers: Extra response headers, e.g. `{"Retry-After": "2"}`.

        Returns:
            The fault.

        Raises:
            ValueError: If `code` is outside 200-599.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.status(429, headers={"Retry-After": "1"}).headers
            (('Retry-After', '1'),)
        """
        if not 200 <= code <= 599:
            raise ValueError("code must be an HTTP status between 200 and 599")
        return cls("status", code=code, body=body, headers=tuple((headers or {}).items()))

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without any response.

        The client sees the connection closed under it, as when a proxy gives up.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.drop().intercepts  # the request never reaches the API logic
            True
        """
        return cls("drop")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Wait `seconds`, then answer normally (for client timeouts).

        Args:
            seconds: The delay.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.slow(0.5).seconds
            0.5
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("slow", seconds=float(seconds))

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a JSON content type and a truncated body (`{"data": [`).

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.malformed_json() == Fault.from_json({"kind": "malformed_json"})
            True
        """
        return cls("malformed_json")

    @classmethod
    def wrong_shape(cls, body: dict[str, Any] | list[Any] | None = None) -> Fault:
        """Answer 200 with valid JSON of the wrong shape.

        Args:
            body: The JSON to send; by default `[1, 2]` where an array is expected
                (`list_sources`) and `{"unexpected": [1, 2]}` everywhere else.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.wrong_shape().kind
            'wrong_shape'
        """
        return cls("wrong_shape", body=body)

    @classmethod
    def start_then_drop(cls) -> Fault:
        """Process the request for real (a trigger starts its job), then drop the connection.

        The client never learns the job name. On other endpoints the request also takes effect
        before the connection drops.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> fault = Fault.start_then_drop()
            >>> fault.kind, fault.intercepts
            ('start_then_drop', False)
        """
        return cls("start_then_drop")

    @classmethod
    def mutate(cls, fn: Callable[[StitchSimulator], None]) -> Fault:
        """Answer normally, then call `fn(sim)` under the simulator's lock.

        The answer is computed first; `fn` runs before the answer is sent, so the client's next
        request always sees the change (e.g. records moved between pages mid-pagination).

        Args:
            fn: Callback receiving the simulator.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.mutate(lambda sim: sim.add_source(99)).kind
            'mutate'
        """
        return cls("mutate", fn=fn)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form (as posted to the control API).

        Args:
            data: E.g. `{"kind": "status", "code": 500}` or `{"kind": "slow", "seconds": 2}`.

        Returns:
            The fault.

        Raises:
            ValueError: On an unknown kind, or `mutate` (a callback cannot travel as JSON).

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.from_json({"kind": "status", "code": 503}).code
            503
        """
        kind = data.get("kind")
        if kind == "status":
            return cls.status(int(data["code"]), body=data.get("body"), headers=data.get("headers"))
        if kind == "slow":
            return cls.slow(float(data.get("seconds", 1.0)))
        if kind == "wrong_shape":
            return cls.wrong_shape(data.get("body"))
        if kind in ("drop", "malformed_json", "start_then_drop"):
            return cls(cast(FaultKind, kind))
        raise ValueError(f"unknown or unsupported fault kind {kind!r}")
