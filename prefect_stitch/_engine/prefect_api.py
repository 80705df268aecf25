"""A verdict reached while the Prefect API cannot be reached waits for it, then is reported.

Through an outage of the Prefect API the shared poll goes on reading Stitch (see
`prefect_stitch._poll.isolation`), so a job's verdict can be in while nothing can be
reported: Prefect's client retries a state report for about a minute (2, 4, 8, 16, 32 s)
and then the run crashes, or it lands up to half a minute after the API is back. So the
wait step holds a verdict while the API does not answer, and hands it on within a second
of its return (one INFO line says so). Any HTTP answer counts: the question is only
whether the API can be reached.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

__all__ = ["until_prefect_answers"]

CHECK_EVERY_SECONDS = 1.0
"""How often an unreachable API is asked again."""
CHECK_TIMEOUT_SECONDS = 3.0


async def until_prefect_answers(logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Return once the Prefect API answers (at once when it does; a run's API only).

    Args:
        logger: Where the hold is said (once when it begins, once when it ends).

    Example:
        ```python
        import asyncio
        import logging
        from prefect_stitch._engine.prefect_api import until_prefect_answers

        asyncio.run(until_prefect_answers(logging.getLogger("demo")))  # no API set: returns
        ```
    """
    url = _health_url()
    if url is None:
        return
    held = False
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_SECONDS) as client:
        while True:
            try:
                await client.get(url)
            except httpx.HTTPError as exc:
                if not held:
                    logger.warning(
                        "Stitch's verdict is in, but the Prefect API cannot be reached (%s): "
                        "holding it until the API answers, so that the run can report it",
                        type(exc).__name__,
                    )
                    held = True
                await asyncio.sleep(CHECK_EVERY_SECONDS)
                continue
            if held:
                logger.info("The Prefect API answers again: reporting the verdict")
            return


def _health_url() -> str | None:
    """The API's health endpoint, when runs report to a server over HTTP (not ephemeral)."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api or (FlowRunContext.get() is None and TaskRunContext.get() is None):
        return None
    return f"{str(api).rstrip('/')}/health"
