"""A unit's captured output: what its code wrote to stdout and stderr and what it logged through
Python `logging` (`ctx.log` included), kept bounded (the last `LIMIT` characters, with a note of
what was cut) and with the lake's secret values redacted, for the unit's `logs` event.

Capture is per thread: the local executor runs several units at once in one process, each in its
own thread, so `sys.stdout`/`sys.stderr` are wrapped once by a router that hands a write to the
capture of the thread that made it (and, in a Ray worker, still to the real stream: its output
keeps reaching the worker's log files and the driver). Output written straight to file descriptor 1 or 2 by
native code, and by threads the unit's code starts itself, is not captured.
Imports only `secrets`.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections import deque
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from lakeflow.secrets import redact

__all__ = ["LIMIT", "Tail", "capture"]

LIMIT = 64 * 1024  # characters kept per unit (its last ones)
ASSET_LOGGER = "lakeflow.asset"  # `ctx.log` is `lakeflow.asset.<name>`: INFO and up are kept
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_local = threading.local()
_install = threading.Lock()


class Tail:
    """The last `limit` characters written to it, and how many earlier ones were cut."""

    def __init__(self, limit: int = LIMIT, *, echo: bool = False) -> None:
        self.limit = limit
        self.echo = echo  # also write it to the real stream
        self.cut = 0
        self._chunks: deque[str] = deque()
        self._size = 0

    def write(self, text: str) -> None:
        if not text:
            return
        if len(text) > self.limit:
            self.cut += len(text) - self.limit
            text = text[-self.limit :]
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.limit:
            over = self._size - self.limit
            first = self._chunks[0]
            if len(first) <= over:
                self._chunks.popleft()
                self._size -= len(first)
                self.cut += len(first)
            else:
                self._chunks[0] = first[over:]
                self._size -= over
                self.cut += over

    def text(self, secrets: Collection[str] = ()) -> str:
        """What was kept, redacted, preceded by a note when earlier output was cut."""
        body = "".join(self._chunks)
        if not self.cut:
            return redact(body, secrets)
        cut, start = self.cut, body.find("\n", 0, 4096) + 1  # from the first whole line kept
        if start == 0 and secrets:  # no line to start at: the cut may have split a secret
            start = min(len(body), max(len(value) for value in secrets))
        body, cut = body[start:], cut + start
        note = f"[lakeflow: {cut:,} earlier characters of this unit's output were cut; the last {self.limit:,} are kept]\n"
        return note + redact(body, secrets)


class _Router(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr: every write goes to the real stream, and also to
    the capture of the writing thread, if it has one."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        tail = getattr(_local, "tail", None)
        if tail is None:
            return self.stream.write(text)
        tail.write(text)
        return self.stream.write(text) if tail.echo else len(text)

    def flush(self) -> None:
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # buffer, errors, ... of the real stream
        return getattr(self.stream, name)


class _Handler(logging.Handler):
    """On the root logger: a record goes to the capture of the thread that logged it."""

    def emit(self, record: logging.LogRecord) -> None:
        tail = getattr(_local, "tail", None)
        if tail is None:  # not a unit's: what Python does when no handler is configured
            last = logging.lastResort
            if last is not None and record.levelno >= last.level and not self._others(record.name):
                last.handle(record)
            return
        try:
            tail.write(self.format(record) + "\n")
        except Exception:  # a record that cannot be formatted must not fail the unit
            self.handleError(record)

    def _others(self, name: str) -> bool:
        """Would a handler other than this one see a record of logger `name`? (Else Python
        would print it through `logging.lastResort`, which this handler's presence disables.)"""
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return True
            logger = logger.parent if logger.propagate else None
        return False


def _installed() -> None:
    """Route sys.stdout/stderr and the root logger through the captures (again, if something
    replaced the streams since)."""
    with _install:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        root = logging.getLogger()
        if not any(isinstance(h, _Handler) for h in root.handlers):
            handler = _Handler()
            handler.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(handler)
        asset = logging.getLogger(ASSET_LOGGER)
        if asset.level == logging.NOTSET:  # the root's WARNING would drop ctx.log.info
            asset.setLevel(logging.INFO)


@contextmanager
def capture(limit: int = LIMIT, *, echo: bool = False) -> Iterator[Tail]:
    """Capture this thread's output while the block runs; with `echo` it also goes on to the
    real stdout/stderr (a Ray worker's log files), else only to the capture (a command's own
    stdout, its `--json`, stays clean when units run in its process).

    >>> with capture() as tail:
    ...     print("hello")
    >>> tail.text()
    'hello\\n'
    """
    _installed()
    outer = getattr(_local, "tail", None)
    tail = Tail(limit, echo=echo)
    _local.tail = tail
    try:
        yield tail
    finally:
        _local.tail = outer
