"""Helpers shared by the benchmarks: ports, quantiles, process memory, which code was measured."""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import socket
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rss_kb(pid: int, *, children: bool = True) -> int:
    """Resident memory of a process (and its direct children), in kB, from /proc."""
    pids = [pid]
    if children:
        with contextlib.suppress(OSError):
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for each in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def code_fingerprint(*patterns: str) -> dict[str, str]:
    """Which code was measured: a hash of the files matching ``patterns`` (globs under the repository),
    and their newest mtime."""
    paths = [path for pattern in patterns for path in sorted(REPO_ROOT.glob(pattern))]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    newest = max(path.stat().st_mtime for path in paths)
    return {
        "sha256": digest.hexdigest()[:12],
        "newest_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest)),
    }


def median(values: Sequence[float]) -> float:
    """The median; NaN when empty."""
    return statistics.median(values) if values else math.nan


def ratio(value: float, base: float) -> float:
    """``value / base``; NaN when ``base`` is 0."""
    return value / base if base else math.nan


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` blocks stop the processes we started."""

    def handler(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
