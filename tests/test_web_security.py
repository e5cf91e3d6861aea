"""`catgan serve`'s edges: HEAD, the security headers, the Host check (DNS rebinding), the request deadline
(idle and half-sent connections) and the warning for a server other machines can reach.

The app-level checks go through FastAPI's test client; the connection-level ones through raw sockets
against a real `catgan.web.server.serve` (or `catgan serve`) in a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve,test]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve,test]'")

from fastapi.testclient import TestClient  # noqa: E402

from catgan.errors import CatganError  # noqa: E402
from catgan.generate import load_generator  # noqa: E402
from catgan.web.app import create_app  # noqa: E402
from catgan.web.security import HostCheck, HostPolicy, host_name  # noqa: E402
from catgan.web.server import exposure_warning  # noqa: E402
from test_web_api import export_tiny  # noqa: E402

DEADLINE_S = 1.0  # the request deadline the served subprocess runs with (the default is 10 s)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("websec") / "tiny.safetensors")


@pytest.fixture(scope="module")
def client(weights) -> Iterator[TestClient]:
    with TestClient(create_app(load_generator(weights=weights))) as c:
        yield c


# ---- HEAD and the headers on every response -------------------------------------------------------

HEAD_URLS = [
    "/",
    "/static/app.js",
    "/api/info",
    "/api/cat/1.png",
    "/api/grid.png?seeds=0-3",
    "/api/interpolate.png?a=1&b=2&t=0.5",
    "/openapi.json",
    "/api/cat/-1.png",  # a 422: HEAD gets the same status as GET
    "/api/dog.png",  # a 404
]


@pytest.mark.parametrize("url", HEAD_URLS)
def test_head_answers_like_get_without_a_body(client, url):
    get, head = client.get(url), client.head(url)
    assert head.status_code == get.status_code != 405
    assert head.content == b"" and get.content != b""
    for name in ("content-type", "content-length", "etag", "cache-control"):
        assert head.headers.get(name) == get.headers.get(name), name
    assert int(head.headers["content-length"]) == len(get.content)


def test_head_with_if_none_match_is_a_304(client):
    etag = client.get("/api/cat/3.png").headers["etag"]
    r = client.head("/api/cat/3.png", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""


@pytest.mark.parametrize(
    "method, url",
    [
        ("GET", "/"),
        ("GET", "/static/style.css"),
        ("GET", "/api/info"),
        ("GET", "/api/cat/1.png"),
        ("GET", "/api/grid.png?seeds=a"),  # 422
        ("GET", "/nowhere"),  # 404
        ("POST", "/api/info"),  # 405
        ("HEAD", "/"),
    ],
)
def test_every_response_carries_the_security_headers(client, method, url):
    r = client.request(method, url)
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split("; ")}
    assert csp["frame-ancestors"] == ["'none'"] and csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]  # no inline script, nothing remote
    assert r.headers["referrer-policy"] == "no-referrer"
    assert len(r.headers.get_list("content-security-policy")) == 1


def test_not_modified_keeps_the_headers(client):
    etag = client.get("/api/cat/2.png").headers["etag"]
    r = client.get("/api/cat/2.png", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.headers["x-content-type-options"] == "nosniff"


TRAVERSALS = [
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/static/....//app.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..%5capp.py",
    "/static/%00app.js",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_static_files_stay_in_their_folder(client, url):
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert b"import" not in r.content and b"root:" not in r.content and b"[project]" not in r.content


# ---- the Host check -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, name",
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("localhost.:80", "localhost"),
        ("[::1]:8000", "::1"),
        ("cats.lan", "cats.lan"),
        ("my_box", "my_box"),
        ("evil.example:8000", "evil.example"),
        ("a b", None),
        ("evil.example:80:80", None),
        ("[::1", None),
        ("[evil]:80", None),
        ("host:port", None),
        ("", None),
        ("x" * 300 + ".example:", None),
    ],
)
def test_host_name(header, name):
    assert host_name(header) == name


def test_host_policy_for_each_kind_of_bind():
    loop = HostPolicy.for_bind("127.0.0.1")
    assert all(loop.allows(n) for n in ("127.0.0.1", "localhost", "::1"))
    assert not loop.allows("evil.example") and not loop.allows("10.0.0.7")
    named = HostPolicy.for_bind("localhost", address="127.0.0.1")
    assert named.allows("localhost") and named.allows("127.0.0.1")
    lan = HostPolicy.for_bind("192.168.1.5")
    assert lan.allows("192.168.1.5") and not lan.allows("localhost") and not lan.allows("192.168.1.6")
    every = HostPolicy.for_bind("0.0.0.0", ["cats.lan"])
    assert every.allows("10.0.0.7") and every.allows("fe80::1") and every.allows("localhost")
    assert every.allows("cats.lan") and not every.allows("evil.example")
    assert HostPolicy.for_bind("127.0.0.1", ["*"]).allows("evil.example")


@pytest.mark.parametrize("entry", ["http://cats.lan", "cats.lan:8000", "cats lan", "", "*.lan", "a/b"])
def test_allow_list_entries_are_checked(entry):
    with pytest.raises(CatganError, match=r"--allow-host takes a host name .*got"):
        HostPolicy.for_bind("127.0.0.1", [entry])


@pytest.fixture(scope="module")
def guarded(weights) -> Iterator[TestClient]:
    """The app behind the Host check as `serve` installs it for 127.0.0.1 --allow-host cats.lan."""
    app = create_app(load_generator(weights=weights))
    app.add_middleware(HostCheck, policy=HostPolicy.for_bind("127.0.0.1", ["cats.lan"]))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        yield c


SERVED_NAMES = ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "cats.lan", "CATS.LAN:80"]


@pytest.mark.parametrize("host", SERVED_NAMES)
def test_host_check_lets_the_served_names_through(guarded, host):
    assert guarded.get("/api/info", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_a_rebinding_page_cannot_read_the_api(guarded, method):
    r = guarded.request(method, "/api/info", headers={"Host": "evil.example:8000"})
    assert r.status_code == 421
    assert r.headers["x-content-type-options"] == "nosniff"
    if method != "HEAD":
        body = r.json()
        assert body["parameter"] == "Host" and "evil.example" in body["error"]
        assert "--allow-host evil.example" in body["error"] and "source" not in body
    assert guarded.get("/", headers={"Host": "evil.example"}).status_code == 421  # nor the page


def test_a_malformed_host_is_a_400(guarded):
    r = guarded.get("/api/info", headers={"Host": "evil example"})
    assert r.status_code == 400 and "malformed Host" in r.json()["error"]


# ---- a real server: deadlines, Host, HEAD over the wire ---------------------------------------------


def _start(args: list[str]) -> tuple[subprocess.Popen, int]:
    """Start a server subprocess; return it and the port it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if m is None:
        proc.kill()
        raise AssertionError(f"no URL printed: {line!r} {proc.communicate()[1][-2000:]}")
    return proc, int(m.group(1))


def _stop(proc: subprocess.Popen) -> str:
    """SIGINT, then the server's stderr; it must stop cleanly."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    return err


SERVE_SCRIPT = """
import sys
from catgan.generate import load_generator
from catgan.web.server import serve
serve(load_generator(weights=sys.argv[1]), "127.0.0.1", 0, access_log=False,
      allowed_hosts=["cats.lan"], request_timeout=float(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def served(weights) -> Iterator[int]:
    """`serve` on 127.0.0.1 with --allow-host cats.lan and a 1 s request deadline; yields the port."""
    proc, port = _start([sys.executable, "-c", SERVE_SCRIPT, str(weights), str(DEADLINE_S)])
    yield port
    err = _stop(proc)
    assert "warning" not in err  # loopback: nothing to warn about


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S + 5)


class Wire:
    """Reads HTTP/1.1 responses off one socket, pipelined ones included (http.client cannot share its
    buffer between two responses)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed mid-response after {self.buf[:200]!r}")
        self.buf += data

    def response(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        status = int(status_line.split()[1])
        n = 0 if method == "HEAD" or status == 304 else int(headers.get("content-length", 0))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` without answering (a socket timeout fails the test)."""
    t0 = time.monotonic()
    assert sock.recv(1024) == b""  # closed, and nothing was sent first
    return time.monotonic() - t0


def test_half_sent_request_is_closed_at_the_deadline(served):
    with _connect(served) as sock:
        sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: the head never ends
        waited = _closed_after(sock)
    assert DEADLINE_S * 0.5 < waited < DEADLINE_S + 4


def test_idle_connection_is_closed_at_the_deadline(served):
    with _connect(served) as sock:
        assert DEADLINE_S * 0.5 < _closed_after(sock) < DEADLINE_S + 4


def test_a_trickle_does_not_extend_the_deadline(served):
    request = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    with _connect(served) as sock:
        t0 = time.monotonic()
        for byte in request:  # a byte every fifth of the deadline: each one resets no timer
            try:
                sock.sendall(bytes([byte]))
                if select.select([sock], [], [], DEADLINE_S / 5)[0]:
                    assert sock.recv(1024) == b""
                    break
            except ConnectionResetError:
                break
        else:
            pytest.fail("the connection was still open after 100 slow bytes")
        waited = time.monotonic() - t0
    assert DEADLINE_S * 0.5 < waited < DEADLINE_S + 4


def test_a_keep_alive_connection_outlives_the_deadline_between_requests(served):
    with _connect(served) as sock:
        for _ in range(2):
            sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, body = Wire(sock).response()
            assert status == 200 and json.loads(body)["image_size"] == 16
            time.sleep(DEADLINE_S * 1.5)  # idle longer than the request deadline, within keep-alive (5 s)


def test_head_over_the_wire_sends_no_body(served):
    with _connect(served) as sock:  # pipelined: a stray body after HEAD would garble the second answer
        sock.sendall(
            b"HEAD /api/cat/1.png HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        wire = Wire(sock)
        status, headers, body = wire.response("HEAD")
        assert status == 200 and int(headers["content-length"]) > 0 and body == b""
        assert "server" not in headers  # no "server: uvicorn"
        status, _, body = wire.response()
        assert status == 200 and json.loads(body)["image_size"] == 16 and wire.buf == b""


@pytest.mark.parametrize("host, status", [("evil.example", 421), ("cats.lan:8000", 200), ("127.0.0.1", 200)])
def test_served_host_check(served, host, status):
    with _connect(served) as sock:
        sock.sendall(f"GET /api/info HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        got, _, body = Wire(sock).response()
        assert got == status and ("error" in json.loads(body)) == (status == 421)


@pytest.mark.parametrize("url", TRAVERSALS)
def test_served_static_files_stay_in_their_folder(served, url):
    """As sent on the wire: a client library would tidy `..` away before the server saw it."""
    with _connect(served) as sock:
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        status, _, body = Wire(sock).response()
    assert 400 <= status < 500 and b"import" not in body and b"root:" not in body, (url, status)


def test_served_refuses_two_host_headers(served):
    with _connect(served) as sock:
        sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
        status, _, body = Wire(sock).response()
        assert status == 400 and b"source" not in body


def test_oversized_request_head_is_a_400(served):
    with _connect(served) as sock:
        # (h11 measures a head it is still waiting for: 20 kB and no end, where its limit is 16 KiB)
        sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000)
        t0 = time.monotonic()
        assert Wire(sock).response()[0] == 400
        assert time.monotonic() - t0 < DEADLINE_S * 0.5  # refused at once, not at the deadline


# ---- every interface: a warning, and the Host check still on ---------------------------------------


def test_exposure_warning():
    assert exposure_warning("127.0.0.1", "127.0.0.1") is None
    assert exposure_warning("localhost", "127.0.0.1") is None
    assert exposure_warning("::1", "::1") is None
    text = exposure_warning("0.0.0.0", "0.0.0.0")
    assert "every interface" in text and "--host 127.0.0.1" in text and "\n" not in text
    assert "192.168.1.5" in exposure_warning("192.168.1.5", "192.168.1.5")


def test_cli_serve_on_every_interface_warns_and_checks_host(weights):
    proc, port = _start(
        [sys.executable, "-m", "catgan", "serve", "--weights", str(weights), "--host", "0.0.0.0"]
        + ["--port", "0", "--device", "cpu", "--quiet"]
    )
    try:
        codes = {}
        for host in ("10.9.8.7", "evil.example"):  # any address may name this machine; a name may not
            with _connect(port) as sock:
                sock.sendall(f"GET /api/info HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                codes[host] = Wire(sock).response()[0]
    finally:
        err = _stop(proc)
    assert codes == {"10.9.8.7": 200, "evil.example": 421}
    warnings = [line for line in err.splitlines() if line.startswith("catgan serve: warning:")]
    assert len(warnings) == 1 and "every interface" in warnings[0]
