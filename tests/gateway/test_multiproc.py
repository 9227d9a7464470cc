"""The bookkeeping of `pulse gateway --workers N`'s metrics directory (pipeline.gateway.multiproc).

The merged scrape itself is tested on the live gateway (test_service_metrics_workers.py); these
check the parts that do not need several processes: which workers count as dead, which old
directories are removed, and that a process not in multiprocess mode refuses to serve a merged scrape.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from pipeline.gateway import multiproc


def finished_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_dead_workers_are_those_with_live_gauge_files_and_no_process(tmp_path: Path) -> None:
    for name in ("gauge_livesum_11.db", "gauge_livemin_11.db", "gauge_livemin_12.db", "gauge_all_13.db",
                 "counter_14.db", "histogram_11.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert multiproc.dead_workers(str(tmp_path), alive=lambda pid: pid == 12) == [11]
    assert multiproc.dead_workers(str(tmp_path), alive=lambda pid: False) == [11, 12]


def test_a_live_child_is_live_and_an_exited_or_foreign_one_is_not() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert multiproc.is_live_child(child.pid)
    finally:
        child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not multiproc.is_live_child(child.pid)
    child.wait()
    assert not multiproc.is_live_child(child.pid)
    assert not multiproc.is_live_child(os.getppid())  # alive, but not our child


def test_stale_directories_of_exited_runs_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f"{multiproc.DIR_PREFIX}{finished_pid()}-abc"
    ours = tmp_path / f"{multiproc.DIR_PREFIX}{os.getpid()}-def"
    other = tmp_path / "pulse-kafka-xyz"
    for directory in (stale, ours, other):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"")
    assert multiproc.remove_stale_directories(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and ours.exists() and other.exists()


def test_metrics_directory_is_private_set_for_the_block_and_removed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(multiproc.ENV, "/somewhere/else")
    with multiproc.metrics_directory(str(tmp_path)) as path:
        assert os.environ[multiproc.ENV] == path
        assert Path(path).parent == tmp_path and Path(path).name.startswith(f"{multiproc.DIR_PREFIX}{os.getpid()}-")
        assert Path(path).stat().st_mode & 0o777 == 0o700
        assert not any(Path(path).iterdir())
        (Path(path) / "counter_1.db").write_bytes(b"")
    assert os.environ[multiproc.ENV] == "/somewhere/else"
    assert not Path(path).exists()


def test_a_merged_scrape_needs_multiprocess_mode_in_this_process(tmp_path: Path) -> None:
    # pytest imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: nothing of ours is written there
    with pytest.raises(RuntimeError, match="before prometheus_client is imported"):
        multiproc.scrape_registry(str(tmp_path))


def test_a_file_not_sized_yet_does_not_break_the_scrape(tmp_path: Path) -> None:
    """A worker's file exists at 0 bytes for a moment (client_python#1199): the scrape skips it."""
    for pid, value in ((os.getpid(), 3.0), (4_000_000, 4.0)):
        counts = MmapedDict(str(tmp_path / f"counter_{pid}.db"))
        counts.write_value(mmap_key("pulse_x", "pulse_x_total", ["platform"], ["github"], "Help."), value, 0.0)
        counts.close()
    (tmp_path / "gauge_livesum_4000001.db").write_bytes(b"")
    with pytest.raises(Exception, match="unpack"):  # what prometheus-client's own collector does
        generate_latest(MultiProcessCollector(None, path=str(tmp_path)))  # type: ignore[arg-type]
    text = generate_latest(multiproc.scrape_registry(str(tmp_path))).decode()
    assert 'pulse_x_total{platform="github"} 7.0' in text
