"""Run the web app with uvicorn on one host and port; prints the URL; Ctrl-C stops it cleanly.

The connection-level limits live here: a deadline on reading each request, the keep-alive timeout, the
request-head size and the number of connections; the Host check (catgan.web.security) knows the bound
address from here too.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from catgan.errors import CatganError
from catgan.generate import LoadedGenerator
from catgan.web.security import HostCheck, HostPolicy, is_loopback

REQUEST_TIMEOUT_S = 10.0  # from the first byte of a connection or request to the whole request
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_HEAD_BYTES = 16 * 1024  # a request line + headers larger than this is a 400 (h11's own default)
MAX_CONNECTIONS = 256  # open connections and requests in flight; beyond it uvicorn answers 503


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request.

    uvicorn times out only a keep-alive connection idle after a response: a connection that sends
    nothing, or half a request and then waits (slowloris), would be held open for ever. The deadline runs
    from a connection's opening, or a request's first byte, to the end of that request; a slow trickle does
    not extend it.
    """

    request_timeout: float = REQUEST_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.request_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # (cancels the keep-alive timer: a request has begun)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # (arms the keep-alive timer, or reads a pipelined request)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the deadline while a request is being read; stop it once the request is whole, or while the
        keep-alive timer watches an idle connection."""
        reading = (
            self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        )
        if not reading:
            self._stop_deadline()
        elif self.request_deadline is None:
            self.request_deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _stop_deadline(self) -> None:
        if self.request_deadline is not None:
            self.request_deadline.cancel()
            self.request_deadline = None

    def _expire(self) -> None:
        self.request_deadline = None
        if not self.transport.is_closing() and self.conn.their_state is not h11.DONE:
            # (no response is possible: h11 answers only a request whose head it has read whole)
            self.logger.info("closing a connection that sent no whole request in %gs", self.request_timeout)
            self.transport.close()


def server_config(app, access_log: bool = True, request_timeout: float = REQUEST_TIMEOUT_S) -> uvicorn.Config:
    """uvicorn's settings for catgan: its h11 protocol with the request deadline, whatever else is
    installed (uvicorn's "auto" would take httptools where present, which has none), and stated limits."""
    if not request_timeout > 0:
        raise CatganError(f"the request timeout must be > 0 seconds, got {request_timeout}")
    protocol = type("TimedH11Protocol", (TimedH11Protocol,), {"request_timeout": float(request_timeout)})
    return uvicorn.Config(
        app,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        limit_concurrency=MAX_CONNECTIONS,
        server_header=False,  # no "server: uvicorn": nothing to fingerprint
        log_level="info" if access_log else "warning",
        access_log=access_log,
    )


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, so port 0 picks a free port and the printed URL is the real one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it keep-alive clients wait ~40 ms (Nagle + delayed ACK) for every response
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise CatganError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; try another --port"
        ) from err
    sock.listen(128)
    return sock


def exposure_warning(host: str, address: str) -> str | None:
    """The stderr warning for a server other machines can reach; None on a loopback address."""
    if is_loopback(address):
        return None
    where = f"{host or '*'} (every interface)" if host in ("0.0.0.0", "::", "") else f"{host} ({address})"
    return (
        f"catgan serve: warning: listening on {where}: other machines on the network can reach this "
        "server and read /api/info, which names a local path; use --host 127.0.0.1 to keep it on this machine"
    )


def serve(
    gen: LoadedGenerator,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_concurrency: int = 2,
    access_log: bool = True,
    allowed_hosts: Sequence[str] = (),
    request_timeout: float = REQUEST_TIMEOUT_S,
) -> None:
    """Serve `gen` until Ctrl-C (or SIGTERM); returns after a graceful shutdown.

    allowed_hosts: Host header names answered besides the bound address (and its loopback names);
    "*" turns the check off. Others get a 421 (catgan.web.security.HostCheck).
    """
    import torch

    from catgan.runtime import cpu_count
    from catgan.web.app import create_app

    HostPolicy.for_bind(host, allowed_hosts)  # a bad --allow-host fails before anything is loaded or bound
    # This process is the server: split the cores between the generation threads. Each one using every
    # core oversubscribes the CPU, and OpenMP's spinning makes that many times slower, not a bit.
    if gen.device.type == "cpu":
        torch.set_num_threads(max(1, cpu_count() // max_concurrency))
    app = create_app(gen, max_concurrency=max_concurrency)
    sock = _bind(host, port)
    address, bound_port = sock.getsockname()[:2]
    app.add_middleware(HostCheck, policy=HostPolicy.for_bind(host, allowed_hosts, address=address))
    wildcard = host in ("0.0.0.0", "::", "")
    shown = "127.0.0.1" if wildcard else f"[{host}]" if ":" in host else host
    where = f" (listening on every interface, {host or '*'})" if wildcard else ""
    server = uvicorn.Server(server_config(app, access_log, request_timeout))
    print(f"catgan serve: {gen.name} at http://{shown}:{bound_port}/{where}  (Ctrl-C to stop)", flush=True)
    warning = exposure_warning(host, address)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])  # uvicorn handles SIGINT/SIGTERM: stops accepting, finishes requests
    except KeyboardInterrupt:  # uvicorn re-raises the captured Ctrl-C once it has shut down
        pass
    finally:
        sock.close()
    print("catgan serve: stopped", file=sys.stderr, flush=True)
