"""The bodies of the web UI's partition, runs and run pages: what the event log and the table's
state say about one partition (its versions, the runs that built or failed it, checks with
failing examples and quarantine, errors with tracebacks, captured logs), and runs with their
per-asset counts. Pure reads of a `LakeView`; HTML escaped here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import polars as pl

from lakeflow.define.partitions import describe_stamp
from lakeflow.lake.events import LOGS, event_detail, read_logs
from lakeflow.plan.lineage import Lineage, LineageNode
from lakeflow.plan.status import check_frame
from lakeflow.serve.ui.model import STATES, LakeView
from lakeflow.serve.ui.pages import PREFIX, badge, e, partition_url, table

__all__ = ["lineage_body", "lineage_url", "partition_body", "run_body", "runs_body"]


def partition_body(view: LakeView, name: str, key: str) -> str:
    """A partition: its state, what built it, its versions, checks, errors and logs."""
    codes = view.states()[name]
    parts = view.pipeline[name].partitions
    index = int(parts.indices([key])[0]) if parts.is_partitioned else 0
    state = STATES[int(codes[index])]
    tables = view.table(name)
    with tables.lock:  # another request's refresh may be applying a commit to it
        info = tables.published.get(key)
        files = dict(tables.files.get(key, {}))
    out = [f'<p class="meta">{badge(state)} asset <a href="{PREFIX}/assets/{e(name)}">{e(name)}</a>'
           f", table version {tables.version}, last touched at version "
           f"{tables.touched.get(key, '-')}, {len(files)} files, {sum(files.values()):,} bytes</p>",
           f'<p>lineage: <a class="lineage" href="{lineage_url(name, key)}">what it read</a> · '
           f'<a class="lineage-down" href="{lineage_url(name, key)}?downstream=1">what it fed</a></p>']  # fmt: skip
    if info is not None:
        upstream = {u: v for u, v in info.inputs.items() if not u.startswith("@")}  # no stamp
        ins = ", ".join(f"{u}@v{v}" for u, v in sorted(upstream.items())) or "none"
        if len(upstream) < len(info.inputs):
            ins += f"; the file as {describe_stamp(info.inputs)}"
        built = datetime.fromtimestamp(info.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
        out.append(
            f"<h2>built by</h2><p>run {_run_link(info.run_id)}, code version <code>{e(info.code_version)}</code>, "
            f"version {info.version} at {built}; inputs read: {e(ins)}</p>"
        )
    events = view.events()
    mine = events.filter((pl.col("asset") == name) & (pl.col("partition").fill_null("") == key))
    versions = mine.filter(pl.col("kind").is_in(["unit_published", "unit_deleted"]))
    out.append("<h2>versions</h2>" + table(
        ["version", "kind", "run", "rows", "bytes", "seconds", "at", "lineage"],
        [(v, k.removeprefix("unit_"), _run_link(r), rows, b,
          f"{s:.2f}" if s is not None else "", e(ts),
          f'<a href="{lineage_url(name, key)}?version={v}">read</a>' if v is not None else "")
         for v, k, r, rows, b, s, ts in versions.reverse().select(
             "version", "kind", "run_id", "rows", "bytes", "seconds", "ts").iter_rows()],
        raw=True, cls="versions",
    ))  # fmt: skip
    outcomes = (
        mine.filter(pl.col("kind").str.starts_with("unit_") & (pl.col("kind") != "unit_started"))
        .group_by("run_id", maintain_order=True)
        .last()
        .reverse()
        .head(20)
    )
    out.append("<h2>runs</h2>" + table(
        ["run", "outcome", "attempt", "at", "message"],
        [(_run_link(r), e(k.removeprefix("unit_")), e(a), e(ts), e(m))
         for r, k, a, ts, m in outcomes.select("run_id", "kind", "attempt", "ts", "message").iter_rows()],
        raw=True, cls="unit-runs",
    ))  # fmt: skip
    checks = check_frame(mine.filter(pl.col("kind").is_in(["check_result", "unit_check_failed"])))
    if len(checks):
        out.append("<h2>checks</h2>" + table(
            ["check", "severity", "status", "failing", "message", "quarantine", "run"],
            [(*(e(v) for v in row[:-1]), _run_link(row[-1])) for row in checks.reverse().select(
                "check", "severity", "status", "failing", "message", "quarantine", "run_id"
            ).iter_rows()],
            raw=True, cls="checks",
        ))  # fmt: skip
    failures = mine.filter(
        pl.col("kind").is_in(["unit_failed", "unit_upstream_failed", "unit_blocked"])
    )
    for kind, run_id, attempt, message, detail in (
        failures.reverse()
        .head(5)
        .select("kind", "run_id", "attempt", "message", "detail")
        .iter_rows()
    ):
        tb = event_detail(detail).get("traceback") or ""
        out.append(
            f"<h2>{e(kind.removeprefix('unit_').replace('_', ' '))} in run {_run_link(run_id)}"
            f'{f" (attempt {attempt})" if attempt else ""}</h2><p class="error">{e(message)}</p>'
            + (f'<pre class="traceback">{e(tb)}</pre>' if tb else "")
        )
    logged = mine.filter(pl.col("kind") == LOGS)["run_id"].to_list()
    if logged:  # the text is in the logs table; the event log says which run has some
        run_id = logged[-1]
        found = read_logs(view.lake, run_id=run_id, asset=name, partition=key)
        if not found.is_empty():
            attempt, text = found.select("attempt", "logs").row(-1)
            out.append(
                f"<h2>logs (run {_run_link(run_id)}, attempt {e(attempt)})</h2>"
                f'<pre class="logs">{e(text)}</pre>'
            )
    return "".join(out)


def _run_link(run_id: str | None) -> str:
    return f'<a class="run" href="{PREFIX}/runs/{e(run_id)}">{e(run_id)}</a>' if run_id else ""


def _per_asset(events: pl.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """run -> asset -> latest unit outcome -> partitions."""
    units = events.filter(
        pl.col("kind").str.starts_with("unit_") & (pl.col("kind") != "unit_retry")
    )
    last = units.group_by("run_id", "asset", "partition", maintain_order=True).agg(
        pl.col("kind").last()
    )
    grouped = last.group_by("run_id", "asset", "kind").len()
    out: dict[str, dict[str, dict[str, int]]] = {}
    for run_id, asset, kind, n in grouped.iter_rows():
        out.setdefault(run_id, {}).setdefault(asset, {})[kind.removeprefix("unit_")] = n
    return out


def _summary(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(
        f"{a}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
        for a, c in sorted(counts.items())
    )


def runs_body(view: LakeView) -> str:
    events = view.events()
    runs = view.runs().head(200)
    per_asset = _per_asset(events) if not events.is_empty() else {}
    rows = []
    for run_id, origin, ts, detail, status in runs.select(
        "run_id", "origin", "ts", "detail", "status"
    ).iter_rows():
        d = event_detail(detail)
        rows.append((
            f'<a class="run" href="{PREFIX}/runs/{e(run_id)}">{e(run_id)}</a>', e(d.get("kind", "materialize")),
            e(origin), e(ts), e(",".join(d.get("select") or [])), e(d.get("partitions") or "all"),
            e(d.get("units")), _status_badge(status),
            e(_summary(per_asset.get(run_id, {}))),
        ))  # fmt: skip
    return table(
        ["run", "kind", "origin", "requested", "select", "partitions", "units", "status", "per asset"],
        rows, raw=True, cls="runs",
    )  # fmt: skip


def _status_badge(status: str) -> str:
    """A run's status, coloured: running, succeeded (as fresh), anything else (as failed)."""
    colour = (
        "running"
        if status == "running"
        else "fresh"
        if status.startswith("succeeded")
        else "failed"
    )
    return f'<span class="badge s-{colour}">{e(status)}</span>'


def run_body(view: LakeView, info: dict[str, Any], writable: bool) -> str:
    run_id = info["run_id"]
    per_asset = _per_asset(view.events().filter(pl.col("run_id") == run_id)).get(run_id, {})
    kinds = sorted({k for c in per_asset.values() for k in c})
    rows = [(a, *(c.get(k, 0) for k in kinds)) for a, c in sorted(per_asset.items())]
    buttons = ""
    if writable:
        buttons = (
            f'<p><button class="write" data-post="{PREFIX}/api/runs/{e(run_id)}/cancel">cancel</button> '
            f'<button class="write" data-post="{PREFIX}/api/runs/{e(run_id)}/resume">resume</button>'
            ' <span id="result" role="status"></span></p>'
        )
    failures = "".join(
        f"<li>{e(a)}: {f['failed']} failed: " + e("; ".join(f["first_errors"])) + "</li>"
        for a, f in info.get("failures", {}).items()
    )
    live = f' data-stream="{PREFIX}/runs/{e(run_id)}/stream"' if info["status"] == "running" else ""
    return (
        f'<div id="progress"{live}><p>status <b id="status">{e(info["status"])}</b> · '
        f'<span id="published">{info["published"]}</span> of <span id="total">{info["total"]}</span>'
        f' published · <span id="failed">{info.get("failed", 0)}</span> failed · kind '
        f"{e(info['kind'])} · select {e(','.join(info.get('select') or []))} · partitions "
        f"{e(info.get('partitions') or 'all')}</p></div>{buttons}"
        + table(["asset", *kinds], rows, cls="per-asset")
        + (f"<h2>failures</h2><ul>{failures}</ul>" if failures else "")
    )


def lineage_body(lineage: Lineage, *, asset: str, key: str) -> str:
    """A lineage trace as nested lists: each partition version with its kind, run and code
    version, a link to its page and to its own lineage."""
    other = "upstream" if lineage.direction == "downstream" else "downstream"
    flip = "" if other == "upstream" else "?downstream=1"
    head = (
        f'<p class="meta">{e(lineage.direction)}: what {e(asset)} {e(key)} '
        f"{'read' if lineage.direction == 'upstream' else 'fed'}, recursively, from the commits' "
        f'recorded inputs · <a class="flip" href="{lineage_url(asset, key)}{flip}">{other}</a></p>'
    )
    return head + '<ul class="lineage">' + _lineage_node(lineage.root, lineage.direction) + "</ul>"


def lineage_url(asset: str, key: str) -> str:
    return f"{PREFIX}/lineage/{quote(asset)}/{quote(key or '-', safe='')}"


def _lineage_node(node: LineageNode, direction: str) -> str:
    unit = node.unit
    what = f"v{unit.version}" if unit.version is not None else unit.kind
    built = (
        f" run {_run_link(unit.run_id)} code <code>{e(unit.code_version)}</code>"
        if unit.kind == "lakeflow"
        else f" ({e(unit.kind)})"
    )
    via = f' <span class="via">[{e(node.via)}]</span>' if node.via else ""
    more = " (see above)" if node.repeated else ""
    link = (
        f'<a class="unit" data-asset="{e(unit.asset)}" href="{partition_url(unit.asset, unit.partition)}">'
        f"{e(unit.asset)} {e(unit.partition or '(unpartitioned)')}</a>"
    )
    children = "".join(_lineage_node(edge, direction) for edge in node.edges)
    return (
        f"<li>{link} @ {e(what)}{built}{via}{more}"
        + (f"<ul>{children}</ul>" if children else "")
        + "</li>"
    )
