"""The randomized stress of the trigger + publish path, quick form (see tests/stress.py): a few
seeds, each a schedule of outside commits and landing files from producer processes and
controller faults, checked against a model of the sources' final state and the files on disk.
Replay a failure with its seed:

    LAKEFLOW_STRESS_SEED=N pytest tests/test_stress.py      # or --stress-seed N
    LAKEFLOW_STRESS_SEED=N LAKEFLOW_STRESS_FULL=1 pytest tests/test_stress.py   # a soak seed
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.stress import FULL_ENV, SEED_ENV, run_seed

QUICK_SEEDS = [
    8,
    12,
    28,
]  # first fill before up + deletes + merge + a kill; 3 sources + kills; a failing unit


def pytest_generate_tests(metafunc):
    if "seed" in metafunc.fixturenames:
        chosen = [int(s) for s in metafunc.config.getoption("--stress-seed")]
        chosen += [int(s) for s in os.environ.get(SEED_ENV, "").split(",") if s.strip()]
        metafunc.parametrize("seed", chosen or QUICK_SEEDS)


@pytest.mark.timeout(280)
def test_a_random_schedule_leaves_the_lake_equal_to_its_model(ray_session, lake, seed):
    workdir = Path(lake).parent / f"stress-{seed}"
    quick = os.environ.get(FULL_ENV) != "1"  # a soak seed replays at its full size
    outcome = run_seed(seed, workdir=workdir, quick=quick, settle_timeout=120, lake=lake)
    assert outcome.ok, outcome.report()
