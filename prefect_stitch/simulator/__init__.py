"""A local stand-in for Stitch's Connect API, for tests, demos and benchmarks.

`StitchSimulator` is a real HTTP server on 127.0.0.1 that answers like the documented API:
start/stop a replication job, the paginated extractions and loads lists, the logs redirect to a
pre-signed URL on another origin (streamed, so logs can be hundreds of megabytes), the sources,
streams and destinations endpoints, auth, and the "jobs" rate window. Outcomes (`Outcome`)
decide how each job ends and which streams receive rows; `StreamLoad` decides when and how each
stream is loaded; faults (`Fault`) misbehave on demand; every request is recorded
(`RecordedRequest`), token masked. It uses the standard library only.

Where Stitch's docs leave room, it takes the harsher reading: phases that never ran report
null, a terminated job is told only by its completion time, a stop takes effect late
(`stop_delay_seconds`), Stitch's own scheduler can start jobs between two polls
(`schedule_job`, `run_after_current`) and so replace a record, loads land late or fail per
stream, and every timestamp, including the `Date` header, comes from Stitch's clock (`now()`,
possibly skewed by `clock_offset_seconds`).

Examples:
    >>> import json, urllib.request
    >>> from prefect_stitch.simulator import StitchSimulator, Outcome
    >>> with StitchSimulator() as sim:
    ...     _ = sim.add_source(1001, outcomes=[Outcome.failure("tap", exit_status=-9)])
    ...     _ = sim.seed_completed(1001)
    ...     request = urllib.request.Request(
    ...         sim.base_url + "/v4/116078/extractions",
    ...         headers={"Authorization": "Bearer sim-token"})
    ...     page = json.load(urllib.request.urlopen(request))
    >>> page["total"], page["data"][0]["tap_exit_status"]
    (1, 0)
"""

from prefect_stitch.simulator._clock import iso
from prefect_stitch.simulator._faults import ENDPOINTS, JOBS_ENDPOINTS, Fault
from prefect_stitch.simulator._logs import LOG_BUCKET
from prefect_stitch.simulator._outcomes import TERMINATED, Outcome, StreamLoad
from prefect_stitch.simulator._server import StitchSimulator
from prefect_stitch.simulator._state import SimulatorState
from prefect_stitch.simulator._traffic import RecordedRequest
from prefect_stitch.simulator._wire import (
    DELETED_SOURCE_MESSAGE,
    EXTRACTION_NOT_FOUND_MESSAGE,
    SERVER_ERROR_MESSAGE,
    UNAUTHORIZED_MESSAGE,
)

__all__ = [
    "DELETED_SOURCE_MESSAGE",
    "ENDPOINTS",
    "EXTRACTION_NOT_FOUND_MESSAGE",
    "JOBS_ENDPOINTS",
    "LOG_BUCKET",
    "SERVER_ERROR_MESSAGE",
    "TERMINATED",
    "UNAUTHORIZED_MESSAGE",
    "Fault",
    "Outcome",
    "RecordedRequest",
    "SimulatorState",
    "StitchSimulator",
    "StreamLoad",
    "iso",
]
