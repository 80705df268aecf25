"""Deployable entrypoint: announce every Stitch job of an account that ends.

Used by ``prefect.yaml`` (deployment ``stitch-watch/watch-account``). Each run reads the
account's listing for ``duration_seconds`` (a schedule then starts the next run) and
emits ``stitch.sync.succeeded``, ``failed`` or ``terminated`` for every job that
completes, Stitch's own schedule's included, exactly once per job across runs.

Example:
    ```bash
    prefect deployment run 'stitch-watch/watch-account' -p duration_seconds=600 --watch
    ```
"""

from prefect_stitch.watcher import stitch_watch_flow

__all__ = ["stitch_watch_flow"]

if __name__ == "__main__":
    # Serve it without a work pool: `python flows/stitch_watch.py`
    stitch_watch_flow.serve(name="watch-account")
