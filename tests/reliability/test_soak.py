"""A short soak (300 webhooks) through the real processes: the accounting holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.integration


class TestShortSoak:
    """``benchmarks/soak.py --n 300``: accepted == completed + dead-lettered, nothing lost, nothing run twice."""

    def test_accounting(self, tmp_path: Path) -> None:
        """300 webhooks at 40/s after a warm-up of 50; every trace measured."""
        out = tmp_path / "soak.json"
        run = subprocess.run(
            [sys.executable, "benchmarks/soak.py", "--n", "300", "--rate", "40", "--json", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert out.exists(), run.stdout + run.stderr
        report = json.loads(out.read_text())
        print(run.stdout)
        assert 300 == report["webhooks"]
        assert 300 == report["accepted"]
        assert report["accepted"] == report["completed"] + report["dead_lettered"]
        assert (0, 0) == (report["lost"], report["run_twice"]), report
        assert report["latency_ms"]["traces"] >= 300
        assert 0 == run.returncode, run.stdout + run.stderr
