"""The lake: a root URL (a local directory or `s3://bucket/prefix`) holding one Delta table per
asset and lakeflow's own tables under `_lakeflow/`.

One `Lake` value carries the URL and the storage options, and hands each library the form it
wants: deltalake and polars take object_store options (`AWS_ENDPOINT_URL`, ...), Parquet staging
and log reads use a pyarrow filesystem built from the same options. A `Lake` pickles without its
filesystem, so it travels to Ray workers cheaply.

Submodules: `log` (reading Delta logs), `staging`, `publish`, `fence`, `events` (the event-log
table), `registry` (files a sensor has seen). Imports only `secrets` and `errors`: the lake knows
nothing of assets (checked by lint-imports).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from lakeflow.errors import LakeError, RequestError
from lakeflow.secrets import resolve_options, secret_names

__all__ = ["Lake"]

_S3_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
)


@dataclass(frozen=True)
class Lake:
    """Where the tables live. `Lake("./lake")`, `Lake("s3://bucket/lake", {"AWS_REGION": ...})`."""

    url: str
    storage_options: Mapping[str, str] = field(default_factory=dict)
    _secret_names: frozenset[str] = field(
        default=frozenset(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        url = str(self.url)
        parsed = urlparse(url)
        if parsed.scheme in ("s3", "s3a"):
            if not parsed.netloc:
                raise RequestError(f"lake URL {url!r} names no bucket", hint="s3://bucket/prefix")
            url = f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            env = {k: os.environ[k] for k in _S3_ENV if k in os.environ}
            options = {**env, **resolve_options(self.storage_options)}
            secret = secret_names({**env, **self.storage_options})
        elif parsed.scheme in ("", "file"):
            path = parsed.path if parsed.scheme == "file" else url
            url = str(Path(path).expanduser().resolve())
            options = resolve_options(self.storage_options)
            secret = secret_names(self.storage_options)
        else:
            raise RequestError(
                f"unsupported lake URL {url!r}", hint="use a local path or s3://bucket/prefix"
            )
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "storage_options", options)
        object.__setattr__(self, "_secret_names", secret)

    def __repr__(self) -> str:
        """The URL and option names; a secret's value never (tracebacks and logs show this)."""
        shown = {
            k: "[redacted]" if str(k).upper() in self._secret_names else v
            for k, v in self.storage_options.items()
        }
        return f"Lake({self.url!r}, storage_options={shown!r})" if shown else f"Lake({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "storage_options": dict(self.storage_options),
            "secret_names": self._secret_names,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "url", state["url"])
        object.__setattr__(self, "storage_options", state["storage_options"])
        object.__setattr__(self, "_secret_names", state.get("secret_names", frozenset()))

    def secret_values(self) -> frozenset[str]:
        """The values of its secret options (`lf.EnvVar`s and credentials), resolved here: what
        must never be written into the lake (see `lakeflow.secrets.redact`)."""
        return frozenset(
            value for name, value in self.storage_options.items() if name in self._secret_names
        )

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    # -- locations -----------------------------------------------------------------------------
    def table_url(self, name: str) -> str:
        """The Delta table of asset `name` (or of an internal table like `_lakeflow/events`)."""
        return f"{self.url}/{name}"

    def path(self, url: str) -> str:
        """`url` as a path of `filesystem()` (no scheme)."""
        return url[len("s3://") :] if url.startswith("s3://") else url

    def uri(self, table_url: str, relative: str) -> str:
        """The full URI of a file given relative to a table root, as polars reads it."""
        return f"{table_url}/{relative}"

    # -- what each library wants ---------------------------------------------------------------
    def delta_options(self) -> dict[str, str] | None:
        """object_store options for deltalake and polars (None for a local lake)."""
        if not self.is_s3:
            return None
        options = dict(self.storage_options)
        options.setdefault("AWS_REGION", "us-east-1")
        if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
            options.setdefault("AWS_ALLOW_HTTP", "true")
        options.setdefault("connect_timeout", "5s")
        options.setdefault("timeout", "60s")
        options.setdefault("retry_timeout", "20s")
        return options

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem for this lake, one per process."""
        cache = _FILESYSTEMS
        key = (
            self.url.split("/", 3)[2] if self.is_s3 else "local",
            tuple(sorted(self.storage_options.items())),
        )
        with _FS_LOCK:
            fs = cache.get(key)
            if fs is None:
                fs = self._make_filesystem() if self.is_s3 else pafs.LocalFileSystem()
                cache[key] = fs
        return fs

    def _make_filesystem(self) -> pafs.FileSystem:
        options = self.storage_options
        kwargs: dict[str, Any] = {
            "region": options.get("AWS_REGION", "us-east-1"),
            "connect_timeout": 5,
            "request_timeout": 30,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if "AWS_ACCESS_KEY_ID" in options:
            kwargs["access_key"] = options["AWS_ACCESS_KEY_ID"]
            kwargs["secret_key"] = options.get("AWS_SECRET_ACCESS_KEY", "")
            if "AWS_SESSION_TOKEN" in options:
                kwargs["session_token"] = options["AWS_SESSION_TOKEN"]
        endpoint = options.get("AWS_ENDPOINT_URL")
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        return pafs.S3FileSystem(**kwargs)

    # -- small file operations -----------------------------------------------------------------
    def exists(self, url: str) -> bool:
        try:
            return self.filesystem().get_file_info(self.path(url)).type != pafs.FileType.NotFound
        except OSError as error:
            raise self.unreachable(error) from error

    def read_bytes(self, url: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        try:
            with self.filesystem().open_input_stream(self.path(url)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            if "not found" in str(error).lower() or "no such file" in str(error).lower():
                return None
            raise self.unreachable(error) from error

    def write_bytes(self, url: str, data: bytes) -> None:
        fs = self.filesystem()
        try:
            if not self.is_s3:
                fs.create_dir(os.path.dirname(self.path(url)), recursive=True)
            with fs.open_output_stream(self.path(url)) as stream:
                stream.write(data)
        except OSError as error:
            raise self.unreachable(error) from error

    def list_dir(self, url: str) -> list[str]:
        """Base names of the entries directly under `url` (empty if it does not exist)."""
        selector = pafs.FileSelector(self.path(url), allow_not_found=True)
        try:
            return [info.base_name for info in self.filesystem().get_file_info(selector)]
        except OSError as error:
            raise self.unreachable(error) from error

    def check_reachable(self) -> None:
        """Raise a clear `LakeError` if the lake's storage cannot be reached."""
        if not self.is_s3:
            root = Path(self.url)
            parent = root if root.exists() else root.parent
            if not os.access(parent if parent.exists() else Path.cwd(), os.W_OK):
                raise LakeError(f"the lake directory {self.url} is not writable")
            return
        bucket = self.url[len("s3://") :].split("/", 1)[0]
        try:
            info = self.filesystem().get_file_info(bucket)
        except OSError as error:
            raise self.unreachable(error) from error
        if info.type == pafs.FileType.NotFound:
            raise LakeError(
                f"the bucket of the lake {self.url} does not exist", hint="create it first"
            )

    def storage_failed(self, what: str, *, writing: str) -> LakeError:
        """The lake's storage refused a write: `what` is "no space left on device" or the like."""
        return LakeError(
            f"the lake's storage at {self.url} failed: {what} (writing {writing})",
            hint="free space on it or grow it, then run again; nothing was committed",
        )

    def unreachable(self, error: BaseException) -> LakeError:
        endpoint = self.storage_options.get("AWS_ENDPOINT_URL", "")
        where = f"{self.url}" + (f" (endpoint {endpoint})" if endpoint else "")
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return LakeError(
            f"cannot reach the lake at {where}: {first}", hint="check the endpoint and credentials"
        )


_FILESYSTEMS: dict[Any, pafs.FileSystem] = {}
_FS_LOCK = threading.Lock()
