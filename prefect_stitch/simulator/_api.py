"""Stitch's Connect API as the simulator answers it: the `/v4` routes and the pre-signed logs.

`route` names the endpoint of a request; `StitchAPI.answer` refuses it (unknown path, bad
token, another client's jobs, a full jobs window) or answers it from the simulator's state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from prefect_stitch.simulator._account import Account
from prefect_stitch.simulator._faults import JOBS_ENDPOINTS
from prefect_stitch.simulator._logs import LOG_BUCKET
from prefect_stitch.simulator._wire import (
    DELETED_SOURCE_MESSAGE,
    EXTRACTION_NOT_FOUND_MESSAGE,
    UNAUTHORIZED_MESSAGE,
    Request,
    Response,
    authorized,
    error_response,
    json_response,
    xml_error,
)

if TYPE_CHECKING:
    from prefect_stitch.simulator._server import StitchSimulator

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
_AUTH_MECHANISM_MESSAGE = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query"
    " string parameter or the Authorization header should be specified"
)

Params = tuple[str, ...]


def route(method: str, path: str) -> tuple[str, Params]:
    """The endpoint a request goes to, and the path's parameters.

    Args:
        method: HTTP method.
        path: URL path.

    Returns:
        The endpoint's name (`"unknown"` if none matches) and the parameters (IDs, job name).

    Example:
        >>> from prefect_stitch.simulator._api import route
        >>> route("DELETE", "/v4/sources/7/sync")
        ('stop', ('7',))
    """
    for route_method, pattern, endpoint in _ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            return endpoint, match.groups()
    return "unknown", ()


class StitchAPI:
    """The answers of Stitch's API endpoints and of the log links' origin.

    Args:
        sim: The simulator: its settings, and the state its public methods read.
        account: The simulator's account, for the reads and changes only the API makes.

    Example:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> from prefect_stitch.simulator._api import StitchAPI
        >>> from prefect_stitch.simulator._wire import Request
        >>> request = Request.read("GET", "/v4/destinations", {}, b"")
        >>> sim = StitchSimulator()
        >>> StitchAPI(sim, sim._account).answer("destinations", (), request, None).status
        401
    """

    def __init__(self, sim: StitchSimulator, account: Account) -> None:
        self._sim = sim
        self._account = account
        self._answers: Mapping[str, Callable[[Params, Request], Response]] = {
            "trigger": self._trigger,
            "stop": self._stop,
            "list_sources": lambda _, __: json_response(200, account.source_objects()),
            "source": lambda params, _: self._of_source(params[0], sim.source),
            "update_source": self._update_source,
            "streams": lambda params, _: self._of_source(params[0], sim.streams),
            "destinations": lambda _, __: json_response(200, sim.destinations()),
            "extractions": lambda _, request: self._page("extractions", request),
            "logs": lambda params, _: self._log_link(unquote(params[1])),
            "loads": lambda _, request: self._page("loads", request),
        }

    def answer(
        self, endpoint: str, params: Params, request: Request, retry_after: int | None
    ) -> Response:
        """Answer a request to one of the API's endpoints.

        Args:
            endpoint: The endpoint, as `route` names it.
            params: The path's parameters.
            request: The request.
            retry_after: The Retry-After seconds of a full jobs window (None: not full).

        Returns:
            The refusal or the answer.
        """
        refusal = self._refusal(endpoint, params, request, retry_after)
        if refusal is not None:
            return refusal
        return self._answers[endpoint](params, request)

    def _refusal(
        self, endpoint: str, params: Params, request: Request, retry_after: int | None
    ) -> Response | None:
        """The 404, 401 or 429 a request gets before any answer, or None."""
        if endpoint == "unknown":
            return error_response(
                404, "not_found", f"No such endpoint: {request.method} {request.path}"
            )
        if not authorized(request.headers.get("authorization"), self._sim.token):
            return error_response(401, "unauthorized", UNAUTHORIZED_MESSAGE)
        if endpoint not in JOBS_ENDPOINTS:
            return None
        if int(params[0]) != self._sim.client_id:
            return error_response(401, "unauthorized", UNAUTHORIZED_MESSAGE)
        if retry_after is None:
            return None
        message = (
            f"Rate limit exceeded: {self._sim.jobs_rate_limit} jobs requests per "
            f"{self._sim.jobs_rate_period_seconds:g} seconds"
        )
        response = error_response(429, "rate_limited", message)
        response.headers.append(("Retry-After", str(retry_after)))
        return response

    # -- sources and jobs -----------------------------------------------------------------

    def _trigger(self, params: Params, request: Request) -> Response:
        """POST /v4/sources/{id}/sync: a job name, `already_running` (200) or a 400."""
        source_id = int(params[0])
        result, job_name = self._account.trigger(source_id)
        if result == "started":
            return json_response(200, {"job_name": job_name})
        if result == "already_running":
            message = (
                f"Did not create job for client-id: {self._sim.client_id}; "
                f"connection-id: {source_id} because one already exists"
            )
            return json_response(200, {"error": {"type": "already_running", "message": message}})
        if result == "deleted":
            return error_response(400, "invalid_source", DELETED_SOURCE_MESSAGE)
        return self._invalid_source(source_id)

    def _stop(self, params: Params, request: Request) -> Response:
        """DELETE /v4/sources/{id}/sync: 200 (the stop may take effect later) or idle's status."""
        source_id = int(params[0])
        result = self._account.stop(source_id, self._sim.stop_delay_seconds)
        if result == "unknown":
            return self._invalid_source(source_id)
        code = 200 if result == "stopped" else self._sim.stop_when_idle_status
        if 200 <= code < 300:
            return json_response(code, {"status": code})
        kind = "not_found" if code == 404 else "no_running_job"
        return error_response(code, kind, f"No replication job is running for source({source_id})")

    def _invalid_source(self, source_id: int) -> Response:
        """The 400 of an unknown source."""
        message = f"Unable to locate source({source_id}) for client ({self._sim.client_id})"
        return error_response(400, "invalid_source", message)

    @staticmethod
    def _of_source(source_id: str, read: Callable[[int], Any]) -> Response:
        """What `read` says of one source, or a 404 if there is no such source."""
        try:
            return json_response(200, read(int(source_id)))
        except KeyError:
            return error_response(404, "not_found", f"source not found ({source_id})")

    def _update_source(self, params: Params, request: Request) -> Response:
        """PUT /v4/sources/{id}: pause, unpause or rename; its own error bodies."""
        source_id = int(params[0])
        invalid_id = json_response(
            400, {"error": "InvalidId", "data": {"message": f"source not found ({source_id})"}}
        )
        if source_id not in self._account.source_ids():
            return invalid_id
        try:
            payload = json.loads(request.body.decode() or "null")
            if not isinstance(payload, dict):
                raise ValueError("the request body must be a JSON object")
        except ValueError as exc:
            message = f"Invalid request body: {exc}"
            return json_response(400, {"error": "InvalidBody", "data": {"message": message}})
        try:
            return json_response(200, self._account.update_source(source_id, payload))
        except KeyError:
            return invalid_id

    def _page(self, endpoint: str, request: Request) -> Response:
        """A page of the extractions or loads list (`?page=N`, from 1)."""
        raw = request.query.get("page", "1")
        if not (raw.isdigit() and int(raw) >= 1):
            return error_response(400, "bad_request", "page must be a positive integer")
        if endpoint == "extractions":
            records = self._account.extraction_records(
                self._sim.list_running_jobs, self._sim.tap_field
            )
        else:
            records = self._account.load_records(self._sim.load_stream_ids)
        path = f"/v4/{self._sim.client_id}/{endpoint}"
        return json_response(200, _paginate(records, int(raw), self._sim.page_size, path))

    # -- logs -----------------------------------------------------------------------------

    def _log_link(self, job_name: str) -> Response:
        """GET /v4/{client}/extractions/{job_name}: a redirect to the log's pre-signed URL."""
        token = self._account.log_link(job_name)
        if token is None:
            return error_response(404, "not_found", EXTRACTION_NOT_FOUND_MESSAGE)
        base = self._sim.logs_base_url
        location = f"{base}/{LOG_BUCKET}/{quote(job_name)}?x-amz-security-token={token}"
        return Response(302, headers=[("Location", location)])

    def log_download(self, request: Request) -> Response:
        """Answer a request to a pre-signed log URL: the log, streamed, or S3's XML error.

        Args:
            request: The request to the logs listener.

        Returns:
            The streamed log, or a 405, 400 (an Authorization header) or 403.
        """
        if request.method != "GET":
            return xml_error(405, "MethodNotAllowed", "The specified method is not allowed")
        if "authorization" in request.headers:
            return xml_error(400, "InvalidArgument", _AUTH_MECHANISM_MESSAGE)
        bucket, _, key = request.path.lstrip("/").partition("/")
        token = request.query.get("x-amz-security-token", "")
        job_name = self._account.log_job(token) if token else None
        if bucket != LOG_BUCKET or job_name is None or job_name != unquote(key):
            return xml_error(403, "AccessDenied", "Access Denied")
        plan = self._account.log_plan(job_name)
        return Response(200, content_type="text/plain; charset=utf-8", stream=plan.chunks())


def _paginate(items: list[dict[str, Any]], page: int, size: int, path: str) -> dict[str, Any]:
    """One page of a list, with its total and the links to the next and previous pages."""
    start = (page - 1) * size
    links: dict[str, str] = {}
    if start + size < len(items):
        links["next"] = f"{path}?page={page + 1}"
    if page > 1:
        links["previous"] = f"{path}?page={page - 1}"
    return {"data": items[start : start + size], "page": page, "total": len(items), "links": links}
