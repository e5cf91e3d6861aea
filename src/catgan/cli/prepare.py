"""`catgan prepare`: photos -> training-ready datasets (catgan.prepare)."""

from __future__ import annotations

import argparse
import sys

from catgan.cli.options import command, nonneg_int, positive_float, positive_int


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64,128, got {text!r}") from None
    if not sizes or any(s < 4 or s > 4096 for s in sizes) or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"expected distinct sizes in 4..4096 like 64,128, got {text!r}")
    return sizes


def add_prepare(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "prepare",
        help="Turn cat photos into training-ready datasets (aligned square faces, one folder per size).",
        epilog=(
            "SOURCE is the Kaggle CAT archive (read from the zip), a folder holding CAT_00..CAT_06, one\n"
            "CAT_0x folder, or a folder of face crops; several SOURCEs merge. Writes DIR/cats-S/ (images +\n"
            "dataset.json) and DIR/contact-S.png for each size, and DIR/report.txt (what was kept and\n"
            "each dropped photo's reason; also printed); finished sizes are skipped on a rerun. --holdout F\n"
            "keeps a share of the photos out of training, in DIR/cats-S-holdout/.\n\n"
            "examples:\n"
            "  catgan prepare ~/Downloads/cat-dataset.zip --out data/faces\n"
            "  catgan prepare ../shared/data/cat-landmarks --out data/landmarks --sizes 64,128\n"
            "  catgan prepare ~/Downloads/cat-dataset.zip --out data/faces --holdout 0.05\n"
            "  catgan prepare crops/ --out data/my-faces --sizes 64 --format jpg --quality 95 --workers 4\n"
        ),
        run=run_prepare,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="zip archive or folder of photos")
    p.add_argument("--out", required=True, metavar="DIR", default=argparse.SUPPRESS, help="output folder")
    p.add_argument("--sizes", type=_sizes, default="64,128", help="comma-separated output sizes in px")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image file format")
    p.add_argument("--quality", type=positive_int, default=95, help="JPEG quality 1..100 (--format jpg)")
    p.add_argument("--workers", type=nonneg_int, default=0, help="worker processes; 0 = all cores")
    p.add_argument(
        "--no-outliers",
        dest="outliers",
        action="store_false",
        default=argparse.SUPPRESS,
        help="keep the 134 photos the original system removed as outliers",
    )
    p.add_argument(
        "--square",
        choices=("auto", "crop", "pad"),
        default="auto",
        help="make faces square by cropping or by padding with edge pixels; auto = pad landmark faces "
        "to the full reference square, centre-crop face-folder images",
    )
    p.add_argument(
        "--holdout",
        type=_fraction,
        default=None,
        metavar="FRACTION",
        help="put a deterministic share F (0 < F <= 0.5) of the photos, chosen by a hash of the photo name, "
        "in DIR/cats-S-holdout/ instead of DIR/cats-S/",
    )
    p.add_argument(
        "--max-file-mb",
        type=positive_int,
        default=256,
        metavar="N",
        help="skip input files larger than N MiB before reading them",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="no progress bar",
    )


def _fraction(text: str) -> float:
    value = positive_float(text)
    if value > 0.5:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 0.5], got {value:g}")
    return value


def run_prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from catgan.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        sources=tuple(Path(s) for s in args.sources), out=Path(args.out), sizes=args.sizes,
        image_format=args.format, quality=args.quality, workers=args.workers, square=args.square,
        outliers=getattr(args, "outliers", True),  # the flags default to SUPPRESS to keep --help clear
        progress=getattr(args, "progress", True),
        holdout=args.holdout, max_bytes=args.max_file_mb * 2**20,
    )  # fmt: skip
    print(prepare(config).text(sys.stdout.encoding))
    return 0
