"""An outside producer for the stress test (tests/stress.py): one OS process writing one source
table with plain deltalake calls, as another team's job would. It knows nothing of lakeflow.

    python -m tests.stress_producer SPEC.json

SPEC: {"url": table, "t0": epoch seconds, "ops": [{"at": s, "kind": ..., "day": ..., "rows":
[[amount, tip], ...], "days": {day: rows}, "merged": bool}, ...]}. Each op runs at t0 + at (never
earlier; late if the machine is busy). `merged` says whether the table has the `tip` column yet.

A landing folder's producer (url: the folder) writes CSV files instead: `file_write` (a whole
file, or its first part: created or truncated in place), `file_append` (its next part),
`file_rename` (`temp` moved onto `name`, as careful producers deliver). With "times": a path,
it appends when each op began and ended (JSON lines), for the check of half-written files.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

_ids = itertools.count()


def _table(rows_by_day: dict[str, list[list[int | None]]], merged: bool) -> pa.Table:
    """Rows of several days, columns in the table's order: id, amount, day[, tip]."""
    ids, amounts, days, tips = [], [], [], []
    for day, rows in rows_by_day.items():
        for amount, tip in rows:
            ids.append(next(_ids))
            amounts.append(amount)
            days.append(day)
            tips.append(tip)
    columns = {
        "id": pa.array(ids, pa.int64()),
        "amount": pa.array(amounts, pa.int64()),
        "day": pa.array(days, pa.string()),
    }
    if merged:
        columns["tip"] = pa.array(tips, pa.int64())
    return pa.table(columns)


def csv_text(rows: list[list[int]], header: bool) -> str:
    """A landing file's text: `id,amount` rows, after a header in a file's first part."""
    return ("id,amount\n" if header else "") + "".join(f"{i},{a}\n" for i, a in rows)


def apply(url: str, op: dict) -> None:
    """One operation on the table (or the landing folder) at `url`."""
    kind = op["kind"]
    if kind == "file_write":
        Path(url, op["name"]).write_text(csv_text(op["rows"], header=True))
    elif kind == "file_append":
        with open(Path(url, op["name"]), "a") as out:
            out.write(csv_text(op["rows"], header=False))
    elif kind == "file_rename":
        os.replace(Path(url, op["temp"]), Path(url, op["name"]))
    elif kind == "fill":
        data = _table(op["days"], op["merged"])
        write_deltalake(url, data, mode="append", partition_by=["day"])
    elif kind == "append":
        data = _table({op["day"]: op["rows"]}, op["merged"])
        write_deltalake(url, data, mode="append", partition_by=["day"])
    elif kind == "merge_append":  # a new nullable column arrives with this write
        data = _table({op["day"]: op["rows"]}, True)
        write_deltalake(url, data, mode="append", partition_by=["day"], schema_mode="merge")
    elif kind == "overwrite":
        data = _table({op["day"]: op["rows"]}, op["merged"])
        write_deltalake(
            url, data, mode="overwrite", partition_by=["day"], predicate=f"day = '{op['day']}'"
        )
    elif kind == "delete":
        DeltaTable(url).delete(f"day = '{op['day']}'")
    else:
        raise ValueError(f"unknown producer op {kind!r}")


def main(spec_path: str) -> int:
    with open(spec_path) as handle:
        spec = json.load(handle)
    global _ids
    _ids = itertools.count(int(spec.get("first_id", 0)))
    for op in spec["ops"]:
        wait = spec["t0"] + op["at"] - time.time()
        if wait > 0:
            time.sleep(wait)
        began = time.time()
        for attempt in range(20):
            try:
                apply(spec["url"], op)
                break
            except Exception as error:  # a concurrent commit (ours never race; lakeflow's don't
                if attempt == 19:  # touch sources): report and give up the whole schedule
                    print(f"producer {spec['url']}: {op} failed: {error}", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        if spec.get("times"):
            with open(spec["times"], "a") as out:
                out.write(json.dumps({"op": op, "began": began, "ended": time.time()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
