"""`pulse run` keeps its servers running: a child that exits is started again, one that keeps
dying ends the run. Real processes (a throwaway HTTP server on 127.0.0.1), stopped by pid."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.commands import run as run_command
from pipeline.stack.process import StackError, free_port, pid_alive, terminate


def _http_child(tmp_path: Path) -> run_command.Child:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return run_command.Child("web", argv, f"http://127.0.0.1:{port}/", tmp_path / "web.log")


def test_a_child_that_exits_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    child = _http_child(tmp_path)
    child.start(timeout=30)
    assert child.process is not None
    first = child.process.pid
    monkeypatch.setattr(run_command, "RESTARTS", 1)
    outcome: list[int] = []
    supervisor = threading.Thread(target=lambda: outcome.append(run_command._supervise([child])), daemon=True)
    supervisor.start()
    try:
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (child.process.pid == first or child.exited() is not None):
            time.sleep(0.2)
        assert child.process.pid != first and pid_alive(child.process.pid)
        assert len(child.restarts) == 1
        # the second death within the window exhausts RESTARTS=1: the supervisor gives up
        os.kill(child.process.pid, signal.SIGKILL)
        supervisor.join(30)
        assert outcome == [1]
    finally:
        if child.process is not None:
            terminate(child.process.pid, 10, child.process)


def test_a_child_that_cannot_start_says_why(tmp_path: Path) -> None:
    child = run_command.Child(
        "broken", [sys.executable, "-c", "import sys; print('no config here'); sys.exit(3)"],
        f"http://127.0.0.1:{free_port()}/", tmp_path / "broken.log",
    )
    with pytest.raises(StackError, match="broken exited with 3") as info:
        child.start(timeout=30)
    assert "no config here" in str(info.value)
