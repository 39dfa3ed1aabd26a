"""What a user sees of the lake's history: `lakeflow runs`, `lakeflow logs` (units' captured
output, bounded), `--json` across commands, tables on a pipe, `lakeflow up`'s run lines."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from typing import Any

import pytest
from rich.console import Console

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.cli.service import _watch
from lakeflow.progress import ProgressBar
from tests import pipelines
from tests.conftest import ROOT, eventually, lake_fingerprint

CHATTY = "tests.pipelines:CHATTY"
CHATTY_PIPELINE = pipelines.CHATTY
SPEND = "tests.pipelines:PIPELINE"


def _materialize(lake: str, *args: str) -> int:
    return main(["materialize", CHATTY, "--lake", lake, "--no-progress", "--json", *args])


def test_a_ray_run_s_unit_output_is_in_lakeflow_logs_bounded(ray_session, lake, control, capsys):
    (control / "loud-chatty").write_text("100000")  # 100 kB: over what a unit keeps
    (control / "fail-chatty-2024-01-02").touch()
    code = _materialize(lake, "--partitions", "2024-01-01..2024-01-02")
    run = json.loads(capsys.readouterr().out)
    assert code == 1 and run["counts"] == {"failed": 1, "published": 1}

    assert main(["logs", run["run_id"], "--lake", lake]) == 0  # the failing units
    out = capsys.readouterr().out
    assert "chatty 2024-01-02: failed after 1 attempt" in out
    assert "ValueError: chatty 2024-01-02: bad data" in out and 'steer("chatty", key)' in out
    assert "000000999 xxx" in out and "done 2024-01-02" not in out  # it failed before that
    assert "chatty 2024-01-01" not in out  # published: not a failing unit

    assert main(["logs", run["run_id"], "chatty", "2024-01-01", "--lake", lake, "--json"]) == 0
    [unit] = json.loads(capsys.readouterr().out)["units"]
    assert (unit["outcome"], unit["attempts"], unit["error"]) == ("published", 1, None)
    [attempt] = unit["logs"]
    text = attempt["logs"]
    assert 64 * 1024 - 100 < len(text) < 64 * 1024 + 200  # the last 64 KiB, and a note
    assert text.startswith("[lakeflow: ") and "earlier characters" in text
    assert text.splitlines()[1].endswith("x" * 89)  # it resumes at a whole line
    assert text.endswith("000000999 " + "x" * 89 + "\ndone 2024-01-01\n")
    assert "hello from 2024-01-01" not in text  # the start was cut


def test_stdout_stderr_ctx_log_and_loggers_are_captured_per_unit(lake, control, capsys):
    """The local executor runs units in threads of one process: each keeps its own output."""
    (control / "fail-chatty-2024-01-03").touch()
    assert _materialize(lake, "--executor", "local", "--partitions", "2024-01-01..2024-01-04") == 1
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["logs", run_id, "chatty", "--lake", lake, "--json"]) == 0
    units = json.loads(capsys.readouterr().out)["units"]
    assert [u["partition"] for u in units] == [f"2024-01-0{d}" for d in (1, 2, 3, 4)]
    for unit in units:
        key = unit["partition"]
        [attempt] = unit["logs"]
        lines = attempt["logs"].splitlines()
        assert lines[0] == f"hello from {key}"
        assert f"a warning on stderr for {key}" in lines
        assert any(
            line.endswith(f"INFO lakeflow.asset.chatty: built the rows of {key}") for line in lines
        )
        assert any(
            line.endswith(f"WARNING tests.chatty: module logger says {key}") for line in lines
        )
        others = {f"2024-01-0{d}" for d in (1, 2, 3, 4)} - {key}
        assert not any(other in attempt["logs"] for other in others)
    assert units[2]["outcome"] == "failed" and "bad data" in units[2]["traceback"]
    pointers = lf.read_events(lf.Lake(lake), run_id=run_id, kinds=["logs"])  # the text: elsewhere
    assert len(pointers) == 4 and not any("hello" in d for d in pointers["detail"])
    assert json.loads(pointers["detail"][0])["chars"] == len(units[0]["logs"][0]["logs"])
    assert units[2]["logs"][0]["logs"].count("done") == 0


def test_runs_lists_the_lake_s_runs_newest_first(lake, control, capsys):
    assert _materialize(lake, "--executor", "local", "--partitions", "2024-01-01..2024-01-02") == 0
    first = json.loads(capsys.readouterr().out)
    (control / "fail-chatty-2024-01-03").touch()
    assert _materialize(lake, "--executor", "local", "--partitions", "2024-01-01..2024-01-03") == 1
    second = json.loads(capsys.readouterr().out)

    assert main(["runs", "--lake", lake, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]]
    assert runs[0]["status"] == "failed" and runs[1]["status"] == "succeeded"
    assert runs[0]["counts"] == {"failed": 1, "fresh": 2} and runs[1]["counts"] == {"published": 2}
    assert {r["kind"] for r in runs} == {"materialize"} and {r["origin"] for r in runs} == {"cli"}
    assert all(r["seconds"] > 0 and r["started"] < r["finished"] for r in runs)

    assert main(["runs", CHATTY, "--lake", lake, "--limit", "1"]) == 0  # a table, one run a line
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split() == [
        "run",
        "kind",
        "origin",
        "status",
        "started",
        "seconds",
        "units",
    ]
    assert second["run_id"] in lines[1] and "failed" in lines[1] and "1 failed, 2 fresh" in lines[1]

    code = (  # a fresh process: neither command imports Ray
        "import sys; from lakeflow.cli import main; "
        f"assert main(['runs', '--lake', {lake!r}]) == 0; "
        f"assert main(['logs', {second['run_id']!r}, '--lake', {lake!r}]) == 0; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ValueError: chatty 2024-01-03: bad data" in done.stdout


def test_a_failed_run_s_json_has_its_failing_units_errors_and_durations(lake, control, capsys):
    (control / "fail-chatty-2024-01-02").touch()
    assert _materialize(lake, "--executor", "local", "--partitions", "2024-01-01..2024-01-02") == 1
    run = json.loads(capsys.readouterr().out)
    assert run["status"] == "failed" and run["ok"] is False
    assert run["seconds"] > 0 and run["finished"] - run["started"] == pytest.approx(run["seconds"])
    [failure] = run["failures"]
    assert failure["asset"] == "chatty" and failure["partition"] == "2024-01-02"
    assert (failure["outcome"], failure["attempts"]) == ("failed", 1)
    assert failure["error"] == "ValueError: chatty 2024-01-02: bad data" and failure["seconds"] > 0
    assert run["failures_total"] == 1 and "bad data" in run["errors"]["chatty 2024-01-02"]


def test_assets_json_is_the_graph(capsys):
    assert main(["assets", SPEND, "--json"]) == 0
    graph = json.loads(capsys.readouterr().out)
    names = [a["name"] for a in graph["assets"]]
    assert names == ["events", "spend", "spend_3d", "spend_monthly", "users"]
    assert ["spend", "spend_3d"] in graph["edges"] and ["events", "spend"] in graph["edges"]
    spend_3d = graph["assets"][2]
    assert spend_3d["partitions"]["count"] == 10 and spend_3d["partitions"]["column"] == "date"
    assert spend_3d["upstream"] == [
        {"asset": "spend", "mapping": spend_3d["upstream"][0]["mapping"]}
    ]
    assert "3" in spend_3d["upstream"][0]["mapping"]


BAD = [  # (what, argv after `logs`/`runs` with {run} and {lake}, words the error must have)
    ("unknown run", ["logs", "20240101T000000-deadbeef", "--lake", "{lake}"], ["no run 20240101T000000-deadbeef"]),
    ("malformed run id", ["logs", "../../etc", "--lake", "{lake}"], ["no run ../../etc"]),
    ("unknown asset", ["logs", "{run}", "nope", "--lake", "{lake}"], ["no unit of asset 'nope'", "chatty"]),
    ("partition not run", ["logs", "{run}", "chatty", "2024-01-09", "--lake", "{lake}"], ["did not run", "2024-01-01"]),
    ("bad partition", ["logs", "{run}", "chatty", "not-a-day", "--lake", "{lake}"], ["'not-a-day'"]),
    ("zero limit", ["runs", "--lake", "{lake}", "--limit", "0"], ["--limit must be 1 or more"]),
    ("no such lake", ["logs", "{run}", "--lake", "{lake}/elsewhere"], ["no run"]),
]  # fmt: skip


def test_bad_input_to_runs_and_logs_is_exit_2_and_changes_nothing(lake, control, capsys):
    assert _materialize(lake, "--executor", "local", "--partitions", "2024-01-01") == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    before = lake_fingerprint(lake)
    for what, argv, words in BAD:
        code = main([a.format(run=run_id, lake=lake) for a in argv])
        err = capsys.readouterr().err
        assert code == 2, (what, err)
        assert err.startswith("lakeflow: error: ") and all(w in err for w in words), (what, err)
        assert "Traceback" not in err, what
    assert lake_fingerprint(lake) == before


def test_tables_and_progress_lines_do_not_wrap_on_a_pipe(lake, control):
    """Output to a pipe (not a TTY): a table row and a progress line are one line however long,
    with no colour codes."""
    (control / "fail-chatty-2024-01-02").touch()
    done = subprocess.run(
        [sys.executable, "-m", "lakeflow.cli", "materialize", CHATTY, "--lake", lake,
         "--executor", "local", "--partitions", "2024-01-01..2024-01-02"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": ""},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    rows = [line for line in done.stderr.splitlines() if line.lstrip().startswith("chatty ")]
    assert rows and "ValueError: chatty 2024-01-02: bad data" in rows[0]
    assert "\x1b[" not in done.stdout + done.stderr

    out = io.StringIO()
    bar = ProgressBar("20240101T000000-deadbeef", console=Console(file=out, width=80))
    with bar:
        info = {"published": 123456789, "total": 987654321, "check_failed": 1234567, "blocked": 7654321,
                "upstream_failed": 555555, "rate": 123456.0, "eta": 7200, "done": True}  # fmt: skip
        bar.update(info)
    [line] = out.getvalue().splitlines()
    assert len(line) > 80 and line.endswith("123,456 units/s")


class _Client:
    """Stands in for the controller client (our own code): two triggered runs, then `down`."""

    def __init__(self) -> None:
        self.polls = 0

    def call(self, method: str, *args: Any) -> Any:
        if method == "trigger_status":
            self.polls += 1
            if self.polls >= 5:
                return None
            recent = [("20240101T000000-aaaaaaaa", "schedule 0 * * * *")]
            return {
                "recent": recent
                + ([("20240101T000001-bbbbbbbb", "commit:events@7")] if self.polls >= 2 else [])
            }
        assert method == "progress"
        done = self.polls >= 3
        if args[0].endswith("a"):
            return {
                "done": done,
                "status": "succeeded",
                "published": 3,
                "started": 1.0,
                "known": True,
            }
        return {"done": done, "status": "failed", "published": 1, "failed": 2, "known": True}


def test_up_in_the_foreground_prints_when_triggered_runs_start_and_end():
    out = io.StringIO()
    assert _watch(_Client(), Console(file=out, width=80), every=0.001) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "  run 20240101T000000-aaaaaaaa <- schedule 0 * * * * started"
    assert lines[1] == "  run 20240101T000001-bbbbbbbb <- commit:events@7 started"
    assert lines[2].startswith("  run 20240101T000000-aaaaaaaa <- schedule 0 * * * * succeeded in ")
    assert lines[2].endswith(": 3 published")
    assert (
        lines[3]
        == "  run 20240101T000001-bbbbbbbb <- commit:events@7 failed: 1 published, 2 failed"
    )
    assert lines[4] == "lakeflow up: stopped by `lakeflow down`"


def test_on_a_terminal_tables_fit_its_width_and_have_colour(lake, control, capsys):
    (control / "fail-chatty-2024-01-02").touch()
    assert _materialize(lake, "--executor", "local", "--partitions", "2024-01-01..2024-01-02") == 1
    capsys.readouterr()
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lakeflow.cli", "runs", "--lake", lake], cwd=ROOT,
            stdout=follower, stderr=subprocess.PIPE, timeout=120, env={**os.environ, "COLUMNS": "60"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = b""
        while select.select([leader], [], [], 0.5)[0]:
            chunk = os.read(leader, 65536)
            if not chunk:
                break
            out += chunk
    finally:
        os.close(follower)
        os.close(leader)
    text = out.decode()
    assert "\x1b[" in text  # colour (a failed run in red)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line for line in plain.splitlines() if line.strip()]
    assert len(lines) > 3 and max(len(line) for line in lines) <= 60  # wrapped to fit


def test_warnings_outside_units_still_reach_stderr_when_logging_is_not_configured(lake):
    """The capture's handler on the root logger must not swallow what Python prints by default
    (`logging.lastResort`): a warning logged outside any unit still reaches stderr."""
    code = (
        "import logging, lakeflow as lf; from tests.pipelines import CHATTY; "
        f"assert lf.materialize(CHATTY, partitions='2024-01-01', lake={lake!r}, executor='local').ok; "
        "logging.getLogger('elsewhere').warning('still shown after a run')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "still shown after a run" in done.stderr
    assert "hello from 2024-01-01" not in done.stdout + done.stderr  # the unit's: in its logs


def test_a_run_resumed_after_it_was_cancelled_is_listed_as_running_again(lake, control, capsys):
    def status(run_id: str) -> str:
        assert main(["runs", "--lake", lake, "--json"]) == 0
        runs = json.loads(capsys.readouterr().out)["runs"]
        return next(r["status"] for r in runs if r["run_id"] == run_id)

    (control / "hold-chatty").touch()
    handle = lf.backfill(CHATTY_PIPELINE, lake=lake, executor="local", wait=False, concurrency=1)
    eventually(lambda: any(p.name.startswith("held-chatty-") for p in control.iterdir()))
    assert status(handle.id) == "running"
    assert handle.cancel()
    (control / "hold-chatty").unlink()
    assert handle.wait().status == "cancelled"
    assert status(handle.id) == "cancelled"

    (control / "hold-chatty").touch()
    resumed = lf.resume(handle.id, lake=lake, executor="local", wait=False)
    eventually(lambda: status(handle.id) == "running")
    (control / "hold-chatty").unlink()
    assert resumed.wait().ok
    assert status(handle.id) == "succeeded"
