"""The controller's fence: one controller commits to a lake at a time.

A controller claims the next epoch when it starts, as a small file under
`_lakeflow/controller/epochs/` named `<epoch>-<token>`; the greatest name is the current
controller. Before each commit (and each save of the triggers' state) a controller checks that
it is still the current one; one that has been superseded — its driver was killed and a new one
started while it lived on — raises `Superseded` and commits nothing. Its commits also carry the
epoch in their metadata, so the log says which controller wrote what.

The check and the commit are not one atomic step; what remains is the moment between a listing
of one small directory and the commit right after it, on the same thread.
"""

from __future__ import annotations

import uuid

from lakeflow.errors import Superseded
from lakeflow.lake import Lake

__all__ = ["EPOCHS_DIR", "Fence"]

EPOCHS_DIR = "_lakeflow/controller/epochs"
KEEP = 8  # older claims are deleted by whoever claims


class Fence:
    """One controller's claim on a lake."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.url = f"{lake.url}/{EPOCHS_DIR}"
        self.token = uuid.uuid4().hex[:12]
        self.epoch: int | None = None

    @property
    def name(self) -> str:
        return f"{self.epoch:012d}-{self.token}"

    def _claims(self) -> list[str]:
        return sorted(n for n in self.lake.list_dir(self.url) if "-" in n and n[:12].isdigit())

    def claim(self) -> int:
        """Take the next epoch: from now on every older controller is superseded."""
        claims = self._claims()
        self.epoch = (int(claims[-1][:12]) + 1) if claims else 1
        self.lake.write_bytes(f"{self.url}/{self.name}", b"")
        for old in claims[:-KEEP]:
            try:
                self.lake.filesystem().delete_file(self.lake.path(f"{self.url}/{old}"))
            except OSError:
                pass  # another claimer deleted it first
        return self.epoch

    def check(self) -> None:
        """Raise `Superseded` unless this controller holds the newest claim."""
        if self.epoch is None:
            self.claim()
            return
        claims = self._claims()
        if claims and claims[-1] != self.name:
            raise Superseded(
                f"controller epoch {self.epoch} was superseded by {claims[-1].split('-')[0].lstrip('0')}: "
                "another controller now runs this lake, and this one commits nothing more"
            )
