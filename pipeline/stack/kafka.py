"""A single-node Apache Kafka broker in KRaft mode, run straight from Maven jars.

``ensure_jars()`` fetches the broker's jars once into a cache outside git
(``${XDG_CACHE_HOME:-~/.cache}/community-pulse/kafka-<version>/libs``);
``KafkaBroker`` writes its config, formats its storage once, starts ``kafka.Kafka``
with ``java -cp libs/*`` on 127.0.0.1, waits until it answers metadata requests, and
stops it by process id. The same data directory can be started again.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.stack.process import (
    LOCALHOST,
    StackError,
    log_tail,
    pid_alive,
    port_accepts,
    require_binary,
    require_free_ports,
    spawn,
    terminate,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"

# small heap and few threads: the broker shares two cores with the pipeline and tests
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-Djava.awt.headless=true",
)

LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


def kafka_version(pom: Path = POM) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not match:
        raise StackError(f"{pom}: no <kafka.version> property")
    return match.group(1).strip()


def cache_dir(version: str | None = None) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "community-pulse" / f"kafka-{version or kafka_version()}"


def _has_broker_jars(libs: Path) -> bool:
    return libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")) and any(libs.glob("kafka-clients-*.jar"))


def ensure_jars(progress: Callable[[str], None] | None = None) -> Path:
    """The directory holding the broker's jars, fetched with Maven when missing."""
    libs = cache_dir() / "libs"
    if _has_broker_jars(libs):
        return libs
    mvn = require_binary("mvn", "install Maven (`apt-get install maven`) to fetch the Kafka jars")
    if progress:
        progress(f"fetching Kafka {kafka_version()} jars with Maven into {libs} (once) ...")
    libs.mkdir(parents=True, exist_ok=True)
    command = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0 or not _has_broker_jars(libs):
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise StackError(f"Maven could not fetch the Kafka jars (exit {result.returncode}):\n{tail}")
    return libs


def java_error_summary(output: str, frames: int = 3) -> str:
    """A Java tool's output, shortened: every line but the stack frames, and the first few frames."""
    kept: list[str] = []
    shown = 0
    for line in output.splitlines():
        if line.lstrip().startswith("at "):
            shown += 1
            if shown > frames:
                continue
        else:
            shown = 0
        kept.append(line)
    return "\n".join(kept[-40:])


def cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like Uuid).

    Like Kafka's own Uuid.randomUuid(), never one starting with '-': the storage tool's
    argument parser would read it as an option (1 id in 64 otherwise).
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def server_properties(data_dir: Path, port: int, controller_port: int, *, auto_create_topics: bool = False) -> str:
    """The broker's config: one node that is both broker and controller, 127.0.0.1 only."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOCALHOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        # topics come from pipeline.topics with their partitions and configs; a typo in a
        # topic name should fail loudly instead of creating a one-partition topic
        "auto.create.topics.enable": "true" if auto_create_topics else "false",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
        # the cleaner's dedupe buffer is allocated on the heap; 128 MB by default
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.index.size.max.bytes": str(1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaBroker:
    """One KRaft broker+controller process on 127.0.0.1 with its own data directory."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        *,
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        auto_create_topics: bool = False,
        die_with_parent: bool = False,
        stop_timeout: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.jvm_options = tuple(jvm_options)
        self.auto_create_topics = auto_create_topics
        self.die_with_parent = die_with_parent
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    # ------------------------------------------------------------ facts

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "kafka.log"

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "logs" / "meta.properties").exists()

    def running(self) -> bool:
        return self._pid is not None and pid_alive(self._pid)

    def __repr__(self) -> str:
        return f"KafkaBroker({self.bootstrap}, pid={self._pid}, data_dir={str(self.data_dir)!r})"

    # ------------------------------------------------------------ lifecycle

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        java = require_binary("java", "install a Java 17+ runtime (`apt-get install openjdk-17-jre-headless`)")
        return [
            java,
            *self.jvm_options,
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            server_properties(
                self.data_dir, self.port, self.controller_port, auto_create_topics=self.auto_create_topics
            )
        )
        (self.data_dir / "log4j.properties").write_text(LOG4J)

    def format(self, libs: Path | None = None) -> bool:
        """Format the storage once (a new cluster id); False when it already was."""
        if self.formatted:
            return False
        libs = libs or ensure_jars()
        self._write_config()
        # once in CI the storage tool failed on a fresh directory with an exception we could not
        # see (only the last lines, all stack frames, were kept): say what Java said, and try a
        # second time with a new cluster id before giving up
        for attempt in (1, 2):
            command = self._java(
                libs, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(self.config_file)
            )
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode == 0:
                return True
            said = java_error_summary(result.stdout + result.stderr)
            log.warning("formatting Kafka storage failed (attempt %d, exit %d): %s", attempt, result.returncode, said)
        raise StackError(f"formatting Kafka storage in {self.data_dir} failed (exit {result.returncode}):\n{said}")

    def start(self) -> None:
        """Launch the broker (formatting its storage first if needed); returns at once."""
        if self.running():
            return
        libs = ensure_jars()
        require_free_ports("Kafka", {"broker": self.port, "controller": self.controller_port})
        self._write_config()
        self.format(libs)
        command = self._java(libs, "kafka.Kafka", str(self.config_file))
        self._process = spawn(command, self.log_file, die_with_parent=self.die_with_parent, cwd=self.data_dir)
        self._pid = self._process.pid
        log.info("Kafka starting on %s (pid %d, log %s)", self.bootstrap, self._pid, self.log_file)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the broker answers a metadata request listing itself."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise StackError(
                    f"Kafka on {self.bootstrap} exited during start-up; last lines of {self.log_file}:\n"
                    + log_tail(self.log_file)
                )
            if port_accepts(self.port) and answers_metadata(self.bootstrap):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        raise StackError(
            f"Kafka on {self.bootstrap} was not ready after {timeout:.0f} s; last lines of {self.log_file}:\n"
            + log_tail(self.log_file)
        )

    def stop(self) -> None:
        """Stop by pid: SIGTERM (a clean shutdown), SIGKILL after ``stop_timeout``."""
        if self._pid is None:
            return
        if terminate(self._pid, self.stop_timeout, self._process):
            log.warning("Kafka pid %d did not stop within %.0f s; killed", self._pid, self.stop_timeout)
        self._pid = None
        self._process = None

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout)


def answers_metadata(bootstrap: str) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request that lists a broker."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="pulse-stack-probe",
            request_timeout_ms=3000,
            bootstrap_timeout_ms=3000,
        )
    except Exception:  # any failure means "not ready yet"
        return False
    try:
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        admin.close()
