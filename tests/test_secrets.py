"""Nothing secret, nothing executable in the lake: storage options (literal or `lf.EnvVar`) never
reach a file of the lake (not even when a unit prints them: its captured logs are redacted), a stored run is JSON naming its pipeline's module, `resume` re-imports
that module and refuses a changed definition, and an old pickle in the lake is never loaded."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.lake.events import read_logs
from tests.conftest import ROOT, lake_fingerprint
from tests.pipelines import BACKFILL, CHATTY
from tests.trigger_pipelines import TRIPS

DAYS = "2023-01-01..2023-01-05"


def _lake_files(kind: str, url: str, moto_server) -> dict[str, bytes]:
    """Every file of the lake, by path: a local tree, or every object of the moto bucket."""
    if kind == "local":
        root = Path(url)
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    client = moto_server.client()
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):  # the whole bucket, not only the lake's prefix
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"].removeprefix(prefix + "/")] = body
    return out


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_no_secret_reaches_the_lake_after_any_command(request, kind, control, monkeypatch):
    moto_server = request.getfixturevalue("moto_server") if kind == "s3" else None
    if kind == "s3":
        url, options = request.getfixturevalue("s3_lake")
    else:
        url, options = request.getfixturevalue("lake"), {}
    key_id, secret = f"AKIALF{uuid.uuid4().hex[:12].upper()}", f"lf-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("LAKEFLOW_TEST_SECRET", secret)
    storage = {
        **options,
        "AWS_ACCESS_KEY_ID": key_id,  # a literal: used, never stored
        "AWS_SECRET_ACCESS_KEY": lf.EnvVar("LAKEFLOW_TEST_SECRET"),  # resolved where used
    }
    run = dict(lake=url, storage_options=storage, executor="local")

    assert lf.materialize(BACKFILL, select="readings", partitions="2023-01-01", **run).ok
    (control / "fail-readings-2023-01-03").touch()
    failed = lf.backfill(BACKFILL, select="readings,daily_sum", partitions=DAYS, **run)
    assert failed.counts() == {"published": 7, "fresh": 1, "failed": 1, "upstream_failed": 1}
    (control / "fail-readings-2023-01-03").unlink()
    lf.stop(url)  # a fresh controller resumes it from what the lake stored
    resumed = lf.resume(failed.run_id, **run)  # (its failed unit spent its only attempt)
    assert resumed.counts() == {"published": 7, "fresh": 1, "failed": 1, "upstream_failed": 1}
    kinds = lf.read_events(lf.Lake(url, storage), run_id=failed.run_id)["kind"].to_list()
    assert "run_resumed" in kinds
    lf.up(TRIPS, **run)
    assert lf.down(TRIPS, lake=url, storage_options=storage)
    (control / "say-chatty").write_text(f"connecting as {key_id} with {secret}")  # its logs
    said = lf.materialize(CHATTY, partitions="2024-01-01", **run)
    logs = read_logs(lf.Lake(url, storage), run_id=said.run_id)["logs"].to_list()
    assert len(logs) == 1 and "connecting as [redacted] with [redacted]" in logs[0]

    files = _lake_files(kind, url, moto_server)
    assert any(p.startswith("_lakeflow/runs/") for p in files) and len(files) > 20
    leaks = [p for p, data in files.items() if key_id.encode() in data or secret.encode() in data]
    assert leaks == []
    assert [p for p in files if p.endswith(".pkl") or files[p][:1] == b"\x80"] == []  # no pickle
    stored = json.loads(files[f"_lakeflow/runs/{failed.run_id}.json"])
    assert stored["pipeline"]["module"] == "tests.pipelines"
    assert stored["pipeline"]["attribute"] == "BACKFILL"
    assert stored["request"]["select"] == ["readings", "daily_sum"]


PIPELINE_FILE = """
import os
import polars as pl
import lakeflow as lf

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-04")

@lf.asset(partitions=DAYS)
def numbers(ctx: lf.Context) -> pl.DataFrame:
    if os.environ.get("NUMBERS_DIE") == ctx.partition.key:
        os._exit(3)  # the process running the backfill dies mid-run
    return pl.DataFrame({"n": [FACTOR * ctx.partition.start.day]})

pipeline = lf.Pipeline([numbers], lake="./lake")
"""


def _lakeflow(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lakeflow"), *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_resume_refuses_a_pipeline_whose_definition_changed(tmp_path):
    module = tmp_path / f"numbers_{uuid.uuid4().hex[:8]}.py"
    module.write_text(PIPELINE_FILE.replace("FACTOR", "1"))
    lake = str(tmp_path / "lake")
    first = _lakeflow("backfill", str(module), "--lake", lake, "--executor", "local",
                      "--partitions", "2024-01-02", env={"NUMBERS_DIE": "2024-01-02"})  # fmt: skip
    assert first.returncode == 3, first.stderr
    run_id = lf.read_events(lf.Lake(lake), kinds=["run_requested"])["run_id"][0]
    module.write_text(PIPELINE_FILE.replace("FACTOR", "10"))  # the asset's code changed
    before = lake_fingerprint(lake)

    refused = _lakeflow("backfill", "resume", run_id, "--lake", lake, "--executor", "local")
    assert refused.returncode == 2, refused.stderr
    assert f"run {run_id}" in refused.stderr and "definition" in refused.stderr
    assert "changed" in refused.stderr and "--accept-changed-code" in refused.stderr
    assert lake_fingerprint(lake) == before
    assert lf.backfill_status(run_id, lake=lake)["status"] == "running"  # as it was

    accepted = _lakeflow("backfill", "resume", run_id, "--lake", lake, "--executor", "local",
                         "--accept-changed-code", "--json")  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["counts"] == {"published": 1}
    assert pl.read_delta(f"{lake}/numbers")["n"].to_list() == [20]  # the new code ran


def test_a_notebook_pipeline_runs_but_another_process_cannot_resume_it(lake, control):
    notebook: dict = {"__name__": "__main__"}  # what a notebook cell's globals look like
    exec("import lakeflow as lf\nfrom tests.pipelines import readings", notebook)
    exec("pipeline = lf.Pipeline([readings], name='nb')", notebook)
    (control / "fail-readings-2023-01-02").touch()
    result = lf.backfill(notebook["pipeline"], partitions="2023-01-01..2023-01-03", lake=lake,
                         executor="local")  # fmt: skip
    assert result.counts() == {"published": 2, "failed": 1}  # the in-memory controller runs it
    (control / "fail-readings-2023-01-02").unlink()
    stored = json.loads(Path(lake, "_lakeflow", "runs", f"{result.run_id}.json").read_text())
    assert stored["pipeline"] is None and "notebook" in stored["not_importable"]

    lf.stop(lake)  # another process, as far as the lake can tell
    before = lake_fingerprint(lake)
    with pytest.raises(lf.ResumeError, match="cannot be resumed by another process") as caught:
        lf.resume(result.run_id, lake=lake, executor="local")
    assert "notebook" in str(caught.value) and caught.value.hint
    assert lake_fingerprint(lake) == before


def test_a_pickle_in_the_lake_is_never_loaded(tmp_path, capsys):
    lake = tmp_path / "lake"
    planted = tmp_path / "planted"

    class Payload:  # what a writer of the bucket could leave: code that runs when unpickled
        def __reduce__(self):
            return (Path.touch, (planted,))

    runs = lake / "_lakeflow" / "runs"
    runs.mkdir(parents=True)
    (runs / "20260101T000000-deadbeef.pkl").write_bytes(pickle.dumps(Payload()))

    code = main(["backfill", "resume", "20260101T000000-deadbeef", "--lake", str(lake),
                 "--executor", "local", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "pickle" in err and "no longer" in err
    assert not planted.exists()


def test_a_missing_env_var_is_a_clear_error(lake, monkeypatch):
    monkeypatch.delenv("LAKEFLOW_NOT_SET", raising=False)
    with pytest.raises(lf.SecretError, match=r"\$LAKEFLOW_NOT_SET") as caught:
        lf.Lake(lake, {"AWS_SECRET_ACCESS_KEY": lf.EnvVar("LAKEFLOW_NOT_SET")})
    assert "export LAKEFLOW_NOT_SET" in caught.value.hint


@lf.pipeline_factory
def regional(lake: str, days: int, region: str = "eu") -> lf.Pipeline:
    """A pipeline built from plain arguments, as a team builds one per region."""
    parts = lf.DailyPartitions(start="2024-01-01", end=f"2024-01-{days + 1:02d}")

    @lf.asset(partitions=parts, name=f"sales_{region}")
    def sales(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"region": [region], "day": [ctx.partition.key]})

    return lf.Pipeline([sales], lake=lake, name=f"regional-{region}")


def test_a_pipeline_built_by_a_factory_is_stored_as_its_call_and_built_again(tmp_path):
    """The lake keeps the factory's import path and its JSON arguments; another process builds
    the same pipeline from them. Arguments that are not JSON, and factories no other process can
    import, are refused or reported, never pickled."""
    from lakeflow.define.definition import PipelineRef, import_pipeline, reference

    built = regional(str(tmp_path / "lake"), 3, region="us")
    ref = reference(built)
    assert isinstance(ref, PipelineRef)
    assert (ref.module, ref.attribute) == ("tests.test_secrets", "regional")
    assert ref.args == {"lake": str(tmp_path / "lake"), "days": 3, "region": "us"}
    again = import_pipeline(PipelineRef.from_json(json.loads(json.dumps(ref.to_json()))), what="t")
    assert sorted(again.assets) == ["sales_us"] and again.name == "regional-us"
    assert reference(again).definition == ref.definition

    with pytest.raises(lf.DefinitionError, match="must be JSON values"):
        regional(str(tmp_path / "lake"), 3, region=lf.EnvVar("REGION"))

    @lf.pipeline_factory
    def inner(lake: str) -> lf.Pipeline:
        return regional.__wrapped__(lake, 2)

    assert "cannot import" in reference(inner(str(tmp_path / "lake")))


def test_a_lakes_repr_never_shows_a_secret(monkeypatch):
    """A Lake is shown in tracebacks, logs and notebooks: its credentials are not."""
    monkeypatch.setenv("LAKE_TEST_SECRET", "hunter2-very-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-environment-secret")
    lake = lf.Lake(
        "s3://bucket/lake",
        {"AWS_REGION": "us-east-1", "aws_session_token": lf.EnvVar("LAKE_TEST_SECRET")},
    )
    shown = repr(lake)
    assert "hunter2-very-secret" not in shown and "from-the-environment-secret" not in shown
    assert "us-east-1" in shown and "s3://bucket/lake" in shown and "[redacted]" in shown


def test_a_secret_is_redacted_however_it_is_escaped_or_cut():
    """A secret with a quote, a backslash and non-ASCII is hidden in an event's JSON detail as
    well as its message; a unit's output cut mid-secret keeps no fragment of it."""
    from lakeflow.execute.capture import Tail
    from lakeflow.lake.events import Event, _table

    secret = 'pa"ss\\wörd-0123456789'
    event = Event(
        "run", "unit_failed", message=f"failed with {secret}",
        detail={"traceback": f"KeyError: {secret!r}", "env": secret},
    )  # fmt: skip
    row = _table([event], frozenset({secret})).to_pylist()[0]
    stored = json.dumps(row, default=str)
    for form in (secret, json.dumps(secret)[1:-1], "wörd-0123456789", "w\\u00f6rd-0123456789"):
        assert form not in stored and form not in row["detail"] and form not in row["message"]
    assert "[redacted]" in row["detail"]

    tail = Tail(limit=40)
    tail.write("x" * 30 + secret + "y" * 25)  # the 40 kept characters start inside the secret
    kept = tail.text(frozenset({secret}))
    assert "earlier characters" in kept
    assert not any(secret[i:] in kept for i in range(len(secret) - 3))
