"""`catgan serve`: the web page and API over one generator (catgan.web)."""

from __future__ import annotations

import argparse

from catgan.cli.options import command, load_source, positive_int, source_options
from catgan.errors import CatganError


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535] (0 = any free), got {value}")
    return value


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "serve",
        "Serve a local web page to draw cats (and a small PNG/JSON API) from one generator.",
        "examples:\n"
        "  catgan serve                                   # the bundled cats-64 at http://127.0.0.1:8000/\n"
        "  catgan serve --run runs/cats64 --port 8080     # the latest checkpoint of a run (EMA weights)\n"
        "  catgan serve --weights cats.safetensors --port 0   # any free port; the URL is printed\n"
        "  catgan serve --host 0.0.0.0 --allow-host cats.lan   # on the LAN, reached as http://cats.lan:8000/\n"
        "API: /api/cat/SEED.png  /api/grid.png?seeds=0-15  /api/interpolate.png?a=1&b=2&t=0.5\n"
        "     /api/info  /openapi.json   (image endpoints take &truncation=0..1)\n"
        "needs the serve extra: pip install 'catgan[serve]'",
        run_serve,
    )
    source_options(p)  # --run / --weights / --model and --ema, as generate has them
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = every interface)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (repeatable; '*' turns the check off); other "
        "names get a 421, so a DNS-rebinding page cannot read the API",
    )
    p.add_argument("--port", type=_port, default=8000, help="TCP port (0 = any free port)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--max-concurrency", type=positive_int, default=2, help="images generated at the same time, at most"
    )
    p.add_argument("--quiet", action="store_true", help="no access log, only warnings and errors")


def run_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        missing = err.name or "fastapi"
        raise CatganError(
            f"serve needs its extra ({missing} is missing): pip install 'catgan[serve]'"
        ) from err
    from catgan.runtime import resolve_device
    from catgan.web.server import serve

    gen = load_source(args, str(resolve_device(args.device)))
    serve(
        gen,
        args.host,
        args.port,
        max_concurrency=args.max_concurrency,
        access_log=not args.quiet,
        allowed_hosts=args.allow_host,
    )
    return 0
