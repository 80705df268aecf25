"""prefect-stitch: run Stitch replication jobs from Prefect 3; never call a failed one a success.

Example:
    ```python
    from prefect_stitch import stitch_sync_flow

    result = stitch_sync_flow(source_id=120643, credentials="stitch")
    print(result.job_name, result.duration_seconds)
    ```
"""

from importlib.metadata import PackageNotFoundError, version

from prefect_stitch import _moved
from prefect_stitch.client import StitchClient
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import (
    PhaseFailure,
    StitchAPIError,
    StitchAuthError,
    StitchConfigurationError,
    StitchError,
    StitchInvalidSourceError,
    StitchJobAlreadyRunning,
    StitchJobTerminated,
    StitchLoadFailed,
    StitchLoadTimeout,
    StitchNotFoundError,
    StitchReplicationFailed,
    StitchSyncManyFailed,
    StitchSyncTimeout,
    StitchTransportError,
    StitchVerdictUnavailable,
)
from prefect_stitch.flows import (
    run_stitch_sync,
    run_stitch_sync_many,
    stitch_sync_flow,
    stitch_sync_many_flow,
)
from prefect_stitch.models import (
    Destination,
    Extraction,
    Load,
    Source,
    StitchSyncHandle,
    StitchSyncManyResult,
    StitchSyncResult,
    Stream,
    StreamLoadResult,
    SyncAttempt,
    SyncOutcome,
    SyncStatus,
)
from prefect_stitch.options import SyncOptions
from prefect_stitch.source import StitchSource, StitchSyncRun, stitch_source_sync_flow
from prefect_stitch.tasks import (
    fetch_stitch_extraction_logs,
    pause_stitch_source,
    start_stitch_sync,
    stop_stitch_sync,
    wait_for_stitch_sync,
)
from prefect_stitch.watcher import StitchWatchSummary, run_stitch_watch, stitch_watch_flow

_moved.install()

try:
    __version__ = version("prefect-stitchdata")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Destination",
    "Extraction",
    "Load",
    "PhaseFailure",
    "Source",
    "StitchAPIError",
    "StitchAuthError",
    "StitchClient",
    "StitchConfigurationError",
    "StitchCredentials",
    "StitchError",
    "StitchInvalidSourceError",
    "StitchJobAlreadyRunning",
    "StitchJobTerminated",
    "StitchLoadFailed",
    "StitchLoadTimeout",
    "StitchNotFoundError",
    "StitchReplicationFailed",
    "StitchSource",
    "StitchSyncHandle",
    "StitchSyncManyFailed",
    "StitchSyncManyResult",
    "StitchSyncResult",
    "StitchSyncRun",
    "StitchSyncTimeout",
    "StitchTransportError",
    "StitchVerdictUnavailable",
    "StitchWatchSummary",
    "Stream",
    "StreamLoadResult",
    "SyncAttempt",
    "SyncOptions",
    "SyncOutcome",
    "SyncStatus",
    "__version__",
    "fetch_stitch_extraction_logs",
    "pause_stitch_source",
    "run_stitch_sync",
    "run_stitch_sync_many",
    "run_stitch_watch",
    "start_stitch_sync",
    "stitch_source_sync_flow",
    "stitch_sync_flow",
    "stitch_sync_many_flow",
    "stitch_watch_flow",
    "stop_stitch_sync",
    "wait_for_stitch_sync",
]
