"""A Celery worker of the user's own app, with the prefork pool, in a subprocess that is always stopped.

``celery -A APP worker --pool=prefork`` on queues of its own, exporting spans to a receiver. The worker runs
in a process group of its own, so :meth:`Worker.stop` can sweep any pool child its main process left
behind; on Linux it also gets SIGTERM when the test process dies, even by SIGKILL, so no worker outlives
its test session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tracing.testing._receiver import OtlpReceiver

__all__ = ["Worker", "start_worker", "worker_environment"]

_POLL_S = 0.02
_PING_S = 0.25
_LOG_TAIL = 4000
_SWEEP_S = 5.0
# Exec'd in the child before celery: asks the kernel to SIGTERM the worker when the test process dies
# (PR_SET_PDEATHSIG is kept across execve), then becomes the celery command, keeping its pid.
_LAUNCH = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
    "os.getppid() == int(sys.argv[1]) or os._exit(1); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)

_live: set[Worker] = set()
_live_lock = threading.Lock()


@dataclass(eq=False)
class Worker:
    """A Celery worker running as a subprocess; stop it with :meth:`stop` or use it as a context manager.

    Attributes:
        app: the ``-A`` argument, the import path of the user's Celery app.
        process: the worker's main process.
        queues: the queues it consumes; :attr:`queue` is the first.
        hostname: its node name (``-n``), e.g. ``tracehook-1a2b3c4d5e@host``.
        log_path: the file its stdout and stderr go to.
    """

    app: str
    process: subprocess.Popen[bytes]
    queues: tuple[str, ...]
    hostname: str
    log_path: Path
    _exit_code: int | None = field(default=None, init=False, repr=False)

    @property
    def queue(self) -> str:
        """The first queue it consumes: publish the test's tasks there (``apply_async(queue=...)``)."""
        return self.queues[0]

    @property
    def pid(self) -> int:
        """The main process's pid (also its process group)."""
        return self.process.pid

    @property
    def log(self) -> str:
        """Everything the worker wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def exit_code(self) -> int | None:
        """The main process's exit status (negative: killed by that signal); ``None`` while it runs.

        Looked at without reaping it: until :meth:`stop` reaps it, its pid and process group cannot be
        given to another process, so stopping never signals a stranger.
        """
        if self._exit_code is None and self.process.returncode is None:
            if not hasattr(os, "waitid"):
                return self.process.poll()  # no waitid (macOS): reaped, and the group is not swept
            with contextlib.suppress(ChildProcessError):
                status = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if status is not None and status.si_pid == self.pid:
                    self._exit_code = (
                        -status.si_status if status.si_code != os.CLD_EXITED else status.si_status
                    )
        return self.process.returncode if self.process.returncode is not None else self._exit_code

    @property
    def running(self) -> bool:
        """Whether the main process is still running."""
        return self.exit_code is None

    def wait_ready(self, timeout: float = 60.0, *, client: Any = None, task: str | None = None) -> None:
        """Wait until the worker takes work, polling with a deadline.

        By default the worker is pinged (Celery's remote control) through ``client``, or through the app
        imported from :attr:`app` in this process. With ``task``, that task (taking no argument) is sent to
        :attr:`queue` instead, and the worker is ready once it has run it: for apps with remote control off.

        Raises:
            AssertionError: the worker exited, or was not ready within ``timeout`` seconds; the message
                holds the end of its log.
        """
        deadline = time.monotonic() + timeout
        app = client if client is not None else _load_app(self.app)
        result = app.send_task(task, queue=self.queue) if task is not None else None
        while True:
            if not self.running:
                code = self.exit_code
                raise AssertionError(
                    f"worker {self.hostname} exited with {code} before it was ready:\n{self._tail()}"
                )
            if result is not None:
                if result.ready():
                    return
                time.sleep(_POLL_S)
            elif app.control.ping(destination=[self.hostname], timeout=_PING_S, limit=1):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.hostname} not ready after {timeout:g}s:\n{self._tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop the worker and return its exit status; idempotent.

        Sends ``sig`` (SIGTERM: Celery's warm shutdown, which lets running tasks end and flushes their
        spans) to the main process and waits up to ``timeout`` seconds; then kills its whole process group.
        Returns once no process of the worker is left.
        """
        if self.process.returncode is None:
            if self.running:
                # os.kill, not Popen.send_signal: that one reaps an exited process first, freeing its pid.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
                if not self._wait_exit(timeout):
                    self._kill_group()
                    self._wait_exit(_SWEEP_S)
            # Unreaped, the main process is a zombie whose group id is still ours to signal.
            if self.process.returncode is None:
                self._kill_group()
            self._wait_group_gone(_SWEEP_S)
            self.process.wait(_SWEEP_S)
        with _live_lock:
            _live.discard(self)
        return self.process.returncode

    def __enter__(self) -> Worker:
        """The worker itself."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the worker."""
        self.stop()

    def _tail(self) -> str:
        return self.log[-_LOG_TAIL:]

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _wait_group_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while group_members(self.pid) - {self.pid} and time.monotonic() < deadline:
            time.sleep(_POLL_S)


def group_members(pgid: int) -> set[int]:
    """The pids of live (not zombie) processes in process group ``pgid``, read from /proc (Linux).

    Empty where /proc is not there.
    """
    members: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name, in parentheses, may hold spaces: the fields that follow are what we read.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.add(int(entry))
    return members


def _load_app(path: str) -> Any:
    from celery.app.utils import find_app  # noqa: PLC0415

    return find_app(path)


def _python_path(cwd: Path, extra: str) -> str:
    """``cwd``, then this process's own import path but the interpreter's and site-packages, then ``extra``:
    the worker imports what the test could (``pythonpath`` ini entries, a ``src/`` layout), and finds
    installed packages where it always does."""
    skipped = [Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    skipped += [Path(p).resolve() for p in (*site.getsitepackages(), site.getusersitepackages())]
    entries = [str(cwd)]
    for entry in sys.path:
        if not entry:
            continue
        path = Path(entry).resolve()
        if any(path == other or other in path.parents for other in skipped):
            continue
        if path.is_dir() and str(path) not in entries:
            entries.append(str(path))
    entries.extend(part for part in extra.split(os.pathsep) if part and part not in entries)
    return os.pathsep.join(entries)


def worker_environment(
    receiver: OtlpReceiver | str | None,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    inherit: bool = True,
) -> dict[str, str]:
    """The environment :func:`start_worker` runs the worker with.

    This process's environment (unless ``inherit`` is false), then: spans exported over OTLP/HTTP to
    ``receiver`` (a receiver or an ``http://host:port`` base URL; left as they are when ``None``) every
    100 ms, tracehook's worker metrics endpoint off (many workers may run at once), unbuffered output, an
    import path that starts with ``cwd``; then ``env``, which wins.
    """
    base = dict(os.environ) if inherit else {key: os.environ[key] for key in ("PATH",) if key in os.environ}
    result = {
        **base,
        "PYTHONUNBUFFERED": "1",
        "WORKER_METRICS_PORT": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PYTHONPATH": _python_path(cwd, base.get("PYTHONPATH", "")),
    }
    if receiver is not None:
        endpoint = receiver.endpoint if isinstance(receiver, OtlpReceiver) else receiver.rstrip("/")
        result |= {
            "TRACE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces",
        }
    result.update(env or {})
    return result


def start_worker(
    app: str,
    *,
    receiver: OtlpReceiver | str | None = None,
    queues: Iterable[str] | None = None,
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    extra_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    ready_timeout: float | None = 60.0,
    name: str | None = None,
) -> Worker:
    """Start ``celery -A app worker --pool=prefork`` and, by default, wait until it takes work.

    Args:
        app: the import path of the user's Celery app, as for ``celery -A``.
        receiver: where the worker exports spans (see :func:`worker_environment`).
        queues: the queues to consume; one of its own (``tracehook-<random>``) when omitted.
        concurrency: the number of pool child processes.
        env: more environment variables for the worker (they win over the defaults).
        inherit_env: start from this process's environment.
        extra_args: more ``celery worker`` arguments, e.g. ``("--max-tasks-per-child=1",)``.
        prefix: a command the worker runs under, e.g. ``("opentelemetry-instrument",)``.
        cwd: the worker's working directory, first on its import path; this process's when omitted.
        log_dir: where the worker's log file goes; a new temporary directory when omitted.
        ready_timeout: seconds to wait for :meth:`Worker.wait_ready`; ``None`` does not wait.
        name: the node name's part before ``@`` (``-n name@%h``); one of its own when omitted, never
            Celery's default ``celery``, so a ping reaches this worker and no other.

    Returns:
        The running worker. The caller stops it (:meth:`Worker.stop`, or ``with start_worker(...)``);
        one still running when this process exits is stopped then.

    Raises:
        ValueError: ``concurrency`` below 1 or an empty ``queues``.
        AssertionError: the worker exited or was not ready in time (it is stopped first).
    """
    if concurrency < 1:
        msg = f"concurrency={concurrency}: a prefork worker needs at least one child"
        raise ValueError(msg)
    own = f"tracehook-{uuid.uuid4().hex[:10]}"
    chosen = tuple(queues) if queues is not None else (own,)
    if not chosen:
        msg = "queues is empty: give at least one queue, or omit it for one of the worker's own"
        raise ValueError(msg)
    directory = Path(cwd) if cwd is not None else Path.cwd()
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="tracehook-worker-"))
    node = f"{name or own}@%h"
    command = [
        *prefix,
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "-Q",
        ",".join(chosen),
        "-n",
        node,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
        *extra_args,
    ]
    if sys.platform == "linux":
        executable = _which(command[0])
        command = [sys.executable, "-c", _LAUNCH, str(os.getpid()), executable, *command[1:]]
    log_path = logs / f"worker-{name or own}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603  # the command is built above from the caller's arguments
            command,
            env=worker_environment(receiver, cwd=directory, env=env, inherit=inherit_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )
    worker = Worker(app, process, chosen, _nodename(node), log_path)
    with _live_lock:
        _live.add(worker)
    if ready_timeout is not None:
        try:
            worker.wait_ready(ready_timeout)
        except BaseException:
            worker.stop()
            raise
    return worker


def _which(program: str) -> str:
    if os.sep in program:
        return program
    import shutil  # noqa: PLC0415

    found = shutil.which(program)
    if found is None:
        msg = f"{program!r} is not on the PATH"
        raise FileNotFoundError(msg)
    return found


def _nodename(node: str) -> str:
    from celery.utils.nodenames import default_nodename, host_format  # noqa: PLC0415

    return str(host_format(default_nodename(node)))


@atexit.register
def _stop_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for worker in leftovers:
        worker.stop(timeout=10.0)
