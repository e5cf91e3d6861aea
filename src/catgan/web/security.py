"""What `catgan serve` refuses or adds on every response, as two small ASGI middlewares.

- `SecureResponses` (installed by `create_app`): HEAD is answered as GET without the body; every response
  says `X-Content-Type-Options: nosniff`, a Content-Security-Policy that allows only this origin and
  `frame-ancestors 'none'` (no other site may frame the page), and `Referrer-Policy: no-referrer`.
- `HostCheck` (installed by `catgan.web.server.serve`, which knows the bound address): a request whose Host
  header is not a name this server answers to gets a 421. A DNS-rebinding page (evil.example re-resolved to
  127.0.0.1) is same-origin with the server as far as its browser knows, and could read `/api/info`, which
  names a local path; its requests carry `Host: evil.example`, so they stop here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from catgan.errors import CatganError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page loads only its own script, style sheet and images ("data:" is the empty favicon in index.html).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
)
_HEADER_NAMES = {name for name, _ in SECURITY_HEADERS}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_NAME_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_PORT_RE = re.compile(r":[0-9]{1,5}")


class SecureResponses:
    """HEAD as GET without a body, and the security headers on every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        if head:  # FastAPI's GET routes do not take HEAD (405): route it as the GET it asks about
            scope = {**scope, "method": "GET"}

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _HEADER_NAMES]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            elif head and message["type"] == "http.response.body":
                # the same status and headers (Content-Length, ETag) as GET, and no body
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_secured)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for names and wildcards (0.0.0.0, ::)."""
    if address.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The host of a Host header, lower-case, without port or trailing dot; None where it is malformed.

    "Example.com:8000" -> "example.com", "[::1]:8000" -> "::1", "a b" -> None.
    """
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = (value[1:end], value[end + 1 :]) if end > 0 else ("", "")
        if not _is_ip(name):
            return None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
        name = name.rstrip(".")
        if not (_NAME_RE.fullmatch(name) or _is_ip(name)):
            return None
    if rest and not _PORT_RE.fullmatch(rest):
        return None
    return name


def _allow_entry(entry: str) -> str:
    name = entry.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name != "*" and not (_NAME_RE.fullmatch(name) or _is_ip(name)):
        raise CatganError(
            f"--allow-host takes a host name or address without scheme or port (e.g. cats.lan), got {entry!r}"
        )
    return name


@dataclass(frozen=True)
class HostPolicy:
    """The Host names a server answers to.

    names: exact names and addresses (lower-case). any_ip: any IP address is accepted too (a server on
    every interface cannot know all of its addresses; an address is never a rebinding name, since a page
    at an address is that address's own origin). any_host: the check is off ("*" in the allow-list).
    """

    names: frozenset[str]
    any_ip: bool = False
    any_host: bool = False

    @classmethod
    def for_bind(cls, host: str, allow: Iterable[str] = (), address: str | None = None) -> HostPolicy:
        """`host` as given to --host and the `address` the socket got for it (a name's IP), their loopback
        names where either is loopback or every interface, plus the `allow` list."""
        bound = {h.strip().lower().strip("[]").rstrip(".") for h in (host, address) if h is not None}
        wildcard = bool(bound & WILDCARD_HOSTS)
        names = bound - WILDCARD_HOSTS
        if wildcard or any(is_loopback(b) for b in names):
            names |= LOOPBACK_NAMES
        extra = {_allow_entry(e) for e in allow}
        return cls(frozenset(names | (extra - {"*"})), any_ip=wildcard, any_host="*" in extra)

    def allows(self, name: str) -> bool:
        return self.any_host or name in self.names or (self.any_ip and _is_ip(name))


def _refusal(status: int, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps({"error": message, "parameter": "Host"}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class HostCheck:
    """421 for a Host the policy does not name, 400 for a malformed or repeated Host header.

    A request with no Host header at all (HTTP/1.0) passes: no browser sends one, so no page can.
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy):
        self.app = app
        self.policy = policy

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"]
        if not values or self.policy.any_host:
            return None
        if len(values) > 1:
            return 400, "bad request: more than one Host header"
        name = host_name(values[0])
        if name is None:
            return 400, f"bad request: malformed Host header {values[0][:60]!r}"
        if self.policy.allows(name):
            return None
        return 421, (
            f"Host {name[:60]!r} is not served here (a guard against DNS rebinding); open the address "
            f"catgan serve printed, or restart it with --allow-host {name[:60]}"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self.refusal(scope) if scope["type"] == "http" else None  # (the app has no websockets)
        if refused is None:
            await self.app(scope, receive, send)
            return
        start, body = _refusal(*refused)
        if scope["method"] == "HEAD":
            body = {**body, "body": b""}
        await send(start)
        await send(body)
