"""Where the intake's blocking calls (Redis, the broker) run: on the event loop while they answer quickly,
in worker threads from the first call that does not, until they are quick again for a while.

Handing every webhook to a worker thread costs about 1 ms of CPU per webhook under load (the thread hop,
then the GIL passed back and forth between the loop and the threads: measured with
``benchmarks/intake_throughput.py``, 3.2 ms of server CPU per webhook through threads, 2.1 ms on the loop),
a bare enqueue endpoint's whole cost. Yet a call on the loop that hangs stops every request of the process,
``/healthz`` included. So calls run on the loop, each timed; one that takes longer than ``slow_s`` or fails
moves the next ones to threads, where a stalled store or broker holds a thread, not the loop. They come
back to the loop after ``recover_calls`` quick calls in a row and ``recover_s`` without a slow one. A
store or broker that hangs therefore stalls the loop once, for at most its client's socket timeout (the
intake's store and producer use 2 s), then not again until it has recovered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

import anyio
import structlog

__all__ = ["Offload"]

T = TypeVar("T")

log = structlog.get_logger("workflows.intake")

# A few threads, not anyio's 40: more only fight over the GIL (measured: 40 → 2 threads took the
# intake from 32% to 40% of a bare enqueue endpoint), yet Redis waits stay off the loop.
_THREADS: Final = 2


@dataclass(slots=True)
class _Timed(Generic[T]):
    result: T
    elapsed: float


def _timed(func: Callable[[], T]) -> _Timed[T]:
    started = time.perf_counter()
    result = func()
    return _Timed(result, time.perf_counter() - started)


@dataclass(slots=True)
class Offload:
    """Runs blocking calls on the loop while they are quick, in threads after one is not.

    Its state changes on the event loop only (``run`` is a coroutine; the thread reports its call's
    duration back to it).
    """

    # A call on the loop takes 1 to 3 ms (three Redis round trips); on a 2-core machine under full load one
    # took 120 ms now and then (the process descheduled), which is no reason to leave the loop.
    slow_s: float = 0.25
    recover_calls: int = 100
    recover_s: float = 10.0
    threads: int = _THREADS
    clock: Callable[[], float] = time.monotonic
    offloaded: bool = field(default=False, init=False)
    _quick: int = field(default=0, init=False, repr=False)
    _last_bad: float = field(default=0.0, init=False, repr=False)
    _limiter: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)

    async def run(self, func: Callable[[], T], failed: Callable[[T], bool]) -> T:
        """``func()``'s result; ``failed(result)`` says whether the store or broker failed it."""
        try:
            if self.offloaded:
                if self._limiter is None:
                    self._limiter = anyio.CapacityLimiter(self.threads)
                timed = await anyio.to_thread.run_sync(_timed, func, limiter=self._limiter)
            else:
                timed = _timed(func)
        except Exception:  # not a cancelled request: that says nothing of the store or broker
            self._bad("raised")
            raise
        if failed(timed.result):
            self._bad("failed")
        elif timed.elapsed > self.slow_s:
            self._bad(f"took {timed.elapsed * 1000:.0f} ms")
        else:
            self._good()
        return timed.result

    def _bad(self, why: str) -> None:
        self._quick = 0
        self._last_bad = self.clock()
        if not self.offloaded:
            self.offloaded = True
            log.warning("intake.offloaded", reason=why, detail="store or broker calls move to threads")

    def _good(self) -> None:
        if not self.offloaded:
            return
        self._quick += 1
        if self._quick >= self.recover_calls and self.clock() - self._last_bad >= self.recover_s:
            self.offloaded = False
            self._quick = 0
            log.info("intake.on_loop", detail="store and broker quick again: their calls run on the loop")
