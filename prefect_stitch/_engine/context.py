"""A sync's facts, carried together from trigger to verdict."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prefect_stitch._poll import AccountPoller, poller_for
from prefect_stitch._ratelimit import resolve_global_limit
from prefect_stitch.client import StitchClient
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import StitchConfigurationError
from prefect_stitch.models import stitch_source_url
from prefect_stitch.options import SyncOptions

__all__ = [
    "LOOKUP_INTERVAL_SECONDS",
    "SyncContext",
    "check_credentials",
    "open_context",
    "run_logger",
]

LOOKUP_INTERVAL_SECONDS = 1.0
"""The poll interval a step asks for when it needs one listing soon (a baseline)."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


def run_logger() -> Logger:
    """The run's logger (Prefect's), or the package's outside a run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("prefect_stitch")


def check_credentials(credentials: object) -> StitchCredentials:
    """Refuse anything but a credentials block, before any request.

    Args:
        credentials: What the caller passed.

    Returns:
        The credentials.

    Raises:
        StitchConfigurationError: It is not a `StitchCredentials` block.
    """
    if not isinstance(credentials, StitchCredentials):
        raise StitchConfigurationError(
            "credentials must be a StitchCredentials block "
            f"(e.g. StitchCredentials.load('stitch')), got {type(credentials).__name__}",
            parameter="credentials",
        )
    return credentials


@dataclass
class SyncContext:
    """One step of a sync: the source, the credentials, the options, the open client.

    Attributes:
        credentials: The account's credentials.
        client: The open client.
        client_id: The account.
        source_id: The source.
        options: The sync's options.
        deadline: ``time.monotonic()`` bound of the whole sync (``None``: none).
        logger: The run's logger.
        write_artifact: Leave the sync's artifact (a many-sources run writes one table).
        max_poll_failures: Consecutive failed polls a wait tolerates.
        ended_lately: The job ended lately (the watcher resumed this run for it): the
            wait's first listing may be the account's latest, read before the wait began.
    """

    credentials: StitchCredentials
    client: StitchClient
    client_id: int
    source_id: int
    options: SyncOptions
    deadline: float | None
    logger: Logger
    write_artifact: bool = True
    max_poll_failures: int = 5
    ended_lately: bool = False

    @property
    def url(self) -> str:
        """The source's page in the Stitch app."""
        return stitch_source_url(self.client_id, self.source_id)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative; ``None`` without one)."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    @property
    def poller(self) -> AccountPoller:
        """The account's shared poll in this process (``.watch(...)`` it)."""
        return poller_for(
            self.credentials, self.client_id, global_limit_name=self.client.global_limit_name
        )


@contextlib.asynccontextmanager
async def open_context(
    credentials: StitchCredentials,
    source_id: int,
    options: SyncOptions,
    *,
    deadline: float | None,
    write_artifact: bool = True,
    max_poll_failures: int = 5,
) -> AsyncIterator[SyncContext]:
    """Open a client and learn the account (and its global rate limit) once per step.

    Args:
        credentials: The account's credentials.
        source_id: The source (its account is read from Stitch when the block has none).
        options: The sync's options.
        deadline: ``time.monotonic()`` bound of the whole sync.
        write_artifact: Leave the sync's artifact.
        max_poll_failures: Consecutive failed polls a wait tolerates.

    Yields:
        The context.
    """
    async with credentials.get_client() as client:
        client_id = await client.resolve_client_id(source_id)
        client.global_limit_name = await resolve_global_limit(
            client_id,
            options.global_rate_limit,
            limit=credentials.jobs_rate_limit,
            period=credentials.jobs_rate_period_seconds,
        )
        yield SyncContext(
            credentials,
            client,
            client_id,
            source_id,
            options,
            deadline,
            run_logger(),
            write_artifact,
            max_poll_failures,
        )
