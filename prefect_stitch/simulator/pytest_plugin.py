"""pytest fixtures that start a Stitch simulator (registered through the `pytest11` entry point).

Example:
    A test that drives the simulator through the fixture:

    ```python
    def test_trigger(stitch_simulator):
        stitch_simulator.add_source(1001)
        assert stitch_simulator.base_url.startswith("http://127.0.0.1:")
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from prefect_stitch.simulator._server import StitchSimulator

SimulatorFactory = Callable[..., StitchSimulator]


@pytest.fixture
def stitch_simulator() -> Iterator[StitchSimulator]:
    """A started simulator (token "sim-token", client ID 116078), stopped after the test.

    Yields:
        The running simulator.

    Example:
        A test using it:

        ```python
        def test_sources(stitch_simulator):
            stitch_simulator.add_source(1)
            assert stitch_simulator.source(1)["id"] == 1
        ```
    """
    with StitchSimulator(token="sim-token", client_id=116078) as sim:  # noqa: S106
        yield sim


@pytest.fixture
def stitch_simulator_factory() -> Iterator[SimulatorFactory]:
    """A callable that starts simulators from constructor kwargs; all are stopped at teardown.

    Yields:
        `factory(**kwargs) -> StitchSimulator` (defaults: token "sim-token", client 116078).

    Example:
        A test using it:

        ```python
        def test_small_pages(stitch_simulator_factory):
            sim = stitch_simulator_factory(page_size=2, enforce_rate_limit=True)
            assert sim.page_size == 2
        ```
    """
    started: list[StitchSimulator] = []

    def factory(**kwargs: Any) -> StitchSimulator:
        kwargs.setdefault("token", "sim-token")
        kwargs.setdefault("client_id", 116078)
        sim = StitchSimulator(**kwargs).start()
        started.append(sim)
        return sim

    try:
        yield factory
    finally:
        for sim in started:
            sim.stop()
