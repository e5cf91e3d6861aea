"""The `catgan` command: an explicit table of subcommands, each a module that declares its options (with
examples in --help) and calls the package; no policy here. A CatganError becomes one line on stderr and
exit code 2; Ctrl-C exits 130 (SIGTERM, where the callee raises it as an interrupt with its `signum`: 143)
after the callee has saved what it must.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence

from catgan import __version__
from catgan.cli import draw, edit, evaluate, export, prepare, project, restore, serve, train
from catgan.cli.options import Formatter
from catgan.errors import CatganError

# name -> the function that declares it (in --help order)
COMMANDS = {
    "prepare": prepare.add_prepare,
    "train": train.add_train,
    "info": train.add_info,
    "generate": draw.add_generate,
    "interpolate": draw.add_interpolate,
    "export": export.add_export,
    "evaluate": evaluate.add_evaluate,
    "serve": serve.add_serve,
    "project": project.add_project,
    "train-encoder": project.add_train_encoder,
    "edit": edit.add_edit,
    "restore": restore.add_restore,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catgan",
        description="Learn to draw new cat faces from photos.",
        formatter_class=Formatter,
        epilog=(
            "examples:\n"
            "  catgan generate --out cats.png\n"
            "  catgan prepare ~/Downloads/cat-dataset.zip --out data/faces\n"
            "  catgan train data/faces/cats-64 --preset cats-64 --run runs/cats64\n"
        ),
    )
    parser.add_argument("--version", action="version", version=f"catgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS.values():
        add(sub)
    return parser


@contextlib.contextmanager
def _printable_output() -> Iterator[None]:
    """stdout and stderr write what their encoding cannot hold as backslash escapes: a file name that is
    not UTF-8 (or not ASCII, under PYTHONIOENCODING=ascii) never ends a command that has done its work
    with a UnicodeEncodeError. Their settings are restored on the way out."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                stream.reconfigure(errors="backslashreplace")
                changed.append(stream)
    try:
        yield
    finally:
        for stream in changed:
            with contextlib.suppress(OSError, ValueError, TypeError):
                stream.reconfigure(errors="strict")


def main(argv: Sequence[str] | None = None) -> int:
    with _printable_output():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CatganError as err:
        print(f"catgan {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"catgan {args.command}: interrupted", file=sys.stderr)
        return 128 + getattr(err, "signum", 2)  # the shell's 128 + N for a process ended by signal N
