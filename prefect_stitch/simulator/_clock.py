"""Stitch's clock as the simulator writes it: every timestamp it emits goes through `iso`."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def iso(epoch: float) -> str:
    """Format an epoch timestamp as Stitch does: ISO-8601, UTC, whole seconds, `Z`.

    Args:
        epoch: Seconds since the epoch.

    Returns:
        The timestamp, e.g. `"2020-06-19T15:09:38Z"`.

    Examples:
        >>> from prefect_stitch.simulator import iso
        >>> iso(1592579378.9)
        '2020-06-19T15:09:38Z'
    """
    return datetime.fromtimestamp(math.floor(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
