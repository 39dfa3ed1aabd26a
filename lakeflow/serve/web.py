"""The HTTP server of `lakeflow up --http HOST:PORT`: one starlette app served by uvicorn on a
thread of the `up` process, its address and token checked before Ray starts, its limits, and the
JSON shape of every error. The routes live beside it (`web_runs.py` for /runs); a read-only web
UI adds its own routes to the same app.

    GET  /health      200, no token needed
    POST /runs        start a run (Bearer token)      GET /runs, GET /runs/ID   read them (Bearer token)

Bind it to loopback or put it behind your own TLS proxy: the token travels in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from lakeflow.errors import LakeflowError, RequestError

__all__ = ["HttpLimits", "TriggerServer", "bind", "check_token", "parse_address"]


_HOSTNAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may take: the body cap is counted on the bytes read, whatever
    Content-Length says; a client gets `header_timeout` seconds to send its headers and
    `body_timeout` for its body, and an idle kept-alive connection is closed after `keep_alive`."""

    max_body: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keep_alive: float = 5.0
    max_connections: int = 1000


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) -> (host, port); a `RequestError` saying what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        raise RequestError(f"--http {text!r} is not HOST:PORT", hint="e.g. --http 127.0.0.1:8080")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise RequestError(f"--http {text!r}: the port must be a number from 0 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise RequestError(f"--http {text!r}: {host!r} is not a host name or address") from None
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, so a taken port or unknown host is an error at once."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        raise RequestError(
            f"cannot serve HTTP on {host}:{port}: {error.strerror or error}",
            hint="is another process using the port?",
        ) from error
    sock.setblocking(False)
    return sock


def check_token(token: str) -> str:
    """A token a client can send in a header: visible ASCII, no spaces, not empty."""
    if not token or not all(33 <= ord(c) <= 126 for c in token):
        raise RequestError(
            "the HTTP token must be non-empty printable ASCII without spaces",
            hint="--token or $LAKEFLOW_HTTP_TOKEN; leave both unset for a random one",
        )
    return token


class Bearer:
    """Checks `Authorization: Bearer TOKEN` on the header's bytes, in constant time."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(check_token(token).encode("ascii")).digest()

    def require(self, request: Request) -> None:
        # starlette decodes header bytes as latin-1: encoding back gives the bytes as sent
        given = request.headers.get("authorization", "").encode("latin-1")
        scheme, _, value = given.partition(b" ")
        digest = hashlib.sha256(value).digest()
        if not (hmac.compare_digest(digest, self._digest) and scheme.lower() == b"bearer"):
            raise HTTPException(401, "missing or wrong token", {"WWW-Authenticate": "Bearer"})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = error.detail
    if error.status_code == 404 and message == "Not Found":
        message = f"no such endpoint {request.url.path}"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(error.status_code, message, dict(error.headers or {}))


async def _crash(request: Request, error: Exception) -> Response:
    return error_response(500, f"internal error: {type(error).__name__}")


def build_app(routes: list[BaseRoute]) -> Starlette:
    """The app: /health and the given routes, every error as {"error": message}."""

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/health", health, methods=["GET"]), *routes],
        exception_handlers={HTTPException: _http_error, Exception: _crash},
    )


def _protocol(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers, which uvicorn
    lacks: a client that opens a connection and trickles its headers is dropped."""

    class Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            waiting_after = self.cycle  # a new request replaces the cycle once its headers are in
            self.loop.call_later(header_timeout, self._late, waiting_after)

        def _late(self, waiting_after: Any) -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

    return Protocol


class TriggerServer:
    """Serves `app` on a bound socket from a thread of this process; `close()` stops it."""

    def __init__(self, *, app: Starlette, sock: socket.socket, limits: HttpLimits) -> None:
        config = uvicorn.Config(
            app,
            http=_protocol(limits.header_timeout),
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_keep_alive=int(max(1, limits.keep_alive)),
            limit_concurrency=limits.max_connections,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        host, port = sock.getsockname()[:2]
        self.address = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[sock])),
            name="lakeflow-http",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise LakeflowError(f"the HTTP server on {self.address} did not start")
            time.sleep(0.01)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish (up to 5 s), close the socket."""
        self._server.should_exit = True
        self._thread.join(timeout)
