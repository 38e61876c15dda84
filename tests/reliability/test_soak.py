"""A short soak (300 webhooks) through the real processes: the accounting holds, and the worker's
completion metric agrees with the traces."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def soaked(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``benchmarks/soak.py --n 300 --rate 40``, run once for the module: the run and its JSON report."""
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/soak.py", "--n", "300", "--rate", "40", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.exists(), run.stdout + run.stderr
    print(run.stdout)
    return run, json.loads(out.read_text())


class TestShortSoak:
    """``benchmarks/soak.py --n 300``: accepted == completed + dead-lettered, nothing lost, nothing run twice."""

    def test_accounting(self, soaked: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
        """300 webhooks at 40/s after a warm-up of 50; every trace measured."""
        run, report = soaked
        assert 300 == report["webhooks"]
        assert 300 == report["accepted"]
        assert report["accepted"] == report["completed"] + report["dead_lettered"]
        assert (0, 0) == (report["lost"], report["run_twice"]), report
        assert report["latency_ms"]["traces"] >= 300
        assert 0 == run.returncode, run.stdout + run.stderr

    def test_metric_agrees_with_the_traces(
        self, soaked: tuple[subprocess.CompletedProcess[str], dict[str, Any]]
    ) -> None:
        """The worker's tracehook_webhook_completion_seconds counted every completed webhook the traces
        show, and the p50 and p99 it gives lie in the buckets of the traces' p50 and p99."""
        figures = soaked[1]["completion_metric"]
        assert figures["trace_count"] == figures["metric_count"], figures
        assert (True, True) == (figures["p50"]["agree"], figures["p99"]["agree"]), figures
