"""One error tree for lakeflow, and the boundary that keeps user-code failures apart from ours.

Every error lakeflow raises is a `LakeflowError` with a short message that says what went wrong
and, where there is one, what to do about it. Failures inside a user's asset function never
surface as our own errors: `user_code_boundary` wraps them in `UserCodeError`, which keeps the
user's traceback (without lakeflow's frames) as text so that it survives a trip through Ray.
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DefinitionError",
    "ErrorInfo",
    "InfrastructureError",
    "LakeError",
    "LakeflowError",
    "PartitionError",
    "RayUnavailable",
    "RequestError",
    "RunError",
    "SchemaError",
    "SelectionError",
    "Superseded",
    "UserCodeError",
    "short_traceback",
    "storage_failure",
    "user_code_boundary",
]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class LakeflowError(Exception):
    """Base of every error lakeflow raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)

    def __reduce__(self):  # keyword-only fields must survive pickling across Ray
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[LakeflowError], state: dict) -> LakeflowError:
    error = cls.__new__(cls)
    Exception.__init__(
        error, f"{state['message']} ({state['hint']})" if state.get("hint") else state["message"]
    )
    error.__dict__.update(state)
    return error


class DefinitionError(LakeflowError):
    """The assets do not form a valid pipeline: a cycle, an unknown or duplicate name, a bad option."""


class SelectionError(LakeflowError):
    """A selection names an unknown asset or matches nothing."""


class PartitionError(LakeflowError):
    """A partition key is malformed or outside the asset's partitions."""


class SchemaError(LakeflowError):
    """A unit's output does not fit its table: wrong type, or columns that conflict with the table."""


class InfrastructureError(LakeflowError):
    """Not the request's fault: Ray or the lake's storage failed. The same request may work later.

    Catch it in a notebook to tell "try again" apart from "fix the pipeline or the request":

    >>> try:
    ...     pipeline.materialize()
    ... except lf.InfrastructureError as error:
    ...     print("cluster or storage trouble:", error)
    """


class RayUnavailable(InfrastructureError):
    """Ray could not be started here, or the cluster at the given address could not be reached."""


class LakeError(InfrastructureError):
    """The lake cannot be reached or read (a corrupt log, a full disk), or a commit to it failed."""


class Superseded(LakeError):
    """Another controller has taken over this lake: this one commits nothing more."""


class RequestError(LakeflowError):
    """A request's options are wrong (a mode, an order, a limit)."""


class RunError(LakeflowError):
    """A run finished with units that were not published."""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as plain data: what travels from a worker to the controller and into the event log."""

    kind: str  # "user" (the asset function raised), "lakeflow", "crash" (worker died), "check",
    # "infrastructure" (Ray or the lake's storage failed: a full disk, an unreachable store)
    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, error: BaseException, *, site: str = "") -> ErrorInfo:
        """`site`: where the user's function is defined (`File "x.py", line 3, in f`), shown
        instead of lakeflow's frames when the function's output was wrong (a `SchemaError`)."""
        if isinstance(error, UserCodeError):
            return cls("user", error.error_type, error.message, error.user_traceback)
        if isinstance(error, SchemaError) and site:
            return cls("user", "SchemaError", str(error), f"  {site}\nSchemaError: {error}\n")
        if isinstance(error, InfrastructureError):
            kind = "infrastructure"
        else:
            kind = "lakeflow" if isinstance(error, LakeflowError) else "crash"
        return cls(
            kind, type(error).__name__, str(error), "".join(traceback.format_exception(error))
        )

    def first_line(self) -> str:
        line = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return f"{self.type}: {line}" if line else self.type


class UserCodeError(LakeflowError):
    """An asset function raised. `user_traceback` holds the user's frames only."""

    def __init__(self, message: str, *, error_type: str, user_traceback: str, where: str) -> None:
        self.error_type = error_type
        self.user_traceback = user_traceback
        self.where = where
        super().__init__(f"{where}: {error_type}: {message}")
        self.message = message


_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}


def storage_failure(error: BaseException) -> str | None:
    """What failed, when `error` (or its cause) says the storage under it failed: "no space left
    on device", "disk quota exceeded", "read-only file system". Polars and deltalake report these
    as a ComputeError or OSError whose text carries the OS message, without an errno."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[error.errno]
        text = str(error).lower()
        for what in _STORAGE_ERRNOS.values():
            if what in text:
                return what
        error = error.__cause__
    return None


def short_traceback(text: str) -> str:
    """The innermost frame and the cause of a formatted traceback, without its header: what a
    command line shows by default (`--debug` shows all of it)."""
    lines = [line for line in text.rstrip().splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Traceback"):
        return text.rstrip()
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith("File ")]
    if not frames:
        return "\n".join(lines[1:])
    return "\n".join(lines[frames[-1] :])


def _user_frames(error: BaseException) -> str:
    """Format the traceback, dropping the frames that belong to lakeflow itself."""
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not f.filename.startswith(_PACKAGE_DIR)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines)


@contextmanager
def user_code_boundary(where: str) -> Iterator[None]:
    """Run user code; anything it raises comes out as `UserCodeError` naming `where`.

    >>> with user_code_boundary("asset 'orders' partition 2013-01-01"):
    ...     pass
    """
    try:
        yield
    except LakeflowError:
        raise
    except Exception as error:
        raise UserCodeError(
            str(error),
            error_type=type(error).__name__,
            user_traceback=_user_frames(error),
            where=where,
        ) from error
