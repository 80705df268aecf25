"""One request's passage through the simulator: its fault, the jobs budget, its answer, its record.

Every request to Stitch's API and to the log links goes through `Exchange.serve` (the control
API does not): the endpoint's next fault is taken first; a jobs request is counted in the rate
window (a full window answers 429 when enforced); the fault replaces, delays, follows or drops
the answer; and the request is recorded, its token masked.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prefect_stitch.simulator._account import Account
from prefect_stitch.simulator._faults import JOBS_ENDPOINTS, Fault
from prefect_stitch.simulator._traffic import RecordedRequest
from prefect_stitch.simulator._wire import Request, Response, authorized, fault_response

if TYPE_CHECKING:
    from prefect_stitch.simulator._server import StitchSimulator

Answer = Callable[[int | None], Response]
"""Answers a request, given the Retry-After seconds of a full jobs window (None: not full)."""


class Exchange:
    """Serves requests through their faults, counts them against the budget, records them.

    Args:
        sim: The simulator: its token, its jobs budget, its `on_request` callback.
        account: Its account, which holds the faults and the request log.

    Example:
        >>> from prefect_stitch.simulator import Fault, StitchSimulator
        >>> from prefect_stitch.simulator._exchange import Exchange
        >>> from prefect_stitch.simulator._wire import Request, Response
        >>> sim = StitchSimulator()
        >>> sim.inject("loads", Fault.drop())
        >>> request = Request.read("GET", "/v4/116078/loads", {}, b"")
        >>> exchange = Exchange(sim, sim._account)
        >>> exchange.serve("loads", request, lambda retry_after: Response(200)).drop
        True
        >>> sim.requests[0].fault
        'drop'
    """

    def __init__(self, sim: StitchSimulator, account: Account) -> None:
        self._sim = sim
        self._account = account

    def serve(self, endpoint: str, request: Request, answer: Answer) -> Response:
        """Answer one request to `endpoint` as its next fault says; count and record it.

        Args:
            endpoint: The endpoint's name (see `ENDPOINTS`).
            request: The request.
            answer: The endpoint's answer, unless an intercepting fault replaces it.

        Returns:
            The response to send.
        """
        at, wall = time.monotonic(), time.time()
        fault = self._account.take_fault(endpoint)
        intercepted = fault is not None and fault.intercepts
        retry_after = None
        if endpoint in JOBS_ENDPOINTS:
            retry_after = self._count_jobs_request(at, intercepted)
        if fault is not None and fault.intercepts:
            response = fault_response(fault, endpoint)
        else:
            response = self._answer_around(fault, lambda: answer(retry_after))
        self._record(endpoint, request, response, fault, (at, wall))
        return response

    def _count_jobs_request(self, at: float, intercepted: bool) -> int | None:
        """Count a jobs request in the window; return Retry-After seconds if it must get 429."""
        sim = self._sim
        with self._account.lock:
            return self._account.traffic.count_jobs_request(
                at,
                limit=sim.jobs_rate_limit,
                period=sim.jobs_rate_period_seconds,
                enforce=sim.enforce_rate_limit,
                intercepted=intercepted,
            )

    def _answer_around(self, fault: Fault | None, answer: Callable[[], Response]) -> Response:
        """The answer, delayed, followed by a change or dropped as a non-intercepting fault says."""
        if fault is None:
            return answer()
        if fault.kind == "slow":
            time.sleep(fault.seconds)
        if fault.kind == "mutate":
            with self._account.lock:
                response = answer()
                if fault.fn is not None:
                    fault.fn(self._sim)
            return response
        response = answer()
        return Response(0, drop=True) if fault.kind == "start_then_drop" else response

    def _record(
        self,
        endpoint: str,
        request: Request,
        response: Response,
        fault: Fault | None,
        arrival: tuple[float, float],
    ) -> None:
        """Record the request, token masked, and pass it to `on_request` (outside the lock)."""
        token = self._sim.token
        recorded = RecordedRequest(
            method=request.method,
            path=_mask(request.path, token),
            query={key: _mask(value, token) for key, value in request.query.items()},
            endpoint=endpoint,
            status=None if response.drop else response.status,
            fault=None if fault is None else fault.kind,
            authorization_present="authorization" in request.headers,
            authorization_valid=authorized(request.headers.get("authorization"), token),
            at=arrival[0],
            wall=arrival[1],
            headers=_masked_headers(request.headers, token),
        )
        self._account.record(recorded)
        if self._sim.on_request is not None:
            try:
                self._sim.on_request(recorded)
            except Exception:
                traceback.print_exc(file=sys.stderr)


def _mask(value: str, token: str) -> str:
    """The value with every occurrence of the token replaced by `***`."""
    return value.replace(token, "***")


def _masked_headers(headers: Mapping[str, str], token: str) -> dict[str, str]:
    """The headers with the credentials and any occurrence of the token masked."""
    masked = {}
    for name, value in headers.items():
        if name == "authorization":
            masked[name] = "Bearer ***"
        elif name == "proxy-authorization":
            masked[name] = "***"
        else:
            masked[name] = _mask(value, token)
    return masked
