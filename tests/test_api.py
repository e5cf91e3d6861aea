"""The Python API (`import catgan`): light to import; load() draws exactly what the CLI draws from every
kind of source; prepare / train / evaluate mirror their commands; a new model family (the MLP test
family) trains through `catgan train`, exports and draws through catgan.load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import catgan
from catgan import checkpoint as ckpt
from catgan.cli import main
from catgan.config import RunOptions
from catgan.errors import CatganError
from catgan.metrics import features
from gen_helpers import STEP, make_run, read_png

SEEDS = [0, 5, 11]
QUIET = RunOptions(device="cpu", progress=False, threads=1)


def test_import_catgan_is_light_and_has_no_side_effects(tmp_path):
    code = (
        "import sys, catgan; assert 'torch' not in sys.modules, 'torch imported';"
        "print(sorted(n for n in catgan.__all__))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['evaluate', 'load', 'prepare', 'train']"
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """The same tiny generator as a run folder, one of its checkpoints and an exported file."""
    root = tmp_path_factory.mktemp("api")
    make_run(root / "run")
    exported = root / "g.safetensors"
    assert main(["export", "--run", str(root / "run"), "--out", str(exported)]) == 0
    return {"run": str(root / "run"), "checkpoint": str(ckpt.checkpoint_path(root / "run", STEP)),
            "file": str(exported)}  # fmt: skip


def cli_images(tmp_path: Path, flag: list[str]) -> torch.Tensor:
    out = tmp_path / "cli"
    args = ["generate", *flag, "--seeds", ",".join(map(str, SEEDS)), "--out-dir", str(out), "--device", "cpu"]
    assert main(args) == 0
    return torch.stack([read_png(out / f"seed{s:06d}.png") for s in SEEDS])  # (N, 3, H, W)


@pytest.mark.parametrize("kind", ["run", "checkpoint", "file", "bundled"])
def test_load_draws_the_pixels_of_the_cli_from_every_kind_of_source(sources, tmp_path, kind):
    if kind == "bundled":
        value, flag = "cats-64", ["--model", "cats-64"]
    else:
        value = sources[kind]
        flag = ["--weights", value] if kind == "file" else ["--run", value]
    g = catgan.load(value)
    x = g.generate(SEEDS)
    assert x.dtype == torch.uint8 and x.shape[:2] == (3, 3)
    assert torch.equal(x, cli_images(tmp_path, flag))


def test_interpolate_and_save_grid_match_the_commands(sources, tmp_path):
    g = catgan.load(sources["file"])
    walk = g.interpolate([3, 7], frames=5)  # (5, 3, 16, 16)
    strip = tmp_path / "strip.png"
    argv = [
        "interpolate",
        "--weights",
        sources["file"],
        "--seeds",
        "3,7",
        "--frames",
        "5",
        "--out",
        str(strip),
    ]
    assert main([*argv, "--device", "cpu"]) == 0
    from catgan.images import make_grid

    assert torch.equal(read_png(strip), make_grid(walk, nrow=5))
    grid = g.save_grid(SEEDS, tmp_path / "grid.png", nrow=3)
    assert main(["generate", "--weights", sources["file"], "--seeds", "0,5,11", "--nrow", "3",
                 "--out", str(tmp_path / "cli.png"), "--device", "cpu"]) == 0  # fmt: skip
    assert torch.equal(read_png(grid), read_png(tmp_path / "cli.png"))
    with pytest.raises(CatganError, match="use a .png or .jpg file name"):
        g.save_grid(SEEDS, tmp_path / "grid.bmp")


def test_a_source_that_names_nothing_is_one_line(tmp_path):
    with pytest.raises(
        CatganError, match=r"nothing-here: no such checkpoint, run folder or .safetensors file"
    ):
        catgan.load(tmp_path / "nothing-here")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from synth import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("data"), n=16, size=16)


def test_a_new_family_trains_through_the_cli_exports_and_draws_through_load(data, tmp_path):
    run, out = tmp_path / "mlp", tmp_path / "mlp.safetensors"
    argv = ["train", str(data), "--preset", "mlp-16", "--run", str(run), "--epochs", "0", "--max-steps", "4"]
    assert main([*argv, "--batch", "4", "--threads", "1", "--no-progress"]) == 0
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state["step"] == 4 and state["model_config"]["generator"]["family"] == "mlp"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (
        meta["generator_config"]["family"] == "mlp" and meta["provenance"]["discriminator_config"]["hidden"]
    )
    from_file, from_run = catgan.load(out), catgan.load(run)
    x = from_file.generate(range(8))  # uint8 (8, 3, 16, 16)
    assert x.shape == (8, 3, 16, 16) and torch.equal(x, from_run.generate(range(8)))
    assert x.float().std(0).mean() > 1  # different seeds, different images
    # and it goes on from the exported generator with a new D of the recorded config
    child = tmp_path / "child"
    result = catgan.train(data, child, init_from=out, options=QUIET, log=lambda _: None, max_steps=7, batch=4)
    assert (result.resumed_from, result.steps) == (4, 7)


def test_train_mirrors_the_command_and_refuses_unknown_settings(data, tmp_path):
    result = catgan.train(data, tmp_path / "r", preset="tiny-16", options=QUIET, log=lambda _: None,
                          epochs=0, max_steps=2, batch=4)  # fmt: skip
    assert result.steps == 2 and result.checkpoint.is_file()
    with pytest.raises(CatganError, match=r"\['lr'\] are not TrainConfig fields"):
        catgan.train(data, tmp_path / "s", preset="tiny-16", lr=0.1)


class _Pixels:
    """4x4 area-pooled pixels as features: a stand-in feature space that costs nothing."""

    name = "pixels-4x4-test"
    resize = "area 4x4"
    device = torch.device("cpu")

    def features(self, images: torch.Tensor):
        return F.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1).double().numpy()  # (N, 48)


def test_evaluate_mirrors_the_command_and_picks_the_extractor_by_name(data, sources, tmp_path, monkeypatch):
    monkeypatch.setitem(features.EXTRACTORS, "pixels", lambda device, options: _Pixels())
    opts = dict(extractor="pixels", device="cpu", cache_dir=tmp_path, n=8, batch=4, kid_subsets=2,
                kid_subset_size=4, catface=False, memorisation=False)  # fmt: skip
    result = catgan.evaluate(sources["file"], data, **opts)
    assert result["extractor"] == "pixels-4x4-test" and result["generator"] == "g" and result["fid"] > 0
    assert catgan.evaluate(catgan.load(sources["file"]), data, **opts)["fid"] == result["fid"]  # loaded
    halves = catgan.evaluate(None, data, against=data, **{**opts, "n": None})  # the floor: two halves
    assert 0 <= halves["fid"] < result["fid"] and "generator" not in halves
    with pytest.raises(
        CatganError, match=r"unknown feature space 'clip' \(--features\); choose one of: inception, selfsup"
    ):
        catgan.evaluate(sources["file"], data, **{**opts, "extractor": "clip"})
