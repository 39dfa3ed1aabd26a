"""The benchmark scripts keep working: each runs in --quick mode (seconds, nothing recorded)."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

RESULTS = ROOT / "benchmarks" / "RESULTS.md"


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("bench_pipeline.py", ["--executor", "local"], "| lakeflow (local) |"),
        ("bench_checks.py", [], "| 10,000 |"),
        ("bench_control_plane.py", [], "| 1,000 |"),
        ("bench_million.py", [], "| 2,000 |"),
        ("bench_tpch.py", [], "| lakeflow backfill: lineitem |"),
        ("bench_sql.py", [], "| lakeflow, SQL asset (DuckDB) | 31 |"),
        ("bench_planning.py", [], "| empty lake: plan | 100,000 |"),
        ("bench_triggers.py", [], "| outside commit -> consumer starts | 4 |"),
        ("bench_nodes.py", [], "| 1 | 15 |"),
        ("bench_ui.py", [], "| 10,000 |"),
    ],
)
def test_benchmark_script_runs_quick(script, args, expected, tmp_path):
    before = RESULTS.read_text() if RESULTS.exists() else None
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert (
        RESULTS.read_text() if RESULTS.exists() else None
    ) == before  # quick runs are not recorded
