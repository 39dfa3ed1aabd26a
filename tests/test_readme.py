"""Every fenced python block of README.md runs, in order, in one namespace (as a reader pastes
them into one notebook), in a fresh directory. A block that needs what a test machine lacks (a
cluster, S3, a dbt project) says so with `<!-- readme-test: skip (why) -->` on the line before
its fence."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from benchmarks import readme_table
from tests.conftest import ROOT

SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]*)\)\s*-->")
FENCE = re.compile(r"^```python\n(?P<code>.*?)^```", re.S | re.M)
# blocks that are fragments in a section another branch is rewriting; strict: once it runs, the
# mark must go
FRAGMENTS = {"Quality gates"}
# the only blocks that may be skipped, with the heading they sit under (a cluster, S3, a dbt
# project on disk)
SKIPPED = {"Triggers: commits, schedules, files, HTTP", "Run on a cluster", "dbt projects"}


def _blocks() -> list[tuple[str, int, str, str | None]]:
    """(heading, position under it, code, why it is skipped or None) of each python block."""
    text = (ROOT / "README.md").read_text()
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        heading = re.findall(r"^## (.+)$", before, re.M)[-1]
        previous = before.rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.fullmatch(previous.strip())
        count = sum(1 for h, *_ in out if h == heading)
        out.append((heading, count, match.group("code"), skip.group("why") if skip else None))
    return out


BLOCKS = _blocks()


def test_only_blocks_that_need_a_cluster_s3_or_a_dbt_project_are_skipped():
    skipped = {heading for heading, _, _, why in BLOCKS if why is not None}
    assert skipped == SKIPPED
    assert len(BLOCKS) >= 5


def test_the_readme_blocks_run_on_a_fresh_lake(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README's lake is "./lake"
    namespace: dict[str, object] = {"__name__": "readme"}
    ran = []
    for heading, position, code, why in BLOCKS:
        if why is not None:
            continue
        where = f"README block {position + 1} under '{heading}'"
        if heading in FRAGMENTS:
            with pytest.raises(SyntaxError):
                compile(code, where, "exec")
            continue
        exec(compile(code, where, "exec"), namespace)
        ran.append(heading)
        if heading == "A pipeline":  # what the snippet promises: every unit published
            result = namespace["result"]
            assert result.ok, result
            assert result.counts() == {"published": 31 + 31 + 1}
            monthly = pl.read_delta(str(tmp_path / "lake" / "monthly"))
            # two AA flights a day in January; UA's flight has no dep_time: cleaned away
            assert monthly.to_dicts() == [{"carrier": "AA", "flights": 62, "month": "2013-01"}]
        if heading == "SQL assets":  # 31 days of the SQL asset and the month over them
            assert namespace["sql_result"].counts() == {"published": 31 + 1}
            month = pl.read_delta(str(tmp_path / "lake" / "carrier_month"))
            assert month.sort("carrier").rows() == [("AA", 62, "2013-01")]
        if heading == "In a notebook":  # what it shows there
            assert "<svg" in namespace["pipeline"]._repr_html_()
            assert "lf-state" in namespace["pipeline"].status()._repr_html_()
    assert ran == ["A pipeline", "SQL assets", "In a notebook", "Backfills"]
    assert not Path("lake").joinpath("_lakeflow", "quarantine").exists()


def test_the_benchmark_table_is_what_readme_table_generates_from_results():
    """README's benchmark figures come from RESULTS.md (`python benchmarks/readme_table.py`),
    each saying whether it is warm, one-shot or in-process; a hand edit, or a RESULTS.md entry
    the table was not regenerated after, fails here."""
    readme = (ROOT / "README.md").read_text()
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert readme_table.render(readme, results) == readme
    table = readme[readme.index(readme_table.BEGIN) : readme.index(readme_table.END)]
    for kind in ("| warm |", "| one-shot |", "| in-process |"):
        assert kind in table
    # the newest pipeline-shape entry is the one quoted
    newest = readme_table.latest(results, "bench_pipeline.py", "Pipeline shape: 3 assets x 365")
    assert newest is not None and f"{newest[1][0]['units/s']} units/s" in table


def test_a_benchmark_that_records_regenerates_the_readme_table(tmp_path, monkeypatch):
    """A benchmark run that appends to RESULTS.md rewrites README's table in the same step (a
    RESULTS.md entry committed without the table once failed CI): record a control-plane figure
    into copies of both files and the README copy quotes it."""
    from benchmarks import common

    readme, results = tmp_path / "README.md", tmp_path / "RESULTS.md"
    readme.write_text((ROOT / "README.md").read_text())
    results.write_text((ROOT / "benchmarks" / "RESULTS.md").read_text())
    monkeypatch.setattr(readme_table, "README", readme)
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(
        common, "command_line", lambda: "python benchmarks/bench_control_plane.py --sizes 7"
    )
    # the columns README's control-plane figure is made from
    body = common.table(["units", "lakeflow / Ray"], [[7, 0.5]])
    common.record("Control-plane cost: lakeflow units vs bare Ray tasks", body, quick=False)
    assert "| `bench_control_plane.py --sizes 7` |" in readme.read_text()
    assert readme_table.render(readme.read_text(), results.read_text()) == readme.read_text()
    # a quick run records nothing, README included
    before = readme.read_text()
    common.record("Control-plane cost: lakeflow units vs bare Ray tasks", body, quick=True)
    assert readme.read_text() == before
