import pickle

import polars as pl
import pytest

import lakeflow as lf
from lakeflow.errors import DefinitionError


def test_parameters_become_inputs_and_ctx_is_the_context():
    @lf.asset(deps=["audit"])
    def joined(
        ctx: lf.Context, orders: pl.LazyFrame, customers: pl.LazyFrame, limit: int = 5
    ) -> pl.LazyFrame:
        return orders

    assert joined.data_inputs == ("orders", "customers")
    assert list(joined.inputs) == ["orders", "customers", "audit"]
    assert joined.context_param == "ctx"
    assert joined.partitions == lf.Unpartitioned()


def test_default_code_version_hashes_the_source():
    def make(body: int):
        namespace: dict = {}
        exec(f"def thing():\n    return {body}\n", namespace)
        return namespace["thing"]

    first, second = lf.asset(make(1)), lf.asset(make(2))
    assert first.code_version != second.code_version
    assert len(first.code_version) == 12
    assert lf.asset(code_version="v7")(make(1)).code_version == "v7"


def test_options_are_validated():
    def thing(orders):
        return orders

    with pytest.raises(DefinitionError, match="neither a parameter nor in deps"):
        lf.asset(inputs={"missing": lf.identity()})(thing)
    with pytest.raises(DefinitionError, match="Python identifier"):
        lf.asset(name="bad-name")(thing)
    with pytest.raises(DefinitionError, match="Python identifier"):
        lf.asset(lambda: None)
    with pytest.raises(DefinitionError, match=r"\*args"):

        @lf.asset
        def spread(*frames):
            return frames

    with pytest.raises(DefinitionError, match="at least 1"):
        lf.RetryPolicy(attempts=0)


def test_retry_policy():
    policy = lf.RetryPolicy(
        attempts=4, backoff=0.5, backoff_factor=2, max_backoff=1.5, retry_on=(TimeoutError,)
    )
    assert [policy.delay(a) for a in (1, 2, 3)] == [0.5, 1.0, 1.5]
    assert policy.retries(TimeoutError("slow"))
    assert not policy.retries(ValueError("bad"))
    assert lf.RetryPolicy().retries(ValueError("any"))

    def thing():
        return None

    assert lf.asset(retry=2)(thing).retry.attempts == 2


def test_resources_become_ray_options():
    assert lf.Resources().ray_options() == {"num_cpus": 1.0}
    assert lf.Resources(num_cpus=0.5, memory=2**30, custom={"io": 1}).ray_options() == {
        "num_cpus": 0.5,
        "memory": 2**30,
        "resources": {"io": 1},
    }


def test_an_asset_is_callable_and_pickles():
    @lf.asset
    def double(numbers: pl.LazyFrame) -> pl.LazyFrame:
        return numbers.select(pl.col("x") * 2)

    out = double(pl.LazyFrame({"x": [1, 2]})).collect()
    assert out["x"].to_list() == [2, 4]
    copy = pickle.loads(pickle.dumps(lf.RetryPolicy(retry_on=(KeyError,))))
    assert copy.retry_on == (KeyError,)
