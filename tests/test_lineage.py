"""Lineage keys and the defensive readers of Stitch's loosely documented objects.

* ``asset_key``: a table Stitch loads, keyed like prefect-dbt keys a dbt source
  (``<adapter>://<database>/<schema>/<table>``, quotes removed, dots turned into slashes),
  with Stitch's destination type mapped to dbt's adapter name and Snowflake's identifiers
  upper-cased (unquoted identifiers fold to upper case there);
* ``Destination.database``: v4 keeps connection settings in ``properties`` (older shapes:
  ``connection``); BigQuery has a project, not a database;
* ``Load.warehouse_message``: ``error_state`` is ``null`` on success and an object "subject
  to change" on failure (docs' example: ``notification_data.warehouse_message`` and an
  ``exception_chain``), so any shape must give a message or ``None``, never an error;
* ``Stream.is_selected``: ``selected`` true/false/null, or the flag in ``metadata`` (an
  object, or Singer's list of breadcrumb entries, the stream's own entry having breadcrumb
  ``[]``).
* ``emit_table_materializations``: one asset-materialization event per loaded table, related
  to Stitch and to the source; an event that cannot be emitted never fails the sync.
"""

from __future__ import annotations

from typing import Any

import prefect.events
import pytest

from prefect_stitch._lineage import asset_key, emit_table_materializations
from prefect_stitch.models import Destination, Load, Stream

# -- asset_key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "destination", "key"),
    [
        (
            "postgres",
            {"type": "postgres", "properties": {"database": "analytics"}},
            "postgres://analytics/recurly/accounts",
        ),
        (
            "redshift",
            {"type": "redshift", "properties": {"database": "dev"}},
            "redshift://dev/recurly/accounts",
        ),
        (
            "snowflake: upper case, as its unquoted identifiers fold",
            {"type": "snowflake", "properties": {"database": "analytics"}},
            "snowflake://ANALYTICS/RECURLY/ACCOUNTS",
        ),
        (
            "bigquery: the project is the database",
            {"type": "bigquery", "properties": {"project_id": "my-project"}},
            "bigquery://my-project/recurly/accounts",
        ),
        (
            "postgres keeps Stitch's case",
            {"type": "postgres", "properties": {"database": "Analytics"}},
            "postgres://Analytics/recurly/accounts",
        ),
        (
            "an unknown type keys with its own name",
            {"type": "clickhouse", "properties": {"database": "db"}},
            "clickhouse://db/recurly/accounts",
        ),
        (
            "the type's case and spaces do not matter",
            {"type": " Snowflake ", "properties": {"database": "analytics"}},
            "snowflake://ANALYTICS/RECURLY/ACCOUNTS",
        ),
        (
            "quotes and backticks are removed, dots become slashes",
            {"type": "bigquery", "properties": {"project_id": '`my-project`.eu."x"'}},
            "bigquery://my-project/eu/x/recurly/accounts",
        ),
        ("no database: no key", {"type": "postgres", "properties": {}}, None),
        ("no type: no key", {"properties": {"database": "analytics"}}, None),
        ("a blank type: no key", {"type": "  ", "properties": {"database": "analytics"}}, None),
        ("neither: no key", {}, None),
    ],
)
def test_asset_key(name: str, destination: dict[str, Any], key: str | None) -> None:
    warehouse = Destination.model_validate(destination)
    assert asset_key(warehouse, "recurly", "accounts") == key, name


@pytest.mark.parametrize(
    ("stitch_type", "adapter"),
    [
        ("postgres", "postgres"),
        ("postgresql", "postgres"),
        ("redshift", "redshift"),
        ("panoply", "redshift"),
        ("snowflake", "snowflake"),
        ("bigquery", "bigquery"),
        ("google_bigquery", "bigquery"),
        ("databricks", "databricks"),
        ("databricks_delta", "databricks"),
        ("azure_synapse_analytics", "synapse"),
        ("azure_sql_data_warehouse", "synapse"),
        ("ms_sql_server", "sqlserver"),
        ("microsoft_sql_server", "sqlserver"),
        ("mysql", "mysql"),
    ],
)
def test_stitch_destination_types_map_to_dbt_adapters(stitch_type: str, adapter: str) -> None:
    warehouse = Destination(type=stitch_type, properties={"database": "db"})
    key = asset_key(warehouse, "schema", "table")
    expected = "DB/SCHEMA/TABLE" if adapter == "snowflake" else "db/schema/table"
    assert key == f"{adapter}://{expected}"


def test_the_schema_and_table_are_the_source_name_and_the_stream() -> None:
    warehouse = Destination(type="postgres", properties={"database": "analytics"})
    assert asset_key(warehouse, "stitch_shopify", "orders") == (
        "postgres://analytics/stitch_shopify/orders"
    )
    assert asset_key(warehouse, "stitch_shopify", "customers") != asset_key(
        warehouse, "customers", "stitch_shopify"
    )


# -- Destination.database -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields", "database"),
    [
        ("properties.database", {"properties": {"database": "analytics"}}, "analytics"),
        ("bigquery's project", {"properties": {"project_id": "my-project"}}, "my-project"),
        ("dbname", {"properties": {"dbname": "warehouse"}}, "warehouse"),
        ("databricks' catalog", {"properties": {"catalog": "main"}}, "main"),
        ("the older connection shape", {"connection": {"database": "old"}}, "old"),
        (
            "properties win over connection",
            {"properties": {"database": "new"}, "connection": {"database": "old"}},
            "new",
        ),
        (
            "properties without a database: connection's",
            {"properties": {"host": "h"}, "connection": {"dbname": "old"}},
            "old",
        ),
        (
            "the database over other keys",
            {"properties": {"catalog": "c", "dbname": "d", "project_id": "p", "database": "db"}},
            "db",
        ),
        ("an empty string is no database", {"properties": {"database": "", "dbname": "d"}}, "d"),
        ("a non-string is no database", {"properties": {"database": 5}}, None),
        ("an empty string alone", {"properties": {"database": ""}}, None),
        ("no settings", {}, None),
    ],
)
def test_destination_database(name: str, fields: dict[str, Any], database: str | None) -> None:
    assert Destination.model_validate({"type": "postgres", **fields}).database == database, name


# -- Load.warehouse_message -----------------------------------------------------------------

DOCS_ERROR_STATE = {
    "notification_data": {
        "message": "Error loading data",
        "exception_message": "connection refused",
        "warehouse_error_code": 500151,
        "error": "LOADER_WAREHOUSE_ERROR",
        "new_column": None,
        "status": "ERROR",
        "warehouse_sql_state": "28000",
        "action": "get-connection",
        "warehouse_message": "permission denied for schema recurly",
        "column": None,
    },
    "exception_chain": [
        {"class": "LoaderError", "message": "chain message", "chain_sequence_num": 0},
    ],
}


@pytest.mark.parametrize(
    ("name", "error_state", "message"),
    [
        ("success", None, None),
        (
            "the docs' shape: the warehouse's message",
            DOCS_ERROR_STATE,
            DOCS_ERROR_STATE["notification_data"]["warehouse_message"],
        ),
        (
            "no warehouse message: the message",
            {"notification_data": {"message": "m", "exception_message": "e", "error": "E"}},
            "m",
        ),
        (
            "an empty warehouse message: the next key",
            {"notification_data": {"warehouse_message": "", "message": "m"}},
            "m",
        ),
        (
            "then the exception message",
            {"notification_data": {"exception_message": "e", "error": "E"}},
            "e",
        ),
        (
            "then the error code",
            {"notification_data": {"error": "LOADER_WAREHOUSE_ERROR"}},
            "LOADER_WAREHOUSE_ERROR",
        ),
        (
            "notification data that is not an object",
            {"notification_data": "oops", "exception_chain": [{"message": "from the chain"}]},
            "from the chain",
        ),
        (
            "exception chain only",
            {"exception_chain": [{"class": "X", "message": "first"}, {"message": "second"}]},
            "first",
        ),
        (
            "odd links in the chain are skipped",
            {"exception_chain": ["text", {"class": "X"}, {"message": None}, {"message": "real"}]},
            "real",
        ),
        ("a chain that is not a list", {"exception_chain": {"message": "m"}}, None),
        ("an object without notification data: its message", {"message": "top"}, "top"),
        ("an object with only an error", {"error": "E42"}, "E42"),
        ("an empty message: the error", {"message": "", "error": "E42"}, "E42"),
        ("nothing readable", {"notification_data": {"status": "ERROR"}}, None),
        ("an empty object", {}, None),
        ("a string", "warehouse unavailable", "warehouse unavailable"),
        ("an empty string", "", None),
        ("a list", ["warehouse", "unavailable"], None),
        ("a number", 500151, None),
    ],
)
def test_warehouse_message(name: str, error_state: Any, message: str | None) -> None:
    load = Load(source_name="recurly", stream_name="accounts", error_state=error_state)
    assert load.warehouse_message == message, name


@pytest.mark.parametrize(
    "error_state",
    [
        "x" * 5000,
        {"notification_data": {"warehouse_message": "x" * 5000}},
        {"exception_chain": [{"message": "x" * 5000}]},
        {"message": "x" * 5000},
    ],
)
def test_a_warehouse_message_is_bounded(error_state: Any) -> None:
    load = Load(source_name="recurly", stream_name="accounts", error_state=error_state)
    assert load.warehouse_message == "x" * 1000


@pytest.mark.parametrize(
    ("error_state", "failed"),
    [(None, False), ({}, True), (DOCS_ERROR_STATE, True), ("error", True)],
)
def test_a_load_failed_when_its_error_state_is_not_null(error_state: Any, failed: bool) -> None:
    load = Load(source_name="recurly", stream_name="accounts", error_state=error_state)
    assert load.failed is failed


# -- Stream.is_selected ---------------------------------------------------------------------


def entry(breadcrumb: list[str] | None, **metadata: Any) -> dict[str, Any]:
    return {"breadcrumb": breadcrumb, "metadata": metadata}


@pytest.mark.parametrize(
    ("name", "selected", "metadata", "is_selected"),
    [
        ("selected", True, None, True),
        ("deselected", False, None, False),
        ("never selected (null)", None, None, False),
        ("the flag wins over metadata", False, {"selected": True}, False),
        ("the flag wins over breadcrumbs", False, [entry([], selected=True)], False),
        ("metadata object: selected", None, {"selected": True}, True),
        ("metadata object: deselected", None, {"selected": False}, False),
        ("metadata object without the flag", None, {"inclusion": "available"}, False),
        ("breadcrumbs: the stream's entry selected", None, [entry([], selected=True)], True),
        ("breadcrumbs: the stream's entry deselected", None, [entry([], selected=False)], False),
        (
            "breadcrumbs: a property's flag is not the stream's",
            None,
            [entry(["properties", "id"], selected=False), entry([], selected=True)],
            True,
        ),
        (
            "breadcrumbs: only properties selected",
            None,
            [entry(["properties", "id"], selected=True)],
            False,
        ),
        (
            "breadcrumbs: an entry without a breadcrumb",
            None,
            [{"metadata": {"selected": True}}],
            True,
        ),
        ("breadcrumbs: odd entries", None, ["x", entry([], inclusion="available")], False),
        ("metadata of another type", None, "selected", False),
    ],
)
def test_stream_is_selected(
    name: str, selected: bool | None, metadata: Any, is_selected: bool
) -> None:
    stream = Stream(stream_name="accounts", selected=selected, metadata=metadata)
    assert stream.is_selected is is_selected, name


# -- emit_table_materializations ------------------------------------------------------------


def test_one_materialization_event_per_loaded_table(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **event: sent.append(event))
    emit_table_materializations(
        [
            ("postgres://analytics/recurly/accounts", "accounts"),
            ("postgres://a/recurly/plans", "plans"),
        ],
        source_id=120643,
        job_name="116078.120643.sync.c12f",
        client_id=116078,
    )
    assert [event["event"] for event in sent] == ["prefect.asset.materialization.succeeded"] * 2
    assert [event["resource"] for event in sent] == [
        {
            "prefect.resource.id": "postgres://analytics/recurly/accounts",
            "prefect.resource.name": "accounts",
        },
        {"prefect.resource.id": "postgres://a/recurly/plans", "prefect.resource.name": "plans"},
    ]
    for event in sent:
        related = {
            item["prefect.resource.id"]: item["prefect.resource.role"] for item in event["related"]
        }
        assert related == {
            "stitch": "asset-materialized-by",
            "stitch.source.120643": "stitch-source",
        }
        assert event["payload"] == {
            "job_name": "116078.120643.sync.c12f",
            "source_id": 120643,
            "client_id": 116078,
        }


def test_an_event_that_cannot_be_emitted_never_fails_the_sync(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[str] = []

    def emit_event(**event: Any) -> None:
        if event["resource"]["prefect.resource.name"] == "accounts":
            raise RuntimeError("events API unreachable")
        sent.append(event["resource"]["prefect.resource.name"])

    monkeypatch.setattr(prefect.events, "emit_event", emit_event)
    with caplog.at_level("WARNING", logger="prefect_stitch._lineage"):
        emit_table_materializations(
            [("postgres://db/s/accounts", "accounts"), ("postgres://db/s/plans", "plans")],
            source_id=1,
            job_name=None,
        )
    assert sent == ["plans"]  # the next table's event is still sent
    assert "postgres://db/s/accounts" in caplog.text
