"""The HTTP endpoint of `lakeflow up --http` at its edges: bodies over the cap whatever
Content-Length says, tokens that are wrong in every way, slow clients, 200 requests at once. Each
request is answered as it should be, and no run starts without the token (the event log's
run_requested events say so)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.lake import Lake
from tests.conftest import _stop_controller, eventually, lake_fingerprint
from tests.moto import free_port
from tests.trigger_pipelines import write_trips

TOKEN = "s3cret-token"
PIPELINE = "tests.trigger_pipelines:TRIPS"
RUN = {"select": "trips_daily", "partitions": "2024-01-01"}


def exchange(port: int, head: bytes, body: bytes = b"", *, timeout: float = 30.0):
    """Send raw bytes (the body from a thread, so a server that answers early is heard), read the
    whole reply; (status, headers, parsed JSON body or raw text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)

        def send_body() -> None:
            try:
                sock.sendall(body)
            except OSError:  # the server answered and closed before taking it all
                pass

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        sender.join(timeout)
    return parse_reply(data)


def parse_reply(data: bytes):
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        payload = dechunk(payload)
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode("latin-1")


def dechunk(payload: bytes) -> bytes:
    out = b""
    while payload:
        size_line, _, payload = payload.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, payload = out + payload[:size], payload[size + 2 :]
    return out


def request(
    method: str,
    path: str,
    *,
    token: str | bytes | None = TOKEN,
    body: bytes | None = None,
    length: str | None = "auto",
    extra: str = "",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    raw = "\r\n".join(lines).encode()
    if token is not None:
        given = token if isinstance(token, bytes) else token.encode()
        raw += b"\r\nAuthorization: Bearer " + given
    if length == "auto" and body is not None:
        raw += f"\r\nContent-Length: {len(body)}".encode()
    elif length not in (None, "auto"):
        raw += f"\r\nContent-Length: {length}".encode()
    if body is not None:
        raw += b"\r\nContent-Type: application/json"
    return raw + extra.encode() + b"\r\n\r\n"


def http_runs(lake: str) -> list[str]:
    """The run ids the event log says HTTP requests started."""
    events = lf.read_events(Lake(lake), kinds=["run_requested"])
    return sorted(events.filter(events["message"] == "http")["run_id"].to_list())


class Endpoint:
    def __init__(self, port: int, lake: str) -> None:
        self.port, self.lake = port, lake

    def send(self, head: bytes, body: bytes = b""):
        return exchange(self.port, head, body)

    def post(self, payload, *, token: str | bytes | None = TOKEN):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.send(request("POST", "/runs", token=token, body=body), body)


@pytest.fixture(scope="module")
def endpoint(ray_session, tmp_path_factory):
    """`lakeflow up --http` as a user types it, on the session's Ray; stopped by `lakeflow down`,
    after which nothing listens on the port."""
    lake = str(tmp_path_factory.mktemp("http") / "lake")
    write_trips(f"{lake}/trips", "2024-01-01", [1, 2])
    port = free_port()
    argv = ["up", PIPELINE, "--lake", lake, "--http", f"127.0.0.1:{port}", "--token", TOKEN]
    outcome: dict = {}
    cli = threading.Thread(target=lambda: outcome.setdefault("code", main(argv)), daemon=True)
    cli.start()

    def serving() -> bool:
        try:
            return exchange(port, request("GET", "/health", token=None), timeout=2)[0] == 200
        except OSError:
            return False

    eventually(serving)
    yield Endpoint(port, lake)
    try:
        assert lf.down(lake=lake, timeout=30)
        cli.join(30)
        assert outcome == {"code": 0}
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        _stop_controller(lake)


def test_a_body_over_the_cap_is_refused_whatever_content_length_says(endpoint):
    before = http_runs(endpoint.lake)
    big = json.dumps({**RUN, "pad": " " * (256 * 1024)}).encode()
    everything = json.dumps({"select": "*"}).encode() + b" " * (256 * 1024)
    # declared too large: refused before the body is read
    status, _, reply = endpoint.send(request("POST", "/runs", body=big), big)
    assert status == 413 and "64 KiB" in reply["error"]
    # negative, or not a number: never a run of everything
    for length in ("-1", "abc", "1e9"):
        status, _, _ = endpoint.send(
            request("POST", "/runs", body=everything, length=length), everything
        )
        assert status == 400, length
    # chunked, no length at all: counted as read
    chunked = request(
        "POST", "/runs", body=b"", length=None, extra="\r\nTransfer-Encoding: chunked"
    )
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (4096, everything[i : i + 4096].ljust(4096))
        for i in range(0, len(everything), 4096)
    )
    status, _, reply = endpoint.send(chunked, chunks + b"0\r\n\r\n")
    assert status == 413 and "64 KiB" in reply["error"]
    # a length that lies low: only that many bytes are the body, and they are not JSON
    status, _, reply = endpoint.send(
        request("POST", "/runs", body=everything, length="5"), everything
    )
    assert status == 400
    # no length and no body: a request must say what to run
    status, _, reply = endpoint.send(request("POST", "/runs", body=None, length=None))
    assert status == 400 and "select" in reply["error"]
    assert http_runs(endpoint.lake) == before
    # just under the cap is fine
    padded = json.dumps(RUN).encode()[:-1] + b" " * (60 * 1024) + b"}"
    status, _, reply = endpoint.post(padded)
    assert status == 202, reply
    assert http_runs(endpoint.lake) == sorted([*before, reply["run_id"]])


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "   ",
        "wrong",
        TOKEN + "x",
        TOKEN[:-1],
        "sécret".encode(),
        "s3cret-tökén".encode("latin-1"),
        b"\xff\xfe" + TOKEN.encode(),
    ],
    ids=["missing", "empty", "blank", "wrong", "longer", "shorter", "utf8", "latin1", "binary"],
)
def test_a_missing_wrong_or_non_ascii_token_is_401_and_runs_nothing(endpoint, token):
    before = http_runs(endpoint.lake)
    status, headers, reply = endpoint.post({"select": "*"}, token=token)
    assert status == 401 and headers["www-authenticate"] == "Bearer" and "token" in reply["error"]
    status, _, _ = endpoint.send(request("GET", "/runs", token=token))
    assert status == 401
    assert http_runs(endpoint.lake) == before


def test_other_schemes_and_header_shapes_are_401(endpoint):
    before = http_runs(endpoint.lake)
    body = json.dumps({"select": "*"}).encode()
    for auth in [f"Basic {TOKEN}", f"Token {TOKEN}", TOKEN, "Bearer", f"Bearer  {TOKEN} extra"]:
        head = request("POST", "/runs", token=None, body=body, extra=f"\r\nAuthorization: {auth}")
        assert endpoint.send(head, body)[0] == 401, auth
    assert http_runs(endpoint.lake) == before


def test_errors_are_json_and_never_show_the_lake(endpoint):
    lake_path = str(Path(endpoint.lake).resolve())
    cases = [
        (request("GET", "/nowhere"), b"", 404),
        (request("GET", "/runs/20240101T000000-deadbeef"), b"", 404),
        (request("GET", "/runs/..%2F..%2Fetc"), b"", 404),
        (request("DELETE", "/runs"), b"", 405),
        (request("PUT", "/health", token=None), b"", 405),
        (request("POST", "/runs", body=b"{not json"), b"{not json", 400),
        (request("POST", "/runs", body=b"[1, 2]"), b"[1, 2]", 400),
        (request("POST", "/runs", body=b'{"select": "nope"}'), b'{"select": "nope"}', 400),
        (request("POST", "/runs", body=b'{"select": "trips_daily", "partitions": "2024-13-45"}'),
         b'{"select": "trips_daily", "partitions": "2024-13-45"}', 400),
        (request("POST", "/runs", body=b'{"select": "trips_daily", "drop": 1}'),
         b'{"select": "trips_daily", "drop": 1}', 400),
        (request("POST", "/runs", body=b'{"select": 5}'), b'{"select": 5}', 400),
        (request("POST", "/runs", body=b'{"select": "trips_daily", "force": "yes"}'),
         b'{"select": "trips_daily", "force": "yes"}', 400),
    ]  # fmt: skip
    before = http_runs(endpoint.lake)
    for head, body, expected in cases:
        status, headers, reply = endpoint.send(head, body)
        assert status == expected, (head, status, reply)
        assert headers["content-type"] == "application/json", (head, headers)
        assert isinstance(reply, dict) and reply["error"], (head, reply)
        assert lake_path not in json.dumps(reply) and endpoint.lake not in json.dumps(reply)
    assert http_runs(endpoint.lake) == before
    status, _, reply = endpoint.send(
        request("POST", "/runs", body=b'{"select": "nope"}'), b'{"select": "nope"}'
    )
    assert "unknown asset" in reply["error"]


def test_runs_are_listed_and_each_one_can_be_read(endpoint):
    status, _, reply = endpoint.post(RUN)
    assert status == 202
    run_id = reply["run_id"]
    status, _, listed = endpoint.send(request("GET", "/runs"))
    assert status == 200
    assert run_id in [r["run_id"] for r in listed["runs"]]
    assert [r["run_id"] for r in listed["runs"]] == sorted(
        (r["run_id"] for r in listed["runs"]), reverse=True
    )
    mine = next(r for r in listed["runs"] if r["run_id"] == run_id)
    assert mine["origin"] == "http" and mine["select"] == ["trips_daily"]
    assert len(endpoint.send(request("GET", "/runs?limit=1"))[2]["runs"]) == 1
    assert endpoint.send(request("GET", "/runs?limit=zero"))[0] == 400

    def finished():
        status, _, run = endpoint.send(request("GET", f"/runs/{run_id}"))
        return status == 200 and run["status"] != "running" and run

    run = eventually(finished)
    assert run["run_id"] == run_id and run["select"] == ["trips_daily"]


def test_a_slow_client_does_not_hold_up_others(endpoint):
    slow = socket.create_connection(("127.0.0.1", endpoint.port), timeout=30)
    try:
        slow.sendall(b"POST /runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and then nothing for now
        started = time.monotonic()
        status, _, reply = endpoint.post(RUN)
        assert status == 202, reply
        assert endpoint.send(request("GET", f"/runs/{reply['run_id']}"))[0] == 200
        assert time.monotonic() - started < 10
        for line in (
            b"Authorization: Bearer wrong\r\n",
            b"Content-Length: 2\r\n",
            b"Connection: close\r\n",
        ):
            slow.sendall(line)
            time.sleep(0.1)  # a slow client, on purpose
        slow.sendall(b"\r\n{}")
        data = b""
        while chunk := slow.recv(65536):
            data += chunk
        assert parse_reply(data)[0] == 401
    finally:
        slow.close()


def test_200_requests_at_once_are_each_answered_and_only_the_token_runs(endpoint):
    before = set(http_runs(endpoint.lake))
    body = json.dumps(RUN).encode()
    bad_tokens = [None, "", "wrong", "sécret".encode(), b"\xff" * 8, TOKEN.upper()]
    cases: list[tuple[bytes, bytes, int]] = []
    for i in range(200):
        if i % 10 == 0:  # 20 valid runs
            cases.append((request("POST", "/runs", body=body), body, 202))
        elif i % 2 == 0:  # 80 with a bad token
            token = bad_tokens[i % len(bad_tokens)]
            cases.append((request("POST", "/runs", token=token, body=body), body, 401))
        elif i % 3 == 0:
            cases.append((request("GET", "/health", token=None), b"", 200))
        else:
            cases.append((request("GET", "/runs?limit=5"), b"", 200))

    async def one(head: bytes, payload: bytes):
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(head + payload)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return parse_reply(data)

    async def all_at_once():
        return await asyncio.wait_for(asyncio.gather(*(one(h, b) for h, b, _ in cases)), 240)

    replies = asyncio.run(all_at_once())
    assert [status for status, _, _ in replies] == [expected for _, _, expected in cases]
    started = {reply["run_id"] for (status, _, reply) in replies if status == 202}
    assert len(started) == 20
    assert set(http_runs(endpoint.lake)) - before == started


def test_a_bad_address_or_token_fails_before_ray_starts(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        for http, token, says in [
            ("8080", TOKEN, "HOST:PORT"),
            ("127.0.0.1:http", TOKEN, "port"),
            ("127.0.0.1:70000", TOKEN, "port"),
            ("no such host:80", TOKEN, "host"),
            (f"127.0.0.1:{taken.getsockname()[1]}", TOKEN, "cannot serve"),
            ("127.0.0.1:0", "", "token"),
            ("127.0.0.1:0", "sécret", "token"),
            ("127.0.0.1:0", "with space", "token"),
        ]:
            started = time.monotonic()
            code = main(["up", PIPELINE, "--lake", lake, "--http", http, "--token", token])
            err = capsys.readouterr().err
            assert code == 2 and says in err, (http, token, err)
            assert time.monotonic() - started < 5, "it started Ray first"
            assert lake_fingerprint(lake) == {} and not os.path.exists(lake), http
    finally:
        taken.close()


def test_http_needs_the_up_process_to_stay(tmp_path, capsys):
    code = main(["up", PIPELINE, "--lake", str(tmp_path / "lake"), "--http", "127.0.0.1:0",
                 "--detach", "--address", "ray://127.0.0.1:1"])  # fmt: skip
    assert code == 2 and "--detach" in capsys.readouterr().err


@pytest.fixture
def quick_server(tmp_path):
    """The server object with short deadlines, its /runs on a real in-process controller."""
    from lakeflow.control.client import controller_client
    from lakeflow.serve.web import Bearer, HttpLimits, TriggerServer, bind, build_app
    from lakeflow.serve.web_runs import run_routes
    from tests.trigger_pipelines import trips_pipeline

    lake = str(tmp_path / "lake")
    pipeline = trips_pipeline(lake, on_start="none")
    where = Lake(lake)
    limits = HttpLimits(header_timeout=0.5, body_timeout=0.5, keep_alive=1)
    client = controller_client(where, "local", None, None)
    routes = run_routes(
        pipeline=pipeline, client=client, lake=where, bearer=Bearer(TOKEN), limits=limits
    )
    server = TriggerServer(app=build_app(routes), sock=bind("127.0.0.1", 0), limits=limits)
    yield Endpoint(int(server.address.rsplit(":", 1)[1]), lake)
    server.close()
    _stop_controller(lake)
    with pytest.raises(OSError):
        socket.create_connection(
            ("127.0.0.1", int(server.address.rsplit(":", 1)[1])), timeout=2
        ).close()


def closed_by_server(sock: socket.socket) -> bytes:
    """What the server sent before it closed the connection (fails if it keeps it open 10 s)."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_client_too_slow_with_its_headers_or_body_is_dropped(quick_server):
    with socket.create_connection(("127.0.0.1", quick_server.port)) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
        assert closed_by_server(slow) == b""
    with socket.create_connection(("127.0.0.1", quick_server.port)) as slow:
        slow.sendall(request("POST", "/runs", body=b"x" * 100) + b'{"select": ')  # 11 of 100 bytes
        status, _, reply = parse_reply(closed_by_server(slow))
        assert status == 408 and "slowly" in reply["error"]
    assert http_runs(quick_server.lake) == []
    # a client that keeps up is served
    status, _, reply = quick_server.post(RUN)
    assert status == 202 and http_runs(quick_server.lake) == [reply["run_id"]]
