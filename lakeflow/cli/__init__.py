"""The `lakeflow` command line: `main` parses a command and calls the same plain functions as the
notebook API (`lakeflow.api`, `lakeflow.serve`).

- `main`: the parser, `--debug`, and the error contract (exit codes in `common`)
- `common`: exit codes, errors as one clear line, pipeline loading
- `service`: `up`, `down`, `subscribe`, `submit`, `jobs`

May import anything in lakeflow; nothing in lakeflow imports it.
"""

from lakeflow.cli.main import main

__all__ = ["main"]
