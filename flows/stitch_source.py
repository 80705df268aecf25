r"""Deployable entrypoint: sync a saved Stitch Source block.

Used by ``prefect.yaml`` (deployment ``stitch-source-sync/sync-saved-source``): the run
form offers a picker of the saved Stitch Source blocks.

Example:
    ```bash
    prefect deployment run 'stitch-source-sync/sync-saved-source' \
        -p source='{"$ref": {"block_document_slug": "stitch-source/recurly"}}' --watch
    ```
"""

from prefect_stitch.source import stitch_source_sync_flow

__all__ = ["stitch_source_sync_flow"]

if __name__ == "__main__":
    # Serve it without a work pool: `python flows/stitch_source.py`
    stitch_source_sync_flow.serve(name="sync-saved-source")
