"""What a notebook user sees: the HTML of a run's result, a status, check results, a plan
preview and a pipeline's graph; and `pipelines/example.ipynb` executed in a real Jupyter kernel
(nbclient + ipykernel) with its outputs asserted."""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser

import polars as pl
import pytest

import lakeflow as lf
from tests.conftest import ROOT
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


# -- the example notebook, in a real kernel ---------------------------------------------------
NOISE = ("Missing packages", "RayDeprecationWarning", "ipywidgets", "IProgress", "Traceback")


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel spec running this venv's python (whatever kernels the machine has installed)."""
    spec = tmp_path / "jupyter" / "kernels" / "lakeflow-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "lakeflow test", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("LAKEFLOW_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    return "lakeflow-test"


def _outputs(cell) -> tuple[str, str, list[str]]:
    """(all text/html, all text/plain and streams, output types) of a cell."""
    htmls, texts, kinds = [], [], []
    for out in cell.get("outputs", []):
        kinds.append(out["output_type"])
        data = out.get("data", {})
        htmls.append(data.get("text/html", ""))
        texts.append(data.get("text/plain", "") + out.get("text", ""))
        texts.append("\n".join(out.get("traceback", [])))
    return "".join(htmls), "".join(texts), kinds


def test_the_example_notebook_runs_and_shows_tables_and_progress(kernel_name):
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "pipelines" / "example.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=240,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    finally:  # a kernel left behind (a failed cell, a timeout) is shut down, then killed
        if client.km is not None and client.km.has_kernel:
            client.km.shutdown_kernel(now=False)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = [_outputs(c) for c in code]
    for (_html, text, kinds), cell in zip(outputs, code, strict=True):
        assert "error" not in kinds, (cell.source, text)
        for noise in NOISE:
            assert noise not in text, (noise, cell.source, text)
    graph, run, status, checks, lineage, preview, _ = outputs
    assert "<svg" in graph[0] and "raw_flights" in graph[0]
    # the progress line, updated in place to its last state: every unit done
    (line,) = re.findall(r"run \S+: (\d+)/(\d+) units done, 0 failed", run[1])
    assert line[0] == line[1] == "9"
    assert run[2].count("display_data") == 1  # one line, not one output per update
    page = Page(run[0])
    assert "table" in page.tags and "succeeded" in page.text
    assert re.search(r"\b9 published\b", page.words) and re.search(r"\b1 waiting\b", page.words)
    page = Page(status[0])
    assert "table" in page.tags and "monthly_delays" in page.text
    assert "lf-state lf-published" in status[0]
    assert "table" in Page(checks[0]).tags and "passed" in checks[0]
    page = Page(lineage[0])
    assert "table" in page.tags and "raw_flights 2013-01-02" in page.words
    assert "units to run" in Page(preview[0]).words


def test_a_lineage_trace_shows_its_tree_of_partition_versions(lake):
    from tests.pipelines import PIPELINE

    pipeline = PIPELINE.with_lake(lake)
    done = lf.materialize(
        pipeline, select="events,spend,spend_3d", partitions="2024-01-01..2024-01-03",
        executor="local",
    )  # fmt: skip
    found = pipeline.lineage("spend_3d", "2024-01-03")
    assert isinstance(found, lf.Lineage)
    html = found._repr_html_()
    page = Page(html)
    assert "table" in page.tags
    rows = found.rows()
    assert html.count("<tr>") == rows.height + 1  # a header, then one row per node
    for asset, partition in rows.select("asset", "partition").iter_rows():
        assert f"{asset} {partition}" in page.words
    assert done.run_id in page.words and "lookback(3)" in page.words
    assert re.search(r'class="[^"]*lf-state lf-lakeflow"', html)
    assert "upstream" in page.words  # which way it goes
