"""The CLI's error contract, one row per bad input: the exit code (2 the request or definitions
were wrong, 3 Ray or the lake's storage failed, 1 units failed), a message naming the cause, no
Python traceback, and a lake left as it was. Most rows run `main` in-process on the local
executor; those about starting or reaching Ray run the real command in a subprocess."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lakeflow as lf
from lakeflow.cli import main
from tests.conftest import lake_fingerprint

GOOD = """\
import polars as pl
import lakeflow as lf

days = lf.DailyPartitions(start="2024-01-01", end="2024-01-11")


@lf.asset(partitions=days)
def numbers(ctx):
    return pl.DataFrame({"n": [1, 2]})


@lf.asset(partitions=days)
def doubled(numbers):
    return numbers.with_columns(pl.col("n") * 2)


pipeline = lf.Pipeline([numbers, doubled])
"""


def _with(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


NUMBERS = 'return pl.DataFrame({"n": [1, 2]})'
DOUBLED = """@lf.asset(partitions=days)
def doubled(numbers):
    return numbers.with_columns(pl.col("n") * 2)
"""
# doubled as the SQL file models/doubled.sql (a row's files write it), or as a SQL string
SQL_FOLDER = GOOD.replace(
    "import lakeflow as lf\n", "import lakeflow as lf\nfrom pathlib import Path\n"
).replace(
    DOUBLED, 'doubled = lf.sql_assets(Path(__file__).parent / "models", partitions=days)[0]\n'
)
SQL_STRING = GOOD.replace(
    DOUBLED,
    'doubled = lf.sql_asset("doubled", "select n * 2 as n\\nfrom {{ ref(\'numbers\') }}\\nwher n > 1", partitions=days)\n',
)


def _sql(text: str) -> tuple[tuple[str, str], ...]:
    return (("models/doubled.sql", text),)


@dataclass(frozen=True)
class Row:
    id: str
    argv: tuple[str, ...]
    code: int
    message: str
    pipeline: str = GOOD  # written to {pipe}
    built: bool = False  # the lake holds numbers and doubled for 2024-01-01 first
    env: dict[str, str] = field(default_factory=dict)
    subprocess: bool = False
    corrupt: bool = False  # break the last commit of numbers' log
    files: tuple[tuple[str, str], ...] = ()  # (path under the test's folder, text) written first


M = ("materialize", "{pipe}", "--lake", "{lake}", "--executor", "local", "--no-progress")
B = ("backfill", "{pipe}", "--lake", "{lake}", "--executor", "local", "--no-progress")

ROWS = [
    # -- the pipeline file: exit 2 with the user's file, line and message
    Row("syntax error", M, 2, "pipe.py:3: SyntaxError", _with("import lakeflow as lf\n", "import lakeflow as lf\ndef (:\n")),
    Row("name error", M, 2, "pipe.py:17: NameError: name 'doubld' is not defined", _with("[numbers, doubled]", "[numbers, doubld]")),
    Row("missing module", M, 2, "No module named 'no_such_module'", "import no_such_module\n" + GOOD),
    Row("module raises", M, 2, "pipe.py:1: RuntimeError: no config", "raise RuntimeError('no config')\n" + GOOD),
    Row("missing file", ("status", "{tmp}/nope.py"), 2, "does not exist"),
    Row("no pipeline", ("status", "{pipe}"), 2, "defines 0 pipelines", GOOD.replace("pipeline = lf.Pipeline([numbers, doubled])", "")),
    Row("two pipelines", ("status", "{pipe}"), 2, "defines 2 pipelines", GOOD + "other = lf.Pipeline([numbers])\n"),
    Row("unknown :name", ("status", "{pipe}:nope"), 2, "has no Pipeline named 'nope'"),
    Row("cycle", ("assets", "{pipe}"), 2, "cycle", GOOD + "@lf.asset\ndef a(b): return b\n@lf.asset\ndef b(a): return a\nloop = lf.Pipeline([a, b])\n"),
    Row("duplicate names", ("assets", "{pipe}"), 2, "numbers", _with("[numbers, doubled]", "[numbers, doubled, lf.asset(name='numbers')(lambda: None)]")),
    Row("bad asset name", ("assets", "{pipe}"), 2, "'1st' must be a Python identifier", _with("@lf.asset(partitions=days)\ndef doubled", "@lf.asset(partitions=days, name='1st')\ndef doubled")),
    Row("keyword name", ("assets", "{pipe}"), 2, "'class' must be a Python identifier", _with("@lf.asset(partitions=days)\ndef doubled", "@lf.asset(partitions=days, name='class')\ndef doubled")),
    Row("*args", ("assets", "{pipe}"), 2, "*args", _with("def doubled(numbers):", "def doubled(*numbers):")),
    Row("unknown input", ("assets", "{pipe}"), 2, "nope", _with("def doubled(numbers):", "def doubled(numbers, nope):")),
    Row("bad cron", ("assets", "{pipe}"), 2, "malformed cron expression '61 * * * *'", _with("[numbers, doubled])", "[numbers, doubled], triggers=[lf.schedule('61 * * * *')])")),
    Row("bad timezone", ("assets", "{pipe}"), 2, "unknown timezone", _with("[numbers, doubled])", "[numbers, doubled], triggers=[lf.schedule('0 * * * *', tz='Mars/Olympus')])")),
    Row("bad partitions def", ("assets", "{pipe}"), 2, "2024-13-01", _with('start="2024-01-01"', 'start="2024-13-01"')),
    # -- SQL assets: the asset or the .sql file, and the line
    Row("sql ref to a missing asset", M, 2, "doubled.sql) depends on unknown asset 'numbrs'\n  hint: did you mean 'numbers'?", SQL_FOLDER, files=_sql("select n * 2 as n from {{ ref('numbrs') }}")),
    Row("sql syntax error", M, 2, "doubled.sql, line 3: Parser Error: syntax error at or near", SQL_FOLDER, files=_sql("select n * 2 as n\nfrom {{ ref('numbers') }}\nwher n > 1\n")),
    Row("sql syntax error in a string", M, 2, "pipe.py:12), line 3: Parser Error: syntax error at or near", SQL_STRING),
    Row("sql syntax error after jinja whitespace control", M, 2, "doubled.sql, line 6: Parser Error: syntax error at or near", SQL_FOLDER, files=_sql("select n\n{%- if true %}\n  , n * 2 as n2\n{%- endif %}\nfrom {{ ref('numbers') }} {#- a comment -#}\n  wher n > 1\n")),
    Row("jinja syntax error", M, 2, "doubled.sql, line 2: Jinja syntax error: unexpected '}'", SQL_FOLDER, files=_sql("select n * 2 as n\nfrom {{ ref('numbers') }\n")),
    Row("undefined jinja variable", M, 2, "doubled.sql, line 2: 'factor' is undefined", SQL_FOLDER, files=_sql("select n\n  * {{ factor }} as n\nfrom {{ ref('numbers') }}\n")),
    Row("two sql statements", M, 2, "doubled.sql: a SQL asset is one SELECT statement, got 2 statements", SQL_FOLDER, files=_sql("select 1 as n; select 2 as n")),
    Row("sql not a select", M, 2, "doubled.sql: a SQL asset is one SELECT statement, got a DROP statement", SQL_FOLDER, files=_sql("drop table numbers")),
    Row("sql_assets missing folder", M, 2, "models' is not a folder", SQL_FOLDER),
    Row("sql_assets empty folder", M, 2, "no .sql files under", SQL_FOLDER, files=(("models/README.md", "models go here"),)),
    Row("sql_assets same stem twice", M, 2, "two files define asset 'doubled'", SQL_FOLDER, files=(*_sql("select 1 as n"), ("models/old/doubled.sql", "select 2 as n"))),
    # -- the request: exit 2, nothing changed
    Row("unknown asset", (*M, "--select", "nope"), 2, "unknown asset 'nope'"),
    Row("unknown asset in list", (*M, "--select", "numbers,nope+"), 2, "unknown asset 'nope'"),
    Row("malformed key", (*M, "--partitions", "../etc"), 2, "malformed"),
    Row("key after the end", (*M, "--partitions", "2030-01-01"), 2, "after the last partition"),
    Row("reversed range", (*M, "--partitions", "2024-01-05..2024-01-01"), 2, "2024-01-05..2024-01-01"),
    Row("empty partitions", (*M, "--partitions", ""), 2, "empty"),
    Row("unknown command", ("materialise", "{pipe}"), 2, "invalid choice: 'materialise'"),
    Row("unknown flag", (*M, "--frobnicate"), 2, "unrecognized arguments: --frobnicate"),
    Row("bad --order", (*M, "--order", "sideways"), 2, "invalid choice: 'sideways'"),
    Row("bad --executor", ("materialize", "{pipe}", "--executor", "spark"), 2, "invalid choice: 'spark'"),
    Row("missing pipeline arg", ("materialize",), 2, "the following arguments are required: pipeline"),
    Row("--concurrency 0", (*B, "--concurrency", "0"), 2, "concurrency must be at least 1"),
    Row("--concurrency abc", (*B, "--concurrency", "abc"), 2, "invalid int value: 'abc'"),
    Row("--max-share 0", (*B, "--max-share", "0"), 2, "max_share must be in (0, 1]"),
    Row("--max-share 1.5", (*B, "--max-share", "1.5"), 2, "max_share must be in (0, 1]"),
    Row("--only bogus", (*B, "--only", "bogus"), 2, "invalid choice: 'bogus'"),
    Row("--retain-hours 0", ("vacuum", "{pipe}", "--lake", "{lake}", "--retain-hours", "0"), 2, "at least 1"),
    Row("status of unknown run", ("backfill", "status", "20260101T000000-deadbeef", "--lake", "{lake}"), 2, "no run 20260101T000000-deadbeef", built=True),
    Row("cancel of unknown run", ("backfill", "cancel", "20260101T000000-deadbeef", "--lake", "{lake}"), 2, "no run 20260101T000000-deadbeef", built=True),
    Row("resume of unknown run", ("backfill", "resume", "20260101T000000-deadbeef", "--lake", "{lake}", "--executor", "local"), 2, "no run 20260101T000000-deadbeef", built=True),
    Row("bad lake scheme", (*M, "--lake", "ftp://host/lake"), 2, "unsupported lake URL 'ftp://host/lake'"),
    Row("s3 lake without bucket", (*M, "--lake", "s3://"), 2, "names no bucket"),
    Row("up --http notaport", ("up", "{pipe}", "--lake", "{lake}", "--http", "127.0.0.1:notaport"), 2, "--http '127.0.0.1:notaport'"),
    Row("up --http port too big", ("up", "{pipe}", "--lake", "{lake}", "--http", "127.0.0.1:70000"), 2, "from 0 to 65535"),
    Row("jobs logs without id", ("jobs", "logs"), 2, "needs a job id"),
    # -- infrastructure: exit 3
    Row("corrupt _delta_log", ("status", "{pipe}", "--lake", "{lake}"), 3, "numbers/_delta_log/00000000000000000001.json line 1 is not JSON", built=True, corrupt=True),
    Row("lake is a file", (*M, "--lake", "{tmp}/pipe.py"), 3, "pipe.py"),
    Row("unreachable s3", ("status", "{pipe}", "--lake", "s3://bucket/lake"), 3, "cannot reach the lake at s3://bucket/lake", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:{closed}", "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}),
    Row("ray does not start", ("materialize", "{pipe}", "--lake", "{lake}", "--no-progress"), 3, "could not start a local Ray (2 attempts)", env={"RAY_TMPDIR": "/proc/no-such-dir"}, subprocess=True),
    Row("ray address closed", ("materialize", "{pipe}", "--lake", "{lake}", "--address", "127.0.0.1:1"), 3, "cannot reach the Ray cluster at 127.0.0.1:1", env={"LAKEFLOW_CONNECT_TIMEOUT": "3"}, subprocess=True),
    Row("syntax error, shell", ("status", "{pipe}"), 2, "pipe.py:3: SyntaxError", _with("import lakeflow as lf\n", "import lakeflow as lf\ndef (:\n"), subprocess=True),
    # -- units failing on the user's output: exit 1, the user's frame and the cause, no traceback
    Row("returned None", (*M, "--select", "numbers", "--partitions", "2024-01-02"), 1, "returned builtins.NoneType", _with(NUMBERS, "return None")),
    Row("Int32 into Int64", (*M, "--select", "numbers", "--partitions", "2024-01-02"), 1, "column n: table has long, output has integer", _with(NUMBERS, 'return pl.DataFrame({"n": [1, 2]}, schema={"n": pl.Int32})'), built=True),
    Row("int into string", (*M, "--select", "numbers", "--partitions", "2024-01-02"), 1, "column n: table has long, output has string", _with(NUMBERS, 'return pl.DataFrame({"n": ["1", "2"]})'), built=True),
    Row("user raises", (*M, "--select", "numbers", "--partitions", "2024-01-02"), 1, "ZeroDivisionError: division by zero", _with(NUMBERS, "return 1 / 0")),
    Row("sql column missing", (*M, "--select", "doubled", "--partitions", "2024-01-01"), 1, 'doubled.sql, line 2: Binder Error: Referenced column "m" not found in FROM clause!', SQL_FOLDER, built=True, files=_sql("select n,\n  m * 2 as n2\nfrom {{ ref('numbers') }}\n")),
    Row("sql interval column", (*M, "--select", "doubled", "--partitions", "2024-01-01"), 1, "doubled.sql: column 'waited' is an INTERVAL, which a Delta table cannot store; give it as a number in the SQL", SQL_FOLDER, built=True, files=_sql("select n, timestamp '2024-01-02' - timestamp '2024-01-01' as waited\nfrom {{ ref('numbers') }}\n")),
    Row("sql column missing after a jinja loop", (*M, "--select", "doubled", "--partitions", "2024-01-01"), 1, 'doubled.sql, line 5: Binder Error: Referenced column "m" not found in FROM clause!', SQL_FOLDER, built=True, files=_sql("select n\n{%- for i in [1, 2] %}\n  , n * {{ i }} as n{{ i }}\n{%- endfor %}\n  , m as missing\nfrom {{ ref('numbers') }}\n")),
]  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(root: Path) -> dict[str, str]:
    """Every file under the lake outside lakeflow's own `_lakeflow/`, with its content's hash."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_lakeflow" not in p.relative_to(root).parts
    }


def _state(root: Path, corrupt: bool) -> tuple[object, dict[str, str]]:
    return (None if corrupt else lake_fingerprint(root)), _files(root)


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory) -> Path:
    """A lake holding numbers and doubled for 2024-01-01 (two commits each), built once."""
    root = tmp_path_factory.mktemp("built")
    (root / "pipe.py").write_text(GOOD)
    sys.modules.pop("pipe", None)
    lake = root / "lake"
    for day in ("2024-01-01", "2024-01-01"):
        argv = [*M[:1], str(root / "pipe.py"), "--lake", str(lake), *M[4:]]
        assert main([*argv, "--partitions", day, "--force"]) == 0
    lf.stop(str(lake))
    return lake


def _argv(row: Row, tmp: Path, lake: Path) -> list[str]:
    values = {"{pipe}": str(tmp / "pipe.py"), "{lake}": str(lake), "{tmp}": str(tmp)}
    out = []
    for arg in row.argv:
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gets_its_exit_code_a_message_and_no_traceback(
    row, tmp_path, built_lake, capsys, monkeypatch
):
    (tmp_path / "pipe.py").write_text(row.pipeline)
    for path, text in row.files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    lake = tmp_path / "lake"
    if row.built:
        shutil.copytree(built_lake, lake)
    if row.corrupt:
        (lake / "numbers" / "_delta_log" / "00000000000000000001.json").write_text("{not json\n")
    env = {k: v.replace("{closed}", str(_closed_port())) for k, v in row.env.items()}
    before = _state(lake, row.corrupt)
    argv = _argv(row, tmp_path, lake)
    started = time.monotonic()
    if row.subprocess:
        done = subprocess.run(
            [sys.executable, "-m", "lakeflow.cli", *argv],
            cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        sys.modules.pop("pipe", None)  # each row's pipe.py is another module
        code = main(argv)
        out, err = capsys.readouterr()
        lf.stop(str(lake))
    elapsed = time.monotonic() - started
    assert (code, row.message in out + err) == (row.code, True), out + err
    assert "Traceback" not in out + err, out + err
    assert _state(lake, row.corrupt) == before
    assert elapsed < 60


def test_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "pipe.py").write_text(GOOD.replace("[numbers, doubled]", "[numbers, doubld]"))
    sys.modules.pop("pipe", None)
    assert main(["status", str(tmp_path / "pipe.py"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "NameError" in err


def test_a_unicode_asset_name_is_an_identifier(tmp_path, capsys):
    (tmp_path / "pipe.py").write_text(
        GOOD.replace("def doubled(numbers)", "def données(numbers)").replace(
            "[numbers, doubled]", "[numbers, données]"
        )
    )
    sys.modules.pop("pipe", None)
    assert main(["assets", str(tmp_path / "pipe.py")]) == 0
    assert "données" in capsys.readouterr().out


def test_progress_counts_check_failed_and_blocked_on_their_own():
    from io import StringIO

    from rich.console import Console

    from lakeflow.progress import ProgressBar

    out = StringIO()
    with ProgressBar("r1", console=Console(file=out, force_terminal=False)) as bar:
        bar.update({"published": 0, "failed": 0, "check_failed": 1, "blocked": 3, "total": 4, "done": True})  # fmt: skip
    assert "4/4 units done, 1 check_failed, 3 blocked" in out.getvalue()


# -- a bad request on the default (Ray) executor is refused before Ray is started or contacted
EARLY = [
    ("unknown asset", ("--select", "nope"), "unknown asset 'nope'"),
    ("malformed key", ("--partitions", "../etc"), "malformed"),
    ("key after the end", ("--partitions", "2030-01-01"), "after the last partition"),
    ("reversed range", ("--partitions", "2024-01-05..2024-01-01"), "2024-01-05..2024-01-01"),
    ("--concurrency 0", ("--concurrency", "0"), "concurrency must be at least 1"),
    ("--max-share 1.5", ("--max-share", "1.5"), "max_share must be in (0, 1]"),
]


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [("materialize", extra, message) for _, extra, message in EARLY[::3]]
    + [("backfill", extra, message) for _, extra, message in EARLY],
    ids=[f"materialize {r[0]}" for r in EARLY[::3]] + [f"backfill {r[0]}" for r in EARLY],
)
def test_a_bad_request_is_refused_before_ray_starts(command, extra, message, tmp_path):
    (tmp_path / "pipe.py").write_text(GOOD)
    ray_tmp = tmp_path / "ray"  # a Ray started by the command would put its session here
    argv = [command, str(tmp_path / "pipe.py"), "--lake", str(tmp_path / "lake"), "--no-progress"]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lakeflow.cli", *argv, *extra],
        cwd=tmp_path, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    out = done.stdout + done.stderr
    assert (done.returncode, message in out, "Traceback" in out) == (2, True, False), out
    assert not ray_tmp.exists(), "Ray was started for a request that was wrong"
    assert not (tmp_path / "lake").exists()
    assert elapsed < 15  # no Ray start (tens of seconds on a loaded machine): imports only


# -- a full disk under the lake: exit 3 (the lake's storage failed), not 1 (the unit's own fault)
FULL_DISK = GOOD.replace(
    "import polars as pl\n", "import numpy as np\nimport polars as pl\n"
).replace(
    "@lf.asset(partitions=days)\ndef numbers(ctx):\n",
    "@lf.asset(partitions=days, retry=lf.RetryPolicy(attempts=2, backoff=0.05, retry_on=(ValueError,)))\n"
    "def numbers(ctx):\n"
    '    if ctx.partition.key == "2024-01-02":  # 4 MB of random int64: more than the disk\n'
    '        return pl.DataFrame({"n": np.random.default_rng(0).integers(0, 2**62, 500_000)})\n',
)


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 2 MB tmpfs mounted for the test (root only). Under CI a missing capability fails."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        reason = done.stderr.strip() if done.returncode else ""
    except OSError as error:
        reason = str(error)
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {reason}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {reason}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True, timeout=30)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_full_disk_is_an_infrastructure_failure(executor, small_disk, tmp_path):
    from lakeflow.lake import Lake
    from lakeflow.lake.events import read_events

    (tmp_path / "pipe.py").write_text(FULL_DISK)
    sys.modules.pop("pipe", None)
    lake = small_disk / "lake"
    built = ["materialize", str(tmp_path / "pipe.py"), "--lake", str(lake), "--no-progress"]
    assert main([*built, "--executor", "local", "--partitions", "2024-01-01"]) == 0
    lf.stop(str(lake))
    before = _state(lake, False)
    argv = [*built, "--partitions", "2024-01-02"]
    done = subprocess.run(
        [sys.executable, "-m", "lakeflow.cli", *argv, *(["--executor", "local"] if executor == "local" else [])],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 3, out
    assert "no space left on device" in out.lower() and str(lake) in out, out
    assert "Traceback" not in out, out
    assert _state(lake, False) == before  # no staged leftover, nothing committed
    retries = read_events(Lake(str(lake)), kinds=["unit_retry"])
    assert retries.height == 1  # retried as infrastructure though retry_on names ValueError only
