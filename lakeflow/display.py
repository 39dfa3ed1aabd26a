"""HTML for notebooks: escaped tables with each state coloured, and the views of a run's result,
a status, check results and a plan preview. `StatusFrame` and `CheckFrame` are polars
DataFrames (every method works, derived frames are plain ones) that show themselves this way.
Imports polars and the standard library only; every value shown passes through `html.escape`."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from lakeflow.plan.lineage import Lineage

__all__ = [
    "STYLE",
    "CheckFrame",
    "LineageView",
    "StatusFrame",
    "checks_html",
    "chip",
    "first_line",
    "lineage_html",
    "preview_html",
    "run_html",
    "status_html",
    "table_html",
]

# state -> (text colour, background): good green, waiting greys, bad red/purple/orange
COLOURS: dict[str, tuple[str, str]] = {
    "published": ("#1b5e20", "#e8f5e9"),
    "fresh": ("#1b5e20", "#e8f5e9"),
    "passed": ("#1b5e20", "#e8f5e9"),
    "succeeded": ("#1b5e20", "#e8f5e9"),
    "deleted": ("#455a64", "#eceff1"),
    "waiting": ("#455a64", "#eceff1"),
    "missing": ("#616161", "#f5f5f5"),
    "cancelled": ("#616161", "#f5f5f5"),
    "stale": ("#8a5300", "#fff4e5"),
    "code_changed": ("#8a5300", "#fff4e5"),
    "to_run": ("#0d47a1", "#e3f2fd"),
    "running": ("#0d47a1", "#e3f2fd"),
    "failed": ("#b71c1c", "#fdecea"),
    "error": ("#b71c1c", "#fdecea"),
    "check_failed": ("#880e4f", "#fce4ec"),
    "blocked": ("#bf360c", "#fff3e0"),
    "upstream_failed": ("#6d4c41", "#efebe9"),
    # a partition version in a lineage trace
    "lakeflow": ("#1b5e20", "#e8f5e9"),
    "outside": ("#0d47a1", "#e3f2fd"),
    "unknown": ("#616161", "#f5f5f5"),
}
STYLE = (
    "<style>"
    + "".join(f".lf-{state}{{color:{fg};background:{bg}}}" for state, (fg, bg) in COLOURS.items())
    + (
        ".lf-view table{border-collapse:collapse;margin:4px 0 8px 0;font-size:12px}"
        ".lf-view th,.lf-view td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
        ".lf-view td{white-space:nowrap}"
        ".lf-view td.lf-num{text-align:right;font-variant-numeric:tabular-nums}"
        ".lf-state{border-radius:3px;font-weight:600}"
        ".lf-chip{display:inline-block;padding:1px 6px;margin-right:4px;border-radius:8px}"
        ".lf-bar{display:flex;width:160px;height:10px;background:#f5f5f5}"
        ".lf-muted{color:#757575}"
        "</style>"
    )
)
_ROWS = 50  # rows a table shows before saying how many more there are


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def first_line(text: str | None, limit: int = 160) -> str:
    """The first line of an error, cut at `limit` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def chip(state: str, text: str) -> str:
    return f'<span class="lf-chip lf-state lf-{_e(state)}">{_e(text)}</span>'


def _cell(column: str, value: Any, states: Sequence[str]) -> str:
    if column in states and isinstance(value, int) and not isinstance(value, bool):
        marked = f' class="lf-num lf-state lf-{_e(column)}"' if value else ' class="lf-num"'
        return f"<td{marked}>{value}</td>"
    if column in ("status", "outcome", "kind") and isinstance(value, str) and value in COLOURS:
        return f'<td class="lf-state lf-{_e(value)}">{_e(value)}</td>'
    if isinstance(value, bool) or value is None:
        return f'<td class="lf-muted">{"" if value is None else _e(value)}</td>'
    if isinstance(value, int | float):
        text = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        return f'<td class="lf-num">{text}</td>'
    if isinstance(value, datetime):
        return f"<td>{_e(value.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
    return f"<td>{_e(first_line(str(value)))}</td>"


def table_html(
    frame: pl.DataFrame, *, states: Sequence[str] = (), limit: int = _ROWS, extra: Any = None
) -> str:
    """A frame as an HTML table; integer columns named after a state are coloured where not 0,
    `status` and `outcome` cells by their value. `extra(row) -> html` adds a last cell."""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    if extra is not None:
        head += "<th></th>"
    body = []
    for row in frame.head(limit).iter_rows(named=True):
        cells = "".join(_cell(c, v, states) for c, v in row.items())
        if extra is not None:
            cells += f"<td>{extra(row)}</td>"
        body.append(f"<tr>{cells}</tr>")
    more = ""
    if frame.height > limit:
        more = f'<p class="lf-muted">… and {frame.height - limit:,} more rows</p>'
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _view(*parts: str) -> str:
    return f'<div class="lf-view">{STYLE}{"".join(parts)}</div>'


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d} min"


# -- a run's result ----------------------------------------------------------------------------
def run_html(
    *,
    run_id: str,
    status: str,
    seconds: float | None,
    units: pl.DataFrame,
    failures: pl.DataFrame,
    counts: Mapping[str, int],
) -> str:
    """The run's status, counts per outcome, per asset its outcomes, rows and time, its
    failures with their first error line, and every unit folded under a <details>."""
    chips = " ".join(chip(o, f"{n:,} {o}") for o, n in counts.items()) or "nothing to do"
    head = (
        f"<p><b>run {_e(run_id)}</b> {chip(status, status)} in {_e(_seconds(seconds))}"
        f"<br>{chips}</p>"
    )
    per_asset = _per_asset(units, list(counts))
    parts = [head, table_html(per_asset, states=list(counts))] if per_asset.height else [head]
    if failures.height:
        shown = failures.head(_ROWS).select(
            "asset", "partition", "outcome", "attempts",
            pl.col("error").map_elements(first_line, return_dtype=pl.String).alias("error"),
        )  # fmt: skip
        parts += [f"<p><b>Failures</b> ({failures.height:,})</p>", table_html(shown)]
        if failures.height > _ROWS:
            parts.append(f'<p class="lf-muted">… and {failures.height - _ROWS:,} more</p>')
    if units.height:
        parts.append(
            f"<details><summary>all {units.height:,} units</summary>"
            f"{table_html(units, limit=200)}</details>"
        )
    return _view(*parts)


def _per_asset(units: pl.DataFrame, outcomes: list[str]) -> pl.DataFrame:
    if units.is_empty():
        return units
    return (
        units.group_by("asset", maintain_order=True)
        .agg(
            *[(pl.col("outcome") == o).sum().cast(pl.Int64).alias(o) for o in outcomes],
            pl.col("rows").sum().alias("rows"),
            pl.col("seconds").sum().round(2).alias("seconds"),
            pl.col("seconds").max().round(2).alias("slowest"),
        )
        .with_columns(pl.col(outcomes).cast(pl.Int64))
    )


# -- status and checks -------------------------------------------------------------------------
STATES = (
    "published", "stale", "failed", "check_failed", "blocked", "upstream_failed", "missing",
    "deleted",
)  # fmt: skip


BAR = {  # fills of the bar of an asset's partitions by state
    "published": "#43a047", "stale": "#fb8c00", "failed": "#e53935", "check_failed": "#d81b60",
    "blocked": "#f4511e", "upstream_failed": "#8d6e63", "missing": "#e0e0e0", "deleted": "#b0bec5",
}  # fmt: skip


def _health_bar(row: Mapping[str, Any]) -> str:
    """A bar of the asset's partitions by state, in proportion."""
    total = int(row.get("partitions") or 0)
    if not total:
        return ""
    segments = "".join(
        f'<span class="lf-{s}" style="width:{100 * int(row[s]) / total:.2f}%;'
        f'background:{BAR[s]}" title="{int(row[s]):,} {s}"></span>'
        for s in STATES
        if row.get(s)
    )
    return f'<span class="lf-bar">{segments}</span>'


def status_html(frame: pl.DataFrame) -> str:
    if "asset" not in frame.columns or "partitions" not in frame.columns:
        return _view(table_html(frame))
    bad = {s: int(frame[s].sum()) for s in STATES[2:7] if s in frame.columns}
    summary = ", ".join(f"{n:,} {s}" for s, n in bad.items() if n) or "nothing failed or missing"
    legend = " ".join(chip(s, s) for s in STATES if s in frame.columns)
    return _view(
        f"<p><b>{frame.height} assets</b>: {_e(summary)}</p>",
        table_html(frame, states=[*STATES, "to_run", "code_changed"], extra=_health_bar),
        f"<p>{legend}</p>",
    )


def checks_html(frame: pl.DataFrame) -> str:
    if "status" not in frame.columns:
        return _view(table_html(frame))
    counts = dict(frame.group_by("status").len().sort("status").iter_rows())
    chips = " ".join(chip(s, f"{n:,} {s}") for s, n in counts.items()) or "no check results"
    first = ["asset", "partition", "check", "severity", "status", "failing", "rows", "message"]
    order = [c for c in first if c in frame.columns]
    order += [c for c in frame.columns if c not in (*order, "run_id", "scope")]
    return _view(f"<p><b>check results</b>: {chips}</p>", table_html(frame.select(order)))


class StatusFrame(pl.DataFrame):
    """`lf.status(...)`: a polars DataFrame (one row per asset) shown in a notebook with each
    state's count coloured and a bar of the asset's partitions by state."""

    def _repr_html_(self, **kwargs: Any) -> str:
        return status_html(pl.DataFrame(self))


class CheckFrame(pl.DataFrame):
    """`lf.check_results(...)`: a polars DataFrame shown with each status coloured."""

    def _repr_html_(self, **kwargs: Any) -> str:
        return checks_html(pl.DataFrame(self))


# -- a plan preview ----------------------------------------------------------------------------
def preview_html(
    *,
    units: Mapping[str, int],
    fresh: Mapping[str, int],
    missing_inputs: int,
    first: Iterable[tuple[str, str]],
) -> str:
    total = sum(units.values())
    rows = pl.DataFrame(
        {
            "asset": list(units) + [a for a in fresh if a not in units],
            "to_run": [int(n) for n in units.values()] + [0 for a in fresh if a not in units],
        },
        schema={"asset": pl.String, "to_run": pl.Int64},
    ).with_columns(
        pl.col("asset").replace_strict(dict(fresh), default=0, return_dtype=pl.Int64).alias("fresh")
    )
    parts = [
        f"<p><b>{total:,}</b> units to run, <b>{sum(fresh.values()):,}</b> already fresh</p>",
        table_html(rows, states=["to_run", "fresh"]),
    ]
    if missing_inputs:
        parts.append(
            f"<p>{chip('failed', f'{missing_inputs:,} units would fail')} an input partition "
            "is not materialized</p>"
        )
    first = list(first)
    if first:
        names = ", ".join(_e(f"{a} {p}".strip()) for a, p in first)
        parts.append(f"<p>first units: {names}</p>")
    return _view(*parts)


# -- a lineage trace ---------------------------------------------------------------------------
def lineage_html(trace: Lineage) -> str:
    """The trace as a table, one row per partition version, indented by depth."""
    rows = []
    for depth, node in trace.root.walk():
        unit = node.unit
        where = f"{unit.asset} {unit.partition or '(unpartitioned)'}"
        pad = f'style="padding-left:{8 + 18 * depth}px"'
        mark = "└ " if depth else ""
        version = f"v{unit.version}" if unit.version is not None else ""
        built = (
            datetime.fromtimestamp(unit.timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if unit.timestamp_ms
            else ""
        )
        cells = [
            f"<td {pad}>{_e(mark + where)}{' <i>(see above)</i>' if node.repeated else ''}</td>",
            f'<td class="lf-num">{_e(version)}</td>',
            f'<td class="lf-state lf-{_e(unit.kind)}">{_e(unit.kind)}</td>',
            f"<td>{_e(node.via if depth else '')}</td>",
            f"<td>{_e(unit.run_id)}</td>",
            f"<td>{_e(unit.code_version)}</td>",
            f"<td>{_e(built)}</td>",
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("partition", "version", "kind", "via", "run", "code version", "built at")
    )
    root = trace.root.unit
    verb = "was built from" if trace.direction == "upstream" else "fed"
    title = (
        f"<p><b>{_e(root.asset)} {_e(root.partition)}</b> {verb} "
        f"({_e(trace.direction)}, {len(rows) - 1} partition versions)</p>"
    )
    return _view(title, f"<table><tr>{head}</tr>{''.join(rows)}</table>")


class LineageView(Lineage):
    """`lf.lineage(...)`: a `Lineage` that a notebook shows as an indented table."""

    __slots__ = ()

    @classmethod
    def of(cls, found: Lineage) -> LineageView:
        return cls(root=found.root, direction=found.direction)

    def _repr_html_(self) -> str:
        return lineage_html(self)
