"""``benchmarks/intake_cpu.py`` runs: each variant in a process of its own, every webhook answered 202."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_runs_and_reports() -> None:
    """One short round of bare and intake: CPU per webhook for both, the ratio, no answer but 202."""
    # A database of its own (the benchmark flushes it), not the benchmarks' default 8.
    env = {**os.environ, "BENCH_REDIS_URL": "redis://127.0.0.1:6379/10"}
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/intake_cpu.py",
            "--rounds",
            "1",
            "--requests",
            "40",
            "--variants",
            "bare,intake",
            "--json",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert 0 == done.returncode, done.stderr[-3000:]
    summary = json.loads(done.stdout)["summary"]
    assert {"bare", "intake"} == set(summary)
    for row in summary.values():
        assert 0 == row["non_202"]
        assert row["median_us"] > 0
    assert 1.0 == summary["bare"]["median_x"]
    assert summary["intake"]["median_x"] > 0
