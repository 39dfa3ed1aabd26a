"""The web UI in a real browser: headless Chromium from the system's packages (chromium,
chromium-driver: the README's test command installs them), driven by selenium with the system's
chromedriver. `lakeflow ui` runs as the user types it, on a lake with a failed check; the tests
click graph -> asset -> partition -> lineage -> run, start a materialize from the form (refused without the
token), cancel a run whose progress streams in, and save screenshots under their tmp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import lakeflow as lf
from lakeflow.lake import Lake
from lakeflow.lake.events import read_events
from lakeflow.serve.ui import ui_routes
from lakeflow.serve.ui.model import MAX_BUCKETS, STATES, LakeView, buckets
from lakeflow.serve.web import HttpLimits, TriggerServer, bind, build_app
from lakeflow.triggers.follow import STATE_URL, TriggerState
from tests.conftest import CONTROL, ROOT, eventually, lake_fingerprint
from tests.pipelines import GATED, PIPELINE

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "ui-test-token"
BAD_DAY = "2024-01-03"


def _browser_or_skip() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    message = f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)  # CI runs the README's test command, which installs them
    pytest.skip(message)


class UiServer:
    """`lakeflow ui` in its own process, as a user starts it; its address from what it prints."""

    def __init__(self, lake: Path, *extra: str) -> None:
        argv = [sys.executable, "-m", "lakeflow.cli", "ui", "tests/pipelines.py:GATED",
                "--lake", str(lake), "--port", "0", "--executor", "local", *extra]  # fmt: skip
        self.lake = lake
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert " at http://" in line, line + self.process.stdout.read()
        self.url = line.split(" at ", 1)[1].split("/ui/", 1)[0]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, path: str, body: dict, token: str | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def ui_lake(tmp_path_factory):
    """A lake of the gated pipeline where orders 2024-01-03 failed a check (its consumers are
    blocked), built in this process on threads."""
    for path in CONTROL.iterdir():
        path.unlink()
    lake = tmp_path_factory.mktemp("ui") / "lake"
    (CONTROL / f"bad-orders-{BAD_DAY}").touch()
    lf.materialize(GATED, lake=str(lake), executor="local")
    (CONTROL / f"bad-orders-{BAD_DAY}").unlink()
    return lake


@pytest.fixture(scope="module")
def server(ui_lake):
    ui = UiServer(ui_lake, "--token", TOKEN)
    yield ui
    ui.stop()


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    from selenium import webdriver  # test-only package
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def _css(driver, selector):
    from selenium.webdriver.common.by import By  # test-only package

    return driver.find_element(By.CSS_SELECTOR, selector)


def test_click_through_graph_asset_partition_run(server, browser, tmp_path):
    browser.get(server.url + "/ui/")
    assert (
        _css(browser, 'a.node[data-asset="orders"]').get_attribute("data-health") == "check_failed"
    )
    assert _css(browser, 'a.node[data-asset="ledger"]').get_attribute("data-health") == "blocked"
    assert _css(browser, 'a.node[data-asset="customers"]').get_attribute("data-health") == "fresh"
    browser.save_screenshot(str(tmp_path / "graph.png"))

    _css(browser, 'a.node[data-asset="orders"]').click()
    eventually(lambda: browser.current_url.endswith("/ui/assets/orders"))
    cells = browser.find_elements("css selector", "a.cell")
    assert len(cells) == 10  # ten days, one cell each
    assert [c.get_attribute("data-state") for c in cells].count("check_failed") == 1
    browser.save_screenshot(str(tmp_path / "asset.png"))

    _css(browser, 'a.cell[data-state="check_failed"]').click()
    eventually(lambda: browser.current_url.endswith(f"/partitions/{BAD_DAY}"))
    page = _css(browser, "main").text
    assert "check failed" in page
    assert "between(amount" in page and "failed" in _css(browser, "table.checks").text
    assert f"<lake>/_lakeflow/quarantine/orders/{BAD_DAY}/" in page
    assert str(server.url) not in page and "lake/_lakeflow" not in page  # no absolute path
    browser.save_screenshot(str(tmp_path / "partition.png"))

    _css(browser, "table.unit-runs a.run").click()
    eventually(lambda: "/ui/runs/" in browser.current_url)
    per_asset = _css(browser, "table.per-asset").text
    assert "orders" in per_asset and "check_failed" in per_asset and "blocked" in per_asset
    browser.save_screenshot(str(tmp_path / "run.png"))
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in ("graph", "asset", "run"))


def test_a_partitions_page_shows_what_the_unit_logged(server):
    status, page = server.get(f"/ui/assets/orders/partitions/{BAD_DAY}")
    assert status == 200
    assert "<h2>logs (run" in page and f"orders {BAD_DAY}: 3 rows" in page


def test_partition_lineage_to_the_run_that_built_its_input(server, browser, tmp_path):
    browser.get(server.url + "/ui/assets/order_totals")
    _css(browser, 'a.cell[data-state="fresh"]').click()  # the first day
    eventually(lambda: browser.current_url.endswith("/partitions/2024-01-01"))
    _css(browser, "a.lineage").click()
    eventually(lambda: "/ui/lineage/order_totals/2024-01-01" in browser.current_url)
    trace = _css(browser, "ul.lineage").text
    assert "order_totals 2024-01-01 @ v" in trace and "orders 2024-01-01 @ v" in trace
    browser.save_screenshot(str(tmp_path / "lineage.png"))
    upstream = _css(browser, 'ul.lineage ul a.unit[data-asset="orders"]')
    run = upstream.find_element("xpath", "..").find_element("css selector", "a.run")
    run_id = run.text
    run.click()
    eventually(lambda: browser.current_url.endswith(f"/ui/runs/{run_id}"))
    assert "orders" in _css(browser, "table.per-asset").text
    browser.back()
    _css(browser, "a.flip").click()  # and forward: what order_totals 2024-01-01 fed
    eventually(lambda: "downstream=1" in browser.current_url)
    assert "downstream" in _css(browser, "p.meta").text


def test_filter_and_zoom_by_state(server, browser):
    browser.get(server.url + "/ui/assets/ledger?state=blocked")
    cells = browser.find_elements("css selector", "a.cell")
    assert [c.get_attribute("data-state") for c in cells].count("blocked") == 1
    assert {c.get_attribute("data-state") for c in cells} == {"blocked", "empty"}
    status, data = server.get("/ui/api/assets/ledger/buckets?state=blocked&lo=2&hi=4")
    assert status == 200
    buckets_ = json.loads(data)["buckets"]
    assert [b["first"] for b in buckets_] == ["2024-01-03", "2024-01-04"]
    assert [b["counts"] for b in buckets_] == [{"blocked": 1}, {"blocked": 0}]


def test_materialize_form_needs_the_token(server, browser, ui_lake, tmp_path):
    browser.get(server.url + "/ui/materialize")
    form = _css(browser, "form#materialize")
    _css(browser, 'select[name="select"] option[value="orders"]').click()
    form.find_element("name", "partitions").send_keys(BAD_DAY)
    before = lake_fingerprint(ui_lake)
    _css(browser, 'form#materialize button[type="submit"]').click()
    refused = eventually(lambda: _css(browser, "#result").text)
    assert "refused (401)" in refused
    assert lake_fingerprint(ui_lake) == before  # nothing ran

    _css(browser, "#token").send_keys(TOKEN)
    _css(browser, 'form#materialize button[type="submit"]').click()
    eventually(lambda: "started run" in _css(browser, "#result").text)
    browser.save_screenshot(str(tmp_path / "materialize.png"))
    _css(browser, "#result a.run").click()
    eventually(lambda: "/ui/runs/" in browser.current_url)

    def published():
        browser.refresh()
        return _css(browser, "#status").text != "running"

    eventually(published, timeout=60)
    assert "orders" in _css(browser, "table.per-asset").text
    browser.get(server.url + f"/ui/assets/orders/partitions/{BAD_DAY}")
    assert "fresh" in _css(browser, "p.meta").text  # the plant is gone: published this time


def test_run_progress_streams_and_cancel(server, browser):
    hold = CONTROL / "hold-orders"
    hold.touch()
    try:
        status, started = server.post(
            "/ui/api/materialize",
            {"select": "orders", "force": True},  # ten units: the first wait on the hold,
            TOKEN,
        )
        assert status == 202, started
        browser.get(server.url + f"/ui/runs/{started['run_id']}")
        box = _css(browser, "#token")
        if box.get_attribute("value") != TOKEN:  # the tab remembers it once given
            box.clear()
            box.send_keys(TOKEN)
        eventually(lambda: list(CONTROL.glob("held-orders-*")))
        assert _css(browser, "#status").text == "running"
        _css(browser, 'button[data-post$="/cancel"]').click()
        eventually(lambda: "cancel requested" in _css(browser, "#result").text)
        # the controller sees the marker and cancels the units not started
        where = Lake(str(server.lake))
        eventually(
            lambda: len(read_events(where, run_id=started["run_id"], kinds=["run_cancelling"]))
        )
    finally:
        hold.unlink()
    # the page learns the end over server-sent events and reloads itself
    eventually(lambda: _css(browser, "#status").text == "cancelled", timeout=60)
    assert int(_css(browser, "#published").text) < int(_css(browser, "#total").text) == 10


def test_read_only_ui_refuses_writes_and_hides_the_lake(ui_lake):
    ui = UiServer(ui_lake)  # no token: read-only
    try:
        before = lake_fingerprint(ui_lake)
        status, body = ui.post("/ui/api/materialize", {"select": "orders"}, TOKEN)
        assert status == 403 and "read-only" in body["error"]
        assert lake_fingerprint(ui_lake) == before
        for path in ("/ui/assets/nope", "/ui/assets/orders/partitions/1999-01-01", "/ui/runs/x",
                     "/ui/nothing", "/ui/assets/orders?lo=abc"):  # fmt: skip
            status, text = ui.get(path)
            assert status in (400, 404), (path, status)
            assert str(ui_lake) not in text and str(ui_lake.parent) not in text
        status, text = ui.get("/ui/")
        assert status == 200 and "read-only" in text
    finally:
        ui.stop()


HOURS = lf.HourlyPartitions(start="1950-01-01T00", end="2064-02-01T00")


@lf.asset(partitions=HOURS)
def hourly() -> pl.DataFrame:
    return pl.DataFrame({"x": [1]})


def test_the_view_follows_new_commits_as_a_fresh_read_sees_them(tmp_path):
    """The UI patches its cached snapshot with the partitions new commits touched (no pass
    over every key): after more runs, a forced rebuild and a failure, what it shows is what a
    view that reads the lake afresh shows."""
    lake = str(tmp_path / "lake")
    view = LakeView(pipeline=PIPELINE.with_lake(lake), lake=Lake(lake))
    lf.materialize(PIPELINE, lake=lake, executor="local", partitions="2024-01-01..2024-01-04")
    before = {name: codes.copy() for name, codes in view.states().items()}
    lf.materialize(PIPELINE, lake=lake, executor="local")
    lf.materialize(PIPELINE, select="events", partitions="2024-01-02", force=True, lake=lake,
                   executor="local")  # fmt: skip
    (CONTROL / "fail-spend-2024-01-09").touch()
    try:
        lf.materialize(PIPELINE, select="spend", partitions="2024-01-09", force=True, lake=lake,
                       executor="local")  # fmt: skip
    finally:
        (CONTROL / "fail-spend-2024-01-09").unlink()
    after = view.states()
    fresh = LakeView(pipeline=PIPELINE.with_lake(lake), lake=Lake(lake)).states()
    assert after.keys() == fresh.keys()
    for name in fresh:
        assert after[name].tolist() == fresh[name].tolist(), name
    assert any(before[n].tolist() != after[n].tolist() for n in fresh)  # it did move
    assert STATES[after["spend"][8]] == "failed"
    for name, (_, snap) in view._snaps.items():
        again = LakeView(pipeline=PIPELINE.with_lake(lake), lake=Lake(lake))
        again.states()
        expected = again._snaps[name][1]
        assert snap.version == expected.version
        for field in ("present", "touched", "code", "run"):
            assert getattr(snap, field).tolist() == getattr(expected, field).tolist(), (name, field)
        assert {k: v.tolist() for k, v in snap.inputs.items()} == {
            k: v.tolist() for k, v in expected.inputs.items()
        }


def test_readers_racing_commits_end_where_a_fresh_read_does(tmp_path):
    """Pages read the view from many threads while runs commit: once the lake is still, what
    the view shows is what a fresh read shows (no touched partition lost between a refresh and
    the snapshot cached for its version, no event flush missed)."""
    lake = str(tmp_path / "lake")
    pipeline = PIPELINE.with_lake(lake)
    view = LakeView(pipeline=pipeline, lake=Lake(lake))
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                view.states()
                view.table("spend")
                view.buckets("spend", lo=0, hi=None, state=None)
            except BaseException as error:
                errors.append(error)
                return

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for day in range(1, 11):
            lf.materialize(pipeline, partitions=f"2024-01-{day:02d}", executor="local")
        lf.materialize(pipeline, select="events", partitions="2024-01-03..2024-01-06", force=True,
                       executor="local")  # fmt: skip
        lf.materialize(pipeline, executor="local")
    finally:
        stop.set()
        for reader in readers:
            reader.join(60)
    assert errors == []
    fresh = LakeView(pipeline=pipeline, lake=Lake(lake))
    shown, expected = view.states(), fresh.states()
    for name in expected:
        assert shown[name].tolist() == expected[name].tolist(), name
    assert (
        view.buckets("spend", lo=0, hi=None, state=None)[2]
        == fresh.buckets("spend", lo=0, hi=None, state=None)[2]
    )


def test_triggers_page_shows_cursors_pending_partitions_and_schedules(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    hourly = lf.schedule("0 * * * *", select="events", name="hourly events")
    pipeline = lf.Pipeline(list(PIPELINE.assets.values()), name="spend", triggers=[hourly])
    state = TriggerState(
        cursors={"events": 7}, pending={"spend": {"2024-01-02": ["events"]}},
        ticks={"hourly events": datetime(2024, 1, 1, 5, tzinfo=UTC).timestamp()},
    )  # fmt: skip
    lake.write_bytes(f"{lake.url}/{STATE_URL}", state.dumps())
    app = build_app(ui_routes(pipeline=pipeline.with_lake(lake.url), lake=lake))
    server = TriggerServer(app=app, sock=bind("127.0.0.1", 0), limits=HttpLimits())
    try:
        with urllib.request.urlopen(server.address + "/ui/triggers", timeout=30) as response:
            page = response.read().decode()
    finally:
        server.close()
    assert "<td>events</td><td>7</td>" in page
    assert "<td>spend</td><td>1</td><td>2024-01-02</td>" in page
    assert "hourly events" in page and "2024-01-01T05:00:00+00:00" in page  # the last tick
    assert ":00:00+00:00</td></tr>" in page  # the next tick, on the hour
    assert str(tmp_path) not in page


def test_buckets_of_a_million_hourly_partitions():
    hours, pipeline, name = HOURS, lf.Pipeline([hourly], name="big"), "hourly"
    codes = np.random.default_rng(1).integers(0, len(STATES), len(hours)).astype(np.int8)
    unit, cells = buckets(pipeline, name, codes)
    assert len(hours) > 1_000_000 and unit == "year" and len(cells) <= MAX_BUCKETS
    assert sum(sum(b.counts.values()) for b in cells) == len(hours)
    assert cells[0].first.startswith("1950-01-01") and cells[1].first.startswith("1951-01-01")
    unit, cells = buckets(pipeline, name, codes, lo=cells[3].lo, hi=cells[3].hi)  # zoom: a year
    assert unit == "day" and len(cells) == 365
    zoomed = codes[cells[0].lo : cells[-1].hi]
    assert sum(b.counts.get("failed", 0) for b in cells) == int(
        (zoomed == STATES.index("failed")).sum()
    )


def test_the_readme_test_command_is_what_ci_runs_and_installs_chromium():
    readme = (ROOT / "README.md").read_text()
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command in readme.splitlines()
    assert "apt-get install -y -qq chromium chromium-driver" in command
