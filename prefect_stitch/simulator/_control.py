"""The control API under `/_simulator`: drive a simulator from another process (the CLI's).

Unauthenticated and never recorded. `GET` reads (`requests`, `jobs`, `sources`,
`scheduled_skips`, `rate`); `POST` with a JSON object changes the state, with the arguments of
the method of the same name (`sources` is `add_source`, `faults` is `inject`, `destination` is
`set_destination`; outcomes, loads and faults in their JSON forms). A bad request is answered
400 with `{"error": message}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prefect_stitch.simulator._account import Account
from prefect_stitch.simulator._catalogue import SOURCE_OPTIONS
from prefect_stitch.simulator._faults import Fault
from prefect_stitch.simulator._outcomes import Outcome
from prefect_stitch.simulator._wire import Request, Response, json_response

if TYPE_CHECKING:
    from prefect_stitch.simulator._server import StitchSimulator

Payload = dict[str, Any]


class ControlAPI:
    """The answers of the control API.

    Args:
        sim: The simulator it drives.
        account: The simulator's account, for the reads only the HTTP layer makes.

    Example:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> from prefect_stitch.simulator._control import ControlAPI
        >>> from prefect_stitch.simulator._wire import Request
        >>> sim = StitchSimulator()
        >>> control = ControlAPI(sim, sim._account)
        >>> body = b'{"source_id": 5, "outcomes": [{"kind": "tap", "exit_status": -9}]}'
        >>> control.answer(Request.read("POST", "/_simulator/sources", {}, body)).status
        201
    """

    def __init__(self, sim: StitchSimulator, account: Account) -> None:
        self._sim = sim
        self._reads: Mapping[str, Callable[[], Any]] = {
            "requests": lambda: [request.as_dict() for request in sim.requests],
            "jobs": sim.jobs,
            "sources": account.source_objects,
            "scheduled_skips": lambda: {
                str(i): sim.scheduled_skips(i) for i in account.source_ids()
            },
            "rate": self._rate,
        }
        self._changes: Mapping[str, Callable[[Payload], Response]] = {
            "sources": self._add_source,
            "faults": self._inject,
            "reset": self._reset,
            "start_job": self._start_job,
            "schedule_job": self._schedule_job,
            "run_after_current": self._run_after_current,
            "seed_load": self._seed_load,
            "destination": lambda payload: json_response(200, sim.set_destination(**payload)),
            "remove_destination": self._remove_destination,
            "finish_job": self._finish_job,
            "seed_completed": self._seed_completed,
        }

    def answer(self, request: Request) -> Response:
        """Answer a request to `/_simulator/<action>`.

        Args:
            request: The request.

        Returns:
            The answer: the data read, the change's result, a 400 or a 404.
        """
        action = request.path.removeprefix("/_simulator").strip("/")
        try:
            payload = json.loads(request.body.decode() or "{}")
        except ValueError:
            return json_response(400, {"error": "the body must be JSON"})
        if request.method == "POST" and not isinstance(payload, dict):
            return json_response(400, {"error": "the body must be a JSON object"})
        try:
            if request.method == "GET" and action in self._reads:
                return json_response(200, self._reads[action]())
            if request.method == "POST" and action in self._changes:
                return self._changes[action](payload)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return json_response(400, {"error": str(message)})
        if request.method == "POST":
            unknown = f"POST /_simulator/{action}"
        else:
            unknown = f"{request.method} {request.path}"
        return json_response(404, {"error": f"unknown control request {unknown}"})

    def _rate(self) -> dict[str, Any]:
        """The jobs budget as Stitch would count it."""
        return {
            "max_in_window": self._sim.jobs_requests_in_window(),
            "violations": self._sim.rate_limit_violations,
            "limit": self._sim.jobs_rate_limit,
            "period_seconds": self._sim.jobs_rate_period_seconds,
        }

    def _add_source(self, payload: Payload) -> Response:
        """POST sources: `add_source` (201), outcomes in their JSON form."""
        options = dict(payload)
        source_id = int(options.pop("source_id"))
        raw_outcomes = options.pop("outcomes", None)
        unknown = set(options) - SOURCE_OPTIONS
        if unknown:
            raise ValueError(f"unknown source fields: {sorted(unknown)}")
        outcomes = None
        if raw_outcomes is not None:
            outcomes = [Outcome.from_json(item) for item in raw_outcomes]
        return json_response(201, self._sim.add_source(source_id, outcomes=outcomes, **options))

    def _inject(self, payload: Payload) -> Response:
        """POST faults: `inject`, the fault in its JSON form."""
        times = int(payload.get("times", 1))
        self._sim.inject(str(payload["endpoint"]), Fault.from_json(payload["fault"]), times=times)
        return json_response(200, {"queued": times})

    def _start_job(self, payload: Payload) -> Response:
        """POST start_job: `start_job`; answers the job name."""
        job_name = self._sim.start_job(_source_id(payload), _outcome_of(payload))
        return json_response(200, {"job_name": job_name})

    def _reset(self, payload: Payload) -> Response:
        """POST reset: `reset`."""
        self._sim.reset()
        return _status("reset")

    def _schedule_job(self, payload: Payload) -> Response:
        """POST schedule_job: `schedule_job`."""
        self._sim.schedule_job(
            _source_id(payload),
            in_seconds=float(payload.get("in_seconds", 0.0)),
            outcome=_outcome_of(payload),
        )
        return _status("scheduled")

    def _run_after_current(self, payload: Payload) -> Response:
        """POST run_after_current: `run_after_current`."""
        self._sim.run_after_current(
            _source_id(payload),
            outcome=_outcome_of(payload),
            gap_seconds=float(payload.get("gap_seconds", 0.0)),
        )
        return _status("armed")

    def _remove_destination(self, payload: Payload) -> Response:
        """POST remove_destination: `remove_destination`."""
        self._sim.remove_destination()
        return _status("removed")

    def _seed_load(self, payload: Payload) -> Response:
        """POST seed_load: `seed_load`."""
        error = payload.get("error")
        self._sim.seed_load(
            _source_id(payload),
            str(payload["stream"]),
            loaded_ago_seconds=float(payload.get("loaded_ago_seconds", 3600)),
            error=None if error is None else str(error),
            error_state=payload.get("error_state"),
        )
        return _status("seeded")

    def _finish_job(self, payload: Payload) -> Response:
        """POST finish_job: `finish_job`."""
        self._sim.finish_job(_source_id(payload))
        return _status("finished")

    def _seed_completed(self, payload: Payload) -> Response:
        """POST seed_completed: `seed_completed`; answers the job name."""
        job_name = self._sim.seed_completed(
            _source_id(payload),
            _outcome_of(payload),
            started_ago_seconds=float(payload.get("started_ago_seconds", 3600)),
            duration_seconds=float(payload.get("duration_seconds", 60)),
            job_name=payload.get("job_name"),
        )
        return json_response(200, {"job_name": job_name})


def _source_id(payload: Payload) -> int:
    """The payload's `source_id` (KeyError if missing)."""
    return int(payload["source_id"])


def _outcome_of(payload: Mapping[str, Any]) -> Outcome | None:
    """The payload's `outcome`, from its JSON form (None if absent)."""
    raw = payload.get("outcome")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError("outcome must be a JSON object")
    return Outcome.from_json(raw)


def _status(status: str) -> Response:
    """The answer of a change that returns nothing: `{"status": status}`."""
    return json_response(200, {"status": status})
