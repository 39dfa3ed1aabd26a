"""What a notebook user sees: the HTML of a run's result, a status, check results, a plan
preview and a pipeline's graph; and `pipelines/example.ipynb` executed in a real Jupyter kernel
(nbclient + ipykernel) with its outputs asserted."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import polars as pl

import lakeflow as lf
from tests.pipelines import GATED

DAYS = "2024-01-01..2024-01-03"


class Page(HTMLParser):
    """The tags and the text of an HTML fragment; fails on unbalanced tables."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self._open: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("table", "tr", "svg", "details"):
            self._open.append(tag)

    def handle_endtag(self, tag):
        if tag in ("table", "tr", "svg", "details"):
            assert self._open and self._open.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        if data.strip() and self.lasttag != "style":
            self.text.append(data.strip())

    @property
    def words(self) -> str:
        return " ".join(self.text)


def run(lake, select="*", **options):
    options.setdefault("executor", "local")
    return lf.materialize(GATED, select=select, partitions=DAYS, lake=lake, **options)


def test_a_run_result_shows_its_outcomes_failures_and_durations(lake, control):
    (control / "bad-orders-2024-01-02").touch()
    result = run(lake)
    page = Page(result._repr_html_())
    assert "table" in page.tags
    words = page.words
    assert result.run_id in words and "failed" in words  # the run's status
    counts = result.counts()
    assert counts["check_failed"] == 1 and counts["blocked"] >= 1
    for outcome, n in counts.items():  # each outcome with its count
        assert re.search(rf"\b{n}\s+{outcome}\b", words), (outcome, n, words)
    # the failure with its first error line, not the raw frame of every unit
    assert "orders" in words and "2024-01-02" in words
    assert "between" in words  # the failed check names itself in the error line
    assert re.search(r"\d+(\.\d+)?\s?s\b", words)  # a duration
    assert "Failures" in page.text and "details" in page.tags  # every unit folded away


def test_user_strings_are_escaped_in_the_html(lake):
    @lf.asset(partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-03"))
    def broken() -> pl.DataFrame:
        raise ValueError("<script>alert(1)</script> & more\nsecond line")

    result = lf.materialize([broken], lake=lake, executor="local")
    html = result._repr_html_()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "second line" not in html  # a failure shows its first line only


def test_status_is_still_a_frame_and_colours_each_state(lake, control):
    (control / "bad-orders-2024-01-02").touch()
    run(lake)
    frame = lf.status(GATED, lake=lake)
    assert isinstance(frame, pl.DataFrame)  # every existing caller keeps working
    rows = {r["asset"]: r for r in frame.iter_rows(named=True)}
    assert rows["orders"]["check_failed"] == 1 and rows["orders"]["published"] == 2
    assert frame.filter(pl.col("asset") == "orders").height == 1
    html = frame._repr_html_()
    page = Page(html)
    assert "table" in page.tags
    assert set(GATED.assets) <= set(page.text)
    # the state columns: a non-zero count of a bad state is marked as that state
    assert re.search(r'class="[^"]*lf-state lf-check_failed"[^>]*>\s*1\s*<', html), html
    assert re.search(r'class="[^"]*lf-state lf-published"[^>]*>\s*2\s*<', html)
    assert frame.to_dicts() == GATED.status(lake=lake).to_dicts()


def test_check_results_show_failures_and_quarantine(lake, control):
    (control / "bad-orders-2024-01-02").touch()
    run(lake, select="customers,orders")
    frame = lf.check_results(GATED, lake=lake, failed=True)
    assert isinstance(frame, pl.DataFrame) and frame.height == 1
    html = frame._repr_html_()
    page = Page(html)
    assert "table" in page.tags
    assert "2024-01-02" in page.words and "quarantine" in page.words
    assert re.search(r'class="[^"]*lf-state lf-failed"[^>]*>\s*failed\s*<', html)


def test_a_plan_preview_shows_counts_per_asset(lake):
    preview = lf.backfill(GATED, lake=lake, partitions=DAYS, dry_run=True)
    assert isinstance(preview, lf.PlanPreview)
    page = Page(preview._repr_html_())
    assert "table" in page.tags
    assert str(preview.total) in page.text
    for asset, n in preview.units.items():
        assert asset in page.text and str(n) in page.text
    assert preview.first and all(f"{a} {p}".strip() in page.words for a, p in preview.first)


def test_a_pipeline_draws_its_graph_in_layers():
    html = GATED._repr_html_()
    page = Page(html)
    assert "svg" in page.tags and "table" in page.tags
    for name in GATED.assets:
        assert name in page.text
    edges = sum(len(GATED.upstream(n)) for n in GATED.assets)
    assert html.count('class="lf-edge"') == edges
    # in layers: an asset is drawn right of every asset it reads
    xs = {
        m[2]: float(m[1])
        for m in re.finditer(
            r'<g class="lf-node" transform="translate\(([\d.]+),[\d.]+\)"><title>(\w+)', html
        )
    }
    assert set(xs) == set(GATED.assets)
    for name in GATED.assets:
        for edge in GATED.upstream(name):
            assert xs[edge.up] < xs[name], (edge.up, name)
