"""What the commands share: the help formatter, validated number types, status notes, the generator
source options (--run / --weights / --model, --ema) and the drawing options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

Runner = Callable[[argparse.Namespace], int]
RUN_HELP = "a training run folder (its latest checkpoint), or one checkpoint file: RUN/checkpoints/best.pt"


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a default where there is one worth reading (not None, not an on/off flag's, not where the
    help already says it) and keeps the examples in epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is argparse.SUPPRESS or isinstance(default, bool):
            return action.help
        if "default" in (action.help or "") or action.option_strings == []:
            return action.help
        return super()._get_help_string(action)


def note(msg: str) -> None:
    """A status line that is not the command's output: to stderr."""
    print(msg, file=sys.stderr, flush=True)


def _number(text: str, kind: type, minimum: float, strict: bool) -> Any:
    """Parse `text` as `kind` (int or float) no smaller than `minimum` (strictly larger when strict)."""
    what = ("a whole number" if kind is int else "a number") + (" > " if strict else " >= ") + f"{minimum:g}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum or (strict and value == minimum) or value != value:  # value != value: NaN
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, strict=False)


def nonneg_int(text: str) -> int:
    return _number(text, int, 0, strict=False)


def positive_float(text: str) -> float:
    return _number(text, float, 0.0, strict=True)


def nonneg_float(text: str) -> float:
    return _number(text, float, 0.0, strict=False)


def beta(text: str) -> float:
    """An Adam beta: a number in [0, 1) (torch.optim.Adam refuses anything else with a traceback)."""
    value = _number(text, float, 0.0, strict=False)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value:g}")
    return value


def command(sub: argparse._SubParsersAction, name: str, help: str, epilog: str, run: Runner):
    p = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=Formatter)
    p.set_defaults(_run=run)
    return p


def ema_option(p: argparse.ArgumentParser, help: str) -> None:
    """--ema / --no-ema, on by default (read back with ema(args)); no "(default: True)" to contradict it."""
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)


def ema(args: argparse.Namespace) -> bool:
    return getattr(args, "ema", True)


def source_options(p: argparse.ArgumentParser, with_ema: bool = True) -> None:
    """--run / --weights / --model (one at most; default: the bundled model) and --ema/--no-ema."""
    src = p.add_mutually_exclusive_group()
    none = argparse.SUPPRESS  # read back with getattr(args, name, None)
    src.add_argument("--run", metavar="RUN", default=none, help=RUN_HELP)
    src.add_argument("--weights", metavar="FILE", default=none, help="an exported generator (.safetensors)")
    src.add_argument(
        "--model",
        metavar="NAME",
        default=none,
        help="a bundled generator, cats-64 or cats-128 (default: cats-64)",
    )
    if with_ema:
        ema_option(p, "use a run's EMA generator when it has one (the default); --no-ema: its raw G")


def load_source(args: argparse.Namespace, device: Any = None):
    """The generator the source options name, loaded (and described on stderr)."""
    from catgan.generate import describe, load
    from catgan.sources import from_options

    source = from_options(
        getattr(args, "run", None), getattr(args, "weights", None), getattr(args, "model", None)
    )
    gen = load(source, ema(args), device if device is not None else args.device)
    note(f"generator: {describe(gen)}")
    return gen


def drawing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--truncation", type=float, default=1.0, metavar="PSI", help="scale latents toward 0; 1 = none"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--batch", type=positive_int, default=64, help="images per forward pass")
