"""The registry of the files a file sensor has seen, one small JSON document per asset under
`_lakeflow/partitions/`: [key, url, stamp] per file in arrival order (the stamp a dict, null
when not known; lakes written before stamps hold [key, url]), and `write_atomic`, the replace-in-one-step write the trigger state uses.
Plain lake I/O: it knows nothing of assets beyond their names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from lakeflow.lake import Lake

__all__ = ["REGISTRY_DIR", "load_registry", "save_registry", "write_atomic"]

REGISTRY_DIR = "_lakeflow/partitions"


def write_atomic(lake: Lake, url: str, data: bytes) -> None:
    """Replace a small file so that a reader sees the old bytes or the new, never a mix: S3
    puts are atomic; on a disk, write beside it and rename."""
    if lake.is_s3:
        lake.write_bytes(url, data)
        return
    scratch = f"{url}.{time.monotonic_ns()}.tmp"
    lake.write_bytes(scratch, data)
    try:
        lake.filesystem().move(lake.path(scratch), lake.path(url))
    except OSError as error:
        raise lake.unreachable(error) from error


def load_registry(lake: Lake, asset: str) -> list[tuple[Any, ...]]:
    raw = lake.read_bytes(f"{lake.url}/{REGISTRY_DIR}/{asset}.json")
    return [tuple(e) for e in json.loads(raw)] if raw else []


def save_registry(lake: Lake, asset: str, entries: Sequence[Sequence[Any]]) -> None:
    write_atomic(
        lake, f"{lake.url}/{REGISTRY_DIR}/{asset}.json", json.dumps(list(entries)).encode()
    )
