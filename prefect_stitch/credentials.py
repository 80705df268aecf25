"""The `StitchCredentials` Block, and its twin read from ``STITCH_*`` environment variables."""

from __future__ import annotations

import ipaddress
from typing import Any, Self
from urllib.parse import urlsplit

from prefect.blocks.abstract import CredentialsBlock
from pydantic import (
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefect_stitch.client import StitchClient
from prefect_stitch.errors import StitchConfigurationError

__all__ = ["DEFAULT_BASE_URL", "EU_BASE_URL", "StitchCredentials", "StitchEnvSettings"]

DEFAULT_BASE_URL = "https://api.stitchdata.com"
"""Stitch's documented Connect API host (North America)."""

EU_BASE_URL = "https://api.eu-central-1.stitchdata.com"
"""The host assumed for accounts in Stitch's Europe region.

Stitch documents ``https://api.stitchdata.com`` for the Connect API, and documents this EU
host only for its Import API: that the Connect API answers here too is an assumption."""

STITCH_API_DOCS_URL = HttpUrl("https://www.stitchdata.com/docs/developers/stitch-connect/api")
"""Stitch's Connect API reference: the blocks' documentation link in the Prefect UI.

The blocks carry no logo: the package has no published home to serve one from, and the
Prefect UI shows its own block icon rather than a broken image."""

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine (the bundled simulator runs there).

    Args:
        host: A hostname or IP address.

    Returns:
        True for ``localhost`` and loopback addresses.

    Example:
        ```python
        from prefect_stitch.credentials import is_loopback_host

        assert is_loopback_host("127.0.0.1") and not is_loopback_host("api.stitchdata.com")
        ```
    """
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_base_url(value: str, *, allow_insecure_http: bool) -> str:
    """Check a Stitch API base URL and drop its trailing slash.

    Args:
        value: The base URL, e.g. ``https://api.stitchdata.com``.
        allow_insecure_http: Accept ``http://`` for hosts other than loopback.

    Returns:
        The normalized URL.

    Raises:
        StitchConfigurationError: The URL is not an absolute http(s) URL, carries a
            query, fragment or credentials, or uses plain http for a remote host.

    Example:
        ```python
        from prefect_stitch.credentials import normalize_base_url

        print(normalize_base_url("https://api.stitchdata.com/", allow_insecure_http=False))
        ```
    """
    text = (value or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError:
        # Never echo the value: a token pasted into the wrong field must not be logged.
        raise StitchConfigurationError(
            "base_url is not a valid URL (its port is malformed)", parameter="base_url"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        found = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        if parts.scheme in ("http", "https"):
            found = "no host"
        raise StitchConfigurationError(
            f"base_url must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r} "
            f"(found {found})",
            parameter="base_url",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise StitchConfigurationError(
            "base_url must not carry a query, a fragment or credentials; "
            "put the token in access_token",
            parameter="base_url",
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise StitchConfigurationError(
            f"base_url uses plain http for the remote host {parts.hostname!r}: the token would "
            "travel unencrypted. Use https, or set allow_insecure_http=True if you really mean it",
            parameter="base_url",
        )
    del port
    return text.rstrip("/")


class StitchCredentials(CredentialsBlock):
    """Credentials and connection settings for Stitch's Connect API.

    Holds the API access token (Stitch account settings, "API access keys"; it starts
    with ``ac_``), the Stitch client (account) id, and how to reach and pace the API.
    The client id is optional: when it is missing it is read once from the source
    (``GET /v4/sources/{id}``) and cached.

    Save one once, in code as below or in the Prefect UI (*Blocks*, then *Stitch
    Credentials*, after ``prefect block register -m prefect_stitch``).

    ```python
    from prefect_stitch import StitchCredentials

    StitchCredentials(access_token="ac_...", client_id=116078).save("stitch")
    ```

    The example below is the snippet the Prefect UI shows on a saved block's page, where
    the block's name replaces ``BLOCK_NAME``: it lists the account's sources and their ids.

    Attributes:
        access_token: The Stitch Connect API access token.
        client_id: The Stitch client (account) id.
        base_url: The Connect API host.
        allow_insecure_http: Accept plain ``http://`` for a remote host.
        request_timeout_seconds: Timeout of each HTTP request.
        max_retries: Retries of a request after a transient fault.
        retry_backoff_seconds: First delay of the exponential backoff between retries.
        jobs_rate_limit: Requests allowed to the jobs endpoints per period.
        jobs_rate_period_seconds: The period of ``jobs_rate_limit``.

    Example:
        ```python
        import asyncio

        from prefect_stitch import StitchCredentials

        stitch_credentials = StitchCredentials.load("BLOCK_NAME")


        async def print_sources():
            async with stitch_credentials.get_client() as client:
                for source in await client.list_sources():
                    print(source.id, source.display_name)


        asyncio.run(print_sources())
        ```
    """

    # Validation errors must never echo the input: it holds the token.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "Stitch Credentials"
    _block_type_slug = "stitch-credentials"
    # One line: the Prefect UI shows each line of a block type's description as its own.
    _description = (
        "Credentials for Stitch's Connect API: the API access token (in Stitch, Account "
        "settings, API access keys), the account's client id, the API host, and how to pace "
        "and retry requests. The Stitch flows, tasks and Stitch Source blocks use them to "
        "start and follow Stitch replication jobs."
    )
    _documentation_url = STITCH_API_DOCS_URL

    # The form shows the fields in this order, under their titles: Prefect's generated one
    # ("Max Retries") where it reads well.
    access_token: SecretStr = Field(
        default=...,
        title="API access token",
        description=(
            "The Stitch Connect API access token (Account settings, API access keys). "
            "It is sent only in the Authorization header and never logged."
        ),
    )
    client_id: int | None = Field(
        default=None,
        gt=0,
        title="Client (account) id",
        description=(
            "The Stitch client (account) id: the number after /client/ in the Stitch "
            "app's addresses (app.stitchdata.com/client/CLIENT_ID/...). "
            "When empty it is read from the first source synced and cached."
        ),
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        title="API base URL",
        description=(
            f"The Stitch Connect API host: {DEFAULT_BASE_URL} (North America; the host "
            f"Stitch documents) or {EU_BASE_URL} (Europe; assumed: Stitch documents it "
            "for its Import API only)."
        ),
    )
    allow_insecure_http: bool = Field(
        default=False,
        title="Allow plain http to a remote host",
        description=(
            "Accept a plain http:// base URL for a host other than this machine. "
            "Leave off unless you run a local proxy you trust."
        ),
    )
    request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        title="Request timeout (seconds)",
        description="Timeout of each HTTP request to Stitch, in seconds.",
    )
    max_retries: int = Field(
        default=4,
        ge=0,
        le=20,
        description=(
            "Retries of one request after a transient fault (connection error, timeout, "
            "5xx, 429); 4xx errors are never retried."
        ),
    )
    retry_backoff_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        title="First retry delay (seconds)",
        description=(
            "First delay between retries, in seconds; it doubles each retry (with jitter, "
            "capped at 60 s), or follows Stitch's Retry-After."
        ),
    )
    jobs_rate_limit: int = Field(
        default=30,
        gt=0,
        description=(
            "Requests allowed to the jobs endpoints (extractions, logs, loads) per period, "
            "shared by every sync of the account in this process. Stitch allows 30."
        ),
    )
    jobs_rate_period_seconds: float = Field(
        default=600.0,
        gt=0,
        title="Jobs rate period (seconds)",
        description="The period of jobs_rate_limit, in seconds. Stitch's is 600 (10 minutes).",
    )

    @field_validator("access_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr) -> SecretStr:
        """Refuse an empty or blank token."""
        if not value.get_secret_value().strip():
            raise ValueError("access_token is empty: paste the Stitch API access token")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        """Refuse what is not an absolute http(s) URL; drop a trailing slash."""
        # A field validator, not a model one: an error must never carry the whole input,
        # which holds the token. Plain http is judged with allow_insecure_http, below.
        try:
            return normalize_base_url(value, allow_insecure_http=True)
        except StitchConfigurationError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _refuse_plain_http_to_a_remote_host(self) -> Self:
        """Refuse a plain http base URL for a remote host unless allow_insecure_http is set."""
        try:
            normalize_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http)
        except StitchConfigurationError as exc:
            # An error of base_url that carries base_url only: a model validator's ValueError
            # would carry the whole input, token included.
            reason = PydanticCustomError("insecure_base_url", "{reason}", {"reason": str(exc)})
            detail = InitErrorDetails(type=reason, loc=("base_url",), input=self.base_url)
            raise ValidationError.from_exception_data(
                type(self).__name__, [detail], hide_input=True
            ) from None
        return self

    def get_client(self, *args: Any, **kwargs: Any) -> StitchClient:
        """Build an async client for the Connect API from these credentials.

        Args:
            *args: Passed to [`StitchClient`][prefect_stitch.client.StitchClient].
            **kwargs: Passed to [`StitchClient`][prefect_stitch.client.StitchClient]
                (e.g. ``transport=`` for tests).

        Returns:
            A client to use as ``async with credentials.get_client() as client:``.

        Example:
            ```python
            from prefect_stitch import StitchCredentials

            async def last_extractions() -> None:
                credentials = await StitchCredentials.aload("stitch")
                async with credentials.get_client() as client:
                    for record in await client.list_extractions():
                        print(record.source_id, record.job_name)
            ```
        """
        return StitchClient(self, *args, **kwargs)

    @classmethod
    def from_env(cls, **overrides: Any) -> StitchCredentials:
        """Build credentials from ``STITCH_*`` environment variables (and a ``.env`` file).

        Reads ``STITCH_ACCESS_TOKEN`` (required), ``STITCH_CLIENT_ID``,
        ``STITCH_BASE_URL``, ``STITCH_REQUEST_TIMEOUT_SECONDS``, ``STITCH_MAX_RETRIES``,
        ``STITCH_JOBS_RATE_LIMIT`` and the other fields, upper-cased with the prefix.

        Args:
            **overrides: Field values that take precedence over the environment.

        Returns:
            The credentials (not saved as a block; call ``.save(name)`` to keep them).

        Raises:
            StitchConfigurationError: A variable is missing or invalid; the message
                names it.

        Example:
            ```python
            import os
            from prefect_stitch import StitchCredentials

            os.environ["STITCH_ACCESS_TOKEN"] = "ac_..."
            os.environ["STITCH_CLIENT_ID"] = "116078"
            credentials = StitchCredentials.from_env()
            ```
        """
        try:
            settings = StitchEnvSettings(**overrides)
        except ValidationError as exc:
            raise _env_error(exc) from None
        try:
            normalize_base_url(
                settings.base_url, allow_insecure_http=bool(settings.allow_insecure_http)
            )
        except StitchConfigurationError as exc:
            raise StitchConfigurationError(
                f"STITCH_BASE_URL is invalid: {exc}", parameter="STITCH_BASE_URL"
            ) from None
        values = settings.model_dump(exclude_none=True)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise _env_error(exc) from None


class StitchEnvSettings(BaseSettings):
    """The ``STITCH_*`` environment variables, read by pydantic-settings.

    Prefer [`StitchCredentials.from_env`][prefect_stitch.credentials.StitchCredentials.from_env],
    which returns a Block.

    Example:
        ```python
        from prefect_stitch.credentials import StitchEnvSettings

        settings = StitchEnvSettings(access_token="ac_...")
        print(settings.base_url)
        ```
    """

    model_config = SettingsConfigDict(
        env_prefix="STITCH_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    access_token: SecretStr
    client_id: int | None = None
    base_url: str = DEFAULT_BASE_URL
    request_timeout_seconds: float | None = None
    max_retries: int | None = None
    retry_backoff_seconds: float | None = None
    jobs_rate_limit: int | None = None
    jobs_rate_period_seconds: float | None = None
    allow_insecure_http: bool | None = None


def _env_error(exc: ValidationError) -> StitchConfigurationError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first.get("loc") else "access_token"
    variable = f"STITCH_{field.upper()}"
    if first.get("type") == "missing":
        message = f"{variable} is not set: export it (or pass {field}=...) to build credentials"
    else:
        message = f"{variable} is invalid: {first.get('msg', 'invalid value')}"
    return StitchConfigurationError(message, parameter=variable)
