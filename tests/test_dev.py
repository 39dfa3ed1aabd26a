"""`lakeflow dev`: a resident service that commands and notebooks on the same lake attach to.

One service for the module (it starts its own Ray in a background process), always stopped in
the fixture's finalizer, its process group killed as the last resort. Commands run as a user types
them, in subprocesses that report whether they imported Ray.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

import lakeflow as lf
from lakeflow.cli.main import main
from tests.conftest import ROOT, eventually, lake_fingerprint
from tests.trigger_pipelines import write_trips

PIPELINE = str(ROOT / "tests" / "dev_pipelines.py")
# the command as a user runs it, then one line saying whether the process imported Ray
PROBE = (
    "import sys\nfrom lakeflow.cli.main import main\ncode = main(sys.argv[1:])\n"
    "sys.stderr.write('\\nray imported: %s\\n' % ('ray' in sys.modules))\nsys.exit(code)\n"
)


@dataclass
class Dev:
    lake: str
    services: Path
    pids: list[int]  # every service started for this lake: their groups are killed at the end
    modules: Path  # on the service's PYTHONPATH: pipelines a test writes there are importable

    def marker(self) -> dict | None:
        found = list(self.services.glob("*.json"))
        return json.loads(found[0].read_text()) if found else None

    def call(self, method: str, *args: object) -> object:
        """Ask the service's controller directly, as its HTTP clients do."""
        info = self.marker()
        assert info is not None
        request = urllib.request.Request(
            info["http"] + "/service/call",
            data=json.dumps({"method": method, "args": list(args)}).encode(),
            headers={"Authorization": f"Bearer {info['token']}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["value"]


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=timeout
    )


def start(lake: str) -> subprocess.CompletedProcess:
    return cli("dev", PIPELINE, "--lake", lake, "--port", "0", "--detach")


def run(capsys, *args: str) -> tuple[int, str, str]:
    """A command in this process, as `lakeflow.cli.main` runs it: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("dev")
    services = root / "services"
    saved = os.environ.get("LAKEFLOW_SERVICES_DIR")
    os.environ["LAKEFLOW_SERVICES_DIR"] = str(services)  # never a marker of someone else's
    modules = root / "modules"
    modules.mkdir()
    saved_path = os.environ["PYTHONPATH"]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(modules), saved_path])
    service = Dev(lake=str(root / "lake"), services=services, pids=[], modules=modules)
    try:
        started = start(service.lake)
        if (info := service.marker()) is not None:
            service.pids.append(info["pid"])
        assert started.returncode == 0, started.stdout + started.stderr
        assert "running in the background" in started.stdout
        yield service
    finally:
        try:
            if service.marker() is not None:
                cli("dev", "--stop", "--lake", service.lake, timeout=120)
        finally:
            for pid in service.pids:  # the last resort: what is left of each one's Ray
                try:
                    os.killpg(pid, signal.SIGKILL)  # --detach made it lead its own group
                except ProcessLookupError:
                    pass
        os.environ["PYTHONPATH"] = saved_path
        if saved is None:
            os.environ.pop("LAKEFLOW_SERVICES_DIR", None)
        else:
            os.environ["LAKEFLOW_SERVICES_DIR"] = saved


def test_the_marker_is_private_and_the_token_stays_out_of_the_lake(dev):
    marker = next(dev.services.glob("*.json"))
    assert marker.stat().st_mode & 0o777 == 0o600
    token = json.loads(marker.read_text())["token"].encode()
    lake_files = [p for p in Path(dev.lake).rglob("*") if p.is_file()]
    assert lake_files and not any(token in p.read_bytes() for p in lake_files)


def test_materialize_attaches_to_the_service_without_starting_ray(dev, capsys):
    args = ("materialize", PIPELINE, "--lake", dev.lake, "--select", "events")
    done = cli(*args, "--partitions", "2024-01-02", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] and summary["counts"] == {"published": 1}
    assert "ray imported: False" in done.stderr
    assert dev.call("progress", summary["run_id"])["known"]  # the service's controller ran it
    log = Path(dev.marker()["log"])
    eventually(lambda: f"run {summary['run_id']} <- cli" in log.read_text(), timeout=10)
    frame = pl.read_delta(f"{dev.lake}/events")
    assert frame["date"].cast(pl.Utf8).to_list() == ["2024-01-02", "2024-01-02"]

    code, out, err = run(capsys, *args, "--partitions", "2024-01-02", "--no-progress")
    assert code == 0 and "1 fresh" in out, err


def test_the_service_serves_the_web_ui(dev):
    """`lakeflow dev` serves the web UI beside its endpoints: the graph names the assets; a
    write from the UI without the token is refused."""
    import urllib.error
    import urllib.request

    base = dev.marker()["http"]

    def graph() -> str:
        with urllib.request.urlopen(base + "/ui/", timeout=10) as answer:
            return answer.read().decode()

    eventually(lambda: "trips_daily" in graph() and "events" in graph(), timeout=30)
    refused = urllib.request.Request(
        base + "/ui/api/materialize", data=b'{"select": "events"}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(refused, timeout=10)
    assert error.value.code in (401, 403)


def test_a_failing_unit_exits_1_and_a_bad_request_exits_2_with_the_lake_unchanged(
    dev, control, capsys
):
    (control / "fail-events-2024-01-03").touch()
    args = ("materialize", PIPELINE, "--lake", dev.lake, "--no-progress", "--select", "events")
    code, out, err = run(capsys, *args, "--partitions", "2024-01-03")
    assert code == 1, out + err
    assert "ValueError: events 2024-01-03: bad data" in err and "pipelines.py" in err
    assert "1 failed" in out

    before = lake_fingerprint(dev.lake)
    for bad in ("2030-01-01", "2024-13-01"):
        code, out, err = run(capsys, *args, "--partitions", bad)
        assert code == 2 and bad in err, out + err
    code, out, err = run(capsys, "materialize", PIPELINE, "--lake", dev.lake, "--select", "nope")
    assert code == 2 and "nope" in err
    assert lake_fingerprint(dev.lake) == before


def test_an_outside_commit_triggers_a_run_in_the_service(dev):
    write_trips(f"{dev.lake}/trips", "2024-01-04", [1, 2, 3])

    def built() -> bool:
        """trips_daily 2024-01-04 is published with the three trips"""
        if not (Path(dev.lake) / "trips_daily" / "_delta_log").exists():
            return False
        frame = pl.read_delta(f"{dev.lake}/trips_daily")
        return frame.filter(pl.col("day").cast(pl.Utf8) == "2024-01-04")["trips"].to_list() == [3]

    eventually(built, timeout=60)


def test_the_notebook_api_runs_in_the_service(dev):
    from tests.dev_pipelines import PIPELINE as pipeline

    result = lf.materialize(pipeline, select="events", partitions="2024-01-05", lake=dev.lake)
    assert result.ok and result.counts() == {"published": 1}
    assert dev.call("progress", result.run_id)["known"]


NOTEBOOK = """import sys
import polars as pl
import lakeflow as lf

@lf.asset
def cell() -> pl.DataFrame:
    return pl.DataFrame({"x": [1, 2]})

result = lf.materialize(lf.Pipeline([cell]), lake=sys.argv[1])
import ray
print(result.summary(), "joined", ray.get_runtime_context().gcs_address)
"""


def test_a_pipeline_defined_in_a_notebook_runs_through_the_services_ray(dev):
    done = subprocess.run([sys.executable, "-c", NOTEBOOK, dev.lake], capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 published" in done.stdout
    assert done.stdout.split("joined ")[1].strip() == dev.marker()["ray_address"]
    script = "import sys, lakeflow as lf, ray\nlf.connect(lake=sys.argv[1])\n"
    script += "print(ray.get_runtime_context().gcs_address)\n"
    joined = subprocess.run([sys.executable, "-c", script, dev.lake], capture_output=True,
                            text=True, timeout=240)  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.strip() == dev.marker()["ray_address"]  # lf.connect joins the service


def test_backfill_and_up_attach_too(dev, capsys, tmp_path, monkeypatch):
    code, out, err = run(capsys, "backfill", PIPELINE, "--lake", dev.lake, "--select", "events",
                         "--partitions", "2024-01-08..2024-01-09", "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert (
        summary["counts"] == {"published": 2} and dev.call("progress", summary["run_id"])["known"]
    )
    monkeypatch.chdir(tmp_path)  # a detached `up` of its own would leave its log here
    code, out, err = run(capsys, "up", PIPELINE, "--lake", dev.lake, "--detach")
    assert code == 0, err
    assert f"(in lakeflow dev, pid {dev.marker()['pid']})" in out
    assert list(tmp_path.iterdir()) == []  # no background `lakeflow up` process was started


def test_a_cancelled_backfill_resumes_through_the_service(dev, control, capsys):
    from tests.dev_pipelines import PIPELINE as pipeline

    (control / "hold-events").touch()
    handle = lf.backfill(pipeline, select="events", partitions="2024-01-01,2024-01-10",
                      concurrency=1, lake=dev.lake, wait=False)  # fmt: skip
    eventually(lambda: list(control.glob("held-events-*")), timeout=60)
    assert handle.cancel()
    (control / "hold-events").unlink()
    cancelled = handle.wait()
    assert cancelled.status == "cancelled" and cancelled.counts().get("published", 0) <= 1
    code, out, err = run(capsys, "backfill", "resume", handle.id, "--lake", dev.lake,
                             "--no-progress", "--json")  # fmt: skip
    assert code == 0, out + err
    resumed = json.loads(out)
    assert resumed["run_id"] == handle.id and resumed["ok"]
    assert dev.call("progress", handle.id)["known"]
    days = pl.read_delta(f"{dev.lake}/events")["date"].cast(pl.Utf8).unique().to_list()
    assert {"2024-01-01", "2024-01-10"} <= set(days)


CHANGING = """import polars as pl
import lakeflow as lf

@lf.asset
def changing() -> pl.DataFrame:
    return pl.DataFrame({{"version": [{version}]}})

pipeline = lf.Pipeline([changing], lake="./lake")
"""


def test_code_changed_since_the_service_loaded_it_is_refused_unchanged(dev):
    module = dev.modules / "dev_changing.py"
    module.write_text(CHANGING.format(version=1))
    args = ("materialize", str(module), "--lake", dev.lake, "--no-progress")
    first = cli(*args)
    assert first.returncode == 0 and "1 published" in first.stdout, first.stderr
    before = lake_fingerprint(dev.lake)
    module.write_text(CHANGING.format(version=22))  # the service has version 1 imported
    changed = cli(*args, "--force")
    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert "cannot run dev_changing:pipeline" in changed.stderr
    assert "lakeflow dev --stop" in changed.stderr
    assert lake_fingerprint(dev.lake) == before


BUILDER = """import polars as pl
import lakeflow as lf

def build():
    @lf.asset
    def built_by_a_helper() -> pl.DataFrame:
        return pl.DataFrame({"x": [1, 2]})

    return lf.Pipeline([built_by_a_helper], lake="./lake", name="helper")
"""


def test_a_pipeline_a_helper_function_builds_is_sent_by_where_it_was_loaded(dev):
    """A pipeline file that binds what a function of another module builds (`pipeline =
    build()`) attaches by reference: the CLI loaded it from that file, the service imports it."""
    (dev.modules / "dev_builder.py").write_text(BUILDER)
    module = dev.modules / "dev_built.py"
    module.write_text("from dev_builder import build\n\npipeline = build()\n")
    done = cli("materialize", str(module), "--lake", dev.lake, "--no-progress")
    assert done.returncode == 0 and "1 published" in done.stdout, done.stdout + done.stderr
    assert "ray imported: False" in done.stderr  # over the service's HTTP, not its Ray
    assert pl.read_delta(f"{dev.lake}/built_by_a_helper")["x"].to_list() == [1, 2]


def test_stop_never_signals_a_process_that_took_a_dead_services_pid(dev, tmp_path):
    """A marker left by a crashed service whose pid another program now has: `--stop` sees
    that pid does not answer as the service, removes the marker and signals nothing."""
    from lakeflow.control.services import ServiceInfo, marker_path, write_marker

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lake = str(tmp_path / "other-lake")
        url = lf.Lake(lake).url
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # a port nothing listens on
        write_marker(ServiceInfo(
            pid=other.pid, lake=url, pipeline=PIPELINE, started=time.time() - 3600,
            http=f"http://127.0.0.1:{port}", token="t" * 32,
        ))  # fmt: skip
        stopped = cli("dev", "--stop", "--lake", lake)
        assert stopped.returncode == 1, stopped.stdout + stopped.stderr
        assert "not signalled" in stopped.stdout
        assert other.poll() is None  # still running: never signalled
        assert not marker_path(url).exists()
    finally:
        other.kill()
        other.wait()


def test_a_second_dev_on_the_same_lake_says_it_is_running(dev):
    pid = dev.marker()["pid"]
    again = start(dev.lake)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout and str(pid) in again.stdout
    assert dev.marker()["pid"] == pid


def test_a_killed_service_is_ignored_and_a_new_one_starts(dev):
    pid = dev.marker()["pid"]
    os.kill(pid, signal.SIGKILL)  # its Ray may live on: the fixture kills its process group
    eventually(lambda: _gone(pid), timeout=30)
    again = start(dev.lake)  # the stale marker is no "already running"
    info = dev.marker()
    if info is not None:
        dev.pids.append(info["pid"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "running in the background" in again.stdout and info["pid"] != pid
    done = cli("materialize", PIPELINE, "--lake", dev.lake, "--select", "events",
               "--partitions", "2024-01-06", "--no-progress")  # fmt: skip
    assert done.returncode == 0 and "1 published" in done.stdout, done.stderr
    assert "ray imported: False" in done.stderr


def test_address_bypasses_the_service(dev, ray_session, capsys):
    """`--address` names the cluster to run on: not the lake's `lakeflow dev` service. (Its
    controller there takes the lake: the service's is superseded, so this test runs late.)"""
    import ray

    address = ray.get_runtime_context().gcs_address
    code, out, err = run(
        capsys, "materialize", PIPELINE, "--lake", dev.lake, "--select", "events",
        "--partitions", "2024-01-02", "--force", "--address", address, "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["counts"] == {"published": 1}
    assert not dev.call("progress", summary["run_id"])["known"]  # the service never saw it


def test_dev_stop_stops_it_and_later_commands_run_without_it(dev, ray_session, capsys):
    info = dev.marker()
    assert info is not None
    stopped = cli("dev", "--stop", "--lake", dev.lake)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert _gone(info["pid"]) and dev.marker() is None
    with pytest.raises(ProcessLookupError):  # nothing of its Ray is left either
        eventually(lambda: os.killpg(info["pid"], 0) or False, timeout=30, every=0.2)
    log = Path(info["log"]).read_text()
    assert "stopped (triggers down, controller stopped, Ray shut down)" in log
    again = cli("dev", "--stop", "--lake", dev.lake)
    assert again.returncode == 1 and "no service" in again.stdout
    # without a service a command runs on its own Ray (here the session's, already started)
    code, out, err = run(capsys, "materialize", PIPELINE, "--lake", dev.lake, "--select",
                         "events", "--partitions", "2024-01-07", "--no-progress")  # fmt: skip
    assert code == 0 and "1 published" in out, err
    lf.stop(dev.lake)  # the controller this test started in the session's Ray


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
