"""Process and port helpers shared by the stack's servers (the imperative shell)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

LOCALHOST = "127.0.0.1"


class StackError(RuntimeError):
    """A stack component cannot start or stop; the message says what to do."""


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something already listens on (or holds) 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # same option servers use, so a port in TIME_WAIT after a clean stop counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to 127.0.0.1:port succeeds."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_free_ports(component: str, ports: dict[str, int]) -> None:
    for what, port in ports.items():
        if port_in_use(port):
            raise StackError(
                f"{component}: {what} port {port} on {LOCALHOST} is already in use; "
                f"stop whatever listens there (`ss -ltnp 'sport = :{port}'`) or choose another port"
            )


def require_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"`{name}` was not found on PATH; {hint}")
    return path


def pid_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    # the state letter follows the parenthesised command name
    return stat.rpartition(")")[2].split()[0] != "Z"


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_matches(pid: int, marker: str) -> bool:
    """True when ``pid`` is alive and its command line contains ``marker``.

    Pids are recycled: before signalling a pid read from a state file we check it is
    still the process we started (its command line names our config file).
    """
    return pid_alive(pid) and marker in pid_cmdline(pid)


def spawn(
    argv: Sequence[str], log_file: Path, *, die_with_parent: bool, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server with stdout and stderr appended to ``log_file``.

    ``die_with_parent`` wraps the command in ``setpriv --pdeathsig SIGKILL`` (which then
    execs it, so the pid stays the server's): the kernel kills the server as soon as its
    parent dies, even by SIGKILL. Tests use it for their throwaway servers (SIGKILL: a
    graceful Kafka shutdown can take many seconds on a busy machine); `pulse stack up`
    does not, since its servers must outlive the command.
    """
    command = list(argv)
    if die_with_parent and shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "SIGKILL", "--", *command]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # own session: a Ctrl-C in the terminal goes to `pulse`, not to the servers
            start_new_session=True,
        )


def terminate(pid: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. True when it had to kill."""
    if not pid_alive(pid):
        _reap(process)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(process)
        if not pid_alive(pid):
            return False
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < kill_deadline:
        _reap(process)
        time.sleep(0.05)
    _reap(process)
    return True


def _reap(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        process.poll()


def log_tail(log_file: Path, lines: int = 30) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def wait_http(
    url: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log_file: Path | None = None,
) -> float:
    """Wait until ``url`` answers 200; seconds it took. StackError (with the log's tail) if the
    process exits first or the time runs out."""
    import httpx

    started = time.monotonic()
    deadline = started + timeout

    def tail() -> str:
        return f"\n{log_tail(log_file)}" if log_file is not None else ""

    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            name = log_file.stem if log_file is not None else url
            raise StackError(f"{name} exited with {process.returncode}{tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.2)
    raise StackError(f"{url} did not answer within {timeout:.0f} s{tail()}")
