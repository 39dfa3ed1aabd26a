import polars as pl
import pytest

import lakeflow as lf
from lakeflow.errors import DefinitionError, SelectionError

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-02-01")


@lf.asset(partitions=DAYS)
def orders() -> pl.DataFrame:
    return pl.DataFrame({"x": [1]})


@lf.asset(partitions=DAYS)
def customers() -> pl.DataFrame:
    return pl.DataFrame({"x": [1]})


@lf.asset(partitions=DAYS)
def enriched(orders: pl.LazyFrame, customers: pl.LazyFrame) -> pl.LazyFrame:
    return orders


@lf.asset(partitions=lf.MonthlyPartitions(start="2024-01", end="2024-02"))
def monthly(enriched: pl.LazyFrame) -> pl.LazyFrame:
    return enriched


@lf.asset
def report(monthly: pl.LazyFrame) -> pl.LazyFrame:
    return monthly


PIPELINE = lf.Pipeline([report, monthly, enriched, customers, orders])


def test_topological_order_whatever_the_order_given():
    order = list(PIPELINE.assets)
    assert (
        order.index("orders")
        < order.index("enriched")
        < order.index("monthly")
        < order.index("report")
    )


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("enriched", {"enriched"}),
        ("enriched+", {"enriched", "monthly", "report"}),
        ("+enriched", {"enriched", "orders", "customers"}),
        ("+monthly+", {"orders", "customers", "enriched", "monthly", "report"}),
        ("*", {"orders", "customers", "enriched", "monthly", "report"}),
        ("orders, report", {"orders", "report"}),
        (["orders", "customers"], {"orders", "customers"}),
    ],
)
def test_selection_syntax(selection, expected):
    assert set(PIPELINE.select(selection)) == expected


def test_unknown_selection_suggests_a_name():
    with pytest.raises(SelectionError, match="unknown asset 'ordrs'.*did you mean 'orders'"):
        PIPELINE.select("ordrs+")
    with pytest.raises(SelectionError, match="empty selection"):
        PIPELINE.select("+")
    with pytest.raises(SelectionError, match="matches no asset"):
        PIPELINE.select([])


def test_cycle_is_refused_with_its_path():
    @lf.asset(name="a")
    def a_(b: pl.LazyFrame) -> pl.LazyFrame:
        return b

    @lf.asset(name="b")
    def b_(c: pl.LazyFrame) -> pl.LazyFrame:
        return c

    @lf.asset(name="c")
    def c_(a: pl.LazyFrame) -> pl.LazyFrame:
        return a

    with pytest.raises(DefinitionError, match=r"dependency cycle: (\w) -> (\w) -> (\w) -> \1"):
        lf.Pipeline([a_, b_, c_])


def test_unknown_and_duplicate_assets_are_refused():
    with pytest.raises(DefinitionError, match="unknown asset 'order'.*did you mean 'orders'"):

        @lf.asset
        def bad(order: pl.LazyFrame) -> pl.LazyFrame:
            return order

        lf.Pipeline([orders, bad])
    with pytest.raises(DefinitionError, match="duplicate asset name 'orders'"):
        lf.Pipeline([orders, lf.asset(name="orders")(lambda: pl.DataFrame())])
    with pytest.raises(DefinitionError, match="not an asset"):
        lf.Pipeline([orders, print])


def test_self_dependency_needs_previous():
    @lf.asset(partitions=DAYS, name="running")
    def running_bad(running: pl.LazyFrame) -> pl.LazyFrame:
        return running

    with pytest.raises(DefinitionError, match="depends on itself"):
        lf.Pipeline([running_bad])

    @lf.asset(partitions=DAYS, name="running", inputs={"running": lf.previous()})
    def running_ok(running: pl.LazyFrame) -> pl.LazyFrame:
        return running

    pipeline = lf.Pipeline([running_ok])
    assert [e.up for e in pipeline.upstream("running")] == ["running"]


def test_incompatible_mapping_is_refused_at_definition():
    @lf.asset(partitions=lf.StaticPartitions(["a"]))
    def static_child(orders: pl.LazyFrame) -> pl.LazyFrame:
        return orders

    with pytest.raises(DefinitionError, match="no default mapping"):
        lf.Pipeline([orders, static_child])


def test_describe_lists_every_asset_and_its_inputs():
    text = PIPELINE.describe()
    assert "monthly" in text and "monthly 2024-01..2024-01 (1)" in text
    assert "<- orders, customers" in text
