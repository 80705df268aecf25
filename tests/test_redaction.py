"""Pre-signed log URLs carry a credential of their own: httpx's request log never shows it."""

from __future__ import annotations

import logging

import pytest

from prefect_stitch import StitchCredentials
from prefect_stitch.simulator import Outcome, StitchSimulator


async def test_presigned_query_is_redacted_from_httpx_logs(
    sim: StitchSimulator, credentials: StitchCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    sim.add_source(5, outcomes=[Outcome.failure("tap", 1, "boom", duration_seconds=0.0)])
    job = sim.seed_completed(5, Outcome.failure("tap", 1, "boom"))
    caplog.set_level(logging.INFO, logger="httpx")
    async with credentials.get_client() as client:
        text = await client.get_extraction_logs(job, tail_lines=3)
    assert "Exit status is" in text
    downloads = [
        r.getMessage() for r in caplog.records if "pre-signed query redacted" in r.getMessage()
    ]
    assert len(downloads) == 1
    assert "x-amz-security-token" not in caplog.text
    assert f"/v4/{sim.client_id}/extractions/" in caplog.text  # other requests are logged as usual
