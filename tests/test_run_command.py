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
from pipeline.stack.process import StackError, free_port, pid_alive, port_accepts, terminate


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


@pytest.mark.kafka
@pytest.mark.slow
def test_pulse_run_reports_every_simulated_behaviour_in_its_state(tmp_path: Path) -> None:
    """The README's main command, end to end on free ports: stack, gateway, worker, embedded
    ClickHouse, six simulated communities (one per behaviour), the report; nothing left running."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_STATE_DIR=str(tmp_path / "state"),
        PULSE_CLICKHOUSE_URL=f"chdb://{tmp_path / 'ch'}",
        PULSE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        PULSE_PROMETHEUS_PORT=str(free_port()),
        PULSE_GATEWAY_PORT=str(free_port()),
        PULSE_WORKER_PORT=str(free_port()),
        PULSE_LOG_LEVEL="WARNING",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--exit", "--communities", "6", "--days", "35"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    states = {
        line.split()[0]: line.split()[2]
        for line in done.stdout.splitlines()
        if line.startswith(("github:", "discourse:", "slack:", "intranet:"))
    }
    # community i has behaviour BEHAVIOURS[i]: healthy, dying, dead, one_poster, on_demand, when_we_can
    by_behaviour = {
        "healthy": "github:pulse-sim/healthy-0",
        "dying": "discourse:forum.pulse-sim.example:101",
        "dead": "slack:TPULSESIM01:CSIM000002",
        "one_poster": "intranet:one-poster-3",
        "on_demand": "github:pulse-sim/on-demand-4",
    }
    expected = {"healthy": "healthy", "dying": "dying", "dead": "dead", "one_poster": "one_poster",
                "on_demand": "healthy"}
    assert {b: states.get(c) for b, c in by_behaviour.items()} == expected, done.stdout
    assert "Look at:" in done.stdout
    # everything it started is stopped: nothing listens on its ports any more
    for variable in ("PULSE_GATEWAY_PORT", "PULSE_WORKER_PORT", "PULSE_PROMETHEUS_PORT"):
        assert not port_accepts(int(env[variable])), variable
    assert not port_accepts(int(env["PULSE_KAFKA_BOOTSTRAP"].rpartition(":")[2]))
