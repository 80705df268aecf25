"""Job logs: what each log says (`LogPlan`, generated line by line) and the links to them.

`GET /v4/{client}/extractions/{job_name}` redirects to a pre-signed URL on another origin (like
S3); the link's token names the job. A log is snapshotted when it is asked for and generated
lazily, so a log of hundreds of megabytes never sits in memory.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect_stitch.simulator._catalogue import Source
from prefect_stitch.simulator._jobs import Job

LOG_BUCKET = "com-stitchdata-prod-platform-pod-logs"
"""Bucket name used in the pre-signed log URL, as in Stitch's documented example."""

_TARGET_FLUSH = "com.stitchdata.target-stitch-avro.flush-pipeline - send-stream-record-count-impl"
_LOG_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class LogPlan:
    """Everything a job's log is made of, snapshotted so it can be generated lazily.

    Example:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> from prefect_stitch.simulator._logs import LogPlan
        >>> sim = StitchSimulator()
        >>> _ = sim.add_source(1, log_lines=5)
        >>> job = sim._jobs[sim.seed_completed(1)]
        >>> plan = LogPlan.of(job, sim._account.catalogue.get(1), now=sim.now())
        >>> list(plan.lines())[-1].split(" - INFO ")[1].rstrip()
        'Exit status is: Discovery succeeded. Tap succeeded. Target succeeded.'
    """

    job_name: str
    started_at: float
    ended_at: float
    done: bool
    log_lines: int
    line_bytes: int | None
    stream_rows: tuple[tuple[str, int], ...]  # (table name, records) per stream with rows
    failure: tuple[str, str] | None  # the failing phase and its description
    summary: str

    @classmethod
    def of(cls, job: Job, source: Source, now: float) -> LogPlan:
        """What the job's log says at `now`: a running job's log has no ending yet."""
        outcome = job.final_outcome
        failure = None
        if outcome.kind == "failure" and outcome.phase is not None:
            failure = (outcome.phase, outcome.description or "")
        return cls(
            job_name=job.job_name,
            started_at=job.started_at,
            ended_at=job.completed_at if job.completed_at is not None else now,
            done=job.completed_at is not None,
            log_lines=source.log_lines,
            line_bytes=source.log_line_bytes,
            stream_rows=tuple(
                (source.stream_name_of(stream), count)
                for stream, count in source.stream_rows(outcome)
            ),
            failure=failure,
            summary=outcome.summary_line(),
        )

    def lines(self) -> Iterator[str]:
        """The log's lines, each ending with a line break, generated one at a time."""
        rows = self.stream_rows if self.done else ()
        ending = (1 + (self.failure is not None)) if self.done else 0  # failure, summary
        fixed = 1 + 2 * len(rows) + ending
        total = max(self.log_lines, fixed) if self.done else self.log_lines
        fillers = total - fixed
        layout: list[tuple[str, Any, int]] = [("start", None, 1)]
        layout.append(("filler", None, fillers - fillers // 2))
        layout.extend(("tap", item, 1) for item in rows)
        layout.append(("filler", None, fillers // 2))
        layout.extend(("target", item, 1) for item in rows)
        if self.done and self.failure:
            layout.append(("failure", None, 1))
        if self.done:
            layout.append(("summary", None, 1))
        stamp = _Stamper(self.started_at, self.ended_at, total)
        index = 0
        for kind, item, count in layout:
            for _ in range(count):
                index += 1
                yield stamp(index) + " " + self._message(kind, item, index, total) + "\n"

    def _message(self, kind: str, item: Any, index: int, total: int) -> str:
        """The text of line `index` of `total`, of one kind (start, filler, tap, ...)."""
        if kind == "start":
            return f"main - INFO [line {index}/{total}] Starting extraction job {self.job_name}"
        if kind == "filler":
            message = f"tap - INFO [line {index}/{total}] State update: page {index} synced"
            if self.line_bytes is not None:
                padding = self.line_bytes - len(message) - 27  # stamp, space, pad space, \n
                if padding > 0:
                    message += " " + "." * padding
            return message
        if kind == "tap":
            return f'tap - INFO replicated {item[1]} records from "{item[0]}" endpoint'
        if kind == "target":
            return f"target - INFO {_TARGET_FLUSH} {item[0]}"
        if kind == "failure" and self.failure is not None:
            phase, description = self.failure
            return f"{phase} - CRITICAL [line {index}/{total}] {description}"
        return f"main - INFO {self.summary}"

    def chunks(self, size: int = _LOG_CHUNK_BYTES) -> Iterator[bytes]:
        """The log as UTF-8 byte chunks of about `size` bytes, generated lazily."""
        buffer: list[str] = []
        held = 0
        for line in self.lines():
            buffer.append(line)
            held += len(line)
            if held >= size:
                yield "".join(buffer).encode()
                buffer, held = [], 0
        if buffer:
            yield "".join(buffer).encode()


class _Stamper:
    """Log-line timestamps spread evenly over a job's run (`YYYY-MM-DD HH:MM:SS,mmmZ`)."""

    def __init__(self, start: float, end: float, total: int) -> None:
        self.start = start
        self.step = (end - start) / max(total, 1)
        self._second = -1
        self._prefix = ""

    def __call__(self, index: int) -> str:
        """The stamp of line `index` (1-based)."""
        millis = math.floor((self.start + self.step * index) * 1000)
        second, milli = divmod(millis, 1000)
        if second != self._second:
            self._second = second
            moment = datetime.fromtimestamp(second, tz=UTC)
            self._prefix = moment.strftime("%Y-%m-%d %H:%M:%S")
        return f"{self._prefix},{milli:03d}Z"


class LogLinks:
    """The pre-signed log links handed out: each link's token names one job.

    Example:
        >>> from prefect_stitch.simulator._logs import LogLinks
        >>> links = LogLinks()
        >>> links.job_of(links.issue("116078.1.sync.x"))
        '116078.1.sync.x'
    """

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}

    def issue(self, job_name: str) -> str:
        """A new token for the job's log link."""
        token = secrets.token_urlsafe(24)
        self._jobs[token] = job_name
        return token

    def job_of(self, token: str) -> str | None:
        """The job whose log the token opens, or None for an unknown token."""
        return self._jobs.get(token)
