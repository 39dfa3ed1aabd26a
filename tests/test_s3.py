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
    # vacuum lists the table on S3; every file is in the current version or an hour young
    tidy = lf.vacuum(PIPELINE, lake=url, storage_options=options, retain_hours=1)
    assert tidy.select("asset", "files", "quarantined_files").rows() == [("events", 0, 0)]
    assert pl.read_delta(f"{url}/events", storage_options=options).height > 0


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


class Relay:
    """A TCP relay in front of the moto server. `cut()` makes S3 unreachable (connections
    refused, open ones reset) while moto keeps its data; `restore()` brings it back."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def options(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}"}

    def restore(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.close()
                except OSError:
                    pass


DAY = lf.DailyPartitions(start="2024-01-01", end="2024-01-13")


@lf.asset(partitions=DAY, retry=lf.RetryPolicy(attempts=10, backoff=0.5, max_backoff=2.0))
def readings_s3(ctx: lf.Context) -> pl.DataFrame:
    time.sleep(1.0)
    return pl.DataFrame({"day": [ctx.partition.key] * 3, "value": [1, 2, 3]})


@lf.asset(partitions=DAY, retry=lf.RetryPolicy(attempts=10, backoff=0.5, max_backoff=2.0))
def readings_total(readings_s3: pl.LazyFrame) -> pl.LazyFrame:
    return readings_s3.select(pl.col("value").sum())


def test_an_s3_outage_mid_run_is_retried_and_nothing_is_half_published(ray_session, s3_lake):
    import threading

    url, options = s3_lake
    relay = Relay(int(options["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))
    through = {**options, **relay.options}
    pipeline = lf.Pipeline([readings_s3, readings_total], lake=url, storage_options=through)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", lf.materialize(pipeline)))
    runner.start()
    try:
        from deltalake import DeltaTable

        deadline = time.time() + 120
        while time.time() < deadline:  # the first units are published
            if DeltaTable.is_deltatable(f"{url}/readings_s3", storage_options=options):
                break
            time.sleep(0.1)
        assert runner.is_alive()
        relay.cut()  # S3 is gone for a while, mid-run
        time.sleep(4)
        relay.restore()
        restored = time.time()
        runner.join(240)
    finally:
        relay.cut()
    result = outcome["result"]
    assert result.ok, (result.summary(), result.failures()["error"].to_list()[:3])
    events = lf.read_events(lf.Lake(url, options), run_id=result.run_id)
    published = events.filter(pl.col("kind") == "unit_published")
    assert published.group_by("asset", "partition").len()["len"].to_list() == [1] * 24
    # the run was going when S3 went away and ended after it came back: the storage client's own
    # retries or lakeflow's (unit_retry events) carried it over the gap
    finished = events.filter(pl.col("kind") == "run_finished")["ts"][0].timestamp()
    assert finished > restored
    table = pl.read_delta(f"{url}/readings_total", storage_options=options)
    assert sorted(table["date"].to_list()) == [f"2024-01-{d:02d}" for d in range(1, 13)]
    assert table["value"].to_list() == [6] * 12
