"""The benchmark scripts keep working: each runs in --quick mode (seconds, nothing recorded)."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("script", ["bench_pipeline.py"])
def test_benchmark_script_runs_quick(script, tmp_path):
    before = (
        (ROOT / "benchmarks" / "RESULTS.md").read_text()
        if (ROOT / "benchmarks" / "RESULTS.md").exists()
        else None
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--executor", "local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "units/s" in done.stdout and "| lakeflow (local) |" in done.stdout
    after = (
        (ROOT / "benchmarks" / "RESULTS.md").read_text()
        if (ROOT / "benchmarks" / "RESULTS.md").exists()
        else None
    )
    assert after == before  # quick runs are not recorded
