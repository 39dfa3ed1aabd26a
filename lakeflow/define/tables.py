"""What an asset declares about its Delta table beyond its rows: when its partitions are
compacted (`Compaction`) and how much log and how many replaced files Delta keeps
(`Retention`). Set per asset (`@lf.asset(optimize=..., retention=...)`) or for every asset of a
pipeline that sets none (`lf.Pipeline(..., optimize=..., retention=...)`).

>>> @lf.asset(partitions=days, optimize=lf.Compaction(min_files=16, zorder=["carrier"]))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from lakeflow.errors import DefinitionError

__all__ = ["Compaction", "Retention"]


@dataclass(frozen=True)
class Compaction:
    """After each publish, the controller rewrites the asset's published partitions that hold
    at least `min_files` files smaller than `target_size` into files of about that size (one
    Delta OPTIMIZE commit per table, which changes no rows: no consumer becomes stale). With
    `zorder` columns, a partition holding `min_files` files of any size is rewritten with its
    rows sorted along a z-order curve of those columns, so that readers filtering on them skip
    more files and row groups (`min_files=1`: every published partition).

    - target_size: bytes per file; None takes the table's `delta.targetFileSize`, else 100 MiB.
    """

    min_files: int = 16
    target_size: int | None = None
    zorder: Sequence[str] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.min_files, bool) or not isinstance(self.min_files, int):
            raise DefinitionError(f"Compaction min_files must be an int, got {self.min_files!r}")
        if self.min_files < 1:
            raise DefinitionError(f"Compaction min_files must be at least 1, got {self.min_files}")
        size = self.target_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise DefinitionError(f"Compaction target_size must be a positive int, got {size!r}")
        columns = (self.zorder,) if isinstance(self.zorder, str) else tuple(self.zorder)
        if not all(isinstance(c, str) and c for c in columns):
            raise DefinitionError(f"Compaction zorder must name columns, got {self.zorder!r}")
        object.__setattr__(self, "zorder", columns)


@dataclass(frozen=True)
class Retention:
    """How much of its Delta log and of its replaced files a table keeps: Delta table properties,
    set when lakeflow creates the table and by `lakeflow optimize` on a table that exists.
    None leaves Delta's default.

    - checkpoint_interval: commits between checkpoints (`delta.checkpointInterval`; Delta: 100).
      Fewer make a table with many commits quicker to open, at a checkpoint write each time.
    - log: how long log entries are kept once a checkpoint covers them
      (`delta.logRetentionDuration`; Delta: 30 days). Time travel, and lakeflow's lineage and
      partition history, reach back this far.
    - deleted_files: how long a file the table no longer holds stays, for readers of older
      versions (`delta.deletedFileRetentionDuration`; Delta: 7 days). `lakeflow vacuum` keeps
      its own `--retain-hours`.
    """

    checkpoint_interval: int | None = None
    log: dt.timedelta | None = None
    deleted_files: dt.timedelta | None = None

    def __post_init__(self) -> None:
        every = self.checkpoint_interval
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise DefinitionError(
                f"Retention checkpoint_interval must be a positive int, got {every!r}"
            )
        for name in ("log", "deleted_files"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, dt.timedelta) and value.total_seconds() >= 1
            ):
                raise DefinitionError(
                    f"Retention {name} must be a timedelta of at least a second, got {value!r}"
                )

    def properties(self) -> dict[str, str]:
        """The Delta table properties it sets."""
        out = {}
        if self.checkpoint_interval is not None:
            out["delta.checkpointInterval"] = str(self.checkpoint_interval)
        if self.log is not None:
            out["delta.logRetentionDuration"] = _interval(self.log)
        if self.deleted_files is not None:
            out["delta.deletedFileRetentionDuration"] = _interval(self.deleted_files)
        return out


def _interval(span: dt.timedelta) -> str:
    """A duration as Delta writes one: `interval 30 days`, `interval 36 hours`, ... seconds."""
    seconds = int(span.total_seconds())
    for unit, length in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % length == 0:
            return f"interval {seconds // length} {unit}"
    return f"interval {seconds} seconds"
