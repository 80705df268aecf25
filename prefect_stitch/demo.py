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
    from prefect_stitch import (
        StitchCredentials,
        StitchLoadFailed,
        StitchReplicationFailed,
        stitch_sync_flow,
    )
    from prefect_stitch.simulator import Outcome, StitchSimulator, StreamLoad

    started = time.monotonic()
    with StitchSimulator(token="demo-token", client_id=116078) as sim:  # noqa: S106
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
        sim.add_source(
            LOAD_FAILING_SOURCE,
            name="stripe",
            display_name="Stripe",
            outcomes=[
                Outcome.success(
                    duration_seconds=2,
                    loads={
                        "contacts": StreamLoad(
                            error='permission denied for schema "stripe"', delay_seconds=1
                        )
                    },
                )
            ],
        )
        for source_id in (HEALTHY_SOURCE, FAILING_SOURCE, LOAD_FAILING_SOURCE):
            sim.seed_completed(source_id)  # a previous, successful job is listed
        print(f"Stitch simulator listening on {sim.base_url}", flush=True)

        credentials = StitchCredentials(
            access_token=sim.token,
            client_id=sim.client_id,
            base_url=sim.base_url,
            # The simulator is local: a roomier budget than Stitch's 30 per 10 minutes
            # lets the demo poll every second.
            jobs_rate_limit=600,
            jobs_rate_period_seconds=60,
        )

        print(f"\n== 1. A healthy source ({HEALTHY_SOURCE}) ==", flush=True)
        result = stitch_sync_flow(
            source_id=HEALTHY_SOURCE, credentials=credentials, poll_interval_seconds=1
        )
        print("stitch_sync_flow returned a StitchSyncResult (its data is in the warehouse):")
        print(json.dumps(result.model_dump(mode="json"), indent=2))

        print(f"\n== 2. A source whose tap is killed ({FAILING_SOURCE}) ==", flush=True)
        try:
            stitch_sync_flow(
                source_id=FAILING_SOURCE, credentials=credentials, poll_interval_seconds=1
            )
        except StitchReplicationFailed as error:
            print(f"stitch_sync_flow raised {type(error).__name__}:")
            print(f"  failed_phases = {error.failed_phases}")
            print(f"  job_name      = {error.job_name}")
            print(f"  message       = {str(error).splitlines()[0]}")
            failed_as_expected = True
        else:
            failed_as_expected = False
            print("ERROR: the failing source was reported as a success")

        print(
            f"\n== 3. A source whose data fails to load into the warehouse "
            f"({LOAD_FAILING_SOURCE}) ==",
            flush=True,
        )
        try:
            stitch_sync_flow(
                source_id=LOAD_FAILING_SOURCE, credentials=credentials, poll_interval_seconds=1
            )
        except StitchLoadFailed as error:
            print(f"stitch_sync_flow raised {type(error).__name__} (every phase exited 0):")
            print(f"  failed_streams = {error.failed_streams}")
            print(f"  job_name       = {error.job_name}")
            print(f"  message        = {str(error).splitlines()[0]}")
        else:
            failed_as_expected = False
            print("ERROR: the load failure was reported as a success")

    print(f"\nDemo finished in {time.monotonic() - started:.1f} s.")
    return 0 if result.succeeded and failed_as_expected else 1


if __name__ == "__main__":
    sys.exit(main())
