"""The class-leak numbers of a generator, and Kynkäänniemi et al.'s resampling check (ICLR 2023, issue 34.3).

    python benchmarks/class_resample.py --model cats-64 --data DIR/cats-64 --pool 4000 --n 2000 \
        --repeats 5 [--inception] --out OUT.json

1. A pool of --pool samples (seeds 0..pool-1) and the real faces of DATA (and of its held-out sibling)
   get their ImageNet top-1 classes: the class-leak check's classifier (EfficientNet-Lite0, catgan.
   backbones) on the very 299 px input Inception gets (metrics.inception.preprocess), as `catgan evaluate`
   does in its Inception pass; and their self-supervised features (metrics.selfsup).
2. Class leak of the pool: the Jensen-Shannon distance of its top-1 histogram from the real faces' and
   the share in ImageNet's cat classes (metrics.classleak).
3. Resampling: --n of the pool drawn without replacement with weights p_real(c) / p_pool(c) of each
   sample's class c, so the drawn set's class histogram matches the real one, against --n drawn
   uniformly, and against a control: --n drawn with the very same weights shuffled across the pool, which
   keeps how unequal the weights are (their effective sample size, printed) but not which images they
   favour; --repeats seeds each. FID in the self-supervised space (and, with --inception, in
   Inception's: the expensive part, ~(pool + faces) / 10 s on a 2-core CPU) of each against the faces.
   Kynkäänniemi et al.: Inception FID falls under such resampling although no image changed; a space
   that does not know ImageNet's classes should barely move. Where it moves, the control says whether
   unequal weights alone (a narrower draw) move it as much.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from catgan.data.dataset import load_dataset
from catgan.data.split import holdout_folder
from catgan.generate import generate_images
from catgan.generate import load as load_generator
from catgan.metrics.classleak import N_CLASSES, class_histogram, class_leak
from catgan.metrics.fid import fid_from_features
from catgan.metrics.inception import InceptionExtractor, preprocess
from catgan.metrics.reference import feature_pass
from catgan.metrics.selfsup import SelfSupExtractor
from catgan.sources import resolve


@torch.inference_mode()
def top1(ex: InceptionExtractor, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """(N,) ImageNet top-1 classes from the class-leak classifier on Inception's 299 px input."""
    out = []
    for i in range(0, len(images), batch):
        x = preprocess(images[i : i + batch]).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ex.precision == "bf16"):
            out.append(ex.classifier(x).argmax(dim=1).cpu().numpy())
    return np.concatenate(out)


def match_weights(classes: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(P,) weights p_real(c) / p_pool(c) of each pool sample's class: drawing by them matches `real`'s
    class histogram (0 for classes the real faces never land in)."""
    p_real = class_histogram(real, N_CLASSES)
    p_pool = class_histogram(classes, N_CLASSES)
    return p_real[classes] / p_pool[classes]


def draw(weights: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices without replacement, each drawn with probability proportional to its weight."""
    return np.random.default_rng(seed).choice(len(weights), size=n, replace=False, p=weights / weights.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cats-64", help="a generator source (bundled name, file, run)")
    p.add_argument("--data", required=True, help="the prepared training faces (cats-S)")
    p.add_argument("--pool", type=int, default=4000)
    p.add_argument("--n", type=int, default=2000, help="images per scored set")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--inception", action="store_true", help="also Inception FID (slow on a CPU)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    t0 = time.perf_counter()
    gen = load_generator(resolve(args.model), True, torch.device("cpu"))
    pool = generate_images(gen, list(range(args.pool)), batch=64)  # (P, 3, S, S)
    real = load_dataset(args.data)  # (M, 3, S, S)
    held_dir = holdout_folder(Path(args.data))
    held = load_dataset(held_dir) if held_dir is not None else None
    print(
        f"{len(pool)} samples of {gen.name}, {len(real)} faces, {0 if held is None else len(held)} held out"
    )
    inc = InceptionExtractor.load("cpu", classes=True)
    c_pool, c_real = top1(inc, pool), top1(inc, real)
    c_held = top1(inc, held) if held is not None else None
    ss = SelfSupExtractor.load()
    f_pool, f_real = feature_pass(ss, pool, "selfsup pool"), feature_pass(ss, real, "selfsup faces")
    spaces = {"selfsup": (f_pool, f_real)}
    if args.inception:
        spaces["inception"] = (
            feature_pass(inc, pool, "inception pool"),
            feature_pass(inc, real, "inception faces"),
        )
    result: dict = {
        "generator": gen.name, "data": args.data, "pool": args.pool, "n": args.n,
        "classifier": inc.classifier_name,
        "class_leak": class_leak(c_real, c_pool, inc.classifier_name).as_json(),
    }  # fmt: skip
    if c_held is not None:
        result["class_leak_holdout"] = class_leak(c_held, c_pool, inc.classifier_name).as_json()
    hows = ("uniform", "matched", "shuffled")
    rows: dict[str, dict[str, list[float]]] = {s: {h: [] for h in hows} for s in spaces}
    js: dict[str, list[float]] = {h: [] for h in hows}
    w = match_weights(c_pool, c_real)  # (P,)
    result["effective_sample_size"] = float(w.sum() ** 2 / (w**2).sum())  # Kish; P when w is uniform
    print(f"weights' effective sample size {result['effective_sample_size']:.0f} of a pool of {args.pool}")
    for r in range(args.repeats):
        picks = {
            "uniform": np.random.default_rng(1000 + r).choice(args.pool, size=args.n, replace=False),
            "matched": draw(w, args.n, r),
            "shuffled": draw(np.random.default_rng(2000 + r).permutation(w), args.n, r),
        }
        for how, idx in picks.items():
            js[how].append(class_leak(c_real, c_pool[idx], "").js_distance)
            for space, (fp, fr) in spaces.items():
                rows[space][how].append(fid_from_features(fr, fp[idx]))
        print(
            f"repeat {r}: "
            + ", ".join(
                f"{s} {v['uniform'][-1]:.3f} -> {v['matched'][-1]:.3f} (shuffled {v['shuffled'][-1]:.3f})"
                for s, v in rows.items()
            )
        )
    result["js_distance"] = {k: float(np.mean(v)) for k, v in js.items()}
    result["fid"] = {
        s: {how: {"mean": float(np.mean(v)), "std": float(np.std(v)), "all": v} for how, v in d.items()}
        for s, d in rows.items()
    }
    for s, d in result["fid"].items():
        u, m, c = d["uniform"]["mean"], d["matched"]["mean"], d["shuffled"]["mean"]
        d["change"], d["change_shuffled"] = (m - u) / u, (c - u) / u
        print(f"{s}: FID uniform {u:.3f} +- {d['uniform']['std']:.3f}, class-matched {m:.3f} +- "
              f"{d['matched']['std']:.3f} ({100 * (m - u) / u:+.1f}%), shuffled weights {c:.3f} +- "
              f"{d['shuffled']['std']:.3f} ({100 * (c - u) / u:+.1f}%)")  # fmt: skip
    jsd = result["js_distance"]
    print(f"JS distance: uniform {jsd['uniform']:.3f}, matched {jsd['matched']:.3f}, "
          f"shuffled {jsd['shuffled']:.3f}")  # fmt: skip
    print(json.dumps(result["class_leak"]))
    result["seconds"] = time.perf_counter() - t0
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
