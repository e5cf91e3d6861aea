"""The `catgan` command: parses and validates options, then calls the modules. No logic of its own.

Each subcommand has an `_add_<name>(subparsers)` that declares its options (with examples in --help)
and a `_run_<name>(args)` that calls into the package. Errors raised as CatganError become one line
on stderr and exit code 2; Ctrl-C exits 130 after the callee has saved what it must.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from catgan import __version__
from catgan.errors import CatganError

Runner = Callable[[argparse.Namespace], int]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples in epilogs as written."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _command(sub: argparse._SubParsersAction, name: str, help: str, epilog: str, run: Runner):
    p = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=_Formatter)
    p.set_defaults(_run=run)
    return p


# ---- prepare -------------------------------------------------------------------------------------
# (owned by the data work: catgan.data.prepare)


# ---- train / info --------------------------------------------------------------------------------
# (owned by the training work: catgan.train, catgan.models)


# ---- generate / interpolate / export -------------------------------------------------------------
# (owned by the generation work: catgan.generate, catgan.checkpoint)


# ---- evaluate ------------------------------------------------------------------------------------
# (owned by the metrics work: catgan.metrics)


# ---- serve ---------------------------------------------------------------------------------------
# (owned by the web work: catgan.web)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catgan",
        description="Learn to draw new cat faces from photos.",
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  catgan generate --out cats.png\n"
            "  catgan prepare ~/Downloads/cat-dataset.zip --out data/cats\n"
            "  catgan train data/cats/cats-64 --preset dcgan-64 --run runs/cats64\n"
        ),
    )
    parser.add_argument("--version", action="version", version=f"catgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, value in sorted(globals().items()):
        if name.startswith("_add_") and callable(value):
            value(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CatganError as err:
        print(f"catgan {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"catgan {args.command}: interrupted", file=sys.stderr)
        return 130
