"""Metrics of a gateway that runs several processes (``pulse gateway --workers N``).

Each worker process counts in its own memory, so one /metrics scrape would show only the process
that answered it: counters would jump between processes and Prometheus would see resets. With
N > 1 the gateway therefore uses prometheus-client's multiprocess mode:

- ``metrics_directory()`` makes a fresh private ``PROMETHEUS_MULTIPROC_DIR`` for one run and sets it
  in the environment *before* uvicorn spawns the workers, so prometheus-client in each worker
  writes every value to memory-mapped files there (the mode is fixed when a process imports
  prometheus_client). Stale directories of earlier runs whose process is gone are removed at start,
  this run's directory at exit;
- every worker's /metrics answers with ``MultiProcessCollector`` over that directory
  (``scrape_registry``): counters and histograms summed over all processes, live and exited, so
  they never go back; gauges by their ``multiprocess_mode`` (``pipeline.metrics.GatewayMetrics``);
- a thread of the supervising process calls ``mark_process_dead`` for each worker that exited
  (uvicorn restarts a dead worker under a new pid), so "live" gauges forget it.

Limits of the mode (prometheus-client docs): no custom collectors, no ``Gauge.set_function``, no
Info or Enum metrics in the worker registries (GatewayMetrics uses none), and no ``_created``
samples in the exposition.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from pipeline.stack.process import pid_alive

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
DIR_PREFIX = "pulse-gateway-metrics-"
REAP_INTERVAL_S = 1.0

_DIR_NAME = re.compile(re.escape(DIR_PREFIX) + r"(\d+)-")
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def scrape_registry(path: str) -> CollectorRegistry:
    """A registry whose collection is every process's metrics in ``path``, merged (for /metrics).

    Raises ``RuntimeError`` when this process does not write its own metrics there: prometheus-client
    chose its mode when it was first imported, so ``PROMETHEUS_MULTIPROC_DIR`` was set too late or
    points elsewhere, and the scrape would silently miss this process.
    """
    if not glob.glob(os.path.join(glob.escape(path), f"*_{os.getpid()}.db")):
        raise RuntimeError(
            f"this process writes no metrics to {path}: {ENV} must name that directory before "
            "prometheus_client is imported"
        )
    registry = CollectorRegistry()
    _MergedFiles(registry, path=path)
    return registry


class _MergedFiles(MultiProcessCollector):
    """``MultiProcessCollector`` that leaves out files still 0 bytes long.

    prometheus-client creates a process's file before sizing it; a scrape that reads it in that
    moment (a worker starting or restarted) fails as a whole with struct.error, and a worker killed
    in that moment would leave the empty file behind and fail every later scrape
    (prometheus/client_python#1199, open in 0.26). An empty file holds no values, so skipping it
    loses nothing; once sized, an unwritten file reads as empty.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self._directory = path
        super().__init__(registry, path=path)

    def collect(self) -> Iterable[Metric]:
        files = []
        for name in glob.glob(os.path.join(glob.escape(self._directory), "*.db")):
            with contextlib.suppress(FileNotFoundError):  # live gauges of a worker just marked dead
                if os.path.getsize(name) > 0:
                    files.append(name)
        return self.merge(files, accumulate=True)


def dead_workers(path: str, alive: Callable[[int], bool]) -> list[int]:
    """Pids with "live" gauge files in ``path`` for which ``alive`` says no."""
    pids = set()
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match:
            pids.add(int(match.group(1)))
    return sorted(pid for pid in pids if not alive(pid))


def is_live_child(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) child of this process.

    Checking the parent too means a pid the system reused for another process counts as dead.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: fall back to "the pid exists"
        return pid_alive(pid)
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[1]) == os.getpid()



def remove_stale_directories(parent: str) -> list[str]:
    """Remove metrics directories of earlier runs in ``parent`` whose process is gone; their paths."""
    removed = []
    uid = os.getuid()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(parent):
            match = _DIR_NAME.match(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != uid or pid_alive(int(match.group(1))):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


@contextlib.contextmanager
def metrics_directory(parent: str | None = None) -> Iterator[str]:
    """A fresh private ``PROMETHEUS_MULTIPROC_DIR`` for one run of several gateway processes.

    Set in this process's environment (which the spawned workers inherit) until the block ends;
    while it runs, a thread marks exited workers dead. The directory is removed at the end.
    """
    base = parent or tempfile.gettempdir()
    for stale in remove_stale_directories(base):
        log.info("removed the metrics directory of an earlier gateway run: %s", stale)
    path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=base)  # mode 0700
    previous = os.environ.get(ENV)
    os.environ[ENV] = path
    stop = threading.Event()
    reaper = threading.Thread(target=_reap, args=(path, stop), name="pulse-metrics-reaper", daemon=True)
    reaper.start()
    try:
        yield path
    finally:
        stop.set()
        reaper.join(5)
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def _reap(path: str, stop: threading.Event) -> None:
    while not stop.wait(REAP_INTERVAL_S):
        try:
            for pid in dead_workers(path, is_live_child):
                mark_process_dead(pid, path)
                log.info("gateway worker %d exited: its live gauges are no longer reported", pid)
        except OSError:
            log.exception("could not check the gateway workers' metrics files in %s", path)
