"""Deployable example pipeline: sync a Stitch source, then run downstream work only if it succeeded.

``stitch_sync_flow`` runs as a subflow. When the sync fails it raises a typed error
(``StitchReplicationFailed``, ``StitchSyncTimeout``, ...), the pipeline run ends Failed
with that message, and the downstream step never runs.

Example:
    ```bash
    prefect deployment run 'stitch-sync-pipeline/sync-then-transform' -p source_id=120643
    ```
"""

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from prefect_stitch import StitchCredentials, StitchSyncResult, stitch_sync_flow
from prefect_stitch.models import SourceId


@task(name="Downstream step")
def transform_fresh_data(result: StitchSyncResult) -> str:
    """Stand-in for the work that needs fresh data (dbt, a report refresh, ...).

    Args:
        result: The successful sync's result.

    Returns:
        A one-line summary of what ran.
    """
    return _downstream(
        f"Downstream step ran after Stitch job {result.job_name} of source "
        f"{result.source_id} (finished {result.completion_time})"
    )


def _downstream(summary: str) -> str:
    """What the stand-in downstream step does: say what it ran after, in the log and an artifact."""
    get_run_logger().info(summary)
    create_markdown_artifact(markdown=f"# Downstream\n\n{summary}\n", key="stitch-downstream")
    return summary


@flow(name="stitch-sync-pipeline", flow_run_name="stitch-pipeline-{source_id}", persist_result=True)
def stitch_then_downstream(
    source_id: SourceId,
    credentials: StitchCredentials | str = "stitch",
    poll_interval_seconds: float = 30.0,
    max_wait_seconds: float = 24 * 3600.0,  # as long as Stitch lets a job run
) -> str:
    """Sync one Stitch source, then run the downstream step only when it succeeded.

    Args:
        source_id: The Stitch source id.
        credentials: A StitchCredentials block or the name of a saved one.
        poll_interval_seconds: Seconds between status polls.
        max_wait_seconds: Wall-clock limit of the sync's wait.

    Returns:
        The downstream step's summary.
    """
    result = stitch_sync_flow(
        source_id=source_id,
        credentials=credentials,
        poll_interval_seconds=poll_interval_seconds,
        max_wait_seconds=max_wait_seconds,
    )
    return transform_fresh_data(result)


@flow(name="stitch-downstream", flow_run_name="downstream-{source_id}", persist_result=True)
def downstream_after_sync(source_id: SourceId, job_name: str) -> str:
    """The downstream step on its own, for an automation on ``stitch.sync.succeeded``.

    A sync that suspends while Stitch works cannot run as a subflow: an automation runs this
    deployment when the sync's success event arrives (its data is loaded by then), with
    the job from the event (see the README, "Downstream of a suspended sync").

    Args:
        source_id: The Stitch source that was synced.
        job_name: The Stitch job whose data is loaded.

    Returns:
        A one-line summary of what ran.
    """
    return _downstream(f"Downstream step ran after Stitch job {job_name} of source {source_id}")


if __name__ == "__main__":
    stitch_then_downstream.serve(name="sync-then-transform")
