"""Run a standalone Stitch simulator: `python -m prefect_stitch.simulator --source 1001:success:5`.

Source specs read `<id>:<outcome>[:<duration_seconds>]`:

- `<outcome>` is `success`, `terminated` (null exit statuses and descriptions, with a
  completion time), or a failing phase `discovery`, `tap` or `target` (exit status 1),
  optionally with its exit status: `tap=-9`. Phases after a failing one follow Stitch: after a
  discovery failure the tap and target never ran (null); after a tap failure the target
  reports 0.
- `<duration_seconds>` defaults to 1; `none` means "runs until stopped" (DELETE /sync).
- Repeat `--source` with the same id to give that source a sequence of outcomes (one per job;
  the last one repeats).

Example:
    Serve two sources on port 8765 and print one line per request:

    ```bash
    python -m prefect_stitch.simulator --port 8765 --source 1:success:5 --source 2:tap=-9:3
    ```
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from prefect_stitch.simulator._outcomes import PHASES, Outcome
from prefect_stitch.simulator._server import StitchSimulator
from prefect_stitch.simulator._traffic import RecordedRequest


def parse_source(spec: str) -> tuple[int, Outcome]:
    """Parse one `--source` spec into a source ID and an outcome.

    Args:
        spec: `<id>:<success|terminated|discovery|tap|target>[=<exit>][:<seconds>|none]`.

    Returns:
        The source ID and its outcome.

    Raises:
        argparse.ArgumentTypeError: If the spec is malformed.

    Examples:
        >>> from prefect_stitch.simulator.__main__ import parse_source
        >>> source_id, outcome = parse_source("1004:discovery=-9:3")
        >>> source_id, outcome.phase, outcome.exit_status, outcome.duration_seconds
        (1004, 'discovery', -9, 3.0)
    """
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0].strip().isdigit():
        raise argparse.ArgumentTypeError(f"bad source spec {spec!r}: want <id>:<outcome>[:<secs>]")
    source_id = int(parts[0])
    kind, _, exit_text = (parts[1] if len(parts) > 1 else "success").partition("=")
    duration: float | None = 1.0
    try:
        if len(parts) == 3:
            duration = None if parts[2].lower() in ("none", "inf", "forever") else float(parts[2])
        if kind == "success":
            return source_id, Outcome.success(duration)
        if kind == "terminated":
            return source_id, Outcome.terminated(duration)
        if kind in PHASES:
            exit_status = int(exit_text) if exit_text else 1
            return source_id, Outcome.failure(kind, exit_status, duration_seconds=duration)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad source spec {spec!r}: {exc}") from exc
    raise argparse.ArgumentTypeError(
        f"bad source spec {spec!r}: outcome must be success, terminated, discovery, tap or target"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser.

    Returns:
        The parser.

    Examples:
        >>> from prefect_stitch.simulator.__main__ import build_parser
        >>> build_parser().parse_args(["--port", "0"]).port
        0
        >>> build_parser().parse_args(["--stop-delay", "2.5"]).stop_delay
        2.5
        >>> build_parser().parse_args(["--load-stream-ids"]).load_stream_ids
        True
    """
    parser = argparse.ArgumentParser(
        prog="python -m prefect_stitch.simulator",
        description="Serve a local stand-in for Stitch's Connect API.",
        epilog="Source spec: <id>:<success|terminated|discovery|tap|target>[=<exit>][:<secs>|none]",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="API port; 0 picks a free one")
    parser.add_argument(
        "--token",
        default=os.environ.get("STITCH_SIMULATOR_TOKEN", "sim-token"),
        help="access token to accept (default: $STITCH_SIMULATOR_TOKEN or sim-token)",
    )
    parser.add_argument("--client-id", type=int, default=116078)
    parser.add_argument("--source", action="append", type=parse_source, default=[], metavar="SPEC")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--enforce-rate-limit", action="store_true")
    parser.add_argument("--jobs-rate-limit", type=int, default=30)
    for flag, default, text in (
        ("--jobs-rate-period", 600.0, "length of the jobs rate limit's sliding window"),
        ("--clock-offset", 0.0, "skew of Stitch's clock (Date header, timestamps) from ours"),
        ("--stop-delay", 0.0, "time from a stop request (answered 200 at once) to the job's end"),
    ):
        parser.add_argument(flag, type=float, default=default, metavar="SECONDS", help=text)
    parser.add_argument("--list-running-jobs", action="store_true")
    parser.add_argument("--stop-when-idle-status", type=int, default=200, choices=(200, 404))
    parser.add_argument("--tap-field", default="source_type", choices=("source_type", "tap_name"))
    parser.add_argument(
        "--load-stream-ids",
        action="store_true",
        help="give every load record its stream's stream_id (undocumented in the Load object)",
    )
    parser.add_argument(
        "--seed-previous",
        action="store_true",
        help="give every source a successful job that completed an hour ago",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print one line per request")
    return parser


def _print_request(request: RecordedRequest) -> None:
    """Print one line for the request: method, path, status (or "dropped") and fault."""
    status = "dropped" if request.status is None else str(request.status)
    fault = f" [fault: {request.fault}]" if request.fault else ""
    print(f"{request.method} {request.path} -> {status}{fault}", flush=True)


def _simulator(args: argparse.Namespace) -> StitchSimulator:
    """The simulator the parsed arguments configure (not started)."""
    options = dict(vars(args))
    for name in ("source", "seed_previous", "quiet"):  # what the CLI does with the simulator
        del options[name]
    for name in ("jobs_rate_period", "clock_offset", "stop_delay"):  # the unit in the name
        options[f"{name}_seconds"] = options.pop(name)
    return StitchSimulator(**options, on_request=None if args.quiet else _print_request)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until Ctrl-C or SIGTERM.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status.

    Examples:
        >>> from prefect_stitch.simulator.__main__ import main
        >>> main(["--help"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    sim = _simulator(args)
    outcomes: dict[int, list[Outcome]] = {}
    for source_id, outcome in args.source:
        outcomes.setdefault(source_id, []).append(outcome)
    for source_id, source_outcomes in outcomes.items():
        sim.add_source(source_id, outcomes=source_outcomes)
        if args.seed_previous:
            sim.seed_completed(source_id)

    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        """Ask the serving loop below to stop."""
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sim.start()
    try:
        print(
            f"Stitch simulator serving {sim.base_url} ({len(outcomes)} sources, client"
            f" {sim.client_id}); point the client at it with STITCH_BASE_URL={sim.base_url}"
            f" STITCH_CLIENT_ID={sim.client_id} and the --token value; Ctrl-C stops it",
            flush=True,
        )
        while not stopping.wait(0.5):
            pass
    finally:
        sim.stop()
    print("Stitch simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
