"""A sync that frees its worker: suspend the flow run while Stitch works, resume it after.

In a deployment's run, a sync with ``suspend_while_waiting=True`` starts its job(s), writes a
*registration* (what the wait needs: the jobs' handles, the deadline, the options), and
suspends its flow run: the process ends and the worker slot is free. The account's watcher
(``stitch_watch_flow``, which reads the account through the shared poll anyway) resumes the
run once every job has a verdict (or its deadline passed, or the run was cancelled: then the
watcher stops the jobs). Prefect restarts the resumed run from the top: the sync finds its
registration, does not trigger again, passes the suspension (same key), and waits as a
polling run does: the job being over, its verdict comes at the next listing.

Where Prefect cannot suspend (not a deployment's run, a subflow) or nobody would resume (no
watcher of the account running), the run does not suspend: it waits in its process and says
why in one WARNING line.

Registrations and the watcher's presence are unkeyed Prefect artifacts of the flow run (an
unkeyed artifact emits no event and stays off the Artifacts page), typed by account.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import Any
from uuid import UUID

from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from prefect_stitch._engine.context import run_logger
from prefect_stitch._poll.prefect_store import create_artifact_quietly, update_artifact_quietly
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.models import StitchSyncHandle, SyncAttempt
from prefect_stitch.options import SyncOptions

__all__ = [
    "PRESENCE_SECONDS",
    "Presence",
    "Registration",
    "Suspender",
    "forget",
    "registration_of",
    "registrations",
    "suspend",
    "watcher_alive",
    "why_not_suspend",
]

RESUME_MARGIN_SECONDS = 600.0
"""Prefect fails a suspended run this long after its deadline if nobody resumed it."""
_PAGE = 200
"""Artifacts read per request (the Prefect API's most)."""
PRESENCE_SECONDS = 30.0
"""How often a running watcher says that it runs."""
WATCHER_SILENT_SECONDS = 90.0
"""A watcher not heard of for this long is not counted on to resume anything."""


def _account(client_id: int, base_url: str) -> str:
    return f"{client_id}-{hashlib.sha256(base_url.encode()).hexdigest()[:8]}"


def _type(kind: str, client_id: int, base_url: str) -> str:
    return f"stitch-{kind}-{_account(client_id, base_url)}"


class Registration(BaseModel):
    """What a suspended sync's resumer and its resumed run need to know.

    Attributes:
        flow_run_id: The suspended flow run.
        client_id: The Stitch account.
        base_url: Its API host.
        deadline: When ``max_wait_seconds`` runs out (epoch seconds, this machine's clock).
        handles: Each source's job (name, baseline, the source's load records).
        attempts: The jobs each source ran before (replication retries), by source id.
        reruns_left: The replication retries each source has left, by source id.
        options: The sync's options (the resumer follows the loads as ``loads`` says).
        key: The suspension's key (the resumed run passes the same suspension).
    """

    flow_run_id: UUID
    client_id: int
    base_url: str
    deadline: float
    handles: list[StitchSyncHandle]
    attempts: dict[int, list[SyncAttempt]] = Field(default_factory=dict)
    reruns_left: dict[int, int] = Field(default_factory=dict)
    options: SyncOptions
    key: str

    @property
    def what(self) -> str:
        """The jobs it waits for, for people."""
        return "; ".join(
            f"Stitch job {handle.job_name or '(running)'} of source {handle.source_id}"
            for handle in self.handles
        )

    def handle_of(self, source_id: int) -> StitchSyncHandle | None:
        """The job of ``source_id``, if this registration has one.

        Args:
            source_id: The source.

        Returns:
            Its handle.
        """
        return next((h for h in self.handles if h.source_id == source_id), None)


async def register(registration: Registration) -> None:
    """File a registration under its flow run (replacing an earlier one of the run).

    Args:
        registration: What the resumer and the resumed run need.
    """
    from prefect.client.orchestration import get_client

    await forget(registration.flow_run_id, registration.client_id, registration.base_url)
    async with get_client() as client:
        await create_artifact_quietly(  # no event in the Event Feed
            client,
            _type("suspended", registration.client_id, registration.base_url),
            json.loads(registration.model_dump_json()),
            f"Waiting for {registration.what}: the account's watcher resumes this run when "
            "the jobs end (prefect-stitch)",
            registration.flow_run_id,
        )


async def _artifacts(kind: str, client_id: int, base_url: str, **where: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
    )

    flow_run_id = where.get("flow_run_id")
    artifact_filter = ArtifactFilter(
        type=ArtifactFilterType(any_=[_type(kind, client_id, base_url)]),
        flow_run_id=None if flow_run_id is None else ArtifactFilterFlowRunId(any_=[flow_run_id]),
    )
    found: list[Any] = []
    async with get_client() as client:
        while True:
            page = await client.read_artifacts(
                artifact_filter=artifact_filter, limit=_PAGE, offset=len(found)
            )
            found.extend(page)
            if len(page) < _PAGE:
                return found


async def registrations(client_id: int, base_url: str) -> list[Registration]:
    """Every registration of the account (the resumer's reading).

    Args:
        client_id: The account.
        base_url: Its API host.

    Returns:
        The registrations that read as such.
    """
    found = []
    for artifact in await _artifacts("suspended", client_id, base_url):
        try:
            found.append(Registration.model_validate(artifact.data))
        except ValueError:
            continue
    return found


async def registration_of(flow_run_id: UUID, client_id: int, base_url: str) -> Registration | None:
    """The registration a flow run left before it suspended, if any.

    Args:
        flow_run_id: The flow run.
        client_id: The account.
        base_url: Its API host.

    Returns:
        The registration.
    """
    for artifact in await _artifacts("suspended", client_id, base_url, flow_run_id=flow_run_id):
        try:
            return Registration.model_validate(artifact.data)
        except ValueError:
            continue
    return None


async def forget(flow_run_id: UUID, client_id: int, base_url: str) -> None:
    """Remove a flow run's registration (its verdict is in, or it is gone).

    Args:
        flow_run_id: The flow run.
        client_id: The account.
        base_url: Its API host.
    """
    from prefect.client.orchestration import get_client

    found = await _artifacts("suspended", client_id, base_url, flow_run_id=flow_run_id)
    async with get_client() as client:
        for artifact in found:
            await client.delete_artifact(artifact.id)


class Presence:
    """A watcher's word that it runs (and resumes the account's suspended syncs), kept fresh.

    Args:
        client_id: The account.
        base_url: Its API host.

    Example:
        ```python
        from prefect_stitch._engine.suspension import Presence

        async def watch_for_a_while() -> None:
            presence = Presence(116078, "https://api.stitchdata.com")
            await presence.beat()  # every PRESENCE_SECONDS while watching
            await presence.leave()
        ```
    """

    def __init__(self, client_id: int, base_url: str) -> None:
        self.client_id, self.base_url = client_id, base_url
        self._artifact_id: UUID | None = None

    async def beat(self) -> None:
        """Say, now, that the watcher runs."""
        from prefect.client.orchestration import get_client
        from prefect.context import FlowRunContext

        data = {"at": time.time()}
        async with get_client() as client:
            known = self._artifact_id
            if known is not None and await update_artifact_quietly(client, str(known), data):
                return  # no event in the Event Feed (two a minute with the client's calls)
            context = FlowRunContext.get()
            flow_run = None if context is None else context.flow_run
            self._artifact_id = UUID(
                await create_artifact_quietly(
                    client,
                    _type("watcher", self.client_id, self.base_url),
                    data,
                    "A watcher of this Stitch account runs (prefect-stitch)",
                    None if flow_run is None else flow_run.id,
                )
            )

    async def leave(self) -> None:
        """Say that the watcher stopped (suspending syncs then wait in their process)."""
        from prefect.client.orchestration import get_client

        if self._artifact_id is None:
            return
        async with get_client() as client:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_artifact(self._artifact_id)
        self._artifact_id = None


async def watcher_alive(client_id: int, base_url: str) -> bool:
    """Whether a watcher of the account said lately that it runs.

    Args:
        client_id: The account.
        base_url: Its API host.

    Returns:
        True when one did, within ``WATCHER_SILENT_SECONDS``.
    """
    for artifact in await _artifacts("watcher", client_id, base_url):
        at = artifact.data.get("at") if isinstance(artifact.data, dict) else None
        if isinstance(at, int | float) and time.time() - at < WATCHER_SILENT_SECONDS:
            return True
    return False


def why_not_suspend() -> str | None:
    """Why this flow run cannot be suspended (``None``: it can, as far as Prefect goes).

    Returns:
        The reason, with the fix, or ``None``.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run = None if context is None else context.flow_run
    if flow_run is None:
        return "it is not a flow run (run stitch_sync_flow from a deployment)"
    if flow_run.parent_task_run_id is not None:
        return (
            "it is a subflow, which Prefect cannot suspend (run the sync's deployment with "
            "prefect.deployments.run_deployment instead)"
        )
    if flow_run.deployment_id is None:
        return (
            "it is not a deployment's run, which Prefect cannot resume (deploy it: see "
            "prefect.yaml's sync-source-suspending)"
        )
    return None


async def suspend(key: str, message: str, timeout_seconds: float) -> None:
    """Suspend the current flow run (its process ends), unless this suspension was resumed.

    Like ``prefect.flow_runs.suspend_flow_run``, with a state message that names the jobs
    waited for (what the run's page shows while it is suspended).

    Args:
        key: The suspension's key: the resumed run, calling it again, passes on.
        message: The suspended state's message.
        timeout_seconds: Prefect fails the run when nobody resumed it by then.

    Raises:
        RuntimeError: Prefect refused the suspension.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State
    from prefect.context import FlowRunContext
    from prefect.exceptions import Abort, Pause
    from prefect.states import Suspended
    from prefect.utilities.engine import propose_state

    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    proposed: State[Any] = Suspended(
        timeout_seconds=max(int(timeout_seconds), 1), pause_key=key, message=message
    )
    async with get_client() as client:
        try:
            state = await propose_state(client, proposed, flow_run_id=context.flow_run.id)
        except Abort as exc:
            raise RuntimeError(f"Prefect refused to suspend the run: {exc}") from exc
    if state.is_running():
        return  # resumed: this suspension is behind us
    if not state.is_paused():
        raise RuntimeError(f"Prefect did not suspend the run: {state.type.value}")
    raise Pause(state=state)


class Suspender:
    """Suspends one flow run's syncs while Stitch works, once per round of jobs.

    Args:
        credentials: The account's credentials.
        options: The sync's options (``suspend_while_waiting``, ``loads``, ...).
        source_id: A source of the account (to learn the account's id).
    """

    def __init__(self, credentials: StitchCredentials, options: SyncOptions, source_id: int):
        self.credentials, self.options, self.source_id = credentials, options, source_id
        self._client_id: int | None = None
        self._registration: Registration | None = None
        self._read = False
        """Whether this run's registration was read."""
        self.registered = False

    @property
    def flow_run_id(self) -> UUID | None:
        """The current flow run, if any."""
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        return None if context is None or context.flow_run is None else context.flow_run.id

    async def client_id(self) -> int:
        """The account's id (from the block, or read once from Stitch)."""
        if self._client_id is None:
            async with self.credentials.get_client() as client:
                self._client_id = await client.resolve_client_id(self.source_id)
        return self._client_id

    async def registration(self) -> Registration | None:
        """The registration this run left before it was suspended (a resumed run's)."""
        flow_run_id = self.flow_run_id
        if not self._read and flow_run_id is not None:
            base_url = self.credentials.base_url
            self._registration = await registration_of(
                flow_run_id, await self.client_id(), base_url
            )
        self._read = True
        return self._registration

    async def while_stitch_works(
        self,
        handles: list[StitchSyncHandle],
        attempts: dict[int, list[SyncAttempt]],
        reruns_left: dict[int, int],
        seconds_left: float,
    ) -> None:
        """Suspend the run until the watcher resumes it, or say why it waits in its process.

        Args:
            handles: The jobs this round waits for.
            attempts: The jobs each source ran before.
            reruns_left: The replication retries each source has left.
            seconds_left: Seconds left of ``max_wait_seconds``.

        Raises:
            prefect.exceptions.Pause: The run is suspended (its process ends).
        """
        client_id = await self.client_id()
        key = "stitch-" + "-".join(f"{h.source_id}.{h.job_name or 'running'}" for h in handles)
        reason = why_not_suspend()
        resumed = await self.registration()
        returning = resumed is not None and resumed.key == key
        if (
            reason is None
            and not returning
            and not await watcher_alive(client_id, self.credentials.base_url)
        ):
            reason = (
                f"no watcher of Stitch account {client_id} is running to resume it "
                "(deploy and start stitch_watch_flow: prefect.yaml's watch-account)"
            )
        if reason is not None:
            run_logger().warning(
                "Not suspending the run while Stitch works: %s. Waiting in this process", reason
            )
            return
        registration = Registration(
            flow_run_id=self.flow_run_id,
            client_id=client_id,
            base_url=self.credentials.base_url,
            deadline=time.time() + seconds_left,
            handles=handles,
            attempts=attempts,
            reruns_left=reruns_left,
            options=self.options,
            key=key,
        )
        if not returning:
            await register(registration)
            run_logger().info(
                "Suspending the run while Stitch works: the watcher of account %s resumes it "
                "when %s has ended",
                client_id,
                registration.what,
            )
        self.registered = True
        await suspend(
            key,
            f"Waiting for {registration.what} (the account's watcher resumes this run)",
            seconds_left + RESUME_MARGIN_SECONDS,
        )

    async def done(self) -> None:
        """Forget this run's registration (its jobs' verdicts are in)."""
        flow_run_id = self.flow_run_id
        if flow_run_id is not None and (self.registered or await self.registration()):
            await forget(flow_run_id, await self.client_id(), self.credentials.base_url)
        self.registered, self._registration, self._read = False, None, True
