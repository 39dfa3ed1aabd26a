"""Shared fixtures: one local Ray for the whole session, a moto S3 server on 127.0.0.1, lakes in
tmp_path, and a fingerprint of a lake to show that a failure changed nothing."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from tests.moto import MotoServer

ROOT = Path(__file__).resolve().parent.parent
# Ray workers must import test modules and pipelines; they inherit this process's environment.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p
)
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ["RAY_task_events_max_num_task_in_gcs"] = "5000"
for key in [k for k in os.environ if k.startswith("AWS_")]:
    del os.environ[key]  # tests name their S3 endpoint explicitly
# Test pipelines read their instructions from files here; set before Ray starts so that every
# worker process sees the same directory (see tests/pipelines.py).
CONTROL = Path(tempfile.mkdtemp(prefix="lakeflow-test-control-"))
os.environ["LAKEFLOW_TEST_CONTROL"] = str(CONTROL)


def eventually(predicate, timeout: float = 60.0, every: float = 0.05):
    """Wait for `predicate()` to be true (returns its value); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout}s: {predicate.__doc__ or predicate}")


@pytest.fixture
def control():
    """The directory steering tests/pipelines.py, empty at the start and the end of a test."""
    for path in CONTROL.iterdir():
        path.unlink()
    yield CONTROL
    for path in CONTROL.iterdir():
        path.unlink()


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray, started once for every test that needs it."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            log_to_driver=False,
            namespace="lakeflow",
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def lake(tmp_path):
    """A local lake URL; its controller (if a test started one) is stopped afterwards."""
    url = str(tmp_path / "lake")
    yield url
    _stop_controller(url)


def _stop_controller(url: str, storage_options=None) -> None:
    """Stop what a test started for this lake: an in-process controller, a controller actor."""
    import lakeflow as lf

    lf.stop(url, storage_options=storage_options)


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_lake(moto_server):
    """(lake URL, storage options) of a fresh bucket on the moto server."""
    bucket = moto_server.create_bucket()
    url = f"s3://{bucket}/lake"
    yield url, moto_server.options
    _stop_controller(url, moto_server.options)


def assert_status_agrees(pipeline, *, lake=None, storage_options=None) -> None:
    """`lf.status` and `lf.backfill(..., dry_run=True)` tell the same story about the lake: per
    asset, the partitions status says a backfill would run (`to_run`) are the units the dry run
    plans, every stale or missing one among them; each partition is counted once. Sources are
    never stale."""
    import lakeflow as lf

    frame = lf.status(pipeline, lake=lake, storage_options=storage_options)
    rows = {r["asset"]: r for r in frame.iter_rows(named=True)}
    built = [n for n, a in pipeline.assets.items() if not a.source]
    preview = lf.backfill(
        pipeline, select=built, dry_run=True, lake=lake, storage_options=storage_options
    )
    held = ("failed", "check_failed", "blocked", "upstream_failed")
    for name, row in rows.items():
        if pipeline[name].source:
            assert row["stale"] == 0 and row["to_run"] == 0, row
            continue
        units = preview.units.get(name, 0)
        assert row["to_run"] == units, (name, row, preview)
        # every stale or missing partition runs; so may fresh ones that read a partition it builds
        assert row["stale"] + row["missing"] <= units, (name, row, preview)
        counted = ("published", "stale", "missing", "deleted", *held)
        assert row["partitions"] == sum(row[k] for k in counted), row


def status_agrees_after(request, pipeline, tmp_path: Path) -> None:
    """For a module's autouse fixture, after a test: if it passed and built a local lake (the
    `lake` fixture), status and a dry run must agree on it (`assert_status_agrees`). A test
    marked `no_status_check` leaves its lake in a state status refuses (say why there)."""
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.passed or "lake" not in request.fixturenames:
        return
    if request.node.get_closest_marker("no_status_check") is not None:
        return
    lake = tmp_path / "lake"  # where the `lake` fixture put it
    if lake.exists():
        assert_status_agrees(pipeline, lake=str(lake))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "no_status_check: the lake this test leaves is not one status can read"
    )


def lake_fingerprint(path: str | Path) -> dict[str, object]:
    """Every table under a local lake: its version and the files its current version holds."""
    from deltalake import DeltaTable

    out: dict[str, object] = {}
    root = Path(path)
    if not root.exists():
        return out
    for log in sorted(root.glob("**/_delta_log")):
        table = log.parent
        if "_lakeflow" in table.relative_to(root).parts:
            continue
        dt = DeltaTable(str(table))
        out[str(table.relative_to(root))] = (dt.version(), sorted(dt.file_uris()))
    return out


def pytest_addoption(parser):
    parser.addoption(
        "--stress-seed",
        action="append",
        default=[],
        help="replay tests/test_stress.py with this seed (repeatable; or $LAKEFLOW_STRESS_SEED=N,M)",
    )
