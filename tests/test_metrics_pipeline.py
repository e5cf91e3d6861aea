"""The evaluation pipeline with a tiny stand-in extractor: cache, errors, memorisation, evaluate()."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from catgan.errors import CatganError
from catgan.metrics.evaluate import (
    EvalConfig,
    FIDEvaluator,
    draw_samples,
    evaluate,
    evaluate_real,
    format_table,
)
from catgan.metrics.reference import cache_key, reference_stats

synth = pytest.importorskip("synth", reason="tests/synth.py (synthetic datasets) is missing")


class TinyExtractor:
    """Area-downsampled 4x4 pixels plus channel means and stds: (N, 54) features, instantly."""

    name = "tiny-test-extractor"
    resize = "area 4x4 (test)"
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls = 0

    def features(self, images: torch.Tensor) -> np.ndarray:
        self.calls += 1
        x = images.float() / 255.0
        small = F.adaptive_avg_pool2d(x, 4).flatten(1)  # (N, 48)
        return torch.cat([small, x.mean((2, 3)), x.std((2, 3))], dim=1).double().numpy()  # (N, 54)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synth.make_prepared_dataset(tmp_path_factory.mktemp("ds"), n=24, size=16, seed=0)


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory):
    return synth.make_prepared_dataset(tmp_path_factory.mktemp("ds2"), n=24, size=16, seed=1)


@pytest.fixture()
def cfg(tmp_path):
    return EvalConfig(
        n=16, batch=5, kid_subsets=5, kid_subset_size=8, catface=False, pairs_png=tmp_path / "p.png"
    )


def _images(dataset):
    from catgan.data.dataset import load_dataset

    return load_dataset(dataset)


def _noise(n, size=16, seed=0):
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_reference_cache_reused_and_invalidated_on_file_change(tmp_path):
    data = synth.make_prepared_dataset(tmp_path / "ds", n=8, size=16)
    ex = TinyExtractor()
    first = reference_stats(data, ex, tmp_path / "cache")
    assert not first.from_cache and first.cache_file.is_file() and first.n == 8 and ex.calls == 1
    again = reference_stats(data, ex, tmp_path / "cache")
    assert again.from_cache and ex.calls == 1
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_allclose(again.sigma, first.sigma)
    # Change one image's pixels: content hash changes, statistics are recomputed.
    from PIL import Image

    png = sorted(data.glob("*.png"))[0]
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    changed = reference_stats(data, ex, tmp_path / "cache")
    assert not changed.from_cache and ex.calls == 2
    assert changed.fingerprint != first.fingerprint and changed.cache_file != first.cache_file
    assert not np.allclose(changed.mu, first.mu)


def test_fid_evaluator_says_when_it_computes_the_reference(tmp_path, dataset):
    said = []
    kwargs = dict(n=4, batch=4, cache_dir=tmp_path, extractor=TinyExtractor(), log=said.append)
    kwargs["holdout"] = False  # the faces as given: no note about a held-out split
    FIDEvaluator(dataset, **kwargs)  # a cache miss: the features are computed, in one line
    assert len(said) == 1 and "24 images" in said[0] and str(tmp_path) in said[0]
    FIDEvaluator(dataset, **kwargs)  # a hit: silent
    evaluate(_noise(4), dataset, TinyExtractor(), EvalConfig(n=4, catface=False), tmp_path, log=said.append)
    assert len(said) == 1


def test_cache_key_depends_on_everything():
    base = cache_key("abc", 64, "bilinear", "inception")
    assert (
        len(
            {
                base,
                cache_key("abd", 64, "bilinear", "inception"),
                cache_key("abc", 128, "bilinear", "inception"),
                cache_key("abc", 64, "bicubic", "inception"),
                cache_key("abc", 64, "bilinear", "other"),
            }
        )
        == 5
    )


def test_corrupt_cache_file_is_recomputed(tmp_path, dataset):
    ex = TinyExtractor()
    first = reference_stats(dataset, ex, tmp_path)
    first.cache_file.write_bytes(b"not an npz")
    again = reference_stats(dataset, ex, tmp_path)
    assert not again.from_cache and ex.calls == 2
    assert reference_stats(dataset, ex, tmp_path).from_cache


def test_evaluate_generator_keys_and_json(tmp_path, dataset, cfg):
    noise = _noise(64)
    result = evaluate(lambda seeds: noise[list(seeds)], dataset, TinyExtractor(), cfg, tmp_path / "cache")
    for key in (
        "fid",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "nn_distance",
        "n",
        "extractor",
        "resize",
        "device",
        "seconds",
        "copy_rate",
        "pairs_png",
    ):
        assert key in result, key
    assert result["n"] == 16 and result["n_real"] == 24 and result["resize"] == "area 4x4 (test)"
    assert result["fid"] > 0 and result["precision"] < 0.5
    assert set(result["nn_distance"]) == {"tiny-test-extractor", "pixel"}  # named after the space
    json.dumps(result)
    assert "FID" in format_table(result) and "resize" in format_table(result)
    from PIL import Image

    assert Image.open(result["pairs_png"]).size == (16 * 16, 32)


def test_evaluate_picks_the_dataset_of_the_samples_size_from_a_prepare_folder(tmp_path, cfg):
    faces = synth.make_prepared_dataset(tmp_path / "faces", n=24, size=16, seed=0).parent  # faces/cats-16
    synth.make_prepared_dataset(tmp_path / "b", n=8, size=32, seed=1).rename(faces / "cats-32")
    noise = _noise(64)  # (64, 3, 16, 16)
    result = evaluate(
        lambda s: noise[list(s)], faces, TinyExtractor(), cfg, tmp_path / "cache", image_size=16
    )
    assert result["n_real"] == 24 and result["image_size"] == 16
    with pytest.raises(CatganError, match="several datasets"):
        evaluate(lambda s: noise[list(s)], faces, TinyExtractor(), cfg, tmp_path / "cache")


def test_memorisation_flags_a_generator_that_returns_training_images(tmp_path, dataset, cfg):
    train = _images(dataset)
    copier = evaluate(
        lambda seeds: train[[s % len(train) for s in seeds]], dataset, TinyExtractor(), cfg, tmp_path
    )
    assert copier["copy_rate"] == 1.0
    assert copier["nn_distance"]["pixel"]["samples"]["median"] < 1e-2
    assert copier["fid"] < 1.0
    n = copier["n"]  # the printed table gives the rates to 1 in 10,000 and the counts behind them
    (line,) = [row for row in format_table(copier).splitlines() if row.startswith("copy rate")]
    assert line.endswith(f"1.0000 / 1.0000 ({n} / {n} of {n})")
    novel = evaluate(
        _images(synth.make_prepared_dataset(tmp_path / "new", n=16, size=16, seed=5)),
        dataset,
        TinyExtractor(),
        cfg,
        tmp_path,
    )
    assert novel["copy_rate"] <= 0.25
    assert novel["nn_distance"]["pixel"]["median_ratio"] > 0.3


def test_evaluate_real_same_dataset_uses_disjoint_halves(tmp_path, dataset):
    cfg = EvalConfig(n=12, kid_subsets=5, kid_subset_size=12, catface=False)
    result = evaluate_real(dataset, dataset, TinyExtractor(), cfg, tmp_path)
    assert result["n"] == 12 and result["nn_distance"]["pixel"]["samples"]["min"] > 1e-3  # no image twice
    default_n = evaluate_real(
        dataset, dataset, TinyExtractor(), EvalConfig(catface=False, kid_subsets=2), tmp_path
    )
    assert default_n["n"] == 12


def test_evaluate_real_two_datasets(tmp_path, dataset, other_dataset):
    cfg = EvalConfig(n=20, kid_subsets=5, kid_subset_size=10, catface=False, memorisation=False)
    result = evaluate_real(dataset, other_dataset, TinyExtractor(), cfg, tmp_path)
    assert result["against"].endswith("cats-16") and np.isfinite(result["fid"])


def test_fid_evaluator_for_training(tmp_path, dataset):
    ex = TinyExtractor()
    evaluator = FIDEvaluator(
        dataset, n=10, batch=4, cache_dir=tmp_path, extractor=ex, kid_subsets=3, kid_subset_size=8
    )
    train = _images(dataset)
    seen = []

    def sample_fn(seeds):
        seen.append(list(seeds))
        return train[[s % len(train) for s in seeds]]

    first, second = evaluator(sample_fn), evaluator(sample_fn)
    assert seen[:3] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and seen[3:] == seen[:3]  # fixed seeds each call
    assert first["fid"] == pytest.approx(second["fid"]) and first["n"] == 10
    assert set(first) >= {"fid", "kid_mean", "kid_std", "n", "extractor", "resize", "seconds"}
    with pytest.raises(CatganError, match="size mismatch"):
        evaluator(lambda seeds: _noise(len(seeds), size=32))


def test_error_empty_dataset(tmp_path, cfg):
    empty = tmp_path / "cats-16"
    empty.mkdir()
    (empty / "dataset.json").write_text(
        json.dumps({"format": "catgan-dataset", "image_size": 16, "images": []})
    )
    with pytest.raises(CatganError, match="no images"):
        evaluate(_noise(16), empty, TinyExtractor(), cfg, tmp_path)


def test_error_missing_dataset(tmp_path, cfg):
    with pytest.raises(CatganError, match="does not exist"):
        evaluate(_noise(16), tmp_path / "nope", TinyExtractor(), cfg, tmp_path)


def test_error_size_mismatch(tmp_path, dataset, other_dataset, cfg):
    with pytest.raises(CatganError, match="size mismatch: the samples are 32x32 .* 16x16"):
        evaluate(_noise(16, size=32), dataset, TinyExtractor(), cfg, tmp_path)
    with pytest.raises(CatganError, match="size mismatch: the generated images are 32x32"):
        evaluate(lambda seeds: _noise(len(seeds), size=32), dataset, TinyExtractor(), cfg, tmp_path)
    big = synth.make_prepared_dataset(tmp_path / "big", n=4, size=32)
    with pytest.raises(CatganError, match="size mismatch"):
        evaluate_real(dataset, big, TinyExtractor(), EvalConfig(n=4, catface=False), tmp_path)


def test_error_n_larger_than_available(tmp_path, dataset, other_dataset):
    with pytest.raises(CatganError, match="n=20 is larger than the 8 images"):
        draw_samples(_noise(8), 20, 4)
    with pytest.raises(CatganError, match=r"n=13 is larger than half of dataset .*use n <= 12"):
        evaluate_real(dataset, dataset, TinyExtractor(), EvalConfig(n=13, catface=False), tmp_path)
    with pytest.raises(CatganError, match="n=25 is larger than the 24 images"):
        evaluate_real(dataset, other_dataset, TinyExtractor(), EvalConfig(n=25, catface=False), tmp_path)
    with pytest.raises(CatganError, match=r"n must be >= 4 \(FID needs 2 samples"):
        EvalConfig(n=1)


def test_error_bad_sample_function(tmp_path, dataset, cfg):
    with pytest.raises(CatganError, match="must be uint8 images"):
        evaluate(lambda seeds: torch.zeros(len(seeds), 3, 16, 16), dataset, TinyExtractor(), cfg, tmp_path)
    with pytest.raises(CatganError, match="returned 1 images for 5 seeds"):
        evaluate(lambda seeds: _noise(1), dataset, TinyExtractor(), cfg, tmp_path)


def test_unwritable_cache_warns_and_keeps_the_features(tmp_path, dataset):
    (tmp_path / "file").write_text("in the way")
    ex = TinyExtractor()
    with pytest.warns(UserWarning, match="could not cache reference statistics"):
        stats = reference_stats(dataset, ex, tmp_path / "file" / "cache")  # a folder under a file
    assert stats.n == 24 and stats.cache_file is None and not stats.from_cache


def test_pairs_png_and_json_out_unwritable_are_one_line_errors(tmp_path, dataset, monkeypatch, capsys):
    from catgan.cli import main
    from catgan.metrics.inception import InceptionExtractor

    (tmp_path / "file").write_text("in the way")
    bad = tmp_path / "file" / "x"  # under a file: nothing can be written there
    cfg = EvalConfig(n=8, batch=4, kid_subsets=2, kid_subset_size=4, catface=False, pairs_png=bad / "p.png")
    with pytest.raises(CatganError, match="could not write closest pairs image"):
        evaluate(_noise(8), dataset, TinyExtractor(), cfg, tmp_path / "cache")
    monkeypatch.setattr(InceptionExtractor, "load", classmethod(lambda cls, *a, **k: TinyExtractor()))
    argv = ["evaluate", "--data", str(dataset), "--against", str(dataset), "--n", "8", "--no-catface"]
    argv += ["--kid-subsets", "2", "--kid-subset-size", "4", "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()  # the library call's progress lines
    assert main([*argv, "--out", str(bad / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not write results" in err  # refused before any pass
    assert main([*argv, "--pairs", str(bad / "p.png")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main([*argv, "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 8
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
