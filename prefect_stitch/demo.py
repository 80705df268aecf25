"""A two-minute tour: run ``stitch_sync_flow`` against the bundled Stitch simulator.

No Stitch account and no Prefect server are needed: the simulator is a real HTTP server
on 127.0.0.1 that answers like Stitch's Connect API, and Prefect starts its embedded
(ephemeral) API on first use. Run it with:

```bash
python -m prefect_stitch.demo
```

It syncs one healthy source (and waits for its data to load into the warehouse), one
whose tap dies with exit status -9, and one whose extraction succeeds but whose load into
the warehouse fails; it prints the typed result and the typed errors.

Example:
    ```python
    from prefect_stitch.demo import main

    main()
    ```
"""

import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect_stitch import StitchCredentials, StitchReplicationFailed, StitchSyncResult
    from prefect_stitch.simulator import StitchSimulator

HEALTHY_SOURCE = 120643
FAILING_SOURCE = 120644
LOAD_FAILING_SOURCE = 120645


def main() -> int:
    """Run the demo; return the process exit code (0 when both paths behaved).

    Returns:
        0 if the healthy source succeeded and the failing ones raised their typed errors.

    Example:
        ```python
        from prefect_stitch.demo import main

        raise SystemExit(main())
        ```
    """
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # The embedded Prefect API takes 20-30 s to create its database on a fresh machine,
    # longer than Prefect's default start-up timeout of 20 s.
    with temporary_settings(
        updates={
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180,
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
        }
    ):
        return _run_demo()


def _run_demo() -> int:
    """The three syncs of the demo against one simulator."""
    from prefect_stitch import StitchLoadFailed, StitchReplicationFailed
    from prefect_stitch.simulator import StitchSimulator

    started = time.monotonic()
    with StitchSimulator(token="demo-token", client_id=116078) as sim:  # noqa: S106
        credentials = _prepare(sim)
        print(f"\n== 1. A healthy source ({HEALTHY_SOURCE}) ==", flush=True)
        result = _sync(credentials, HEALTHY_SOURCE)
        print("stitch_sync_flow returned a StitchSyncResult (its data is in the warehouse):")
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        print(f"\n== 2. A source whose tap is killed ({FAILING_SOURCE}) ==", flush=True)
        tap_failed = _expect(
            credentials, FAILING_SOURCE, StitchReplicationFailed, "failed_phases", "the failing"
        )
        print(
            f"\n== 3. A source whose data fails to load into the warehouse "
            f"({LOAD_FAILING_SOURCE}) ==",
            flush=True,
        )
        load_failed = _expect(
            credentials, LOAD_FAILING_SOURCE, StitchLoadFailed, "failed_streams", "the load"
        )
    print(f"\nDemo finished in {time.monotonic() - started:.1f} s.")
    return 0 if result.succeeded and tap_failed and load_failed else 1


def _prepare(sim: "StitchSimulator") -> "StitchCredentials":
    """The demo's three sources in the simulator, and credentials for it."""
    from prefect_stitch import StitchCredentials
    from prefect_stitch.simulator import Outcome, StreamLoad

    sim.add_source(
        HEALTHY_SOURCE,
        name="recurly",
        display_name="Recurly",
        outcomes=[
            Outcome.success(duration_seconds=3, loads={"accounts": StreamLoad(delay_seconds=2)})
        ],
    )
    sim.add_source(
        FAILING_SOURCE,
        display_name="HubSpot",
        outcomes=[Outcome.failure("tap", -9, "Killed: out of memory", duration_seconds=2)],
    )
    denied = StreamLoad(error='permission denied for schema "stripe"', delay_seconds=1)
    sim.add_source(
        LOAD_FAILING_SOURCE,
        name="stripe",
        display_name="Stripe",
        outcomes=[Outcome.success(duration_seconds=2, loads={"contacts": denied})],
    )
    for source_id in (HEALTHY_SOURCE, FAILING_SOURCE, LOAD_FAILING_SOURCE):
        sim.seed_completed(source_id)  # a previous, successful job is listed
    print(f"Stitch simulator listening on {sim.base_url}", flush=True)
    return StitchCredentials(
        access_token=sim.token,
        client_id=sim.client_id,
        base_url=sim.base_url,
        # The simulator is local: a roomier budget than Stitch's 30 per 10 minutes lets
        # the demo poll every second.
        jobs_rate_limit=600,
        jobs_rate_period_seconds=60,
    )


def _sync(credentials: "StitchCredentials", source_id: int) -> "StitchSyncResult":
    """One sync of the demo, polling every second."""
    from prefect_stitch import stitch_sync_flow

    return stitch_sync_flow(source_id=source_id, credentials=credentials, poll_interval_seconds=1)


def _expect(
    credentials: "StitchCredentials",
    source_id: int,
    error_type: type["StitchReplicationFailed"],
    detail: str,
    what: str,
) -> bool:
    """Sync a source that must fail with ``error_type``; print what the error says."""
    try:
        _sync(credentials, source_id)
    except error_type as error:
        print(f"stitch_sync_flow raised {type(error).__name__}:")
        print(f"  {detail} = {getattr(error, detail)}")
        print(f"  job_name = {error.job_name}")
        print(f"  message  = {str(error).splitlines()[0]}")
        return True
    print(f"ERROR: {what} failure was reported as a success")
    return False


if __name__ == "__main__":
    sys.exit(main())
