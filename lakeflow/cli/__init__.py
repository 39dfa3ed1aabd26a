"""The `lakeflow` command line: `main` parses a command and calls the same plain functions as the
notebook API (`lakeflow.api`, `lakeflow.serve`).

- `main`: the parser assembled from the groups below, and the dispatch to their handlers
- `run`: `materialize`, `backfill`, `backfill status|cancel|resume`
- `lake`: `assets`, `status`, `checks`, `vacuum`, `optimize` (read or tidy the lake, never start Ray)
- `common`: exit codes, errors as one clear line, pipeline loading, Ray for commands that run
- `service`: `up`, `down`, `subscribe`
- `cluster`: `submit`, `jobs` (Ray Jobs)

May import anything in lakeflow; nothing in lakeflow imports it.
"""

from lakeflow.cli.main import main

__all__ = ["main"]
