"""benchmarks/train_speed.py --batches: the options benchmarks/gpu/run.sh passes on a lent GPU, on the CPU.

A GPU call that stops on a renamed option or a missing table row costs a session's scarcest minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_speed_times_catgans_loop_at_other_batch_sizes(tmp_path):
    args = ["--preset", "tiny-16", "--batches", "16,8,32", "--steps", "2", "--warmup", "1", "--threads", "1"]
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "train_speed.py"),
            *args,
            "--data",
            str(tmp_path / "none"),  # no prepared dataset there: synthetic images, as on a fresh clone
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = dict(re.findall(r"^\| (catgan train loop[^|]*?) +\| +([\d.]+) \|", done.stdout, re.M))
    # tiny-16's own batch (8) is the base row, once; each other batch is a row of its own
    assert set(rows) == {"catgan train loop", "catgan train loop batch 16", "catgan train loop batch 32"}
    assert all(float(v) > 0 for v in rows.values())
    ratios = re.findall(
        r"^catgan loop batch (\d+) / batch 8: ([\d.]+)x img/s, ([\d.]+)x steps/s$", done.stdout, re.M
    )
    assert [b for b, _, _ in ratios] == ["16", "32"]
    for b, img, steps in ratios:  # the two ratios are one measurement: steps/s = img/s x 8 / b
        assert float(steps) == pytest.approx(float(img) * 8 / int(b), abs=0.011)


def test_train_speed_refuses_batches_that_are_not_positive_numbers():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "train_speed.py"),
            "--preset",
            "tiny-16",
            "--batches",
            "64,x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--batches takes positive batch sizes, got '64,x'" in done.stderr


def test_class_resampling_matches_the_real_histogram_and_its_control_does_not():
    import numpy as np

    from bench_helpers import load_benchmark
    from catgan.metrics.classleak import N_CLASSES, class_histogram

    cr = load_benchmark("class_resample")
    rng = np.random.default_rng(0)
    pool = rng.choice([281, 282, 285, 287], size=4000, p=[0.7, 0.1, 0.1, 0.1])  # (P,) top-1 classes
    real = rng.choice([281, 282, 285, 287], size=1000, p=[0.25, 0.25, 0.25, 0.25])
    w = cr.match_weights(pool, real)
    p_real = class_histogram(real, N_CLASSES)

    def tv(idx):  # total variation distance of a draw's histogram from the real one
        return 0.5 * np.abs(class_histogram(pool[idx], N_CLASSES) - p_real).sum()

    matched = cr.draw(w, 800, 0)
    shuffled = cr.draw(np.random.default_rng(1).permutation(w), 800, 0)
    assert len(set(matched.tolist())) == 800  # without replacement
    assert tv(matched) < 0.1 < 0.3 < tv(shuffled)  # the pool starts 0.45 away
    assert sorted(np.random.default_rng(1).permutation(w)) == sorted(w)  # the control keeps the weights


def test_class_resampling_reports_what_matching_drops_and_favours():
    import numpy as np
    import torch

    from bench_helpers import load_benchmark

    cr = load_benchmark("class_resample")
    w = np.array([0.0, 2.0, 0.5, 0.0, 2.0, 1.0, 0.5, 0.0])  # (P,) one weight per sample, ties by class
    low, high = cr.extremes(w, 3)
    assert sorted(low.tolist()) == [0, 3, 7] and set(high.tolist()) == {1, 4, 5}
    assert cr.extremes(w, 3, seed=0)[0].tolist() == low.tolist()  # seeded tie-breaking
    black = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    red = black.clone()
    red[:, 0] = 255
    assert cr.colour_stats(black) == {"brightness": 0.0, "saturation": 0.0, "n": 2}
    st = cr.colour_stats(red)
    assert st["brightness"] == pytest.approx(0.299) and st["saturation"] == pytest.approx(1.0)
    pool = np.array([281, 281, 281, 285])
    rows = cr.common_classes(pool, np.array([281, 285]), cr.match_weights(pool, np.array([281, 285])))
    assert [(r["class"], r["pool"], r["real"]) for r in rows] == [(281, 0.75, 0.5), (285, 0.25, 0.5)]
    assert rows[0]["weight"] == pytest.approx(0.5 / 0.75) and rows[1]["weight"] == pytest.approx(2.0)


def test_class_matching_within_brightness_bins_keeps_the_brightness_and_moves_the_classes():
    import numpy as np

    from bench_helpers import load_benchmark
    from catgan.metrics.classleak import N_CLASSES, class_histogram

    cr = load_benchmark("class_resample")
    rng = np.random.default_rng(0)
    # (P,) a pool whose pale samples land in another class than the dark ones, and partly at random
    luma = rng.uniform(0, 1, size=6000)
    pool = np.where(
        rng.uniform(size=6000) < 0.5, np.where(luma > 0.7, 285, 281), rng.choice([281, 285], 6000)
    )
    real = rng.choice([281, 285], size=2000, p=[0.95, 0.05])  # the faces: nearly all 281
    w = cr.match_weights(pool, real)
    kept = cr.keep_strata(w, luma, 10)
    edges = np.quantile(luma, np.linspace(0, 1, 11))
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):  # each bin keeps its share of the mass
        inside = (luma >= lo) & (luma <= hi)
        assert kept[inside].sum() / kept.sum() == pytest.approx(inside.mean(), abs=0.002)
    p_real = class_histogram(real, N_CLASSES)

    def tv(weights):  # the expected draw's class histogram, its total variation from the faces'
        hist = np.bincount(pool, weights=weights, minlength=N_CLASSES) / weights.sum()
        return 0.5 * np.abs(hist - p_real).sum()

    uniform = np.ones_like(w)
    assert tv(w) < 1e-9 < tv(kept) < tv(uniform)  # matching within bins moves the classes, not all the way
    mean_luma = lambda weights: float((weights * luma).sum() / weights.sum())  # noqa: E731
    assert mean_luma(w) < mean_luma(uniform) - 0.05  # plain matching drops the pale samples
    assert mean_luma(kept) == pytest.approx(mean_luma(uniform), abs=0.01)
    assert not cr.keep_strata(np.zeros(10), np.arange(10.0), 5).any()  # no weight in a bin: none given


def test_class_precision_tells_which_classes_a_space_finds_unreal():
    import numpy as np

    from bench_helpers import load_benchmark

    cr = load_benchmark("class_resample")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 8))  # (M, D) the faces' features
    pool = np.concatenate(
        [rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 6.0, rng.normal(size=(3, 8))]
    )
    classes = np.array([281] * 100 + [285] * 100 + [287] * 3)  # 281 like the faces, 285 far off, 287 too few
    rows = [{"class": 281}, {"class": 285}, {"class": 287}]
    cr.class_precision(real, pool, classes, rows, "precision_selfsup")
    got = [r["precision_selfsup"] for r in rows]
    assert got[0] > 0.8 and got[1] == 0.0 and got[2] is None


def test_matching_within_realism_bins_keeps_how_real_the_draw_is_and_moves_the_classes():
    import numpy as np

    from bench_helpers import load_benchmark

    cr = load_benchmark("class_resample")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 8))  # (M, D) the faces' features
    shift = np.repeat([0.0, 1.0, 2.0, 4.0], 500)[:, None]  # (P, 1): four rings, further and further off
    pool = rng.normal(size=(2000, 8)) + shift
    score = cr.realism(real, pool)  # (P,)
    rings = [score[i * 500 : (i + 1) * 500] for i in range(4)]
    medians = [np.median(r) for r in rings]
    assert medians == sorted(medians, reverse=True)  # less real the further off
    assert np.mean(rings[0] > 1) > 0.4 and np.mean(rings[3] > 1) < 0.05  # above 1: inside the manifold
    # class 285 mostly in the far rings; the faces land in it half the time, the pool a quarter
    classes = np.where(rng.random(2000) < np.repeat([0.05, 0.15, 0.35, 0.45], 500), 285, 281)
    faces = np.array([281] * 250 + [285] * 250)
    w = cr.match_weights(classes, faces)
    kept = cr.keep_strata(w, score, 10)
    share = {
        how: np.mean([np.mean(classes[cr.draw(wt, 600, s)] == 285) for s in range(5)])
        for how, wt in (("uniform", np.ones(2000)), ("matched", w), ("kept", kept))
    }
    real_of = {
        how: np.mean([np.median(score[cr.draw(wt, 600, s)]) for s in range(5)])
        for how, wt in (("uniform", np.ones(2000)), ("matched", w), ("kept", kept))
    }
    assert share["kept"] > share["uniform"] + 0.05  # the histogram still moves towards the faces'
    assert real_of["matched"] < real_of["uniform"] - 0.02  # plain matching favours the less real
    assert abs(real_of["kept"] - real_of["uniform"]) < abs(real_of["matched"] - real_of["uniform"]) / 3
