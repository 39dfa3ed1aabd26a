"""Start-up is part of a command's speed: the commands that read the lake never import Ray or
Great Expectations, and a `materialize` or `backfill` with nothing to do answers from one snapshot
of the lake in the CLI process, without starting Ray and without writing to the lake."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakeflow.cli import main
from lakeflow.cli.main import GROUPS, groups
from tests.conftest import lake_fingerprint

SPEND = "tests.pipelines:PIPELINE"
HEAVY = ("ray", "great_expectations", "pandas", "starlette", "lakeflow.control.controller")

# runs the CLI in a fresh interpreter, then says on its last stderr line which heavy packages
# the command imported
PROBE = """
import json, sys
from lakeflow.cli import main
from lakeflow.cli.main import GROUPS, groups
code = main(sys.argv[1:])
sys.stdout.flush()
heavy = [m for m in {heavy!r} if m in sys.modules]
print("IMPORTED " + json.dumps(heavy), file=sys.stderr)
sys.exit(code)
"""


def _cli(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    last = done.stderr.rstrip().splitlines()[-1] if done.stderr.strip() else ""
    assert last.startswith("IMPORTED "), done.stderr
    return done, json.loads(last.removeprefix("IMPORTED "))


@pytest.fixture
def built(ray_session, lake, control, capsys):
    """A lake where events, spend and spend_3d of 2024-01-01..03 were materialized."""
    code = main([
        "materialize", SPEND, "--lake", lake, "--select", "events,spend,spend_3d",
        "--partitions", "2024-01-01..2024-01-03", "--no-progress",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    return lake


def test_reading_commands_import_neither_ray_nor_gx_nor_pandas(built, tmp_path):
    """Nor the controller, nor the web service: on a built lake and on one with nothing yet."""
    empty = str(tmp_path / "empty")
    for command in (["status", "--json"], ["assets"], ["checks", "--failed"]):
        for lake in (built, empty):
            done, imported = _cli(command[0], SPEND, "--lake", lake, *command[1:])
            assert done.returncode == 0, done.stderr
            assert imported == [], (command, lake, imported)
    for args in (["lineage", SPEND, "spend_3d", "2024-01-03"], ["runs"]):
        done, imported = _cli(*args, "--lake", built)
        assert done.returncode == 0, done.stderr
        assert imported == [], (args, imported)
    assert (
        "events 2024-01-03 @ v0"
        in _cli("lineage", SPEND, "spend", "2024-01-03", "--lake", built)[0].stdout
    )
    done, _ = _cli("status", SPEND, "--lake", built, "--json")
    rows = {r["asset"]: r for r in json.loads(done.stdout)}
    assert rows["spend"]["published"] == 3 and rows["spend"]["missing"] == 7


def test_a_materialize_with_nothing_to_do_never_starts_ray(built):
    before = lake_fingerprint(built)
    events = sorted(p.name for p in (Path(built) / "_lakeflow").rglob("*"))
    done, imported = _cli(
        "materialize", SPEND, "--lake", built, "--select", "events,spend,spend_3d",
        "--partitions", "2024-01-01..2024-01-03", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "9 fresh" in done.stdout and "published" not in done.stdout, done.stdout
    assert imported == []  # no Ray, and neither GX, pandas, the controller nor the web service
    assert lake_fingerprint(built) == before  # nothing written: not a table, not an event
    after = sorted(p.name for p in (Path(built) / "_lakeflow").rglob("*"))
    assert after == events

    done, imported = _cli(
        "materialize", SPEND, "--lake", built, "--select", "events",
        "--partitions", "2024-01-02", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["run_id"] is None and summary["status"] == "succeeded" and summary["ok"]
    assert summary["counts"] == {"fresh": 1} and imported == []


def test_a_backfill_with_nothing_to_do_never_starts_ray(built):
    before = lake_fingerprint(built)
    done, imported = _cli(
        "backfill", SPEND, "--lake", built, "--select", "events,spend",
        "--partitions", "2024-01-01..2024-01-03", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "6 fresh" in done.stdout and imported == []
    assert lake_fingerprint(built) == before


def test_a_materialize_with_work_still_runs_it_on_ray(built, capsys):
    """The shortcut is taken only when nothing must run: one missing unit runs, on a private
    Ray started for the command, which says nothing of its token authentication (a user who
    never set RAY_AUTH_MODE gets Ray's default, token auth, without Ray's warning about it)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done, imported = _cli(
        "materialize", SPEND, "--lake", built, "--select", "events",
        "--partitions", "2024-01-03..2024-01-04", "--no-progress", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 published" in done.stdout and "1 fresh" in done.stdout, done.stdout
    assert "ray" in imported
    assert "token" not in done.stderr.lower(), done.stderr


def test_the_cli_knows_which_group_adds_each_command():
    """`cli.main.GROUPS` names, per group module, the commands it adds: what lets `lakeflow
    status` load only its own group. A command missing there would still work, but slowly."""
    for module in groups():
        parser = argparse.ArgumentParser()
        commands = parser.add_subparsers()
        module.add_commands(commands)
        assert tuple(commands.choices) == GROUPS[module.__name__], module.__name__
