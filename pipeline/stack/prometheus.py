"""Debian's Prometheus (/usr/bin/prometheus) on 127.0.0.1, started and stopped by pid."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.stack.process import (
    LOCALHOST,
    StackError,
    log_tail,
    pid_alive,
    require_free_ports,
    spawn,
    terminate,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install prometheus` (Debian/Ubuntu)"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusServer:
    """One Prometheus process scraping per ``config_file``, its TSDB in ``data_dir``."""

    def __init__(
        self,
        config_file: Path,
        data_dir: Path,
        port: int,
        *,
        die_with_parent: bool = False,
        retention: str = "15d",
        stop_timeout: float = 15.0,
    ) -> None:
        self.config_file = Path(config_file).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.die_with_parent = die_with_parent
        self.retention = retention
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def log_file(self) -> Path:
        return self.data_dir / "prometheus.log"

    def running(self) -> bool:
        return self._pid is not None and pid_alive(self._pid)

    def __repr__(self) -> str:
        return f"PrometheusServer({self.url}, pid={self._pid}, config={str(self.config_file)!r})"

    def start(self) -> None:
        if self.running():
            return
        binary = prometheus_binary()
        if binary is None:
            raise StackError(f"`prometheus` was not found on PATH; {INSTALL_HINT}")
        if not self.config_file.is_file():
            raise StackError(f"Prometheus config {self.config_file} does not exist")
        require_free_ports("Prometheus", {"web": self.port})
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload picks up new rule files
        ]
        # rule_files and scrape paths are relative to the config file's directory
        self._process = spawn(command, self.log_file, die_with_parent=self.die_with_parent, cwd=self.config_file.parent)
        self._pid = self._process.pid
        log.info("Prometheus starting on %s (pid %d, log %s)", self.url, self._pid, self.log_file)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise StackError(
                    f"Prometheus on {self.url} exited during start-up; last lines of {self.log_file}:\n"
                    + log_tail(self.log_file)
                )
            if _ready(self.url):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        raise StackError(
            f"Prometheus on {self.url} was not ready after {timeout:.0f} s; last lines of {self.log_file}:\n"
            + log_tail(self.log_file)
        )

    def stop(self) -> None:
        if self._pid is None:
            return
        if terminate(self._pid, self.stop_timeout, self._process):
            log.warning("Prometheus pid %d did not stop within %.0f s; killed", self._pid, self.stop_timeout)
        self._pid = None
        self._process = None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False
