"""lakeflow on a real multi-node Ray cluster: `cluster/local.sh` starts a head and two worker
nodes (`ray start` on 127.0.0.1), jobs go through Ray Jobs, drivers attach with ray://, and
nodes die mid-backfill. Each driver is its own process, as a user's would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.lake import Lake
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PIPELINE = "tests.pipelines:PIPELINE"
PORT, DASHBOARD, CLIENT = "6395", "8275", "9005"
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")},
    "LAKEFLOW_RAY_PORT": PORT,
    "LAKEFLOW_DASHBOARD_PORT": DASHBOARD,
    "LAKEFLOW_CLIENT_PORT": CLIENT,
    "RAY_AUTH_MODE": "disabled",
    "PYTHONPATH": str(ROOT),
}
GCS, JOBS, RAY_CLIENT = (
    f"127.0.0.1:{PORT}",
    f"http://127.0.0.1:{DASHBOARD}",
    f"ray://127.0.0.1:{CLIENT}",
)
LAKEFLOW = str(Path(sys.executable).parent / "lakeflow")


def local_sh(*args: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [str(ROOT / "cluster" / "local.sh"), *args],
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def cluster():
    local_sh("down")
    local_sh("up", "2")
    yield
    local_sh("down")


def eventually(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout}s: {predicate}")


def published_events(lake: str | Lake, run_id: str) -> pl.DataFrame:
    where = lake if isinstance(lake, Lake) else Lake(lake)
    return lf.read_events(where, run_id=run_id, kinds=["unit_published"])


def assert_published_once(lake: str | Lake, run_id: str) -> None:
    """Every unit of the backfill published exactly once, and each table holds one file a
    partition: no staged file of a dead attempt was ever committed."""
    events = published_events(lake, run_id)
    counts = events.group_by("asset", "partition").len()
    assert counts["len"].max() == 1, counts.filter(pl.col("len") > 1)
    assert sorted(set(events["asset"])) == ["events", "spend", "spend_3d", "spend_monthly", "users"]
    where = lake if isinstance(lake, Lake) else Lake(lake)
    for asset in ("events", "spend", "spend_3d"):
        table = DeltaTable(f"{where.url}/{asset}", storage_options=where.delta_options())
        assert len(table.file_uris()) == 10 == counts.filter(pl.col("asset") == asset).height


def driver(lake: str, address: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """A notebook-like driver process that starts a backfill; returns it and the run id (and
    keeps the pid of the lake's controller in `driver.controller_pid`)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster_driver", address, lake, *extra],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=open(Path(lake).parent / "driver.log", "w"),  # noqa: SIM115 (the process owns it)
        text=True,
    )
    line = process.stdout.readline()
    while line and not line.startswith("{"):  # Ray prints cluster news (a dead node) here too
        line = process.stdout.readline()
    assert line, (
        "the driver died before starting its run: " + (Path(lake).parent / "driver.log").read_text()
    )
    started = json.loads(line)
    process.controller_pid = started["controller_pid"]  # type: ignore[attr-defined]
    return process, started["run_id"]


def task_nodes(name: str) -> set[str]:
    """The nodes that ran tasks called `name`, from the cluster's state API."""
    code = (
        "import json; from ray.util.state import list_tasks; "
        f"tasks = list_tasks(address={JOBS!r}, filters=[('name', '=', {name!r})], limit=10000); "
        "print(json.dumps(sorted({t.node_id for t in tasks if t.node_id})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def last_json(out: str, tmp_path: Path) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, "the driver printed no result: " + (tmp_path / "driver.log").read_text()[-3000:]
    return json.loads(lines[-1])


def wait_published(lake: str, run_id: str, count: int) -> None:
    eventually(lambda: published_events(lake, run_id).height >= count)


def test_submit_runs_a_backfill_as_a_job_with_the_lake_on_s3(cluster, moto_server):
    bucket = moto_server.create_bucket()
    lake = f"s3://{bucket}/lake"
    env = {**ENV, **moto_server.options}  # AWS_* travel to the job by themselves
    done = subprocess.run(
        [LAKEFLOW, "submit", "--address", JOBS, "--", "backfill", PIPELINE, "--lake", lake, "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.splitlines()[0]
    assert job_id.startswith("raysubmit_")
    assert "succeeded" in done.stdout  # the job's own log, streamed
    where = Lake(lake, moto_server.options)
    runs = lf.read_events(where, kinds=["run_requested"])
    assert_published_once(where, runs["run_id"][0])
    assert len(task_nodes("lakeflow:spend_3d")) == 2  # the units spread over both worker nodes

    listed = subprocess.run([LAKEFLOW, "jobs", "list", "--address", JOBS, "--json"], env=ENV,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert {"job_id": job_id, "status": "SUCCEEDED"}.items() <= next(
        j for j in json.loads(listed.stdout) if j["job_id"] == job_id
    ).items()
    logs = subprocess.run([LAKEFLOW, "jobs", "logs", job_id, "--address", JOBS], env=ENV,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "succeeded" in logs.stdout

    wrong = subprocess.run(
        [LAKEFLOW, "submit", "--address", JOBS, "--", "materialize", PIPELINE, "--select", "nope", "--lake", lake],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stdout  # the command's own exit code comes back
    assert "unknown asset 'nope'" in wrong.stdout


def test_runs_go_on_when_their_driver_dies(cluster, tmp_path, control):
    (control / "sleep-events").write_text("0.3")
    # a notebook attached through the Ray client, killed mid-run
    lake = str(tmp_path / "notebook-lake")
    notebook, run_id = driver(lake, RAY_CLIENT, "--wait")
    wait_published(lake, run_id, 2)
    notebook.kill()
    eventually(lambda: lf.backfill_status(run_id, lake=lake)["status"] == "succeeded", 180)
    assert_published_once(lake, run_id)

    # `lakeflow submit`, killed while it streams the job's log
    lake = str(tmp_path / "submit-lake")
    submit = subprocess.Popen(
        [LAKEFLOW, "submit", "--address", JOBS, "--", "backfill", PIPELINE, "--lake", lake, "--no-progress"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    job_id = submit.stdout.readline().strip()
    submit.send_signal(signal.SIGKILL)
    submit.wait(30)

    def job_status() -> str:
        done = subprocess.run([LAKEFLOW, "jobs", "status", job_id, "--address", JOBS], env=ENV,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        return done.stdout.strip()

    final = eventually(lambda: (s := job_status()) in ("SUCCEEDED", "FAILED", "STOPPED") and s, 300)
    logs = subprocess.run([LAKEFLOW, "jobs", "logs", job_id, "--address", JOBS], env=ENV,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert final == "SUCCEEDED", logs.stdout[-3000:] + logs.stderr[-1000:]
    status = subprocess.run([LAKEFLOW, "status", PIPELINE, "--lake", lake, "--json"], env=ENV,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    rows = {r["asset"]: r for r in json.loads(status.stdout)}
    assert rows["spend_3d"]["published"] == 10


def test_a_worker_node_removed_mid_backfill(cluster, tmp_path, control):
    (control / "hold-spend_3d").touch()
    lake = str(tmp_path / "lake")
    process, run_id = driver(lake, GCS, "--wait")
    try:
        # two held units fill both 1-CPU worker nodes: one of them runs on the node removed
        eventually(lambda: len(list(control.glob("held-spend_3d-*"))) >= 2)
        local_sh("remove", "1")  # its raylet killed: the node and its running tasks are gone

        def retry_events() -> pl.DataFrame:
            return lf.read_events(Lake(lake), run_id=run_id, kinds=["unit_retry"])

        eventually(lambda: retry_events().height > 0)
        retries = retry_events()
        assert set(retries["asset"]) == {"spend_3d"}, retries
        assert all("WorkerLost" in message for message in retries["message"]), retries["message"]
        (control / "hold-spend_3d").unlink()
        out, _ = process.communicate(timeout=240)
    finally:
        process.kill()
        local_sh("add")
    result = last_json(out, tmp_path)
    assert result["ok"], result
    assert_published_once(lake, run_id)


def test_units_wait_for_a_node_with_their_resources_on_an_autoscaling_cluster(cluster, tmp_path):
    lake = str(tmp_path / "lake")
    process, run_id = driver(lake, GCS, "--wait", "--pipeline", "IO", "--autoscaling")
    added = ""
    try:
        eventually(
            lambda: "run_waiting" in lf.read_events(Lake(lake), run_id=run_id)["kind"].to_list()
        )
        time.sleep(3)
        assert process.poll() is None and published_events(lake, run_id).height == 0
        added = local_sh("add", env={"LAKEFLOW_NODE_RESOURCES": '{"io": 1}'})  # the new node
        out, _ = process.communicate(timeout=240)
    finally:
        process.kill()
        if added:
            index = added.split("worker node ")[1].split(":")[0]
            local_sh("remove", index)
    result = last_json(out, tmp_path)
    assert result["ok"] and result["counts"]["published"] == 10, result
    assert len(task_nodes("lakeflow:io_heavy")) == 1  # every unit ran on the node with `io`


def parent_of(pid: int) -> int:
    """The raylet (node) that started a Ray worker process."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_the_controllers_node_removed(cluster, tmp_path, control):
    (control / "hold-spend_3d").touch()  # the run cannot end before its controller's node dies
    added = [local_sh("add", env={"LAKEFLOW_NODE_RESOURCES": '{"ctl": 1}'}) for _ in range(2)]
    lake = str(tmp_path / "lake")
    process, run_id = driver(lake, GCS, "--wait", "--resources", '{"ctl": 0.01}')
    try:
        wait_published(lake, run_id, 3)
        raylet = parent_of(process.controller_pid)
        assert f"lakeflow-cluster-{PORT}".encode() in Path(f"/proc/{raylet}/cmdline").read_bytes()
        assert b"controller" not in Path(f"/proc/{raylet}/cmdline").read_bytes()  # not the head
        os.kill(raylet, signal.SIGKILL)  # the controller's node is gone; Ray restarts it elsewhere
        eventually(
            lambda: "run_resumed" in lf.read_events(Lake(lake), run_id=run_id)["kind"].to_list(),
            180,
        )
        (control / "hold-spend_3d").unlink()
        out, _ = process.communicate(timeout=240)
    finally:
        process.kill()
        for line in added:
            index = line.split("worker node ")[1].split(":")[0]
            subprocess.run([str(ROOT / "cluster" / "local.sh"), "remove", index], env=ENV,
                           capture_output=True, timeout=60)  # fmt: skip
    result = last_json(out, tmp_path)
    assert result["ok"], result
    assert_published_once(lake, run_id)
