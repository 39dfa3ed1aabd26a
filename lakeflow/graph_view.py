"""A pipeline's asset graph as a notebook shows it: inline SVG in layers (an asset is drawn right
of every asset it reads, a mapping other than identity labels its edge) and a table of the
assets with their partitions, inputs and checks. Pure: it reads the declarations only, never
the lake; every name and description passes through `html.escape`."""

from __future__ import annotations

import html

import polars as pl

from lakeflow.define.graph import Edge, Pipeline
from lakeflow.display import STYLE, table_html

__all__ = ["layers", "pipeline_html", "pipeline_svg"]

WIDTH, HEIGHT = 190, 46  # a node
GAP_X, GAP_Y = 70, 18  # between layers, between nodes of a layer
PLAIN = ("identity", "overlap", "all")  # mappings not worth a label


def _e(value: object) -> str:
    return html.escape(str(value))


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layers(pipeline: Pipeline) -> list[list[str]]:
    """Assets by depth (0: reads no other asset); in a layer, ordered by the mean row of what
    they read, which keeps most edges from crossing."""
    depth: dict[str, int] = {}
    for name in pipeline.assets:  # topological order: every upstream is placed first
        ups = [e.up for e in pipeline.upstream(name) if e.up != name]
        depth[name] = 1 + max((depth[u] for u in ups), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    row: dict[str, float] = {}
    for name in pipeline.assets:
        out[depth[name]].append(name)
    for level in out:
        level.sort(
            key=lambda n: (
                sum(row[e.up] for e in pipeline.upstream(n) if e.up in row)
                / max(1, sum(1 for e in pipeline.upstream(n) if e.up in row))
            )
        )
        row.update({n: float(i) for i, n in enumerate(level)})
    return out


def pipeline_svg(pipeline: Pipeline) -> str:
    placed = layers(pipeline)
    column = {name: col for col, level in enumerate(placed) for name in level}
    row = {name: r for level in placed for r, name in enumerate(level)}
    rows = max(len(level) for level in placed)
    lanes = _lanes(pipeline, placed, column, row)
    width = 20 + len(placed) * (WIDTH + GAP_X) - GAP_X
    rows = max([rows, *(lane + 1 for lane in lanes.values())])  # a lane below every node
    loops = any(e.up == n for n in pipeline.assets for e in pipeline.upstream(n))
    top = 30 if loops else 10  # room for a loop drawn over a node of the first row
    height = top + 10 + rows * (HEIGHT + GAP_Y) - GAP_Y
    at = {n: (_x(column[n]), _y(row[n], top)) for n in pipeline.assets}
    edges = [
        _edge(e, *at[e.up], *at[e.down], lanes, top)
        for name in pipeline.assets
        for e in pipeline.upstream(name)
    ]
    nodes = [_node(pipeline, name, *at[name]) for name in pipeline.assets]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">'
        '<defs><marker id="lf-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#78909c"/></marker>'
        f"</defs>{''.join(edges)}{''.join(nodes)}</svg>"
    )


def _x(col: int) -> float:
    return 10 + col * (WIDTH + GAP_X)


def _y(row: int, top: float = 10) -> float:
    return top + row * (HEIGHT + GAP_Y)


def _lanes(
    pipeline: Pipeline, placed: list[list[str]], column: dict[str, int], row: dict[str, int]
) -> dict[tuple[str, str], int]:
    """For an edge that skips layers, the row it runs along past them: its source's row when
    no node of the layers between sits there, else the first row below all of them."""
    out: dict[tuple[str, str], int] = {}
    for name in pipeline.assets:
        for edge in pipeline.upstream(name):
            between = placed[column[edge.up] + 1 : column[name]]
            if not between:
                continue
            below = max(len(level) for level in between)
            out[(edge.up, name)] = max(row[edge.up], below)
    return out


def _edge(
    edge: Edge,
    ux: float,
    uy: float,
    dx: float,
    dy: float,
    lanes: dict[tuple[str, str], int],
    top: float,
) -> str:
    mapping = edge.mapping.describe()
    dash = "" if edge.data else ' stroke-dasharray="4 3"'  # a dependency only, not read
    x1, y1, x2, y2 = ux + WIDTH, uy + HEIGHT / 2, dx, dy + HEIGHT / 2
    if edge.up == edge.down:  # builds on its own previous partition: a loop over the node
        x, y = dx + WIDTH / 2, dy
        path = f"M{x - 20:.0f},{y:.0f} C{x - 20:.0f},{y - 22:.0f} {x + 20:.0f},{y - 22:.0f} {x + 20:.0f},{y:.0f}"
        label_at = (x - 48, y - 6)
    elif (edge.up, edge.down) in lanes:  # past the layers between, along a free lane
        lane = _y(lanes[(edge.up, edge.down)], top) + HEIGHT / 2
        a, b = x1 + GAP_X / 2, x2 - GAP_X / 2
        path = (
            f"M{x1:.0f},{y1:.0f} C{a:.0f},{y1:.0f} {a:.0f},{lane:.0f} {x1 + GAP_X:.0f},{lane:.0f} "
            f"L{x2 - GAP_X:.0f},{lane:.0f} C{b:.0f},{lane:.0f} {b:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        )
        label_at = ((x1 + x2) / 2, lane - 4)
    else:
        middle = (x1 + x2) / 2
        path = f"M{x1:.0f},{y1:.0f} C{middle:.0f},{y1:.0f} {middle:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        label_at = (middle, (y1 + y2) / 2 - 4)
    label = ""
    if mapping not in PLAIN:
        label = (
            f'<text x="{label_at[0]:.0f}" y="{label_at[1]:.0f}" text-anchor="middle" '
            f'fill="#546e7a" font-size="10">{_e(_short(mapping, 18))}</text>'
        )
    return (
        f'<g class="lf-edge"><title>{_e(edge.up)} → {_e(edge.down)}: {_e(mapping)}</title>'
        f'<path d="{path}" fill="none" stroke="#78909c" stroke-width="1.4"{dash} '
        f'marker-end="url(#lf-arrow)"/>{label}</g>'
    )


def _node(pipeline: Pipeline, name: str, x: float, y: float) -> str:
    item = pipeline[name]
    fill, stroke, dash = (
        ("#eceff1", "#607d8b", ' stroke-dasharray="5 3"')
        if item.source
        else ("#e3f2fd", "#1e88e5", "")
    )
    detail = item.partitions.describe()
    if item.checks:
        detail += f" · {len(item.checks)} check" + ("s" if len(item.checks) > 1 else "")
    return (
        f'<g class="lf-node" transform="translate({x:.0f},{y:.0f})"><title>{_e(name)}</title>'
        f'<rect width="{WIDTH}" height="{HEIGHT}" rx="6" fill="{fill}" stroke="{stroke}"{dash}/>'
        f'<text x="8" y="18" font-weight="600">{_e(_short(name, 26))}</text>'
        f'<text x="8" y="35" fill="#546e7a" font-size="10">{_e(_short(detail, 34))}</text></g>'
    )


def _assets_table(pipeline: Pipeline) -> str:
    rows = []
    for name, item in pipeline.assets.items():
        reads = ", ".join(
            e.up + ("" if e.mapping.describe() in PLAIN else f" [{e.mapping.describe()}]")
            for e in pipeline.upstream(name)
        )
        rows.append({
            "asset": name,
            "partitions": item.partitions.describe(),
            "reads": "(source: written outside lakeflow)" if item.source else reads,
            "checks": ", ".join(getattr(c, "name", type(c).__name__) for c in item.checks),
            "code_version": item.code_version,
        })  # fmt: skip
    return table_html(pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String)))


def pipeline_html(pipeline: Pipeline) -> str:
    """The graph and the table of assets, with the pipeline's name and lake."""
    return (
        f'<div class="lf-view">{STYLE}<p><b>pipeline {_e(pipeline.name)}</b>: '
        f"{len(pipeline.assets)} assets, lake <code>{_e(pipeline.lake)}</code></p>"
        f"{pipeline_svg(pipeline)}{_assets_table(pipeline)}</div>"
    )
