"""A lake on S3 through the same code, against a real moto server on 127.0.0.1."""

import socket
import time

import polars as pl
import pytest

import lakeflow as lf
from tests.pipelines import PIPELINE


def test_materialize_into_s3_on_ray(ray_session, s3_lake, control):
    url, options = s3_lake
    result = lf.materialize(
        PIPELINE, lake=url, storage_options=options, partitions="2024-01-01..2024-01-10"
    )
    assert result.ok, result
    spend = pl.read_delta(f"{url}/spend", storage_options=options)
    assert spend.height == 40
    assert (
        pl.read_delta(f"{url}/spend_monthly", storage_options=options)["days"].to_list() == [10] * 4
    )
    rows = {
        r["asset"]: r
        for r in lf.status(PIPELINE, lake=url, storage_options=options).iter_rows(named=True)
    }
    assert rows["spend_3d"]["published"] == 10 and rows["users"]["published"] == 1
    again = lf.materialize(PIPELINE, lake=url, storage_options=options)
    assert again.counts() == {"fresh": 32}


def test_local_executor_on_s3_records_events(s3_lake, control):
    url, options = s3_lake
    result = lf.materialize(
        PIPELINE,
        select="events",
        partitions="2024-01-01..2024-01-02",
        lake=url,
        storage_options=options,
        executor="local",
    )
    assert result.ok
    kinds = lf.read_events(lf.Lake(url, options), run_id=result.run_id)["kind"].to_list()
    assert kinds.count("unit_published") == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_lake_is_a_clear_error_and_writes_nothing(moto_server, control):
    options = {**moto_server.options, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}
    url = "s3://nowhere/lake"
    started = time.time()
    try:
        with pytest.raises(lf.LakeError, match="cannot reach the lake at s3://nowhere/lake"):
            lf.materialize(
                PIPELINE, select="events", lake=url, storage_options=options, executor="local"
            )
        assert time.time() - started < 60
    finally:
        lf.stop(url, storage_options=options)


def test_a_missing_bucket_is_a_clear_error(moto_server, control):
    url = "s3://no-such-bucket/lake"
    try:
        with pytest.raises(
            lf.LakeError, match="bucket of the lake s3://no-such-bucket/lake does not exist"
        ):
            lf.materialize(
                PIPELINE,
                select="events",
                lake=url,
                storage_options=moto_server.options,
                executor="local",
            )
    finally:
        lf.stop(url, storage_options=moto_server.options)
    assert not moto_server.bucket_exists("no-such-bucket")
