"""The class-leak numbers of a generator, and Kynkäänniemi et al.'s resampling check (ICLR 2023, issue 34.3).

    python benchmarks/class_resample.py --model cats-64 --data DIR/cats-64 --pool 4000 --n 2000 \
        --repeats 5 [--inception] [--grid GRID.png] --out OUT.json

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
4. What matching changes: the same FIDs for --n drawn uniformly from the pool's cat-class samples only
   (matching's largest single move where the generator lands in the cat classes less often than the
   faces), the pool's most common classes with their shares and weights, and the mean brightness and
   saturation of the samples matching drops (lowest weights) and favours (highest), beside the faces';
   each common class's precision in each space (how realistic it finds that class's samples), and
   selfsup precision, recall, density and coverage of one uniform and one matched draw.
   --grid draws --grid-n of each: the dropped on top, a grey row, the favoured below.
5. Matching with brightness kept: the weights rescaled within --strata quantile bins of the samples'
   mean brightness, so each bin keeps its share of the pool. The class histogram moves towards the
   faces' as far as it can without moving the brightness distribution: where plain matching moves a
   space by dropping pale or dark samples, this draw tells that apart from the class histogram itself.
6. Matching with realism kept: the same within --strata quantile bins of each sample's realism score in
   one space (Kynkäänniemi et al. 2019: how far inside the faces' k-NN manifold it lies), one draw per
   space. Kept in Inception's space, the class histogram moves while Inception's own judgement of how
   real each sample is does not: the resampling Kynkäänniemi et al. 2023 meant, where only the histogram
   moves. Kept in the selfsup space, the mirror: what Inception FID still gains is the histogram's alone.
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
from catgan.images import make_grid, save_image
from catgan.metrics.classleak import CAT_CLASSES, N_CLASSES, class_histogram, class_leak
from catgan.metrics.fid import fid_from_features
from catgan.metrics.inception import InceptionExtractor, preprocess
from catgan.metrics.prdc import knn_radii, pairwise_distances, precision_recall
from catgan.metrics.reference import feature_class_pass, feature_pass
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


def keep_strata(weights: np.ndarray, values: np.ndarray, bins: int) -> np.ndarray:
    """(P,) `weights` rescaled within each of `bins` quantile bins of `values` (P,) so that every bin keeps
    its share of the pool: drawing by them moves the class histogram towards the real one as far as it
    can without moving the distribution of `values` (a bin whose weights are all 0 stays at 0)."""
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    strata = np.searchsorted(edges, values, side="right")  # (P,) bin of each sample, 0..bins-1
    out = np.zeros_like(weights, dtype=np.float64)
    for b in np.unique(strata):
        inside = strata == b
        total = weights[inside].sum()
        if total > 0:
            out[inside] = weights[inside] * inside.sum() / total
    return out


def realism(real: np.ndarray, fake: np.ndarray, k: int = 3) -> np.ndarray:
    """(N,) realism score of each row of (N, D) fake against (M, D) real features (Kynkäänniemi et al.
    2019): max over real r of radius_k(r) / |fake - r|, over the half of the reals with the smallest
    k-NN radii (their pruning, so outliers' wide balls do not decide); above 1 = inside the manifold."""
    radii = knn_radii(real, k)  # (M,)
    keep = radii <= np.median(radii)
    real, radii = real[keep], radii[keep]
    out = np.empty(len(fake))
    for i in range(0, len(fake), 2048):
        d = pairwise_distances(fake[i : i + 2048], real)  # (B, M')
        out[i : i + 2048] = (radii[None, :] / np.maximum(d, 1e-12)).max(axis=1)
    return out


def draw(weights: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices without replacement, each drawn with probability proportional to its weight."""
    return np.random.default_rng(seed).choice(len(weights), size=n, replace=False, p=weights / weights.sum())


def extremes(weights: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k lowest- and the k highest-weighted samples (ties, as whole classes share a
    weight, broken at random)."""
    order = np.random.default_rng(seed).permutation(len(weights))
    order = order[np.argsort(weights[order], kind="stable")]
    return order[:k], order[::-1][:k].copy()


def brightness(images: torch.Tensor) -> np.ndarray:
    """(N,) mean Rec. 601 luma of each uint8 (N, 3, S, S) image, in [0, 1]."""
    x = images.float() / 255.0
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2)).numpy()


def colour_stats(images: torch.Tensor) -> dict[str, float]:
    """Mean brightness (Rec. 601 luma) and saturation ((max - min) / max of RGB) of uint8 (N, 3, S, S)
    images, in [0, 1], averaged over pixels and images."""
    x = images.float() / 255.0
    hi, lo = x.max(dim=1).values, x.min(dim=1).values  # (N, S, S)
    sat = (hi - lo) / hi.clamp_min(1e-8)  # 0 where hi is 0, as then lo is too
    return {"brightness": float(brightness(images).mean()), "saturation": float(sat.mean()), "n": len(images)}


def common_classes(pool: np.ndarray, real: np.ndarray, weights: np.ndarray, k: int = 10) -> list[dict]:
    """The pool's k most common top-1 classes: each one's share of the pool and of the faces, and the
    weight matching gives its samples."""
    p_pool, p_real = class_histogram(pool, N_CLASSES), class_histogram(real, N_CLASSES)
    return [
        {
            "class": int(c),
            "pool": float(p_pool[c]),
            "real": float(p_real[c]),
            "weight": float(weights[np.argmax(pool == c)]),
        }
        for c in np.argsort(-p_pool, kind="stable")[:k]
        if p_pool[c] > 0
    ]


def class_precision(
    real: np.ndarray, pool: np.ndarray, classes: np.ndarray, rows: list[dict], key: str
) -> None:
    """Set rows[i][key] (rows: common_classes') to the precision of the pool's samples of that class: the
    share of them inside the (M, D) real features' k-NN manifold, from the (P, D) pool features. A class
    whose samples a space finds less realistic than the rest raises its FID when matching favours it."""
    for row in rows:
        mine = pool[classes == row["class"]]
        row[key] = precision_recall(real, mine)["precision"] if len(mine) > 3 else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cats-64", help="a generator source (bundled name, file, run)")
    p.add_argument("--data", required=True, help="the prepared training faces (cats-S)")
    p.add_argument("--pool", type=int, default=4000)
    p.add_argument("--n", type=int, default=2000, help="images per scored set")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--inception", action="store_true", help="also Inception FID (slow on a CPU)")
    p.add_argument("--strata", type=int, default=10, help="brightness bins the brightness-kept draw keeps")
    p.add_argument("--grid", type=Path, default=None, help="PNG/JPEG: what matching drops and favours")
    p.add_argument("--grid-n", type=int, default=32, help="samples of each kind in --grid")
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
    ss = SelfSupExtractor.load()
    spaces = {"selfsup": (feature_pass(ss, pool, "selfsup pool"), feature_pass(ss, real, "selfsup faces"))}
    if args.inception:  # one 299 px pass for Inception's features and the classifier's classes
        i_pool, c_pool = feature_class_pass(inc, pool, "inception pool")
        i_real, c_real = feature_class_pass(inc, real, "inception faces")
        spaces["inception"] = (i_pool, i_real)
    else:
        c_pool, c_real = top1(inc, pool), top1(inc, real)
    c_held = top1(inc, held) if held is not None else None
    result: dict = {
        "generator": gen.name, "data": args.data, "pool": args.pool, "n": args.n,
        "classifier": inc.classifier_name,
        "class_leak": class_leak(c_real, c_pool, inc.classifier_name).as_json(),
    }  # fmt: skip
    if c_held is not None:
        result["class_leak_holdout"] = class_leak(c_held, c_pool, inc.classifier_name).as_json()
    kept = {f"matched_realism_kept_{sp}": f"{sp} realism" for sp in spaces}
    hows = ("uniform", "matched", "shuffled", "cat_only", "matched_brightness_kept", *kept)
    is_cat = np.isin(c_pool, CAT_CLASSES)  # (P,) bool: the pool's cat-class samples
    rows: dict[str, dict[str, list[float]]] = {s: {h: [] for h in hows} for s in spaces}
    js: dict[str, list[float]] = {h: [] for h in hows}
    w = match_weights(c_pool, c_real)  # (P,)
    result["effective_sample_size"] = float(w.sum() ** 2 / (w**2).sum())  # Kish; P when w is uniform
    print(f"weights' effective sample size {result['effective_sample_size']:.0f} of a pool of {args.pool}")
    w_kept = keep_strata(w, brightness(pool), args.strata)  # (P,) matching within brightness bins
    w_real = {f"matched_realism_kept_{sp}": keep_strata(w, realism(fr, fp), args.strata)
              for sp, (fp, fr) in spaces.items()}  # (P,) each: matching within realism bins  # fmt: skip
    first: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        picks = {
            "uniform": np.random.default_rng(1000 + r).choice(args.pool, size=args.n, replace=False),
            "matched": draw(w, args.n, r),
            "shuffled": draw(np.random.default_rng(2000 + r).permutation(w), args.n, r),
            "matched_brightness_kept": draw(w_kept, args.n, r),
            **{how: draw(wr, args.n, r) for how, wr in w_real.items()},
        }
        if is_cat.sum() >= args.n:
            picks["cat_only"] = np.random.default_rng(3000 + r).choice(
                np.flatnonzero(is_cat), size=args.n, replace=False
            )
        if r == 0:  # kept for precision and recall: is a matched set narrower, or less real?
            first = picks
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
    result["js_distance"] = {k: float(np.mean(v)) for k, v in js.items() if v}
    result["fid"] = {
        s: {how: {"mean": float(np.mean(v)), "std": float(np.std(v)), "all": v} for how, v in d.items() if v}
        for s, d in rows.items()
    }
    for s, d in result["fid"].items():
        u, m, c = d["uniform"]["mean"], d["matched"]["mean"], d["shuffled"]["mean"]
        d["change"], d["change_shuffled"] = (m - u) / u, (c - u) / u
        print(f"{s}: FID uniform {u:.3f} +- {d['uniform']['std']:.3f}, class-matched {m:.3f} +- "
              f"{d['matched']['std']:.3f} ({100 * (m - u) / u:+.1f}%), shuffled weights {c:.3f} +- "
              f"{d['shuffled']['std']:.3f} ({100 * (c - u) / u:+.1f}%)")  # fmt: skip
        if "cat_only" in d:
            k = d["cat_only"]["mean"]
            d["change_cat_only"] = (k - u) / u
            print(f"{s}: FID of cat-class samples only {k:.3f} +- {d['cat_only']['std']:.3f} "
                  f"({100 * (k - u) / u:+.1f}%)")  # fmt: skip
        b = d["matched_brightness_kept"]["mean"]
        d["change_brightness_kept"] = (b - u) / u
        print(f"{s}: FID class-matched within {args.strata} brightness bins {b:.3f} +- "
              f"{d['matched_brightness_kept']['std']:.3f} ({100 * (b - u) / u:+.1f}%)")  # fmt: skip
        for how, what in kept.items():
            k = d[how]["mean"]
            d[f"change_{how}"] = (k - u) / u
            print(f"{s}: FID class-matched within {args.strata} bins of {what} {k:.3f} +- "
                  f"{d[how]['std']:.3f} ({100 * (k - u) / u:+.1f}%)")  # fmt: skip
    low, high = extremes(w, args.grid_n)
    result["common_classes"] = common_classes(c_pool, c_real, w)
    real_ss, pool_ss = spaces["selfsup"][1], spaces["selfsup"][0]
    for space, (fp, fr) in spaces.items():
        class_precision(fr, fp, c_pool, result["common_classes"], f"precision_{space}")
    kinds = ("uniform", "matched", "matched_brightness_kept", *kept)  # the first repeat's draws of these
    result["selfsup_prdc"] = {h: precision_recall(real_ss, pool_ss[first[h]]) for h in kinds}
    for how, m in result["selfsup_prdc"].items():
        print(f"selfsup {how}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, density "
              f"{m['density']:.3f}, coverage {m['coverage']:.3f}")  # fmt: skip
    result["colour"] = {
        "faces": colour_stats(real), "pool": colour_stats(pool),
        "pool_cat_classes": colour_stats(pool[torch.from_numpy(is_cat)]) if is_cat.any() else None,
        "pool_other_classes": colour_stats(pool[torch.from_numpy(~is_cat)]) if not is_cat.all() else None,
        "dropped": colour_stats(pool[low]), "favoured": colour_stats(pool[high]),
        "matched_draw": colour_stats(pool[first["matched"]]),
        "brightness_kept_draw": colour_stats(pool[first["matched_brightness_kept"]]),
    }  # fmt: skip
    for name, st in result["colour"].items():
        if st is not None:
            print(
                f"{name}: brightness {st['brightness']:.3f}, saturation {st['saturation']:.3f}, n {st['n']}"
            )
    for row in result["common_classes"]:
        precs = ", ".join(
            f"{k.removeprefix('precision_')} precision " + ("-" if v is None else f"{v:.3f}")
            for k, v in row.items()
            if k.startswith("precision_")
        )
        print(
            f"class {row['class']}: pool {row['pool']:.3f}, faces {row['real']:.3f}, "
            f"weight {row['weight']:.2f}, {precs}"
        )
    if args.grid:  # the dropped on top, one grey row, the favoured below
        ncol = 8
        sep = torch.full((ncol, *pool.shape[1:]), 128, dtype=torch.uint8)
        save_image(make_grid(torch.cat([pool[low], sep, pool[high]]), nrow=ncol), args.grid)
        print(f"wrote {args.grid}")
    jsd = result["js_distance"]
    print(f"JS distance: uniform {jsd['uniform']:.3f}, matched {jsd['matched']:.3f}, "
          f"shuffled {jsd['shuffled']:.3f}, matched within brightness bins "
          f"{jsd['matched_brightness_kept']:.3f}, "
          + ", ".join(f"within {what} bins {jsd[how]:.3f}" for how, what in kept.items()))  # fmt: skip
    print(json.dumps(result["class_leak"]))
    result["seconds"] = time.perf_counter() - t0
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
