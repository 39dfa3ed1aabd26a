"""Finding the `lakeflow dev` service that serves a lake, and talking to it without Ray.

A running service leaves a marker in the user's runtime directory (never in the lake: it holds
the service's token): `$LAKEFLOW_SERVICES_DIR`, else `$XDG_RUNTIME_DIR/lakeflow/services`, else
`~/.cache/lakeflow/services`, one `<sha256 of the lake URL>.json` per lake, mode 0600. It says
where the service's Ray head and HTTP endpoint are and its token. A marker whose process is gone
or whose port is closed is stale: it is removed and ignored. `LAKEFLOW_NO_SERVICE=1` ignores
every marker.

`ServiceClient` has the controller client's shape (`call(method, *args)`) and sends each call to
the service's controller over its local HTTP endpoint (`serve/web_service.py`): a command attached
to a service never imports Ray. A pipeline travels as its `PipelineRef` (where it is defined and
its definition hash); one that no other process can import (defined in a notebook) goes through
the service's Ray instead (`fallback`).
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lakeflow import errors
from lakeflow.define.definition import PipelineRef, reference
from lakeflow.errors import InfrastructureError, LakeflowError
from lakeflow.plan.planner import Request

__all__ = [
    "NO_SERVICE",
    "ServiceClient",
    "ServiceInfo",
    "claim_marker",
    "decode_result",
    "encode_result",
    "error_from",
    "error_kind",
    "find_service",
    "marker_path",
    "pid_alive",
    "read_marker",
    "remove_marker",
    "request_from_json",
    "services_dir",
    "write_marker",
]

NO_SERVICE = "LAKEFLOW_NO_SERVICE"  # set to 1: never attach to a service
STARTING_WAIT = 120.0  # seconds an attaching command waits for a service that is starting


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What a service's marker holds. `http` is empty while the service is starting."""

    pid: int
    lake: str
    pipeline: str
    started: float
    http: str = ""
    ray_address: str = ""
    token: str = ""
    log: str | None = None
    ray_auth: str = ""  # the head's RAY_AUTH_MODE ("token" by default in Ray 2.60)
    ray_token_path: str = ""  # where its Ray token is, for a process that joins it

    def ray_env(self) -> dict[str, str]:
        """What a process needs in its environment to join the service's Ray (a caller's own
        RAY_AUTH_* settings win)."""
        if not self.ray_auth or "RAY_AUTH_MODE" in os.environ:
            return {}
        env = {"RAY_AUTH_MODE": self.ray_auth}
        given = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
        if self.ray_auth == "token" and self.ray_token_path and not any(map(os.environ.get, given)):
            env["RAY_AUTH_TOKEN_PATH"] = self.ray_token_path
        return env

    @property
    def ready(self) -> bool:
        return bool(self.http)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ServiceInfo:
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def services_dir() -> Path:
    """Where the markers live (created 0700 on first use)."""
    given = os.environ.get("LAKEFLOW_SERVICES_DIR")
    if given:
        return Path(given)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "lakeflow" / "services"
    return Path.home() / ".cache" / "lakeflow" / "services"


def marker_path(lake_url: str) -> Path:
    return services_dir() / f"{hashlib.sha256(lake_url.encode()).hexdigest()[:32]}.json"


def _write_private(path: Path, text: str, *, exclusive: bool) -> bool:
    """Write `text` to `path` with mode 0600, whole or not at all (a reader never sees half a
    marker): atomically replaced, or (`exclusive`) only if the path does not exist yet (False
    then)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    try:
        if not exclusive:
            os.replace(target, path)
            return True
        try:
            os.link(target, path)  # atomic, and fails when a marker is there
        except FileExistsError:
            return False
        return True
    finally:
        _unlink(target)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The lake's marker lock: claims, replacements and removals of stale markers take it, so
    none of them acts on a marker another has replaced meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _same(a: ServiceInfo | None, b: ServiceInfo | None) -> bool:
    return a is not None and b is not None and (a.pid, a.started) == (b.pid, b.started)


def _remove_stale(path: Path, seen: ServiceInfo) -> None:
    """Remove the marker found stale, only if it is still that one (not a new claim)."""
    with _locked(path):
        if _same(_read(path), seen):
            _unlink(path)


def claim_marker(info: ServiceInfo) -> ServiceInfo | None:
    """Claim the lake for a starting service: None if claimed, else the live service that holds
    it (a stale marker is removed and the claim tried again)."""
    path = marker_path(info.lake)
    with _locked(path):  # two services starting at once: one wins
        for _ in range(3):
            if _write_private(path, info.to_json(), exclusive=True):
                return None
            held = _read(path)
            if held is not None and _alive(held):
                return held
            _unlink(path)
    raise LakeflowError(f"cannot claim the service marker {path}", hint="remove it by hand")


def write_marker(info: ServiceInfo) -> Path:
    """Replace the marker with `info` (the service is ready); only the service's own claim may
    be replaced (`LakeflowError` when another took the lake meanwhile)."""
    path = marker_path(info.lake)
    with _locked(path):
        held = _read(path)
        if held is not None and held.pid != info.pid:
            raise LakeflowError(
                f"another lakeflow dev service (pid {held.pid}) took {info.lake}",
                hint="stop one of them: `lakeflow dev --stop --lake ...`",
            )
        _write_private(path, info.to_json(), exclusive=False)
    return path


def remove_marker(lake_url: str, *, pid: int | None = None) -> None:
    """Remove the lake's marker (only the one of process `pid`, if given)."""
    path = marker_path(lake_url)
    with _locked(path):
        held = _read(path)
        if held is not None and pid is not None and held.pid != pid:
            return
        _unlink(path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _read(path: Path) -> ServiceInfo | None:
    try:
        return ServiceInfo.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):  # half written by hand or by a crash: stale
        return ServiceInfo(pid=0, lake="", pipeline="", started=0.0)


def read_marker(lake_url: str) -> ServiceInfo | None:
    """The lake's marker as it is, live or stale (None if there is none)."""
    return _read(marker_path(lake_url))


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass  # no /proc (macOS): ask the kernel below
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but not ours to use
        return True
    return True


def _port_open(http: str) -> bool:
    parts = urlsplit(http)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 1.0).close()
    except OSError:
        return False
    return True


def _alive(info: ServiceInfo) -> bool:
    return pid_alive(info.pid) and (not info.ready or _port_open(info.http))


def find_service(lake_url: str, *, wait: float = STARTING_WAIT) -> ServiceInfo | None:
    """The live, ready service of `lake_url`, or None (also with $LAKEFLOW_NO_SERVICE=1). Stale
    markers are removed; a service still starting is waited for up to `wait` seconds."""
    if os.environ.get(NO_SERVICE, "") not in ("", "0"):
        return None
    path = marker_path(lake_url)
    deadline = time.monotonic() + wait
    while True:
        info = _read(path)
        if info is None or info.pid == os.getpid():  # the service itself runs its controller
            return None
        if not _alive(info):
            _remove_stale(path, info)
            return None
        if info.ready:
            return info
        if time.monotonic() > deadline:
            raise InfrastructureError(
                f"the lakeflow dev service of {lake_url} (pid {info.pid}) is still starting",
                hint=f"look at its log {info.log}, or set {NO_SERVICE}=1 to run without it",
            )
        time.sleep(0.1)


# -- the wire: results and errors as JSON ------------------------------------------------------
def encode_result(data: dict[str, Any]) -> dict[str, Any]:
    """A run result (its units an Arrow table) as JSON: the units as a base64 Arrow IPC stream."""
    import pyarrow as pa  # deferred: only a result crossing the wire needs it

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data["units"].schema) as writer:
        writer.write_table(data["units"])
    return {**data, "units": base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")}


def decode_result(data: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa  # deferred, as above

    units = pa.ipc.open_stream(base64.b64decode(data["units"])).read_all()
    return {**data, "units": units}


# the families that decide a command's exit code (`cli.common.exit_code`), by the name a
# service sends with an error of a class defined outside lakeflow.errors
KINDS: dict[str, type[LakeflowError]] = {
    "infrastructure": errors.InfrastructureError,
    "run": errors.RunError,
    "user_code": errors.UserCodeError,
}


def error_kind(error: LakeflowError) -> str:
    """Which of `KINDS` an error belongs to ("request" for none of them)."""
    return next((k for k, cls in KINDS.items() if isinstance(error, cls)), "request")


def error_from(payload: dict[str, Any]) -> Exception:
    """The error a service sent back, as the same `LakeflowError` subclass (so the exit code is
    the same as a direct run's); a bug of the service's as a plain RuntimeError."""
    if payload.get("type") == "internal":
        return RuntimeError(payload.get("error", "the service failed"))
    kind = getattr(errors, str(payload.get("type", "")), None)
    if not (isinstance(kind, type) and issubclass(kind, LakeflowError)):  # a class of another
        kind = KINDS.get(str(payload.get("kind")), LakeflowError)  # module: its family's base
    error = kind.__new__(kind)
    LakeflowError.__init__(
        error, payload.get("error", "the service failed"), hint=payload.get("hint")
    )
    return error


class ServiceClient:
    """The lake's controller in a `lakeflow dev` service, reached over its HTTP endpoint."""

    def __init__(self, info: ServiceInfo, fallback: Callable[[], Any]) -> None:
        self.info = info
        self._fallback = fallback  # the controller over the service's Ray, made when needed
        self._ray_client: Any = None

    def call(self, method: str, *args: Any) -> Any:
        if method in ("submit", "up"):
            ref = reference(args[0])
            if not isinstance(ref, PipelineRef):  # a notebook's pipeline: by value, over Ray
                return self._over_ray(method, *args)
            if method == "submit":
                request, origin, trigger = (*args[1:], "api", None)[:3]
                body = {"pipeline": ref.to_json(), "request": dataclasses.asdict(request),
                        "origin": origin, "trigger": trigger}  # fmt: skip
            else:
                poll = args[1].poll if len(args) > 1 and args[1] is not None else 0.1
                body = {"pipeline": ref.to_json(), "poll": poll}
            return self._post(f"/service/{method}", body)
        answer = self._post("/service/call", {"method": method, "args": list(args)})
        return decode_result(answer) if method == "result" and answer is not None else answer

    def _over_ray(self, method: str, *args: Any) -> Any:
        if self._ray_client is None:
            self._ray_client = self._fallback()
        return self._ray_client.call(method, *args)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.info.http + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.info.token}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as error:
            try:
                payload = json.loads(error.read())
            except ValueError:
                payload = {"error": f"HTTP {error.code}", "type": "InfrastructureError"}
            raise error_from(payload) from None
        except OSError as error:
            raise InfrastructureError(
                f"the lakeflow dev service at {self.info.http} (pid {self.info.pid}) did not "
                f"answer: {getattr(error, 'reason', error)}",
                hint=f"is it still running? its log: {self.info.log}; {NO_SERVICE}=1 runs "
                "without it",
            ) from error


def request_from_json(data: dict[str, Any]) -> Request:
    """The `Request` a client sent (`dataclasses.asdict` of it)."""
    fields = {f.name for f in dataclasses.fields(Request)}
    unknown = set(data) - fields
    if unknown:
        raise errors.RequestError(f"unknown request fields {sorted(unknown)}")
    values = dict(data)
    if isinstance(values.get("select"), list):
        values["select"] = tuple(values["select"])
    if isinstance(values.get("partitions"), list):
        values["partitions"] = tuple(values["partitions"])
    return Request(**values)
