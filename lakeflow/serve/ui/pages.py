"""The web UI's HTML: plain server-rendered pages with inline SVG (the asset graph, the partition
heatmap), one bundled stylesheet and one small script. Pure functions of the values the routes
read; every value is escaped here. Imports only the UI's model.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from lakeflow.serve.ui.model import STATES, Bucket, asset_health

__all__ = [
    "asset_page",
    "graph_svg",
    "heatmap_svg",
    "layout",
    "materialize_page",
    "page",
    "partition_url",
    "table",
]

PREFIX = "/ui"


def e(value: Any) -> str:
    return escape("" if value is None else str(value))


def partition_url(asset: str, key: str) -> str:
    return f"{PREFIX}/assets/{quote(asset)}/partitions/{quote(key or '-', safe='')}"


def page(title: str, body: str, *, writable: bool) -> str:
    """A whole page: the navigation, the token box when writes are possible, the body."""
    token = (
        '<label class="token">token <input id="token" type="password" autocomplete="off" '
        'placeholder="Bearer token for writes"></label>'
        if writable
        else '<span class="token readonly" title="start lakeflow ui with --token to allow writes">'
        "read-only</span>"
    )
    nav = "".join(
        f'<a href="{PREFIX}{href}">{label}</a>'
        for href, label in (
            ("/", "assets"),
            ("/runs", "runs"),
            ("/triggers", "triggers"),
            ("/materialize", "materialize"),
        )
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} · lakeflow'
        f'</title><link rel="stylesheet" href="{PREFIX}/static/ui.css">'
        f'<script defer src="{PREFIX}/static/ui.js"></script></head><body>'
        f"<header><b>lakeflow</b><nav>{nav}</nav>{token}</header>"
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False,
          cls: str = "") -> str:  # fmt: skip
    """An HTML table; cells are escaped unless `raw` (then they are already HTML)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def badge(state: str) -> str:
    return f'<span class="badge s-{e(state)}">{e(state.replace("_", " "))}</span>'


# -- the asset graph ---------------------------------------------------------------------------
def layout(names: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """asset -> its layer: 0 for assets that read nothing, else one more than its deepest input."""
    layer: dict[str, int] = {}
    for name in names:  # topological order
        ups = [layer[u] for u in upstream[name] if u in layer]
        layer[name] = max(ups) + 1 if ups else 0
    return layer


def graph_svg(
    names: Sequence[str],
    upstream: Mapping[str, Sequence[str]],
    counts: Mapping[str, Mapping[str, int]],
) -> str:
    """The lineage in layers, left to right; each box coloured by the asset's health, with its
    partition counts, and a link to its page."""
    layers = layout(names, upstream)
    width, height, gap_x, gap_y = 190, 52, 70, 22
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for name in names:
        column = layers[name]
        row = rows.get(column, 0)
        rows[column] = row + 1
        where[name] = (20 + column * (width + gap_x), 20 + row * (height + gap_y))
    total_w = 40 + (max(layers.values(), default=0) + 1) * (width + gap_x)
    total_h = 40 + max(rows.values(), default=1) * (height + gap_y)
    edges = []
    for name in names:
        x2, y2 = where[name]
        for up in upstream[name]:
            if up in where:
                x1, y1 = where[up]
                edges.append(
                    f'<path class="edge" d="M{x1 + width},{y1 + height // 2} C{x1 + width + 35},'
                    f'{y1 + height // 2} {x2 - 35},{y2 + height // 2} {x2},{y2 + height // 2}"/>'
                )
    nodes = []
    for name in names:
        x, y = where[name]
        c = counts.get(name, {})
        health = asset_health(c)
        total = sum(c.values())
        summary = f"{c.get('fresh', 0)}/{total} fresh"
        extra = ", ".join(f"{c[s]} {s.replace('_', ' ')}" for s in STATES[1:] if c.get(s))
        nodes.append(
            f'<a href="{PREFIX}/assets/{quote(name)}" class="node" data-asset="{e(name)}" '
            f'data-health="{health}"><title>{e(name)}: {health}; {e(extra or summary)}</title>'
            f'<rect class="h-{health}" x="{x}" y="{y}" width="{width}" height="{height}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + 21}" class="name">{e(name)}</text>'
            f'<text x="{x + 10}" y="{y + 40}" class="sub">{e(summary)}</text></a>'
        )
    return (
        f'<svg class="graph" width="{total_w}" height="{total_h}" viewBox="0 0 {total_w} {total_h}"'
        f' role="img">{"".join(edges)}{"".join(nodes)}</svg>'
    )


# -- the heatmap -------------------------------------------------------------------------------
_SEVERITY = ("running", "failed", "check_failed", "blocked", "stale", "missing", "deleted", "fresh")


def cell_state(counts: Mapping[str, int]) -> str:
    """The colour of a bucket: its worst state present ("empty" when it counts nothing)."""
    for state in _SEVERITY:
        if counts.get(state, 0):
            return state
    return "empty"


def heatmap_svg(asset: str, unit: str, cells: Sequence[Bucket], *, state: str | None) -> str:
    """Buckets as cells: a calendar (weeks x weekdays) for days, rows of 20 otherwise. A cell of
    one partition links to its page, a wider one zooms into its range."""
    size, gap = 16, 3
    calendar = unit == "day" or (unit == "partition" and _looks_daily(cells))
    out = []
    offset = _weekday(cells[0].first) if calendar and cells else 0
    for i, cell in enumerate(cells):
        slot = i + offset
        col, row = (slot // 7, slot % 7) if calendar else (slot % 25, slot // 25)
        x, y = col * (size + gap), row * (size + gap)
        colour = cell_state(cell.counts)
        filt = f"&state={quote(state)}" if state else ""
        href = (
            partition_url(asset, cell.first)
            if cell.hi - cell.lo == 1
            else f"{PREFIX}/assets/{quote(asset)}?lo={cell.lo}&hi={cell.hi}{filt}"
        )
        tip = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in cell.counts.items())
        out.append(
            f'<a href="{href}" class="cell" data-lo="{cell.lo}" data-hi="{cell.hi}" '
            f'data-state="{colour}"><title>{e(cell.label)}: {e(tip or "none")}</title>'
            f"{_stack(cell.counts, colour, x, y, size)}</a>"
        )
    slots = len(cells) + offset
    cols = -(-slots // 7) if calendar else min(slots, 25)
    rows = 7 if calendar else -(-slots // 25)
    w, h = max(cols, 1) * (size + gap), max(rows, 1) * (size + gap)
    return (
        f'<svg class="heatmap" width="{w}" height="{h}" viewBox="0 0 {w} {h}">{"".join(out)}</svg>'
    )


def _stack(counts: Mapping[str, int], colour: str, x: int, y: int, size: int) -> str:
    """One cell: its worst state's colour, or for a bucket of mixed states a bar per state,
    its height the state's share (worst on top), so 1% failed reads as a sliver, not a wall."""
    total = sum(counts.values())
    shown = [s for s in _SEVERITY if counts.get(s, 0)]
    if len(shown) <= 1 or total == 0:
        return f'<rect class="s-{colour}" x="{x}" y="{y}" width="{size}" height="{size}" rx="2"/>'
    out, top = (
        [f'<rect class="s-empty" x="{x}" y="{y}" width="{size}" height="{size}" rx="2"/>'],
        0.0,
    )
    for state in shown:
        height = max(1.5, size * counts[state] / total)
        height = min(height, size - top)
        out.append(
            f'<rect class="s-{state}" x="{x}" y="{y + top:.1f}" width="{size}" height="{height:.1f}"/>'
        )
        top += height
    return "".join(out)


def _looks_daily(cells: Sequence[Bucket]) -> bool:
    return bool(cells) and len(cells[0].first) == 10 and cells[0].first[4] == "-"


def _weekday(key: str) -> int:
    try:
        return dt.date.fromisoformat(key[:10]).weekday()
    except ValueError:
        return 0


def asset_page(
    *,
    asset: str,
    description: str,
    counts: Mapping[str, int],
    unit: str,
    cells: Sequence[Bucket],
    state: str | None,
    lo: int,
    hi: int,
    total: int,
    first_key: str,
    last_key: str,
) -> str:
    filters = " ".join(
        f'<a class="filter{" on" if state == s else ""}" href="{PREFIX}/assets/{quote(asset)}?'
        f'state={s}&lo={lo}&hi={hi}">{badge(s)} {counts.get(s, 0):,}</a>'
        for s in STATES
    )
    clear = (
        f' <a href="{PREFIX}/assets/{quote(asset)}?lo={lo}&hi={hi}">all states</a>' if state else ""
    )
    zoom = (
        f' · <a href="{PREFIX}/assets/{quote(asset)}">whole range</a>'
        if (lo, hi) != (0, total)
        else ""
    )
    health = asset_health(counts)
    return (
        f'<p class="meta">{badge(health)} {e(description)} · {total:,} partitions</p>'
        f'<p class="filters">{filters}{clear}</p>'
        f'<p class="range">showing {e(first_key)} .. {e(last_key)} ({hi - lo:,} partitions) in '
        f"{len(cells)} {e(unit)} buckets{zoom}</p>"
        f'<div id="heatmap" data-asset="{e(asset)}">{heatmap_svg(asset, unit, cells, state=state)}</div>'
        '<p class="legend">' + " ".join(badge(s) for s in STATES) + "</p>"
    )


def materialize_page(names: Sequence[str], *, writable: bool) -> str:
    options = "".join(f'<option value="{e(n)}">{e(n)}</option>' for n in names)
    note = (
        ""
        if writable
        else '<p class="error">This UI is read-only: start it with <code>--token</code> to run.</p>'
    )
    return (
        f'{note}<form id="materialize" data-action="{PREFIX}/api/materialize">'
        f'<label>select <select name="select" multiple size="{min(8, len(names))}">{options}'
        '</select></label><label>partitions <input name="partitions" '
        'placeholder="2024-01-01..2024-01-31, a key, or empty for all"></label>'
        '<label><input type="checkbox" name="force"> force (rerun fresh units)</label>'
        f'<button type="submit"{"" if writable else " disabled"}>materialize</button></form>'
        '<p id="result" role="status"></p>'
    )


def json_script(element_id: str, value: Any) -> str:
    """Data for the script, in a JSON block (closing tags escaped)."""
    text = json.dumps(value).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'
