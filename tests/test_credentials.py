"""The StitchCredentials Block: its form, secrecy, validation, env, registration.

Prefect's standard block suite runs on it in tests/test_source.py (with every block).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr, ValidationError

from prefect_stitch import StitchCredentials, StitchSource
from prefect_stitch.credentials import DEFAULT_BASE_URL, EU_BASE_URL
from prefect_stitch.errors import StitchConfigurationError

TOKEN = "ac_Sup3rSecretT0ken_do_not_leak"
ENV_VARIABLES = (
    "STITCH_ACCESS_TOKEN",
    "STITCH_CLIENT_ID",
    "STITCH_BASE_URL",
    "STITCH_REQUEST_TIMEOUT_SECONDS",
    "STITCH_MAX_RETRIES",
    "STITCH_RETRY_BACKOFF_SECONDS",
    "STITCH_JOBS_RATE_LIMIT",
    "STITCH_JOBS_RATE_PERIOD_SECONDS",
    "STITCH_ALLOW_INSECURE_HTTP",
)


# Prefect's standard block tests: tests/test_source.py runs them on every block.


# -- schema and secrecy ----------------------------------------------------------------------


def test_every_field_has_a_description_and_the_token_is_secret() -> None:
    for name, field in StitchCredentials.model_fields.items():
        assert field.description, f"{name} has no description"
    schema = StitchCredentials.model_json_schema()
    assert schema["secret_fields"] == ["access_token"]
    assert set(schema["properties"]) >= {"access_token", "client_id", "base_url"}
    assert StitchCredentials.model_fields["access_token"].is_required()


def test_the_form_shows_the_base_url_first_and_every_field_under_its_title() -> None:
    """As the server stores the schema the UI's form reads (fields ordered by position)."""
    StitchCredentials.register_type_and_schema()
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("stitch-credentials")
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
    assert schema is not None
    fields = sorted(schema.fields["properties"].items(), key=lambda item: item[1]["position"])
    assert [(name, spec["title"]) for name, spec in fields] == [
        ("access_token", "API access token"),
        ("client_id", "Client (account) id"),
        ("base_url", "API base URL"),
        ("allow_insecure_http", "Allow plain http to a remote host"),
        ("request_timeout_seconds", "Request timeout (seconds)"),
        ("max_retries", "Max Retries"),
        ("retry_backoff_seconds", "First retry delay (seconds)"),
        ("jobs_rate_limit", "Jobs Rate Limit"),
        ("jobs_rate_period_seconds", "Jobs rate period (seconds)"),
    ]
    for name, spec in fields:
        assert spec["description"] and "\n" not in spec["description"], name


def test_defaults() -> None:
    credentials = StitchCredentials(access_token=TOKEN)
    assert credentials.base_url == DEFAULT_BASE_URL == "https://api.stitchdata.com"
    assert credentials.client_id is None
    assert credentials.jobs_rate_limit == 30
    assert credentials.jobs_rate_period_seconds == 600.0
    assert credentials.request_timeout_seconds > 0
    assert credentials.allow_insecure_http is False


def test_the_token_never_shows() -> None:
    credentials = StitchCredentials(access_token=TOKEN, client_id=116078)
    assert isinstance(credentials.access_token, SecretStr)
    assert credentials.access_token.get_secret_value() == TOKEN
    shown = [
        repr(credentials),
        str(credentials),
        str(credentials.model_dump()),
        str(credentials.model_dump(mode="json")),
        credentials.model_dump_json(),
        repr(credentials.get_client()),
    ]
    for text in shown:
        assert TOKEN not in text, text
    assert "116078" in repr(credentials)  # the repr is still useful


async def test_save_and_load_round_trip() -> None:
    original = StitchCredentials(
        access_token=TOKEN,
        client_id=116078,
        base_url=EU_BASE_URL,
        request_timeout_seconds=12.5,
        max_retries=2,
        retry_backoff_seconds=0.5,
        jobs_rate_limit=20,
        jobs_rate_period_seconds=300.0,
    )
    await original.asave("x", overwrite=True)
    loaded = await StitchCredentials.aload("x")

    assert isinstance(loaded, StitchCredentials)
    assert loaded.access_token.get_secret_value() == TOKEN
    assert loaded.client_id == 116078
    assert loaded.base_url == EU_BASE_URL
    assert loaded.request_timeout_seconds == 12.5
    assert loaded.max_retries == 2
    assert loaded.retry_backoff_seconds == 0.5
    assert loaded.jobs_rate_limit == 20
    assert loaded.jobs_rate_period_seconds == 300.0

    async with get_client() as client:
        document = await client.read_block_document_by_name(
            "x", "stitch-credentials", include_secrets=False
        )
    assert TOKEN not in str(document.data)


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "   "])
def test_empty_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token=token)
    assert "access_token" in str(caught.value)


@pytest.mark.parametrize(
    "base_url",
    [
        "not a url",
        "ftp://x",
        "https://",
        "http://api.stitchdata.com",
        "http://10.1.2.3:8080",
        f"https://{TOKEN}@api.stitchdata.com",
        f"https://api.stitchdata.com?token={TOKEN}",
    ],
)
def test_bad_base_url_is_refused_naming_the_field(base_url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token=TOKEN, base_url=base_url)
    text = str(caught.value)
    assert "base_url" in text
    assert TOKEN not in text
    assert TOKEN not in repr(caught.value)


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1", "http://127.0.0.1:8765", "http://localhost:4200", "http://[::1]:8080"],
)
def test_plain_http_is_accepted_for_this_machine(base_url: str) -> None:
    assert StitchCredentials(access_token=TOKEN, base_url=base_url).base_url == base_url


def test_allow_insecure_http_allows_a_remote_http_host() -> None:
    credentials = StitchCredentials(
        access_token=TOKEN, base_url="http://stitch-proxy.internal:8080", allow_insecure_http=True
    )
    assert credentials.base_url == "http://stitch-proxy.internal:8080"


@pytest.mark.parametrize("nested", [False, True], ids=["credentials", "in-a-source"])
def test_plain_http_to_a_remote_host_is_base_urls_error_and_never_shows_the_token(
    nested: bool,
) -> None:
    """Judged after both fields (base_url comes first in the form), reported as base_url's."""
    values = {"access_token": TOKEN, "base_url": "http://stitch-proxy.internal:8080"}
    with pytest.raises(ValidationError) as caught:
        if nested:
            StitchSource(credentials=values, source_id=1)
        else:
            StitchCredentials(**values)
    [error] = caught.value.errors()
    assert error["loc"] == (("credentials",) if nested else ()) + ("base_url",)
    assert "plain http for the remote host 'stitch-proxy.internal'" in error["msg"]
    assert "allow_insecure_http=True" in error["msg"]
    shown = [
        str(caught.value),
        repr(caught.value),
        caught.value.json(),
        repr(caught.value.errors()),
    ]
    for text in shown:
        assert TOKEN not in text


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://api.stitchdata.com/", "https://api.stitchdata.com"),
        (f"{EU_BASE_URL}//", EU_BASE_URL),
        ("  https://api.stitchdata.com/  ", "https://api.stitchdata.com"),
    ],
)
def test_trailing_slash_is_stripped(given: str, kept: str) -> None:
    assert StitchCredentials(access_token=TOKEN, base_url=given).base_url == kept


def test_the_eu_host_can_be_set() -> None:
    credentials = StitchCredentials(access_token=TOKEN, base_url=EU_BASE_URL)
    assert credentials.base_url == "https://api.eu-central-1.stitchdata.com"
    assert credentials.get_client().base_url == EU_BASE_URL


@pytest.mark.parametrize("client_id", [0, -5])
def test_client_id_must_be_positive(client_id: int) -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token=TOKEN, client_id=client_id)
    assert "client_id" in str(caught.value)


# -- from_env --------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No STITCH_* variables and no .env file in the working directory."""
    for variable in ENV_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_from_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STITCH_ACCESS_TOKEN", TOKEN)
    clean_env.setenv("STITCH_CLIENT_ID", "116078")
    clean_env.setenv("STITCH_BASE_URL", EU_BASE_URL + "/")
    clean_env.setenv("STITCH_MAX_RETRIES", "7")

    credentials = StitchCredentials.from_env()

    assert isinstance(credentials, StitchCredentials)
    assert credentials.access_token.get_secret_value() == TOKEN
    assert credentials.client_id == 116078
    assert credentials.base_url == EU_BASE_URL
    assert credentials.max_retries == 7


def test_from_env_overrides_win(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STITCH_ACCESS_TOKEN", TOKEN)
    clean_env.setenv("STITCH_CLIENT_ID", "116078")
    credentials = StitchCredentials.from_env(client_id=42)
    assert credentials.client_id == 42
    assert credentials.base_url == DEFAULT_BASE_URL


def test_from_env_without_a_token_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STITCH_CLIENT_ID", "116078")
    with pytest.raises(StitchConfigurationError) as caught:
        StitchCredentials.from_env()
    assert "STITCH_ACCESS_TOKEN" in str(caught.value)
    assert caught.value.parameter == "STITCH_ACCESS_TOKEN"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STITCH_CLIENT_ID", "not-a-number"),
        ("STITCH_BASE_URL", "ftp://x"),
        ("STITCH_BASE_URL", "http://api.stitchdata.com"),
        ("STITCH_MAX_RETRIES", "-1"),
    ],
)
def test_from_env_invalid_variable_is_named(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    clean_env.setenv("STITCH_ACCESS_TOKEN", TOKEN)
    clean_env.setenv(variable, value)
    with pytest.raises(StitchConfigurationError) as caught:
        StitchCredentials.from_env()
    assert caught.value.parameter == variable
    assert variable in str(caught.value)
    assert TOKEN not in f"{caught.value!s}{caught.value!r}"


def test_from_env_reads_a_dotenv_in_the_working_directory(clean_env: pytest.MonkeyPatch) -> None:
    """A .env in the working directory is read (the cwd is the isolated tmp dir here)."""
    Path(".env").write_text(f"STITCH_ACCESS_TOKEN={TOKEN}\nSTITCH_CLIENT_ID=5\n")
    credentials = StitchCredentials.from_env()
    assert credentials.access_token.get_secret_value() == TOKEN
    assert credentials.client_id == 5


# -- registration ----------------------------------------------------------------------------


async def test_prefect_block_register_registers_the_block() -> None:
    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness should provide an API URL"

    async with get_client() as client:
        try:  # start from a server that does not know the block type
            existing = await client.read_block_type_by_slug("stitch-credentials")
        except ObjectNotFound:
            pass
        else:
            await client.delete_block_type(existing.id)
        with pytest.raises(ObjectNotFound):
            await client.read_block_type_by_slug("stitch-credentials")

    env = {**os.environ, "PREFECT_API_URL": api_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prefect",
        "block",
        "register",
        "-m",
        "prefect_stitch",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode(errors="replace")

    async with get_client() as client:
        block_type = await client.read_block_type_by_slug("stitch-credentials")
        schema = await client.get_most_recent_block_schema_for_block_type(block_type.id)
    assert block_type.name == "Stitch Credentials"
    assert schema is not None
    assert "access_token" in schema.fields["properties"]
    assert schema.fields["secret_fields"] == ["access_token"]

    async with get_client() as client:  # the saved-source job block too
        source_type = await client.read_block_type_by_slug("stitch-source")
        source_schema = await client.get_most_recent_block_schema_for_block_type(source_type.id)
    assert source_type.name == "Stitch Source"
    assert source_schema is not None
    assert {"credentials", "source_id", "loads"} <= set(source_schema.fields["properties"])
    assert "Successfully registered 2 blocks" in output.decode(errors="replace")
