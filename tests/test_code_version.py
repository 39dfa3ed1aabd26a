"""The default code version: a hash of what the asset function can reach in its own module
(helpers it calls, constants it reads, recursively), so that a change there makes its partitions
stale, and `status` counts the partitions built by other code."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

_COUNTER = itertools.count()

MODULE = """
import polars as pl
import lakeflow as lf

RATE = {rate}

def _scale(x):
    return x * RATE

def _round(x):
    return _scale(x) + {offset}

def unrelated():
    return {unrelated}

@lf.asset(partitions=lf.StaticPartitions(["a", "b"]))
def priced() -> pl.DataFrame:
    return pl.DataFrame({{"price": [_round(1.0)]}})

pipeline = lf.Pipeline([priced])
"""


def _load(tmp_path: Path, **values):
    text = MODULE.format(**{"rate": 2, "offset": 0, "unrelated": 1, **values})
    path = tmp_path / f"priced_{next(_COUNTER)}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.priced.code_version


def test_a_change_in_a_helper_or_constant_changes_the_code_version(tmp_path):
    base = _load(tmp_path)
    assert _load(tmp_path) == base  # stable for the same code
    assert _load(tmp_path, offset=1) != base  # a helper the function calls
    assert _load(tmp_path, rate=3) != base  # a constant a helper reads (two calls deep)
    assert _load(tmp_path, unrelated=2) == base  # a function it never reaches


def test_status_counts_partitions_built_by_other_code(tmp_path):
    path = tmp_path / "priced.py"
    path.write_text(MODULE.format(rate=2, offset=0, unrelated=1))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lakeflow.cli", *args], cwd=tmp_path, capture_output=True,
            text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    def status() -> dict:
        done = cli("status", str(path), "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)[0]

    done = cli("materialize", str(path), "--executor", "local", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert status()["code_changed"] == 0
    path.write_text(MODULE.format(rate=2, offset=5, unrelated=1))  # only the helper changes
    row = status()
    assert (row["code_changed"], row["stale"], row["to_run"]) == (2, 2, 2)
    text = cli("status", str(path))
    assert "code changed" in text.stdout.replace("_", " ")
    done = cli("materialize", str(path), "--executor", "local", "--no-progress")
    assert done.returncode == 0 and "2 published" in done.stdout, done.stdout + done.stderr
    assert status()["code_changed"] == 0
