"""What travels over HTTP: the request as read, the response to send, Stitch's error bodies.

Every error body of the API is `{"error": {"type": ..., "message": ...}}`, with Stitch's own
messages where its docs give them; the log links' origin (a stand-in for S3) answers errors in
S3's XML.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from prefect_stitch.simulator._faults import Fault

UNAUTHORIZED_MESSAGE = "Not authorized: invalid or missing access token"
"""Message of the 401 body: `{"error": {"type": "unauthorized", "message": ...}}`."""
EXTRACTION_NOT_FOUND_MESSAGE = "The requested extraction job doesn't exist"
"""Message of the 404 body of the logs endpoint for an unknown job name."""
DELETED_SOURCE_MESSAGE = "Integration is deleted."
"""Message of the 400 `invalid_source` body when starting a job for a deleted source."""
SERVER_ERROR_MESSAGE = "The API is experiencing problems. Try again later."
"""Message of the default 5xx fault body, as documented for 500 and 502."""

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


@dataclass(frozen=True)
class Request:
    """One request as the simulator reads it.

    Attributes:
        method: HTTP method.
        path: URL path, without the query string.
        query: Query parameters (last value wins).
        headers: Request headers with lower-case names.
        body: The body, unframed.

    Example:
        >>> from prefect_stitch.simulator._wire import Request
        >>> Request.read("GET", "/v4/1/loads?page=2", {}, b"").query
        {'page': '2'}
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @classmethod
    def read(cls, method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
        """The request to `target` (path and query string)."""
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        return cls(method, split.path, query, headers, body)


@dataclass
class Response:
    """A response to send, or a connection to drop.

    Example:
        >>> from prefect_stitch.simulator._wire import Response
        >>> Response(0, drop=True).drop
        True
    """

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False
    stream: Iterable[bytes] | None = None  # a body sent chunk by chunk instead of `body`


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header is `Bearer <token>` (the scheme in any case).

    Args:
        header: The header's value, if sent.
        token: The access token the API accepts.

    Returns:
        Whether the request is authorized.

    Example:
        >>> from prefect_stitch.simulator._wire import authorized
        >>> authorized("bearer sim-token", "sim-token"), authorized(None, "sim-token")
        (True, False)
    """
    if header is None:
        return False
    scheme, _, credential = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credential.strip().encode(), token.encode()
    )


def json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A JSON response."""
    return Response(status, json.dumps(payload).encode(), "application/json", list(headers))


def error_response(status: int, kind: str, message: str) -> Response:
    """Stitch's error body: `{"error": {"type": kind, "message": message}}`."""
    return json_response(status, {"error": {"type": kind, "message": message}})


def xml_error(status: int, code: str, message: str) -> Response:
    """An S3 error, as the log links' origin answers it."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return Response(status, body.encode(), "application/xml")


def fault_response(fault: Fault, endpoint: str) -> Response:
    """What an intercepting fault answers instead of the endpoint."""
    if fault.kind == "drop":
        return Response(0, drop=True)
    if fault.kind == "malformed_json":
        return Response(200, b'{"data": [', "application/json")
    if fault.kind == "wrong_shape":
        default: Any = [1, 2] if endpoint == "list_sources" else {"unexpected": [1, 2]}
        return json_response(200, default if fault.body is None else fault.body)
    code = cast(int, fault.code)
    if isinstance(fault.body, str):
        return Response(code, fault.body.encode(), "text/html; charset=utf-8", list(fault.headers))
    if fault.body is not None:
        return json_response(code, fault.body, fault.headers)
    payload = {"error": {"type": _ERROR_TYPES.get(code, "error"), "message": _message(code)}}
    return json_response(code, payload, fault.headers)


def _message(code: int) -> str:
    """The message of a status fault's default error body."""
    if code == 401:
        return UNAUTHORIZED_MESSAGE
    if code >= 500:
        return SERVER_ERROR_MESSAGE
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"
