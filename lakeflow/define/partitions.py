"""Partitions: which keys an asset has, and how a key spec from a user becomes a set of them.

Every definition numbers its partitions 0..n-1, so the planner works on integer arrays instead of
Python objects per unit. Here: the interface, no partitions, a static list of keys, and one
partition per arrived file; the time windows (hourly, daily, monthly) are in `time_windows`.

A user's spec is `"a,b"`, `"*"` or, for time windows, a span like `"2013-01-01..2013-01-31"`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from lakeflow.errors import DefinitionError, PartitionError

__all__ = [
    "IN_PROGRESS",
    "STAMP_KEYS",
    "FilePartitions",
    "Partition",
    "Partitions",
    "Stamp",
    "StaticPartitions",
    "Unpartitioned",
    "describe_stamp",
    "file_stamp",
    "selects_all",
    "split_spec",
    "validate_key",
]

_KEY_CHARS = re.compile(r"^[A-Za-z0-9_.\-]+$")
UNPARTITIONED_KEY = ""


def validate_key(key: str, *, what: str = "partition key") -> str:
    """Keys become directory names and Delta partition values: allow [A-Za-z0-9_.-], no '..'."""
    if not isinstance(key, str) or not key:
        raise PartitionError(f"empty {what}", hint="give a key such as 2013-01-01 or us-east")
    if not _KEY_CHARS.match(key) or ".." in key or key.startswith("."):
        raise PartitionError(
            f"malformed {what} {key!r}",
            hint="keys may use letters, digits, '_', '-' and '.', and may not contain '..'",
        )
    return key


@dataclass(frozen=True, slots=True)
class Partition:
    """What an asset function sees of its partition: the key and, for time windows, the window."""

    key: str
    start: datetime | None = None
    end: datetime | None = None
    url: str | None = None  # the file a `FilePartitions` key stands for

    def __str__(self) -> str:
        return self.key or "(unpartitioned)"


class Partitions(ABC):
    """A partitions definition: n keys numbered 0..n-1 and a Delta partition column."""

    column: str | None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        """The keys at `indices` (all keys when None), in that order."""

    @abstractmethod
    def index(self, key: str) -> int:
        """The number of `key`; `PartitionError` if it is malformed or not one of ours."""

    @abstractmethod
    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        """Sorted unique indices named by a user's spec; None or '*' means all."""

    @abstractmethod
    def describe(self) -> str: ...

    def definition(self) -> str:
        """What defines these partitions, for the pipeline's definition hash: not how many
        there are now (open-ended windows and file sensors grow without being redefined)."""
        return self.describe()

    def key(self, index: int) -> str:
        return self.keys(np.array([index]))[0]

    def partition(self, index: int) -> Partition:
        return Partition(self.key(index))

    def indices(self, keys: Iterable[str]) -> np.ndarray:
        """Indices of `keys`, -1 for keys that are not partitions of this definition."""
        out = []
        for key in keys:
            try:
                out.append(self.index(key))
            except PartitionError:
                out.append(-1)
        return np.array(out, dtype=np.int64)

    @property
    def is_partitioned(self) -> bool:
        return self.column is not None


def split_spec(spec: str | Sequence[str]) -> list[str]:
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [p.strip() for p in parts]
    if not items or any(not p for p in items):
        raise PartitionError(
            f"empty partition key in {spec!r}", hint="write keys like 2013-01-01,2013-01-02"
        )
    return items


def selects_all(spec: str | Sequence[str] | None) -> bool:
    return (
        spec is None or spec in ("*", "all") or (not isinstance(spec, str) and list(spec) == ["*"])
    )


@dataclass(frozen=True)
class Unpartitioned(Partitions):
    """One partition: the whole table is rewritten by every materialization."""

    column: str | None = field(default=None, init=False)

    def __len__(self) -> int:
        return 1

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        return [UNPARTITIONED_KEY] * (1 if indices is None else len(indices))

    def index(self, key: str) -> int:
        if key != UNPARTITIONED_KEY:
            raise PartitionError(f"partition key {key!r} given for an unpartitioned asset")
        return 0

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        return np.zeros(1, dtype=np.int64)  # a spec meant for partitioned assets does not apply

    def describe(self) -> str:
        return "unpartitioned"


@dataclass(frozen=True)
class StaticPartitions(Partitions):
    """A fixed list of keys, e.g. regions: `StaticPartitions(["us", "eu"])`."""

    values: tuple[str, ...]
    column: str | None = "partition"

    def __init__(self, values: Iterable[str], *, column: str = "partition") -> None:
        values = tuple(values)
        for value in values:
            validate_key(value)
        if not values:
            raise DefinitionError("StaticPartitions needs at least one key")
        if len(set(values)) != len(values):
            raise DefinitionError("StaticPartitions keys must be unique")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "column", validate_key(column, what="partition column"))
        object.__setattr__(self, "_positions", {v: i for i, v in enumerate(values)})

    def __len__(self) -> int:
        return len(self.values)

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        return list(self.values) if indices is None else [self.values[i] for i in indices]

    def index(self, key: str) -> int:
        validate_key(key)
        position = self._positions.get(key)  # type: ignore[attr-defined]
        if position is None:
            raise PartitionError(f"{key!r} is not one of the keys {', '.join(self.values)}")
        return position

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        if selects_all(spec):
            return np.arange(len(self), dtype=np.int64)
        assert spec is not None
        chosen: list[int] = []
        for item in split_spec(spec):
            if ".." in item:
                first, _, last = item.partition("..")
                if not (first and last):
                    raise PartitionError(
                        f"malformed partition range {item!r}", hint="write it like a..c"
                    )
                lo, hi = self.index(first), self.index(last)
                if hi < lo:
                    raise PartitionError(f"range {item!r} runs backwards")
                chosen.extend(range(lo, hi + 1))
            else:
                chosen.append(self.index(item))
        return np.unique(np.array(chosen, dtype=np.int64))

    def describe(self) -> str:
        shown = ", ".join(self.values[:5]) + (", …" if len(self.values) > 5 else "")
        return f"static [{shown}] ({len(self)})"

    def definition(self) -> str:
        every = hashlib.sha256("\n".join(self.values).encode()).hexdigest()[:16]
        return f"static {len(self)} {every} {self.column}"


_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

# names that writers use while a file is still being written: never taken
IN_PROGRESS = ("*.tmp", "*_COPYING_*", ".*", "_*")
# the parts of a file's stamp, recorded among a unit's input versions (`Published.inputs`)
STAMP_KEYS = ("@size", "@mtime", "@etag")
Stamp = dict[str, int]


def file_stamp(info: Mapping[str, Any]) -> Stamp:
    """What identifies a version of a listed file (an fsspec `info`): its size, and its etag
    (object stores; the first 60 bits of its hex) or else its mtime in microseconds. A file
    whose stamp changes has changed."""
    stamp = {"@size": int(info.get("size") or 0)}
    etag = info.get("ETag") or info.get("etag")
    if etag:  # hashed whole: not every store's etag is hex (GCS: base64; Azure: 0x...)
        digest = hashlib.blake2b(str(etag).encode(), digest_size=8).digest()
        stamp["@etag"] = int.from_bytes(digest, "big") >> 4  # 60 bits: fits int64 arrays
        return stamp
    mtime = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(mtime, datetime):
        mtime = mtime.timestamp()
    if mtime is not None:
        stamp["@mtime"] = int(float(mtime) * 1_000_000)
    return stamp


def describe_stamp(stamp: Mapping[str, int] | None) -> str:
    """A stamp for people: `2,000 bytes, mtime 2026-12-02T15:01:35.120Z` or `..., etag 5d41…`."""
    if not stamp:
        return "unknown"
    parts = [f"{stamp.get('@size', 0):,} bytes"]
    if "@mtime" in stamp:
        when = datetime.fromtimestamp(stamp["@mtime"] / 1_000_000, UTC)
        parts.append(f"mtime {when.isoformat(timespec='milliseconds')}")
    if "@etag" in stamp:
        parts.append(f"etag {stamp['@etag']:015x}")
    return ", ".join(parts)


class FilePartitions(Partitions):
    """One partition per file that arrives under an fsspec URL glob (local or `s3://`).

    `lakeflow up` senses new files and materializes each once; the key is the file's path below
    the glob's fixed prefix ('/' written '__'), `ctx.partition.url` its full URL. Keys only ever
    grow (the list lives in the lake), so a key's number never changes.

    A file is taken once its stamp (size and mtime, or an object store's etag) has stayed the
    same for `settle` seconds (default: two polls), so a file still being written is not read
    half. Names matching `ignore` (fnmatch patterns on the basename; default `IN_PROGRESS`:
    `*.tmp`, `*_COPYING_*`, names starting with '.' or '_') are never taken. A file that
    changes after it was taken is re-run (`on_change="rerun"`), or left as it was with a
    `file_changed` event (`"refuse"`); each publish records the stamp it was built from.

    >>> @lf.asset(partitions=lf.FilePartitions("s3://landing/orders/*.csv", settle=10))
    ... def raw_orders(ctx): return pl.read_csv(ctx.partition.url, storage_options=...)
    """

    def __init__(
        self,
        url: str,
        *,
        column: str = "file",
        storage_options: dict[str, str] | None = None,
        poll: float = 1.0,
        settle: float | None = None,
        ignore: Sequence[str] = IN_PROGRESS,
        on_change: Literal["rerun", "refuse"] = "rerun",
    ) -> None:
        if not _GLOB_CHARS.search(url):
            raise DefinitionError(f"FilePartitions needs a glob such as {url.rstrip('/')}/*.csv")
        if on_change not in ("rerun", "refuse"):
            raise DefinitionError(f"on_change must be 'rerun' or 'refuse', not {on_change!r}")
        if isinstance(poll, bool) or not isinstance(poll, int | float) or not poll > 0:
            raise DefinitionError(f"poll must be a number of seconds above 0, not {poll!r}")
        if settle is not None and (
            isinstance(settle, bool) or not isinstance(settle, int | float) or settle < 0
        ):
            raise DefinitionError(f"settle must be 0 or more seconds, not {settle!r}")
        if isinstance(ignore, str) or not isinstance(ignore, Sequence | set | frozenset):
            raise DefinitionError("ignore takes a list of patterns, such as ['*.tmp', '.*']")
        if not all(isinstance(pattern, str) for pattern in ignore):
            raise DefinitionError(f"ignore takes patterns (strings), not {list(ignore)!r}")
        self.url = url
        self.column = validate_key(column, what="partition column")
        self.storage_options = dict(storage_options or {})
        self.poll = poll
        self.settle = 2 * poll if settle is None else settle
        self.ignore = tuple(ignore)
        self.on_change = on_change
        self._keys: list[str] = []
        self._urls: list[str] = []
        self._stamps: list[Stamp | None] = []
        self._positions: dict[str, int] = {}

    @property
    def base(self) -> str:
        """The fixed part of the glob, up to its last '/' before the first wildcard."""
        head = _GLOB_CHARS.split(self.url, maxsplit=1)[0]
        return head[: head.rfind("/") + 1]

    def key_for(self, url: str) -> str:
        relative = url[len(self.base) :] if url.startswith(self.base) else url.rsplit("/", 1)[-1]
        key = _UNSAFE.sub("_", relative.replace("/", "__")).lstrip(".")
        return key.replace("..", "_.") or "_"

    def ignored(self, url: str) -> bool:
        """Is this a name a writer uses while the file is in progress (see `ignore`)? Any
        folder below the glob's fixed part counts too: Spark and Hive write whole files under
        `_temporary/` or `.hive-staging.../` before moving them into place."""
        relative = url[len(self.base) :] if url.startswith(self.base) else url.rsplit("/", 1)[-1]
        return any(
            fnmatch.fnmatchcase(name, pattern)
            for name in relative.strip("/").split("/")
            for pattern in self.ignore
        )

    def load(self, entries: Iterable[Sequence[Any]]) -> None:
        """Set the known (key, url[, stamp]) entries, in arrival order (the registry in the
        lake); a known key takes the entry's stamp, when it has one."""
        for key, url, *rest in entries:
            stamp = dict(rest[0]) if rest and rest[0] else None
            position = self._positions.get(key)
            if position is None:
                self._positions[key] = len(self._keys)
                self._keys.append(key)
                self._urls.append(url)
                self._stamps.append(stamp)
            elif stamp is not None:
                self._stamps[position] = stamp

    def entries(self) -> list[tuple[str, str, Stamp | None]]:
        return list(zip(self._keys, self._urls, self._stamps, strict=True))

    def stamp(self, key: str) -> Stamp | None:
        """The stamp the sensor last took the file with (None: not known, or an older lake)."""
        position = self._positions.get(key)
        return None if position is None else self._stamps[position]

    def stamps(self) -> dict[str, np.ndarray]:
        """Each part of the files' stamps (`STAMP_KEYS`) as an array over the partitions, -1
        where unknown: what the planner compares with what each publish recorded."""
        count = len(self._keys)  # the sensor's thread may register more meanwhile
        out = {name: np.full(count, -1, np.int64) for name in STAMP_KEYS}
        for i, stamp in enumerate(self._stamps[:count]):
            for name, value in (stamp or {}).items():
                if name in out:
                    out[name][i] = value
        return out

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        return list(self._keys) if indices is None else [self._keys[i] for i in indices]

    def index(self, key: str) -> int:
        validate_key(key)
        position = self._positions.get(key)
        if position is None:
            raise PartitionError(f"no file with key {key!r} has arrived under {self.url}")
        return position

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        if selects_all(spec):
            return np.arange(len(self), dtype=np.int64)
        assert spec is not None
        return np.unique(np.array([self.index(k) for k in split_spec(spec)], dtype=np.int64))

    def partition(self, index: int) -> Partition:
        return Partition(self._keys[index], url=self._urls[index])

    def describe(self) -> str:
        return f"files {self.url} ({len(self)} so far)"

    def definition(self) -> str:
        return f"files {self.url} {self.column} {self.on_change} {sorted(self.ignore)}"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        defaults = {"settle": 2 * state.get("poll", 1.0), "ignore": IN_PROGRESS,
                    "on_change": "rerun", "_stamps": [None] * len(state.get("_keys", ()))}  # fmt: skip
        self.__dict__.update({**defaults, **state})
