"""One piece of code for running local processes: Kafka, FerretDB, and later the Python services
that ``make up`` starts.

A :class:`ManagedProcess` runs in its own session (so its process group is its own), writes
stdout and stderr to a log file, and is stopped by signalling the whole group: SIGTERM, then
SIGKILL after a grace period. Every started process is remembered until it is stopped, and an
``atexit`` hook stops whatever is left, so a crashed test run or script does not leave servers
behind. On Linux a process started from the main thread also gets SIGKILL when its parent dies
(``setpriv --pdeathsig``), which covers the cases ``atexit`` cannot (SIGKILL, ``os._exit``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "ManagedProcess",
    "ProcessError",
    "free_port",
    "port_open",
    "stop_all",
    "tail",
]

_LIVE: dict[int, ManagedProcess] = {}
_LIVE_LOCK = threading.Lock()


class ProcessError(RuntimeError):
    """A managed process could not start, died, or did not become ready.

    The message names the process and ends with the tail of its log file.
    """


_ports_given: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it) and that this process has
    not handed out before: the OS may offer a just-closed port again, and two servers told to
    use the same port make one of them answer for the other."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ("" if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def stop_all(grace: float = 5.0) -> None:
    """Stop every managed process that is still running (the ``atexit`` backstop)."""
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for proc in reversed(live):  # last started first
        with contextlib.suppress(Exception):
            proc.stop(grace=grace)


atexit.register(stop_all)


def _pdeathsig_prefix() -> list[str]:
    if threading.current_thread() is not threading.main_thread():
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, which for a worker thread
        # would kill the child far too early; rely on stop()/atexit instead.
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class ManagedProcess:
    """A supervised child process with a log file.

    * ``argv[0]`` is looked up on ``PATH`` (of ``env``) or taken relative to ``cwd``.
    * ``env`` is laid over the current environment (``inherit_env=False`` uses it alone).
    * stdout and stderr are appended to ``log_path``, after a ``=== <time> starting`` line.
    * ``pid_path``, if given, holds the pid while the process runs.
    * ``die_with_parent``: on Linux, when started from the main thread, the child gets SIGKILL
      if this Python process dies without stopping it (``setpriv --pdeathsig KILL``).

    ``start()`` returns the object itself; ``stop()`` may be called any number of times; use it
    as a context manager to stop it on exit.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pid_path: Path | None = None,
        inherit_env: bool = True,
        die_with_parent: bool = True,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.name = name
        self.argv = [os.fspath(arg) for arg in argv]
        self.log_path = log_path
        self.cwd = cwd
        self.pid_path = pid_path
        self.die_with_parent = die_with_parent
        base: dict[str, str] = dict(os.environ) if inherit_env else {}
        base.update(env or {})
        self.env = base
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._returncode: int | None = None
        self.started_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process; raises :class:`ProcessError` if it cannot be executed."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"=== {stamp} starting {self.name}: {' '.join(self.argv)}\n".encode())
        log.flush()
        program = self.argv[0]
        if os.sep in program and self.cwd is not None:
            program = os.path.join(self.cwd, program)  # noqa: PTH118 - relative to cwd, like exec
        if shutil.which(program, path=self.env.get("PATH", os.defpath)) is None:
            # checked here because with the setpriv prefix Popen itself would not fail
            log.close()
            raise ProcessError(f"{self.name}: cannot run {program}: not found or not executable")
        prefix = _pdeathsig_prefix() if self.die_with_parent else []
        try:
            popen = subprocess.Popen(
                [*prefix, *self.argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session => own process group, pgid == pid
                close_fds=True,
            )
        except OSError as exc:
            log.close()
            raise ProcessError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        self._popen, self._log = popen, log
        self.started_at = time.monotonic()
        with _LIVE_LOCK:
            _LIVE[id(self)] = self
        if self.pid_path is not None:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(f"{popen.pid}\n")
        return self

    def fresh(self) -> ManagedProcess:
        """A new, unstarted process with the same command, environment, folder and files (a
        process object runs once: restarting means starting its fresh copy)."""
        return ManagedProcess(
            self.name,
            self.argv,
            log_path=self.log_path,
            env=self.env,
            cwd=self.cwd,
            pid_path=self.pid_path,
            inherit_env=False,
            die_with_parent=self.die_with_parent,
        )

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended (negative: killed by that signal)."""
        if self._returncode is None and self._popen is not None:
            self._returncode = self._popen.poll()
        return self._returncode

    def is_running(self) -> bool:
        return self._popen is not None and self.returncode is None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; returns the exit
        status (None if it was never started). Safe to call more than once."""
        popen = self._popen
        if popen is None:
            return None
        pgid = popen.pid  # start_new_session: the child leads its own group
        try:
            if self._returncode is None:
                self._signal_group(pgid, signal.SIGTERM)
                if not self._wait_exit_unreaped(grace):
                    self._signal_group(pgid, signal.SIGKILL)
                    self._wait_exit_unreaped(30.0)
                # The leader is a zombie (not reaped yet), so its pgid cannot be reused: kill
                # whatever else is left in the group, then reap.
                self._signal_group(pgid, signal.SIGKILL)
                self._returncode = popen.wait()
            elif id(self) in _LIVE:
                # Exited on its own: children it left in its group (if any) go too.
                self._signal_group(pgid, signal.SIGKILL)
        finally:
            self._release()
        return self._returncode

    def _signal_group(self, pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _wait_exit_unreaped(self, timeout: float) -> bool:
        """Wait until the child has exited without reaping it (waitid WNOWAIT), so that its
        pid, which is also its group id, stays reserved until the group has been killed."""
        assert self._popen is not None
        if not hasattr(os, "waitid"):  # e.g. macOS before Python 3.13: reap instead
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            except ChildProcessError:  # already reaped elsewhere
                return True
            if info is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _release(self) -> None:
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)

    # -- readiness ---------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def error(self, message: str, lines: int = 40) -> ProcessError:
        """A :class:`ProcessError` for this process, with the tail of its log."""
        return ProcessError(
            f"{self.name}: {message}\n--- last {lines} lines of {self.log_path} ---\n"
            f"{self.log_tail(lines)}"
        )

    def wait_until(
        self,
        check: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        interval: float = 0.2,
    ) -> float:
        """Poll ``check`` until it returns True; returns the seconds waited. Raises
        :class:`ProcessError` (with the log tail) if the process exits or time runs out."""
        begin = time.monotonic()
        deadline = begin + timeout
        while True:
            if not self.is_running():
                raise self.error(f"exited with status {self.returncode} while waiting for {what}")
            if check():
                return time.monotonic() - begin
            if time.monotonic() >= deadline:
                raise self.error(f"not {what} after {timeout:.0f}s")
            time.sleep(interval)

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"


def wait_grpc_serving(
    process: ManagedProcess, port: int, timeout: float = 60.0, tls_dir: Path | None = None
) -> None:
    """Wait until the gRPC health check on ``port`` answers SERVING (over mTLS as the identity
    in ``tls_dir`` when given); raise :class:`ProcessError` (with the log tail) if ``process``
    exits or time runs out."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.platform.tls import open_channel

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_running():
            raise process.error(f"{process.name} exited during start")
        try:
            with open_channel(f"127.0.0.1:{port}", tls_dir) as channel:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise process.error(f"{process.name} did not answer SERVING within {timeout:.0f}s")


class ServerProcess:
    """A server of the local stack (Kafka, FerretDB, immudb): :meth:`start` it, then
    :meth:`stop` it or leave a ``with`` block. Subclasses set ``log_path`` and start
    ``_process`` in :meth:`start`."""

    #: Seconds :meth:`stop` waits after SIGTERM before SIGKILL.
    stop_grace: float = 10.0
    log_path: Path
    _process: ManagedProcess | None = None

    def start(self) -> Self:
        """Start the server (subclasses)."""
        raise NotImplementedError

    @property
    def process(self) -> ManagedProcess:
        """The running server (RuntimeError before :meth:`start`)."""
        if self._process is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._process

    def stop(self, grace: float | None = None) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after ``grace`` s, by default
        :attr:`stop_grace`); its exit status, or None if it was never started."""
        if self._process is None:
            return None
        return self._process.stop(grace=self.stop_grace if grace is None else grace)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of its log."""
        return tail(self.log_path, lines)

    def __enter__(self) -> Self:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
