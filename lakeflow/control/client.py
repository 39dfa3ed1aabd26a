"""Reaching a lake's controller: the named, detached actor in a Ray cluster (started locally if
this process has no Ray yet), or a controller on an event-loop thread in this process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

from lakeflow.control.actor import actor_class
from lakeflow.control.controller import Controller, ControllerOptions
from lakeflow.control.services import ServiceClient, ServiceInfo, find_service
from lakeflow.errors import LakeflowError, RayUnavailable, RequestError, Superseded
from lakeflow.execute.executors import LocalExecutor
from lakeflow.lake import Lake

__all__ = ["NAMESPACE", "Client", "connect", "controller_client", "controller_name", "stop"]

NAMESPACE = "lakeflow"
DEFAULT_CONNECT_TIMEOUT = 15.0  # seconds to reach a cluster at --address
# Ray's notice that it turned token auth on by itself, and the logger that prints it
TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster."


# -- Ray -------------------------------------------------------------------------------------
def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = True,
    connect_timeout: float | None = None,
    lake: str | Lake | None = None,
) -> None:
    """Attach this process to Ray: one already initialized, a cluster at `address`
    (`"auto"`, `"ray://host:10001"`, `"host:6379"`), the Ray of the `lakeflow dev` service that
    serves `lake` (if one runs), or — by default — a local Ray started for this process. A plain
    local start never joins another cluster on the machine by accident.

    >>> lf.connect(lake="./lake")   # in a notebook: the service's Ray when `lakeflow dev` runs

    Raises `RayUnavailable` when Ray cannot start (after one retry) or the cluster cannot be
    reached within `connect_timeout` seconds (default $LAKEFLOW_CONNECT_TIMEOUT, else 15).
    """
    ray = _import_ray()

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if (
        address is None
        and os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
        and os.environ.get("RAY_ADDRESS")
    ):
        address = "auto"  # a Ray Job's driver (`lakeflow submit`): use the job's cluster
    if address is None and lake is not None:
        where = lake if isinstance(lake, Lake) else Lake(lake)
        if (service := find_service(where.url)) is not None:
            os.environ.update(service.ray_env())
            address = service.ray_address
    if address in (None, "local"):
        _start_local(num_cpus, object_store_memory, log_to_driver)
        return
    _attach(address, log_to_driver, _connect_timeout(connect_timeout))


def _not_asking_for_ipywidgets(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Missing packages: ['ipywidgets']")


def _import_ray() -> Any:
    """`import ray`, without the two notices it gives when imported in a notebook that has no
    ipywidgets (lakeflow shows none of Ray's widgets): tqdm's "IProgress not found" warning
    (`ray.experimental.tqdm_ray` imports `tqdm.auto`) and `ray.widgets`' "Missing packages:
    ['ipywidgets']" log line. Nothing else is filtered."""
    logging.getLogger("ray.widgets.util").addFilter(_not_asking_for_ipywidgets)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
        import ray  # deferred: importing lakeflow needs no Ray

    return ray


def _connect_timeout(given: float | None) -> float:
    if given is not None:
        return given
    try:
        return float(os.environ.get("LAKEFLOW_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT))
    except ValueError:
        raise RequestError(
            f"LAKEFLOW_CONNECT_TIMEOUT={os.environ['LAKEFLOW_CONNECT_TIMEOUT']!r} is not a number"
        ) from None


def _start_local(
    num_cpus: int | None, object_store_memory: int | None, log_to_driver: bool
) -> None:
    """A Ray for this process; a start that fails (on a loaded machine the node can time out
    during startup) is tried once more before `RayUnavailable`."""
    import ray

    # Each task here has one CPU: one polars thread per worker process, instead of a pool per
    # process as large as the machine, all fighting over the same cores.
    env = {"POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS", "1")}
    _quiet_token_notice()
    for attempt in (1, 2):
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=object_store_memory or 256 * 2**20,
                log_to_driver=log_to_driver,
                namespace=NAMESPACE,
                runtime_env={"env_vars": env},
            )
            return
        except Exception as error:  # Ray raises plain Exception, RuntimeError, OSError here
            ray.shutdown()  # what the failed start left behind (its processes, its session)
            if attempt == 2:
                raise RayUnavailable(
                    f"could not start a local Ray (2 attempts): {_first_line(error)}",
                    hint="a loaded machine can time the start out: try again, or attach to a "
                    "running cluster with --address",
                ) from error


class _TokenNotice(logging.Filter):
    """Drops Ray's notice that it turned token auth on (see `_quiet_token_notice`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_NOTICE)


def _quiet_token_notice() -> None:
    """Ray 2.60 turns token authentication on for a new local Ray when RAY_AUTH_MODE is unset,
    and says so with a warning on every start: noise on every command for the private Ray a
    command starts and stops. Only that one message is dropped (auth stays on, as Ray chose; its
    errors, and a disabled-auth warning, still show). Setting RAY_AUTH_MODE here instead would not
    do: Ray reads it into its config when it is imported, before this runs."""
    logger = logging.getLogger(TOKEN_LOGGER)
    if not any(isinstance(f, _TokenNotice) for f in logger.filters):
        logger.addFilter(_TokenNotice())


def _attach(address: str, log_to_driver: bool, timeout: float) -> None:
    """Join the cluster at `address`, giving up with `RayUnavailable` after `timeout` seconds
    (Ray itself keeps retrying an address where nothing listens for minutes)."""
    import ray

    deadline = time.monotonic() + timeout
    host_port = address.removeprefix("ray://")
    if address != "auto" and ":" in host_port:
        _wait_for_port(address, host_port, deadline)
    client = address.startswith("ray://")
    attempt = 0
    while True:
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=log_to_driver)
            return
        except Exception as error:  # a busy head's client proxy can fail to start a server
            ray.shutdown()  # for us (its port still held by the last one): try again until
            attempt += 1  # the deadline, at least three times
            if not client or (attempt >= 3 and time.monotonic() > deadline):
                raise RayUnavailable(
                    f"cannot attach to the Ray cluster at {address}: {_first_line(error)}",
                    hint="is it up (cluster/local.sh status)? does RAY_AUTH_MODE match it?",
                ) from error
            time.sleep(min(2.0 * attempt, 5.0))


def _wait_for_port(address: str, host_port: str, deadline: float) -> None:
    host, _, port = host_port.rpartition(":")
    if not port.isdigit():
        raise RequestError(
            f"Ray address {address!r} has no port", hint="HOST:PORT, e.g. 10.0.0.5:6379"
        )
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2.0).close()
            return
        except OSError as error:
            if time.monotonic() + 0.5 > deadline:
                raise RayUnavailable(
                    f"cannot reach the Ray cluster at {address}: {error.strerror or error}",
                    hint="is the head up? LAKEFLOW_CONNECT_TIMEOUT (seconds) waits longer",
                ) from error
            time.sleep(0.5)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def controller_name(lake: Lake) -> str:
    return "lakeflow-" + hashlib.sha1(lake.url.encode()).hexdigest()[:12]


class _RayClient:
    """Talks to the lake's controller actor, creating it if absent."""

    def __init__(self, lake: Lake, options: ControllerOptions) -> None:
        import ray

        self._ray = ray
        # Nodes that offer the `controller` resource (cluster/local.sh gives it to the head; give
        # it to on-demand nodes, not spot ones) host the controller; after a node loss Ray
        # restarts it on another node that offers it.
        pinned = options.resources or (
            {"controller": 0.01} if ray.cluster_resources().get("controller") else {}
        )
        self.actor = (
            actor_class()
            .options(
                name=controller_name(lake),
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                resources=pinned,
            )
            .remote(lake.url, dict(lake.storage_options), options)
        )

    def call(self, method: str, *args: Any) -> Any:
        try:
            return self._ray.get(getattr(self.actor, method).remote(*args))
        except self._ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, LakeflowError):  # our own error, without Ray's wrapping
                raise error.cause from None
            raise


# Asked of a controller that another has superseded, these start a fresh one that takes the lake
# over (one controller per lake: the one last asked to run something).
TAKE_OVER = ("submit", "resume", "up")


class _LocalClient:
    """A controller in this process, on its own event loop thread: no Ray needed."""

    _instances: dict[str, _LocalClient] = {}
    _lock = threading.Lock()

    def __init__(self, lake: Lake, options: ControllerOptions) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(
            target=self.loop.run_forever, name="lakeflow-controller", daemon=True
        ).start()
        self.controller = Controller(lake, LocalExecutor(options.max_in_flight), options)

    @classmethod
    def get(cls, lake: Lake, options: ControllerOptions) -> _LocalClient:
        with cls._lock:
            if lake.url not in cls._instances:
                cls._instances[lake.url] = cls(lake, options)
            return cls._instances[lake.url]

    def call(self, method: str, *args: Any) -> Any:
        async def invoke() -> Any:
            if self.controller.is_superseded and method in TAKE_OVER:
                self.controller = Controller(
                    self.controller.lake, self.controller.executor, self.controller.options
                )
            result = getattr(self.controller, method)(*args)
            return await result if asyncio.iscoroutine(result) else result

        try:
            return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result()
        except Superseded:
            if method not in TAKE_OVER:
                raise
            return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result()

    @classmethod
    def close(cls, lake: Lake) -> bool:
        """Stop the in-process controller of `lake`, if this process has one."""
        with cls._lock:
            client = cls._instances.pop(lake.url, None)
        if client is None:
            return False
        asyncio.run_coroutine_threadsafe(client.controller.close(), client.loop).result(timeout=60)
        client.loop.call_soon_threadsafe(client.loop.stop)
        return True


def controller_client(
    lake: Lake, executor: str, options: ControllerOptions | None, address: str | None
) -> Any:
    """The lake's controller: in this process (executor "local"), in the `lakeflow dev` service
    that serves the lake (found by its marker, unless `address` names a cluster or
    $LAKEFLOW_NO_SERVICE=1), or the actor in the Ray at `address` (a local Ray by default)."""
    options = options or ControllerOptions()
    if executor == "local":
        return _LocalClient.get(lake, options)
    if address is None and (service := find_service(lake.url)) is not None:
        return ServiceClient(service, lambda: _over_ray(service, lake, options))
    connect(address)
    return _RayClient(lake, options)


def _over_ray(service: ServiceInfo, lake: Lake, options: ControllerOptions) -> _RayClient:
    """The service's controller through its Ray head (for a pipeline only this process has):
    this process joins that Ray, with its auth mode and token."""
    import ray  # deferred: only a pipeline that cannot travel by reference needs it

    if ray.is_initialized() and ray.get_runtime_context().gcs_address != service.ray_address:
        raise RequestError(
            f"{lake.url} is served by lakeflow dev (pid {service.pid}), but this process is "
            "attached to another Ray, and a pipeline defined here (not in a module) can reach the "
            "service only through the service's Ray",
            hint="define the pipeline in a module, call ray.shutdown() first, or set "
            "LAKEFLOW_NO_SERVICE=1 to run on this process's Ray",
        )
    os.environ.update(service.ray_env())
    connect(service.ray_address)
    return _RayClient(lake, options)


Client = _RayClient | _LocalClient | ServiceClient


def stop(lake: str | Lake, *, storage_options: Mapping[str, str] | None = None) -> bool:
    """Stop the lake's controllers: one in this process (executor="local") and the actor in the
    connected Ray. True if one was running."""
    import ray

    where = lake if isinstance(lake, Lake) else Lake(lake, storage_options or {})
    stopped = _LocalClient.close(where)
    if not ray.is_initialized():
        return stopped
    try:
        actor = ray.get_actor(controller_name(where), namespace=NAMESPACE)
    except ValueError:
        return stopped
    ray.kill(actor, no_restart=True)
    return True
