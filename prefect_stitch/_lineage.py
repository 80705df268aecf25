"""Lineage: Stitch's tables as Prefect assets, upstream of the dbt models that read them.

When a stream's load lands, the sync emits a Prefect asset materialization event for its
table, keyed the way prefect-dbt keys a dbt *source* (``<adapter>://<relation>`` with
the relation's quotes removed and its dots turned into slashes): the warehouse adapter,
the database, the schema Stitch loads the source into (the source's ``name``) and the
table (the stream's name). A dbt model that declares the table as a source then shows
Stitch's table upstream of it in Prefect's asset graph.

Stitch's destination types map to dbt's adapter names; Snowflake folds unquoted
identifiers to upper case (as its dbt relations show them), the others keep Stitch's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from prefect_stitch.models import Destination

__all__ = ["asset_key", "emit_table_materializations"]

_logger = logging.getLogger("prefect_stitch._lineage")

_ADAPTERS: dict[str, str] = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "redshift": "redshift",
    "panoply": "redshift",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "google_bigquery": "bigquery",
    "databricks": "databricks",
    "databricks_delta": "databricks",
    "azure_synapse_analytics": "synapse",
    "azure_sql_data_warehouse": "synapse",
    "ms_sql_server": "sqlserver",
    "microsoft_sql_server": "sqlserver",
    "mysql": "mysql",
}
_UPPER_CASE = {"snowflake"}


def asset_key(destination: Destination, schema: str, table: str) -> str | None:
    """The Prefect asset key of a table Stitch loads, in prefect-dbt's form.

    Args:
        destination: The account's destination (type and database).
        schema: The schema: the source's ``name``.
        table: The table: the stream's name.

    Returns:
        ``<adapter>://<database>/<schema>/<table>``, or ``None`` when the destination's
        type or database is unknown.

    Example:
        ```python
        from prefect_stitch._lineage import asset_key
        from prefect_stitch.models import Destination

        warehouse = Destination(type="postgres", properties={"database": "analytics"})
        print(asset_key(warehouse, "recurly", "accounts"))
        # postgres://analytics/recurly/accounts
        ```
    """
    kind = (destination.type or "").strip().lower()
    database = destination.database
    if not kind or not database:
        return None
    adapter = _ADAPTERS.get(kind, kind)
    parts = [database, schema, table]
    if adapter in _UPPER_CASE:
        parts = [part.upper() for part in parts]
    cleaned = [part.replace('"', "").replace("`", "").replace(".", "/") for part in parts]
    return f"{adapter}://" + "/".join(cleaned)


def emit_table_materializations(
    keys: Sequence[tuple[str, str]], *, source_id: int, job_name: str | None, **payload: Any
) -> None:
    """Emit one ``prefect.asset.materialization.succeeded`` event per loaded table.

    Args:
        keys: ``(asset key, table name)`` of each table loaded.
        source_id: The Stitch source.
        job_name: The job whose data was loaded.
        **payload: More event payload fields (JSON-serialisable).

    Example:
        ```python
        from prefect_stitch._lineage import emit_table_materializations

        emit_table_materializations([("postgres://analytics/recurly/accounts", "accounts")],
                                    source_id=120643, job_name="116078.120643.sync.c12f")
        ```
    """
    from prefect.events import emit_event

    for key, table in keys:
        try:
            emit_event(
                event="prefect.asset.materialization.succeeded",
                resource={"prefect.resource.id": key, "prefect.resource.name": table},
                related=[
                    {
                        "prefect.resource.id": "stitch",
                        "prefect.resource.role": "asset-materialized-by",
                    },
                    {
                        "prefect.resource.id": f"stitch.source.{source_id}",
                        "prefect.resource.role": "stitch-source",
                    },
                ],
                payload={"job_name": job_name, "source_id": source_id, **payload},
            )
        except Exception as exc:  # lineage never fails a sync
            _logger.warning("Could not emit the asset event of %s: %s", key, exc)
