"""A verdict reached while the Prefect API cannot be reached waits for the API, then goes on.

The function, against a real local HTTP server that is not listening at first; and a sync
flow that holds its verdict until that server answers (the flow's own API, the test
harness's, stays up: only the health check is pointed elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prefect_stitch import stitch_sync_flow
from prefect_stitch._engine import prefect_api
from prefect_stitch.simulator import Outcome, StitchSimulator
from tests.conftest import make_credentials


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        return None


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _logger() -> tuple[logging.Logger, _Said]:
    said = _Said()
    logger = logging.Logger("hold_test", logging.DEBUG)  # not in the logging tree
    logger.addHandler(said)
    return logger, said


def _api_back_after(seconds: float, monkeypatch: pytest.MonkeyPatch) -> list[ThreadingHTTPServer]:
    """Point the health check at a port where an API starts listening ``seconds`` later."""
    port = free_port()
    monkeypatch.setattr(prefect_api, "_health_url", lambda: f"http://127.0.0.1:{port}/api/health")
    monkeypatch.setattr(prefect_api, "CHECK_EVERY_SECONDS", 0.1)
    servers: list[ThreadingHTTPServer] = []

    def come_back() -> None:  # not even listening before
        servers.append(ThreadingHTTPServer(("127.0.0.1", port), _Health))
        servers[0].serve_forever()

    threading.Timer(seconds, come_back).start()
    return servers


def _stop(servers: list[ThreadingHTTPServer]) -> None:
    time.sleep(0.2)
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_sync_holds_its_verdict_until_the_api_answers(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.add_source(71, outcomes=[Outcome.success(duration_seconds=0.2)])
    began = time.monotonic()
    servers = _api_back_after(4.0, monkeypatch)
    try:
        result = stitch_sync_flow(
            source_id=71,
            credentials=make_credentials(sim),
            loads="ignore",
            poll_interval_seconds=0.1,
        )
    finally:
        _stop(servers)
    assert result.status == "succeeded"
    assert time.monotonic() - began >= 4.0, "the verdict was not held"
    assert servers, "the API never came back"


async def test_a_verdict_waits_for_the_api_and_goes_on_when_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servers = _api_back_after(1.5, monkeypatch)
    logger, said = _logger()
    try:
        began = time.monotonic()
        await asyncio.wait_for(prefect_api.until_prefect_answers(logger), 10)
        waited = time.monotonic() - began
    finally:
        _stop(servers)
    assert 1.4 <= waited < 3.0, waited
    assert sum("cannot be reached" in m for m in said.lines) == 1, said.lines
    assert sum("answers again" in m for m in said.lines) == 1, said.lines


async def test_an_api_that_answers_holds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setattr(prefect_api, "_health_url", lambda: f"http://127.0.0.1:{port}/api/health")
    server = ThreadingHTTPServer(("127.0.0.1", port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logger, said = _logger()
    try:
        await asyncio.wait_for(prefect_api.until_prefect_answers(logger), 2)
    finally:
        server.shutdown()
        server.server_close()
    assert not said.lines


def test_outside_a_run_there_is_no_api_to_wait_for() -> None:
    assert prefect_api._health_url() is None
