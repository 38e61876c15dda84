"""Local processes, as the demo runs them (and the tests that run the stack the same way): started with their
output in a log file, waited for until their HTTP endpoint answers, and always stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["Process", "StartError", "free_port", "start", "stop", "wait_answering", "worker_command"]


class StartError(Exception):
    """A process exited, or did not answer in time, while it was being started; the message ends with
    the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A started process, its name and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of its log."""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def start(name: str, command: Sequence[str], env: Mapping[str, str], folder: Path) -> Process:
    """Start ``command`` in a session of its own (out of reach of the terminal's signals: :func:`stop`
    stops it), its output in ``folder/<name>.log``."""
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603  # our own interpreter and entry points
            list(command), env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, process, log)


def stop(processes: Sequence[Process], timeout_s: float = 15.0) -> None:
    """SIGTERM every process still running, then SIGKILL whichever has not exited after ``timeout_s``."""
    for proc in processes:
        if proc.process.poll() is None:
            proc.process.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in processes:
        try:
            proc.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait(5)


def wait_answering(url: str, proc: Process, timeout_s: float, *, since: float | None = None) -> None:
    """Poll ``GET url`` until it answers 200, ``timeout_s`` from ``since`` (a ``time.monotonic()``
    reading; now when omitted).

    Raises:
        StartError: the process exited, or the deadline passed.
    """
    deadline = (time.monotonic() if since is None else since) + timeout_s
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            msg = f"the {proc.name} exited with code {proc.process.returncode}; its log ends:\n{proc.tail()}"
            raise StartError(msg)
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    msg = f"the {proc.name} did not answer {url} in {timeout_s:.0f} s; its log ends:\n{proc.tail()}"
    raise StartError(msg)


def worker_command(
    *, concurrency: int = 2, queue: str | None = None, loglevel: str | None = None
) -> list[str]:
    """``celery -A workers worker --pool=prefork``, as docker compose runs it, with no gossip, mingle or
    heartbeat (one worker alone on its queue needs none); on ``queue`` when given."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if queue is not None:
        command += ["-Q", queue]
    if loglevel is not None:
        command.append(f"--loglevel={loglevel}")
    return command
