"""The controller's tuning knobs (`ControllerOptions`, exported as `lf.ControllerOptions`) and
how run ids are made."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field

from lakeflow.errors import RequestError

__all__ = ["ControllerOptions", "new_run_id"]


@dataclass(frozen=True)
class ControllerOptions:
    """Tuning knobs; the defaults suit both a laptop and a cluster.

    - max_in_flight: tasks in flight across all runs (default: two per cluster CPU)
    - commit_linger: seconds staged units of a table may wait for more to join their commit;
      backfill_commit_linger, the same for backfills, which favour fewer, larger commits
    - max_commit_units: units in one commit at most, while the table's commits are cheap
    - commit_share: the share of its time a table's commits may take: once a commit takes
      longer than this share of the linger (a Delta commit costs more as its table grows),
      that table's staged units wait longer, up to the last commit's seconds / commit_share
      (five minutes at most), and are committed together however many they are
    - task_seconds: how long a task of several small units should take
    - resume_unfinished: on a first start, resume the runs the lake says are unfinished (after a
      restart of the controller actor they are always resumed)
    - autoscaling: the cluster adds nodes on demand (the Ray autoscaler, KubeRay): units that ask
      for resources no node has yet wait for such a node (a `run_waiting` event says so) instead
      of failing at once; default from $LAKEFLOW_AUTOSCALING=1
    """

    max_in_flight: int | None = None
    commit_linger: float = 0.05
    backfill_commit_linger: float = 1.0
    max_commit_units: int = 5000
    commit_share: float = 0.1
    max_task_units: int = 64
    task_seconds: float = 0.1
    flush_interval: float = 0.5
    cancel_poll: float = 0.5
    resume_unfinished: bool = False
    resources: dict[str, float] | None = None  # custom resources that place the controller actor
    autoscaling: bool = field(
        default_factory=lambda: os.environ.get("LAKEFLOW_AUTOSCALING", "0") not in ("", "0")
    )

    def __post_init__(self) -> None:
        if not 0 < self.commit_share <= 1:
            raise RequestError(
                f"ControllerOptions(commit_share={self.commit_share!r}): a share of the time, "
                "above 0 and at most 1"
            )


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
