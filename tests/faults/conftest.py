"""The fault suite's pipeline: gateway -> Kafka -> worker -> sink -> ClickHouse, real processes.

``make_pipeline(bootstrap, tmp)`` starts, once per module:

* ``pulse gateway`` as a subprocess on a fixed free port (restartable at the same address);
* ``pulse worker --no-sink`` as a subprocess (more can join: ``start_worker(name)``);
* the real ClickHouse sink (``pipeline.storage.sink.Sink``, what ``pulse db sink`` runs) in a
  thread of the test process, on the embedded engine in a database of its own. The sink
  runs here, not inside the worker, so that a test can make ClickHouse refuse writes
  (DETACH TABLE) and read what landed while everything runs: chDB lets only one process
  open a store.

Everything is stopped by pid at the end of the module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline import config
from pipeline.stack.process import free_port
from pipeline.stack.topics import create_topics
from pipeline.storage import client as store
from pipeline.storage.batching import Backoff, BatchPolicy
from pipeline.storage.migrate import migrate
from pipeline.storage.sink import Sink
from tests.conftest import TEST_SECRETS
from tests.faults.harness import GatewayProcess
from tests.worker.conftest import WorkerProcess

TOKEN = TEST_SECRETS["PULSE_INGEST_TOKENS"].split("=", 1)[1]


@dataclass
class Pipeline:
    bootstrap: str
    prefix: str
    tmp: Path
    env: dict[str, str]
    settings: config.Settings
    gateway: GatewayProcess
    db: Any = None  # a ClickHouse client of the test (queries, DETACH/ATTACH)
    sink: Sink | None = None
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sink_thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        return TOKEN

    def topic(self, name: str) -> str:
        return self.prefix + name

    def start_worker(self, name: str = "a") -> WorkerProcess:
        port = free_port()
        env = {**self.env, "PULSE_WORKER_PORT": str(port), "PULSE_STATE_DIR": str(self.tmp / f"state-{name}"),
               "PULSE_CLICKHOUSE_URL": f"chdb://{self.tmp / ('ch-worker-' + name)}"}
        log_file = self.tmp / f"worker-{name}.log"
        with open(log_file, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--no-sink"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, port, log_file)
        self.workers[name] = worker
        return worker

    @contextlib.contextmanager
    def supervised(self, name: str = "a") -> Iterator[list[int]]:
        """Restart worker ``name`` whenever it exits, as compose's ``restart: unless-stopped``
        would; yields the list of exit codes seen (filled while the block runs)."""
        exits: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.5):
                code = self.workers[name].process.poll()
                if code is not None:
                    exits.append(code)
                    self.start_worker(name)

        thread = threading.Thread(target=watch, name="supervisor", daemon=True)
        thread.start()
        try:
            yield exits
        finally:
            stop.set()
            thread.join(10)

    def start_sink(self) -> None:
        self.sink = Sink(self.settings, store.connect(self.settings),
                         policy=BatchPolicy(max_rows=2000, max_age_s=0.3),
                         backoff=Backoff(initial_s=0.1, max_s=1.0))
        self._stop.clear()
        self._sink_thread = threading.Thread(target=self.sink.run, args=(self._stop,), name="sink", daemon=True)
        self._sink_thread.start()

    def stop_sink(self) -> None:
        self._stop.set()
        if self._sink_thread is not None:
            self._sink_thread.join(30)
        if self.sink is not None:
            store.close_quietly(self.sink.client)

    def close(self) -> None:
        self.stop_sink()
        for worker in self.workers.values():
            worker.stop(signal.SIGKILL, timeout=10)
        self.gateway.stop()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.command(f"DROP DATABASE IF EXISTS `{self.db.database}`")
            store.close_quietly(self.db)


# module scope: without an __init__.py pytest treats "package" as the whole session, and the
# engine must be handed back before tests/storage opens its own path in this process
@pytest.fixture(scope="module")
def faults_chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One embedded engine path for the package (chDB: one path per process), a database per module."""
    # an error, not a skip: CI must not drop the fault suite silently
    assert store.held_path() is None, f"this process already holds an embedded store ({store.held_path()})"
    path = tmp_path_factory.mktemp("faults-chdb") / "ch"
    yield path
    store.release()


def make_pipeline(bootstrap: str, tmp: Path, chdb: Path, extra_env: dict[str, str] | None = None) -> Pipeline:
    tmp.mkdir(parents=True, exist_ok=True)
    prefix = f"f-{uuid.uuid4().hex[:10]}."
    create_topics(bootstrap, prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({
        "PULSE_KAFKA_BOOTSTRAP": bootstrap,
        "PULSE_TOPIC_PREFIX": prefix,
        "PULSE_STATE_DIR": str(tmp / "state"),
        "PULSE_LOG_LEVEL": "WARNING",
        **TEST_SECRETS,
        **(extra_env or {}),
    })
    settings = config.load({
        **{k: v for k, v in env.items() if k.startswith("PULSE_")},
        "PULSE_CLICKHOUSE_URL": f"chdb://{chdb}?database=f_{uuid.uuid4().hex[:10]}",
    })
    gateway = GatewayProcess(env, free_port(), tmp / "gateway.log")
    pipeline = Pipeline(bootstrap, prefix, tmp, env, settings, gateway)
    try:
        pipeline.db = store.connect(settings)
        migrate(pipeline.db)
        gateway.start()
        pipeline.start_worker("a")
        pipeline.start_sink()
        gateway.wait_ready()
        pipeline.workers["a"].wait_ready()
    except BaseException:
        pipeline.close()
        raise
    return pipeline


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, faults_chdb: Path) -> Iterator[Pipeline]:
    p = make_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("faults"), faults_chdb)
    try:
        yield p
    finally:
        p.close()
