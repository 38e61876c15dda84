"""Offload: the intake's blocking calls run on the loop while quick, in threads after one is slow or fails."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from workflows._offload import Offload


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def where() -> int:
    return threading.get_ident()


def never(_: object) -> bool:
    return False


def slow_call() -> int:
    # The call under test is slow; nothing here waits for a condition.
    time.sleep(0.02)
    return threading.get_ident()


class TestOffload:
    """Where a call runs, and when that changes."""

    async def test_quick_calls_run_on_the_loop(self) -> None:
        offload = Offload(slow_s=1.0)

        ran_in = [await offload.run(where, never) for _ in range(5)]

        assert [threading.get_ident()] * 5 == ran_in
        assert not offload.offloaded

    async def test_a_slow_call_moves_the_next_ones_to_threads(self) -> None:
        offload = Offload(slow_s=0.005)

        first = await offload.run(slow_call, never)
        second = await offload.run(where, never)

        assert threading.get_ident() == first
        assert offload.offloaded
        assert threading.get_ident() != second

    async def test_a_failed_call_moves_the_next_ones_to_threads(self) -> None:
        offload = Offload(slow_s=1.0)

        assert "down" == await offload.run(lambda: "down", lambda result: result == "down")

        assert offload.offloaded
        assert threading.get_ident() != await offload.run(where, never)

    async def test_a_raising_call_moves_the_next_ones_to_threads_and_raises(self) -> None:
        offload = Offload(slow_s=1.0)

        def boom() -> None:
            raise ConnectionError("stalled")

        with pytest.raises(ConnectionError, match="stalled"):
            await offload.run(boom, never)
        assert offload.offloaded

    async def test_back_on_the_loop_after_enough_quick_calls_and_time(self) -> None:
        clock = Clock()
        offload = Offload(slow_s=1.0, recover_calls=3, recover_s=10.0, clock=clock)
        await offload.run(lambda: "down", lambda result: result == "down")

        for _ in range(3):
            await offload.run(where, never)
        assert offload.offloaded  # three quick calls, but not 10 s since the failure
        clock.now += 10.0
        await offload.run(where, never)

        assert not offload.offloaded
        assert threading.get_ident() == await offload.run(where, never)

    async def test_a_failure_while_offloaded_restarts_the_count(self) -> None:
        clock = Clock()
        offload = Offload(slow_s=1.0, recover_calls=3, recover_s=0.0, clock=clock)
        failing = (lambda: "down", lambda result: result == "down")
        await offload.run(*failing)

        await offload.run(where, never)
        await offload.run(where, never)
        await offload.run(*failing)
        await offload.run(where, never)
        await offload.run(where, never)
        assert offload.offloaded
        await offload.run(where, never)

        assert not offload.offloaded
