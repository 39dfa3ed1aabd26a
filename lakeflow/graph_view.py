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
    where: dict[str, tuple[float, float]] = {}
    for col, level in enumerate(placed):
        for row, name in enumerate(level):
            where[name] = (10 + col * (WIDTH + GAP_X), 10 + row * (HEIGHT + GAP_Y))
    width = 20 + len(placed) * (WIDTH + GAP_X) - GAP_X
    height = 20 + max(len(level) for level in placed) * (HEIGHT + GAP_Y) - GAP_Y
    edges = [_edge(e, where) for name in pipeline.assets for e in pipeline.upstream(name)]
    nodes = [_node(pipeline, name, *where[name]) for name in pipeline.assets]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">'
        '<defs><marker id="lf-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#78909c"/></marker>'
        f"</defs>{''.join(edges)}{''.join(nodes)}</svg>"
    )


def _edge(edge: Edge, where: dict[str, tuple[float, float]]) -> str:
    mapping = edge.mapping.describe()
    dash = "" if edge.data else ' stroke-dasharray="4 3"'  # a dependency only, not read
    ux, uy = where[edge.up]
    dx, dy = where[edge.down]
    if edge.up == edge.down:  # builds on its own previous partition: a loop over the node
        x, y = dx + WIDTH / 2, dy
        path = f"M{x - 20:.0f},{y:.0f} C{x - 20:.0f},{y - 22:.0f} {x + 20:.0f},{y - 22:.0f} {x + 20:.0f},{y:.0f}"
        label_at = (x, y - 12)
    else:
        x1, y1, x2, y2 = ux + WIDTH, uy + HEIGHT / 2, dx, dy + HEIGHT / 2
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
