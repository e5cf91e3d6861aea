"""Run the web app with uvicorn on one host and port; prints the URL; Ctrl-C stops it cleanly."""

from __future__ import annotations

import socket
import sys

from catgan.errors import CatganError
from catgan.generate import LoadedGenerator


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


def serve(
    gen: LoadedGenerator,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_concurrency: int = 2,
    access_log: bool = True,
) -> None:
    """Serve `gen` until Ctrl-C (or SIGTERM); returns after a graceful shutdown."""
    import torch
    import uvicorn

    from catgan.runtime import cpu_count
    from catgan.web.app import create_app

    # This process is the server: split the cores between the generation threads. Each one using every
    # core oversubscribes the CPU, and OpenMP's spinning makes that many times slower, not a bit.
    if gen.device.type == "cpu":
        torch.set_num_threads(max(1, cpu_count() // max_concurrency))
    app = create_app(gen, max_concurrency=max_concurrency)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    wildcard = host in ("0.0.0.0", "::", "")
    shown = "127.0.0.1" if wildcard else f"[{host}]" if ":" in host else host
    where = f" (listening on every interface, {host or '*'})" if wildcard else ""
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log)
    server = uvicorn.Server(config)
    print(f"catgan serve: {gen.name} at http://{shown}:{bound_port}/{where}  (Ctrl-C to stop)", flush=True)
    try:
        server.run(sockets=[sock])  # uvicorn handles SIGINT/SIGTERM: stops accepting, finishes requests
    except KeyboardInterrupt:  # uvicorn re-raises the captured Ctrl-C once it has shut down
        pass
    finally:
        sock.close()
    print("catgan serve: stopped", file=sys.stderr, flush=True)
