"""The `lakeflow` command as a user types it: in-process for speed (sharing the session's Ray),
and as a real subprocess that starts its own embedded Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from lakeflow.cli import main
from tests.conftest import ROOT, lake_fingerprint

FLIGHTS = str(ROOT / "pipelines" / "flights.py")
SPEND = "tests.pipelines:PIPELINE"


def test_assets_prints_the_graph(capsys):
    assert main(["assets", FLIGHTS]) == 0
    out = capsys.readouterr().out
    assert "monthly_delays" in out and "monthly 2013-01..2013-12 (12)" in out
    assert "daily_delays" in out and "<- flights_clean, raw_weather" in out


def test_bare_lakeflow_prints_help_and_version_works():
    """`lakeflow` alone lists the commands (exit 0); `--version` names the installed version;
    `backfill --help` shows how to look after a run by its id."""
    bare = subprocess.run([sys.executable, "-m", "lakeflow.cli"], capture_output=True, text=True)
    assert bare.returncode == 0, bare.stderr
    for command in ("materialize", "backfill", "status", "checks", "up", "submit", "jobs"):
        assert command in bare.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "lakeflow.cli", "--version"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and shown.stdout.startswith("lakeflow ")
    assert shown.stdout.split()[1][0].isdigit()
    helped = subprocess.run(
        [sys.executable, "-m", "lakeflow.cli", "backfill", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    for action in ("status RUN_ID", "cancel RUN_ID", "resume RUN_ID"):
        assert f"lakeflow backfill {action}" in helped.stdout


def test_materialize_then_status(ray_session, lake, control, capsys):
    code = main(
        [
            "materialize",
            SPEND,
            "--lake",
            lake,
            "--select",
            "events,spend,spend_3d,users",
            "--partitions",
            "2024-01-01..2024-01-03",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "succeeded" in out and "published" in out
    assert main(["status", SPEND, "--lake", lake, "--json"]) == 0
    rows = {r["asset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["spend"]["published"] == 3 and rows["spend"]["missing"] == 7
    assert rows["users"]["published"] == 1
    assert (
        main(
            [
                "materialize",
                SPEND,
                "--lake",
                lake,
                "--select",
                "events",
                "--partitions",
                "2024-01-01",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["counts"] == {"fresh": 1}


def test_a_failed_unit_exits_1_and_shows_the_users_frame(ray_session, lake, control, capsys):
    (control / "fail-spend-2024-01-02").touch()
    code = main(
        [
            "materialize",
            SPEND,
            "--lake",
            lake,
            "--select",
            "events,spend",
            "--partitions",
            "2024-01-01..2024-01-02",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert (
        "spend" in captured.err
        and "2024-01-02" in captured.err
        and "ValueError: spend 2024-01-02: bad data" in captured.err
    )
    # the user's innermost frame and the cause; the whole traceback only with --debug
    assert "Traceback" not in captured.err and "tests/pipelines.py" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--select", "nope"], "unknown asset 'nope'"),
        (["--partitions", "2030-01-01"], "after the last partition"),
        (["--partitions", "../etc"], "malformed"),
        (["--partitions", ""], "empty"),
    ],
)
def test_bad_requests_exit_2_and_change_nothing(lake, capsys, args, message):
    code = main(["materialize", SPEND, "--lake", lake, "--executor", "local", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert lake_fingerprint(lake) == {}


def test_an_unknown_pipeline_file_exits_2(capsys, tmp_path):
    assert main(["status", str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_cyclic_pipeline_exits_2(capsys, tmp_path):
    path = tmp_path / "cyclic.py"
    path.write_text(
        "import lakeflow as lf\n"
        "@lf.asset\ndef a(b): return b\n"
        "@lf.asset\ndef b(a): return a\n"
        "pipeline = lf.Pipeline([a, b])\n"
    )
    assert main(["assets", str(path)]) == 2
    assert "dependency cycle" in capsys.readouterr().err


def _cli(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(env_extra or {})
    lakeflow = Path(sys.executable).parent / "lakeflow"
    return subprocess.run(
        [str(lakeflow), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_readme_command_runs_on_an_embedded_ray(tmp_path):
    """What the README's first command does: a fresh Ray for the command, a lake under cwd."""
    done = _cli(
        "materialize",
        FLIGHTS,
        "--select",
        "+daily_delays",  # and everything it needs, the airlines included
        "--partitions",
        "2013-01-01..2013-01-02",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and "9 published" in done.stdout
    flights = pl.read_delta(str(tmp_path / "lake" / "raw_flights"))
    assert (
        flights.filter(pl.col("date") == "2013-01-01").height == 842
    )  # the real first day of 2013
    status = _cli("status", FLIGHTS, "--json", cwd=tmp_path)
    rows = {r["asset"]: r for r in json.loads(status.stdout)}
    assert rows["daily_delays"]["published"] == 2 and rows["monthly_delays"]["missing"] == 12


def test_a_failing_run_exits_1_from_a_shell(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(
        "import polars as pl, lakeflow as lf\n"
        "@lf.asset(retry=1)\ndef broken():\n    raise RuntimeError('source is down')\n"
        "pipeline = lf.Pipeline([broken])\n"
    )
    done = _cli("materialize", str(path), "--no-progress", cwd=tmp_path)
    assert done.returncode == 1
    assert "RuntimeError: source is down" in done.stderr and "broken.py" in done.stderr
    assert not (tmp_path / "lake" / "broken").exists()


def test_a_span_covering_part_of_a_rollup_window_exits_0(tmp_path):
    done = _cli(
        "materialize", FLIGHTS, "--partitions", "2013-01-01..2013-01-03", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "waiting" in out and "monthly_delays" in out and "daily_delays 2013-01-04" in out
    assert "select +" not in out  # no hint to select what is outside the request
