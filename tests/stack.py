"""A real ``prefect server`` and ``process`` workers in child processes of a test.

Everything it starts it stops by process group. It uses a temporary PREFECT_HOME, so it never
touches the developer's Prefect profile or database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """A Prefect server and a process worker, in child processes of this test."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
            "PWD": str(ROOT),  # prefect.yaml's pull step: resolved at deploy time
        }
        self.env.pop("PREFECT_PROFILE", None)

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [PREFECT, *args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            restore_signals=True,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def cli(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [PREFECT, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, (
            f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.processes[0].poll() is None, self.logs("server")
            time.sleep(0.5)
        raise AssertionError(f"server not healthy after {timeout} s\n{self.logs('server')}")

    def logs(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def start(self, *worker_args: str) -> None:
        """Start the server, create the pool, register the blocks, deploy prefect.yaml, and
        start a worker (``worker_args``: e.g. ``"--limit", "1"``)."""
        started = time.monotonic()
        self.spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        self.wait_healthy()
        self.cli("work-pool", "create", "stitch-process", "--type", "process")
        self.cli("block", "register", "-m", "prefect_stitch")
        self.cli("--no-prompt", "deploy", "--all")
        self.spawn("worker", "worker", "start", "--pool", "stitch-process", *worker_args)
        print(f"stack ready in {time.monotonic() - started:.1f} s")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for process in self.processes:
            assert process.poll() is not None, "a child process outlived the test"
