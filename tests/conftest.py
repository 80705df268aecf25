"""Shared fixtures: one Prefect test harness for the suite, a Stitch simulator per test."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

from prefect_stitch import StitchCredentials
from prefect_stitch.simulator import StitchSimulator


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One Prefect API (SQLite) for the whole session: it takes ~20 s to start."""
    with prefect_test_harness(server_startup_timeout=180):
        yield


REALISTIC_BUDGET = {"jobs_rate_limit": 30, "jobs_rate_period_seconds": 3.0}
"""Stitch's jobs budget (30 requests per 10 minutes per account), 200 times faster."""


def enforce_budget(sim: StitchSimulator) -> StitchSimulator:
    """Make the simulator answer 429 beyond the realistic budget, as Stitch may."""
    sim.enforce_rate_limit = True
    sim.jobs_rate_limit = REALISTIC_BUDGET["jobs_rate_limit"]
    sim.jobs_rate_period_seconds = REALISTIC_BUDGET["jobs_rate_period_seconds"]
    return sim


@pytest.fixture
def sim(stitch_simulator: StitchSimulator) -> StitchSimulator:
    """The bundled Stitch simulator, fresh for each test, enforcing the realistic budget."""
    return enforce_budget(stitch_simulator)


def make_credentials(sim: StitchSimulator, **overrides: object) -> StitchCredentials:
    """Credentials for the simulator: fast retries, and the realistic jobs budget."""
    values: dict[str, object] = {
        "access_token": sim.token,
        "client_id": sim.client_id,
        "base_url": sim.base_url,
        "request_timeout_seconds": 2.0,
        "max_retries": 3,
        "retry_backoff_seconds": 0.01,
        **REALISTIC_BUDGET,
    }
    values.update(overrides)
    return StitchCredentials(**values)  # type: ignore[arg-type]


@pytest.fixture
def credentials(sim: StitchSimulator) -> StitchCredentials:
    return make_credentials(sim)
