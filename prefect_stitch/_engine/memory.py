"""What a run remembers between Prefect's retries: of the trigger task, and of the flow run.

Prefect retries a task in the same process, and a failed flow run in the same process too;
both find here what the earlier attempts learnt, keyed by the flow run (or the task run,
outside a flow) and the source:

* **the trigger's memory**: the baseline listed before the first attempt, whether an
  attempt's request may have reached Stitch (its answer lost), and the trigger's deadline;
  kept until an attempt returns a handle;
* **the flow run's memory** of a source: the job followed whose verdict was not seen (a
  retry of the run follows it instead of starting another) and the jobs already run.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from prefect.client.schemas.objects import State, TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.tasks import Task

from prefect_stitch._poll import Snapshot
from prefect_stitch.client import is_transient
from prefect_stitch.models import StitchSyncHandle, SyncAttempt

__all__ = [
    "RunMemory",
    "TriggerMemory",
    "forget_trigger",
    "out_of_time",
    "retry_on_transient",
    "run_memory",
    "trigger_memory",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MAX_REMEMBERED = 10_000


class _Bounded(Generic[K, V]):
    """A thread-safe dict that forgets its oldest entries beyond a bound."""

    def __init__(self) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The entry of ``key``, if any."""
        with self._lock:
            return self._items.get(key)

    def setdefault(self, key: K, make: Callable[[], V]) -> tuple[V, bool]:
        """The entry of ``key``, made if missing; and whether it was made."""
        with self._lock:
            if key in self._items:
                return self._items[key], False
            value = self._items[key] = make()
            while len(self._items) > _MAX_REMEMBERED:
                self._items.popitem(last=False)
            return value, True

    def pop(self, key: K) -> None:
        """Forget the entry of ``key``."""
        with self._lock:
            self._items.pop(key, None)


@dataclass
class TriggerMemory:
    """What every attempt to start one source's job in one run shares."""

    first_at: datetime
    deadline: float | None
    """``time.monotonic()`` after which nothing more is tried (renewed per task run)."""
    max_wait_seconds: float | None = None
    baseline: Snapshot | None = None
    may_have_started: bool = False
    """An attempt's request may have reached Stitch (and started a job)."""
    source_name: str | None = None


@dataclass
class RunMemory:
    """What a flow run remembers of one source's sync across its own retries."""

    pending: StitchSyncHandle | None = None
    """A job followed whose verdict was not seen."""
    attempts: list[SyncAttempt] = field(default_factory=list)


_triggers: _Bounded[tuple[UUID, int], TriggerMemory] = _Bounded()
_trigger_of_task_run: _Bounded[UUID, TriggerMemory] = _Bounded()
_runs: _Bounded[tuple[UUID, int], RunMemory] = _Bounded()


def _run_key(source_id: int) -> tuple[UUID, int] | None:
    """The run a memory belongs to: the flow run (or the task run) and the source."""
    flow_context = FlowRunContext.get()
    if flow_context is not None and flow_context.flow_run is not None:
        return flow_context.flow_run.id, source_id
    task_context = TaskRunContext.get()
    return None if task_context is None else (task_context.task_run.id, source_id)


def trigger_memory(source_id: int, max_wait_seconds: float | None) -> TriggerMemory:
    """The memory of the trigger of ``source_id`` in this run (a new task run: a new deadline).

    Args:
        source_id: The source.
        max_wait_seconds: The trigger's bound, from now.

    Returns:
        The memory.
    """
    deadline = None if max_wait_seconds is None else time.monotonic() + max_wait_seconds

    def fresh() -> TriggerMemory:
        """A new memory, its deadline from now."""
        return TriggerMemory(datetime.now(UTC), deadline, max_wait_seconds)

    key = _run_key(source_id)
    if key is None:
        return fresh()
    memory, _ = _triggers.setdefault(key, fresh)
    task_context = TaskRunContext.get()
    if task_context is not None:
        _, new_task_run = _trigger_of_task_run.setdefault(task_context.task_run.id, lambda: memory)
        if new_task_run:  # the first attempt, or one of a retried flow run: a fresh deadline
            memory.deadline, memory.max_wait_seconds = deadline, max_wait_seconds
    return memory


def forget_trigger(source_id: int) -> None:
    """The trigger returned a handle: the next trigger of this source starts afresh.

    Args:
        source_id: The source.
    """
    key = _run_key(source_id)
    if key is not None:
        _triggers.pop(key)


def run_memory(source_id: int) -> RunMemory:
    """What this flow run remembers of a source's sync (a fresh memory outside a flow).

    Args:
        source_id: The source.

    Returns:
        The memory.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return RunMemory()
    return _runs.setdefault((context.flow_run.id, source_id), RunMemory)[0]


def _next_retry_delay(task: Task[Any, Any], task_run: TaskRun) -> float:
    """The delay Prefect will wait before the task's next attempt (jitter aside)."""
    delays = task.retry_delay_seconds
    if isinstance(delays, int | float):
        return float(delays)
    if isinstance(delays, list) and delays:
        return float(delays[min(max(task_run.run_count - 1, 0), len(delays) - 1)])
    return 0.0


def out_of_time(memory: TriggerMemory) -> bool:
    """Whether Prefect's next retry of the running trigger would start past its deadline.

    Args:
        memory: The trigger's memory.

    Returns:
        True when a retry is left but would start too late.
    """
    context = TaskRunContext.get()
    if memory.deadline is None or context is None:
        return False
    run = context.task_run
    retries_left = context.task.retries - (run.run_count - 1)
    return retries_left > 0 and (
        time.monotonic() + _next_retry_delay(context.task, run) >= memory.deadline
    )


async def retry_on_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient Stitch faults, within the deadline.

    It is async, as Prefect requires for async tasks (a sync predicate would receive
    an un-awaited coroutine and silently refuse every retry). A trigger whose
    ``max_wait_seconds`` has run out is not retried.

    Args:
        task: The task.
        task_run: The task run.
        state: The failed state.

    Returns:
        True for no answer, timeouts, 5xx and 429; False otherwise.

    Example:
        ```python
        from prefect import task
        from prefect_stitch._engine.memory import retry_on_transient

        @task(retries=3, retry_condition_fn=retry_on_transient)
        async def my_stitch_call() -> None: ...
        ```
    """
    memory = _trigger_of_task_run.get(task_run.id)
    if (
        memory is not None
        and memory.deadline is not None
        and time.monotonic() + _next_retry_delay(task, task_run) >= memory.deadline
    ):
        return False  # the retry would start after max_wait_seconds
    try:
        await state.aresult()
    except BaseException as exc:
        return is_transient(exc)
    return False
