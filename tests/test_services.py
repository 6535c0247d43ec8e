"""scripts/services.sh, what `make demo` / `make stop` run: it starts a real Prefect server and a process
worker in the background, says so, and `stop` leaves no process behind (a running Prefect worker turns
SIGTERM into a graceful shutdown that can hang; the script sends a second signal)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "services.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("curl") is None, reason="services.sh needs curl"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition: Callable[[], bool], *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not true within {seconds} s"
        time.sleep(0.2)


def services(command: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=180, check=True
    )
    return done.stdout


def test_start_status_and_stop_leave_nothing_running(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "prefect-home"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_PORT": str(port),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    pids: list[int] = []
    try:
        started = services("start", env)
        assert "prefect server: healthy" in started and "prefect worker: starting" in started
        pids = [int((home / name).read_text()) for name in ("server.pid", "worker.pid")]
        assert all(running(pid) for pid in pids)
        status = services("status", env)
        assert f"prefect server: running at http://127.0.0.1:{port}" in status
        assert f"prefect worker: running (pid {pids[1]})" in status
        assert "already running" in services("start", env), "a second start reuses both"

        # A worker started for another artifact root is restarted: flow runs inherit its environment.
        wait_for(lambda: "started!" in (home / "worker.log").read_text(), seconds=60)
        env["LLAVA_REWARD_ARTIFACTS"] = str(tmp_path / "other-artifacts")
        restarted = services("start", env)
        assert "prefect server: already running" in restarted
        assert (
            f"prefect worker: restarting, its settings changed to LLAVA_REWARD_ARTIFACTS={tmp_path}"
            in restarted
        )
        new_worker = int((home / "worker.pid").read_text())
        assert new_worker != pids[1] and not running(pids[1]) and running(new_worker)
        pids.append(new_worker)
        assert "prefect worker: already running" in services("start", env), "same settings: reused"

        # Stop a worker that is up and polling (before that it exits on the first signal anyway).
        wait_for(lambda: "started!" in (home / "worker.log").read_text(), seconds=60)
        stopped = services("stop", env)
        assert stopped.splitlines() == ["prefect worker: stopped", "prefect server: stopped"]
        wait_for(lambda: not any(running(pid) for pid in pids), seconds=10)
        assert not (home / "worker.pid").exists() and not (home / "server.pid").exists()
        assert services("status", env).splitlines() == [
            "prefect server: not running",
            "prefect worker: not running",
        ]
    finally:
        for pid in pids:
            if running(pid):
                os.kill(pid, 9)
