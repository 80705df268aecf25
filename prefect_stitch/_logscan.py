"""Reading a Stitch extraction log line by line, in bounded memory.

Stitch's extraction logs can be hundreds of megabytes, so they are never held whole:
the client streams the download and feeds each line to a
[`LogScan`][prefect_stitch._logscan.LogScan], which keeps only

* the last ``tail_lines`` lines (each cut to ``max_line_chars``), for error messages;
* the exit statuses of the job's last ``Exit status is: ...`` line;
* the streams that received rows in this job, and how many.

What a real Stitch log says (as public clients parse it, and Stitch's docs show):

* each line reads ``<date> <time>,<ms>Z <component> - <LEVEL> <message>``;
* the last line of a finished job: ``main - INFO Exit status is: Discovery succeeded.
  Tap failed with code -9. Target succeeded.``;
* a tap line per stream as records are replicated:
  ``tap - INFO replicated 120 records from "accounts" endpoint``
  (dagster-stitch reads these);
* a target line per stream that received rows:
  ``... com.stitchdata.target-stitch-avro.flush-pipeline - send-stream-record-count-impl
  accounts`` (Mage reads these).

**The rule for streams with rows**: a stream received rows in this job when a target
line names it, or a tap line reports a positive count for it. When the log has neither
kind of line (``names_streams`` is False), it says nothing usable about rows; the caller
then falls back (see [`wait_for_stitch_sync`][prefect_stitch.tasks.wait_for_stitch_sync]).
"""

from __future__ import annotations

import re
from collections import deque
from datetime import UTC, datetime
from typing import Final

from prefect_stitch._verdict import exit_statuses_from_log

__all__ = ["DEFAULT_MAX_LINE_CHARS", "LogScan"]

DEFAULT_MAX_LINE_CHARS: Final = 2000
"""Characters kept of one log line (the rest of a longer line is cut)."""

_TARGET_MARKER: Final = "send-stream-record-count-impl"
_TAP_ROWS = re.compile(r'replicated\s+(?P<count>\d+)\s+records?\s+from\s+"(?P<stream>[^"]+)"')
_EXIT_MARKER: Final = "Exit status is:"
_LINE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:,(\d{1,6}))?Z")


def _line_time(line: str) -> datetime | None:
    match = _LINE_TIME.match(line)
    if match is None:
        return None
    try:
        moment = datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC)


class LogScan:
    """Consume an extraction log line by line and keep only what is needed.

    Args:
        tail_lines: Lines to keep from the end (``None`` keeps every line: only for a
            caller that asked for the whole log).
        max_line_chars: Characters kept of each line.

    Example:
        ```python
        from prefect_stitch._logscan import LogScan

        scan = LogScan(tail_lines=2)
        for line in [
            '2026-01-01 00:00:01,000Z tap - INFO replicated 7 records from "accounts" endpoint',
            "2026-01-01 00:00:02,000Z main - INFO Exit status is: Discovery succeeded. "
            "Tap succeeded. Target succeeded.",
        ]:
            scan.feed(line)
        print(scan.streams_with_rows, scan.exit_statuses)
        # {'accounts'} {'discovery': 0, 'tap': 0, 'target': 0}
        ```
    """

    def __init__(
        self, tail_lines: int | None = 50, max_line_chars: int = DEFAULT_MAX_LINE_CHARS
    ) -> None:
        if tail_lines is not None and tail_lines < 0:
            raise ValueError("tail_lines must be >= 0 or None")
        self.tail_lines = tail_lines
        self.max_line_chars = max(1, max_line_chars)
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self.lines = 0
        """Lines read."""
        self.exit_statuses: dict[str, int] | None = None
        """The exit statuses of the last ``Exit status is:`` line, if any (a phase that
        was terminated or never ran is absent)."""
        self.exit_time: datetime | None = None
        """Stitch's timestamp of that line (the job's end, by Stitch's clock)."""
        self.row_counts: dict[str, int] = {}
        """Records per stream reported by the tap's ``replicated N records`` lines."""
        self.target_streams: set[str] = set()
        """Streams named by the target's ``send-stream-record-count-impl`` lines."""

    def feed(self, line: str) -> None:
        """Read one line (without its line break).

        Args:
            line: The line.
        """
        self.lines += 1
        line = line.rstrip("\r\n")
        shown = line if len(line) <= self.max_line_chars else line[: self.max_line_chars] + " …"
        if self._tail.maxlen != 0:
            self._tail.append(shown)  # the line is read whole below; only the tail is cut
        if _EXIT_MARKER in line:
            self.exit_statuses = exit_statuses_from_log(line) or {}
            self.exit_time = _line_time(line)
            return
        marker = line.find(_TARGET_MARKER)
        if marker >= 0:
            rest = line[marker + len(_TARGET_MARKER) :].split()
            if rest:
                self.target_streams.add(rest[0].strip("\"':,"))
            return
        match = _TAP_ROWS.search(line)
        if match:
            stream = match.group("stream")
            self.row_counts[stream] = self.row_counts.get(stream, 0) + int(match.group("count"))

    @property
    def names_streams(self) -> bool:
        """Whether the log says anything about which streams received rows."""
        return bool(self.target_streams or self.row_counts)

    @property
    def streams_with_rows(self) -> set[str]:
        """The streams that received rows in this job (see the module's rule)."""
        return self.target_streams | {s for s, count in self.row_counts.items() if count > 0}

    @property
    def tail(self) -> str:
        """The kept lines, joined with line breaks."""
        return "\n".join(self._tail)

    @property
    def ended(self) -> bool:
        """Whether the log has the job's final ``Exit status is:`` line."""
        return self.exit_statuses is not None
