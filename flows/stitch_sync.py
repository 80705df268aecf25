"""Deployable entrypoints: sync one Stitch source, or many sources of one account.

Used by ``prefect.yaml`` (deployments ``stitch-sync/sync-source`` and
``stitch-sync-many/sync-sources``).

Thin on purpose: the flow lives in the package, so a deployment always runs the installed,
tested code.

Example:
    ```bash
    prefect deployment run 'stitch-sync/sync-source' -p source_id=120643 --watch
    ```
"""

from prefect_stitch.flows import stitch_sync_flow, stitch_sync_many_flow

__all__ = ["stitch_sync_flow", "stitch_sync_many_flow"]

if __name__ == "__main__":
    # Serve it without a work pool: `python flows/stitch_sync.py`
    stitch_sync_flow.serve(name="sync-source")
