"""The web UI at scale: one hourly asset of 100, 100,000 and 1,000,000 partitions. How long the
first read of the lake takes (the table's log into a `TableState`, its snapshot, the partition
states), then the server time of the asset page, its heatmap data, a zoom into one bucket and the
graph page once cached (median of 7 requests over HTTP to `lakeflow ui`'s app), the page's size,
and, when chromium is installed, the browser's first contentful paint of the asset page. Each size
in a fresh process.

The lake is built honestly but quickly: the table's Delta log is written directly as lakeflow's
group commits would write it (commits of 100,000 add actions, each carrying lakeflow's commit
metadata: run, code version, the partition keys), 90% of the partitions published and the rest
genuinely missing; the Parquet files the add actions name are not written (the UI reads only the
log). 1% of the published partitions have a `unit_failed` event in the real event log.

    python benchmarks/bench_ui.py                  # 100, 100k, 1M; appends to RESULTS.md
    python benchmarks/bench_ui.py --quick          # 100 and 10k; nothing recorded
    python benchmarks/bench_ui.py --screenshot docs/ui-asset-1m.png   # the 1M asset page
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)

from benchmarks.common import Timer, peak_rss_mib, record, table  # noqa: E402

START = "1900-01-01T00"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def pipeline_for(count: int):
    import numpy as np
    import polars as pl

    import lakeflow as lf

    start = np.datetime64(START, "h")
    end = str(start + count)[:13]
    hours = lf.HourlyPartitions(start=START, end=end)

    @lf.asset(partitions=hours, code_version="v1")
    def hourly() -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    return lf.Pipeline([hourly], name="bench_ui")


def build(lake: Path, count: int) -> None:
    """The table's log as lakeflow's group commits write it, and failed-unit events."""
    from lakeflow.lake import Lake
    from lakeflow.lake.events import Event, EventLog

    pipeline = pipeline_for(count)
    keys = pipeline["hourly"].partitions.keys()
    log = lake / "hourly" / "_delta_log"
    log.mkdir(parents=True)
    schema = {"type": "struct", "fields": [
        {"name": "x", "type": "long", "nullable": True, "metadata": {}},
        {"name": "hour", "type": "string", "nullable": True, "metadata": {}},
    ]}  # fmt: skip
    now = int(time.time() * 1000)
    present = [k for i, k in enumerate(keys) if i % 10 != 9]
    chunk = 100_000
    for version, lo in enumerate(range(0, max(len(present), 1), chunk)):
        group = present[lo : lo + chunk]
        lines = []
        if version == 0:
            lines.append(json.dumps({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}))
            lines.append(json.dumps({"metaData": {
                "id": "bench-ui", "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps(schema), "partitionColumns": ["hour"],
                "configuration": {}, "createdTime": now,
            }}))  # fmt: skip
        for key in group:
            lines.append(json.dumps({"add": {
                "path": f"hour={key}/part-00000.parquet", "partitionValues": {"hour": key},
                "size": 512, "modificationTime": now, "dataChange": True,
            }}))  # fmt: skip
        meta = {
            "run": "19000101T000000-00000000",
            "code": "v1",
            "groups": [{"keys": group, "in": {}}],
        }
        lines.append(json.dumps({"commitInfo": {
            "timestamp": now, "operation": "WRITE", "lakeflow": meta,
        }}))  # fmt: skip
        (log / f"{version:020d}.json").write_text("\n".join(lines) + "\n")
    events = EventLog(Lake(str(lake)))
    for key in present[:: max(1, len(present) // max(1, len(present) // 100))][
        : len(present) // 100
    ]:
        events.emit(Event("19000102T000000-00000001", "unit_failed", asset="hourly", partition=key,
                          attempt=1, message="ValueError: bad hour"))  # fmt: skip
    events.emit(Event("19000102T000000-00000001", "run_requested", message="manual",
                      detail={"kind": "backfill", "select": ["hourly"], "units": len(present)}))  # fmt: skip
    events.emit(Event("19000102T000000-00000001", "run_finished", message="failed"))
    events.flush()


def append_commit(lake: Path, count: int) -> None:
    """One more lakeflow commit republishing the last present partition."""
    log = lake / "hourly" / "_delta_log"
    version = max(int(p.name[:20]) for p in log.glob("*.json")) + 1
    key = pipeline_for(count)["hourly"].partitions.key(0)
    now = int(time.time() * 1000)
    meta = {"run": "19000103T000000-00000002", "code": "v1", "groups": [{"keys": [key], "in": {}}]}
    lines = [
        json.dumps({"remove": {"path": f"hour={key}/part-00000.parquet", "partitionValues": {"hour": key},
                               "deletionTimestamp": now, "dataChange": True}}),
        json.dumps({"add": {"path": f"hour={key}/part-00001.parquet", "partitionValues": {"hour": key},
                            "size": 512, "modificationTime": now, "dataChange": True}}),
        json.dumps({"commitInfo": {"timestamp": now, "operation": "WRITE", "lakeflow": meta}}),
    ]  # fmt: skip
    (log / f"{version:020d}.json").write_text("\n".join(lines) + "\n")


def measure(count: int, screenshot: str | None) -> dict:
    """In this process: build, read cold, serve warm (over HTTP), paint in chromium."""
    from lakeflow.lake import Lake
    from lakeflow.lake.log import TableState
    from lakeflow.serve.ui import ui_routes
    from lakeflow.serve.ui.model import LakeView
    from lakeflow.serve.web import HttpLimits, TriggerServer, bind, build_app

    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    lake = work / "lake"
    with Timer() as built:
        build(lake, count)
    pipeline = pipeline_for(count).with_lake(str(lake))
    where = Lake(str(lake))
    with Timer() as load:
        TableState.load(where, f"{lake}/hourly", column="hour")
    view = LakeView(pipeline=pipeline, lake=where)
    with Timer() as cold:
        view.states()
    server = TriggerServer(
        app=build_app(ui_routes(pipeline=pipeline, lake=where)), sock=bind("127.0.0.1", 0),
        limits=HttpLimits(),
    )  # fmt: skip

    def get(path: str) -> tuple[float, int]:
        times, size = [], 0
        for _ in range(7):
            started = time.perf_counter()
            with urllib.request.urlopen(server.address + path, timeout=120) as response:
                size = len(response.read())
            times.append(time.perf_counter() - started)
        return statistics.median(times), size

    first = get("/ui/assets/hourly")  # the server's own first read is cold: measured above
    page, size = get("/ui/assets/hourly")
    data, data_size = get("/ui/api/assets/hourly/buckets")
    buckets = json.loads(
        urllib.request.urlopen(server.address + "/ui/api/assets/hourly/buckets").read()
    )
    one = buckets["buckets"][len(buckets["buckets"]) // 2]
    zoom, _ = get(f"/ui/assets/hourly?lo={one['lo']}&hi={one['hi']}")
    graph, _ = get("/ui/")
    append_commit(lake, count)  # a new table version: applied to the open state, states redone
    started = time.perf_counter()
    urllib.request.urlopen(server.address + "/ui/assets/hourly", timeout=120).read()
    after_commit = time.perf_counter() - started
    paint = browser_paint(server.address + "/ui/assets/hourly", screenshot)
    server.close()
    return {
        "count": count, "build": built.seconds, "load": load.seconds, "cold": cold.seconds,
        "first": first[0], "page": page, "size": size, "data": data, "data_size": data_size,
        "unit": buckets["unit"], "cells": len(buckets["buckets"]), "zoom": zoom, "graph": graph,
        "after_commit": after_commit,
        "paint": paint, "rss": peak_rss_mib(),
    }  # fmt: skip


def browser_paint(url: str, screenshot: str | None) -> float | None:
    """Seconds from navigation to the first contentful paint in headless chromium (to the load
    event where chromium reports no paint entry; None when chromium is not installed)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return None
    from selenium import webdriver  # test extra
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1300,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)  # warm the browser's own start
        paints = []
        for _ in range(3):
            driver.get("about:blank")
            driver.get(url)
            fcp = driver.execute_script(
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "const n = performance.getEntriesByType('navigation')[0];"
                "return p ? p.startTime : (n ? n.loadEventEnd : null);"
            )
            if fcp:
                paints.append(fcp / 1000)
        if screenshot:
            driver.save_screenshot(screenshot)
        return statistics.median(paints) if paints else None
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 and 10,000; nothing recorded")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size
    parser.add_argument("--screenshot", help="save the largest asset page's screenshot here")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.screenshot)))
        return
    sizes = [100, 10_000] if args.quick else [100, 100_000, 1_000_000]
    rows = []
    for count in sizes:
        argv = [sys.executable, __file__, "--one", str(count)]
        if args.screenshot and count == sizes[-1]:
            argv += ["--screenshot", os.path.abspath(args.screenshot)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        ms = lambda s: f"{s * 1000:,.0f}" if s is not None else "n/a"  # noqa: E731
        rows.append((f"{r['count']:,}", f"{r['load']:.2f}", f"{r['cold']:.2f}", ms(r["page"]),
                     ms(r["data"]), ms(r["zoom"]), ms(r["graph"]), ms(r["after_commit"]),
                     f"{r['size'] / 1024:,.0f}",
                     f"{r['cells']} {r['unit']}s", ms(r["paint"]), f"{r['rss']:,.0f}"))  # fmt: skip
    body = table(
        ["partitions", "table log -> TableState s", "first read: log + states s (cold)",
         "asset page ms", "heatmap JSON ms", "zoom page ms", "graph page ms",
         "asset page after a new commit ms", "page KiB",
         "cells", "first paint ms", "peak RSS MiB"],
        rows,
    ) + (
        "\n\nServer times are medians of 7 requests over HTTP once the view is cached; `lakeflow ui` "
        "reads the lake on a background thread as it starts, so the cold read is paid before the "
        "first visitor when the server has been up that long. A new table version is applied to "
        "the open state (one commit file read) and the states and buckets are recomputed: the "
        "'after a new commit' column, one request. The log is written "
        "directly (see the script's docstring): 90% of the partitions published in commits of "
        "100,000 adds with lakeflow's metadata, 10% missing, 1% of the published with a failed "
        "unit event; the data files are not written."
    )  # fmt: skip
    record("Web UI: the asset page at 100 to 1,000,000 partitions", body, quick=args.quick)


if __name__ == "__main__":
    main()
