"""One image showing how a run's fixed-seed sample grid changed over training (for docs and model cards).

    python benchmarks/sample_progression.py runs/dcgan-64 docs/images/progress.png --steps 100,400,800

Each row is the run's `samples/step-NNNNNN.png` at one step, cut to its first `--cats` cats (the same seeds
in every row, so a column follows one latent through training). The last row is the newest grid.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image, ImageDraw


def cats_of(grid: Image.Image, size: int, n: int, pad: int = 2) -> list[Image.Image]:
    """The first n tiles of a make_grid image of size-px cats with `pad` px borders."""
    per_row = (grid.width - pad) // (size + pad)
    return [
        grid.crop(
            (
                pad + (i % per_row) * (size + pad),
                pad + (i // per_row) * (size + pad),
                pad + (i % per_row) * (size + pad) + size,
                pad + (i // per_row) * (size + pad) + size,
            )
        )
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", default="", help="comma list of steps (default: about 6 spread over the run)")
    ap.add_argument("--cats", type=int, default=10)
    ap.add_argument("--size", type=int, default=64, help="image size of the run")
    args = ap.parse_args()
    found = {
        int(m.group(1)): p
        for p in (args.run / "samples").glob("step-*.png")
        if (m := re.match(r"step-(\d+)\.png$", p.name))
    }
    if not found:
        raise SystemExit(f"no sample grids in {args.run / 'samples'}")
    steps = sorted(found)
    wanted = [int(s) for s in args.steps.split(",") if s] or steps[:: max(1, len(steps) // 6)]
    wanted = sorted({s for s in wanted if s in found} | {steps[-1]})
    label_w, s = 90, args.size
    sheet = Image.new("RGB", (label_w + args.cats * (s + 2), len(wanted) * (s + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, step in enumerate(wanted):
        for col, cat in enumerate(cats_of(Image.open(found[step]).convert("RGB"), s, args.cats)):
            sheet.paste(cat, (label_w + col * (s + 2), row * (s + 2)))
        draw.text((4, row * (s + 2) + s // 2 - 6), f"step {step}", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: steps {', '.join(map(str, wanted))}")


if __name__ == "__main__":
    main()
