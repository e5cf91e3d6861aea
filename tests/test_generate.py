"""Generation: seeds, latents, loading, batched drawing, grids, interpolation and the CLI."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from catgan import export, images, sampling, sources
from catgan import generate as g
from catgan.cli import main
from catgan.config import get_preset
from catgan.errors import CatganError
from catgan.models.base import sample_latents
from gen_helpers import STEP, make_run, read_png

TINY = get_preset("tiny-16").model.generator


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict[str, torch.nn.Module]]:
    path = tmp_path_factory.mktemp("gen") / "run"
    return path, make_run(path)


def forward_u8(G: torch.nn.Module, seeds: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return images.to_uint8(G(sampling.latents_from_seeds(TINY, seeds)))


# ---- seeds and latents ---------------------------------------------------------------------------


def test_parse_seeds_ranges_lists_and_order():
    assert sampling.parse_seeds("0-3,70,80-82") == [0, 1, 2, 3, 70, 80, 81, 82]
    assert sampling.parse_seeds(" 5 , 2-2 ,9") == [5, 2, 9]
    assert sampling.parse_seeds("4294967295") == [2**32 - 1]
    assert sampling.format_seeds(sampling.parse_seeds("0-63,70,80-82")) == "0-63,70,80-82"


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "no seeds"),
        ("a", "bad seed 'a'"),
        ("1.5", "bad seed '1.5'"),
        ("-1", "bad seed ''"),
        ("3-1", "'3-1' goes down: write it as 1-3"),
        ("1,,2", "empty item"),
        ("1,", "empty item"),
        ("4294967296", "too large"),
        ("\u00b2", "bad seed '\u00b2'"),  # a Unicode digit that int() refuses
        ("1-" + "9" * 5000, "too large"),  # past Python's 4,300-digit int() limit
        ("0-4294967295", "more than"),
        ("1-2-3", "bad seed '2-3'"),
    ],
)
def test_parse_seeds_refuses_bad_tokens(text, match):
    with pytest.raises(CatganError, match=match):
        sampling.parse_seeds(text)


def test_latents_follow_the_seed_rule_and_ignore_the_other_seeds():
    z = sampling.latents_from_seeds(TINY, [5, 1, 5])  # (3, z_dim)
    assert z.shape == (3, TINY.z_dim)
    want = sample_latents(TINY, 1, torch.Generator().manual_seed(5))[0]
    assert torch.equal(z[0], want) and torch.equal(z[2], want)
    assert torch.equal(sampling.latents_from_seeds(TINY, [1])[0], z[1])
    uniform = dataclasses.replace(TINY, latent="uniform")
    zu = sampling.latents_from_seeds(uniform, range(50))
    assert zu.min() >= -1 and zu.max() <= 1
    with pytest.raises(CatganError, match="out of range"):
        sampling.latents_from_seeds(TINY, [-1])


# ---- loading and drawing -------------------------------------------------------------------------


def test_load_run_uses_ema_by_default_and_G_on_request(run):
    path, nets = run
    gen = g.load_generator(run=path)
    assert not gen.G.training and gen.info["ema"] and gen.info["step"] == STEP
    assert gen.source == f"run:{path}" and gen.model == TINY and len(gen.sha256) == 64
    assert not any(p.requires_grad for p in gen.G.parameters())
    seeds = [0, 3, 9]
    assert torch.equal(g.generate_images(gen, seeds), forward_u8(nets["G_ema"], seeds))
    raw = g.load_generator(run=path, ema=False)
    assert not raw.info["ema"] and raw.sha256 != gen.sha256
    assert torch.equal(g.generate_images(raw, seeds), forward_u8(nets["G"], seeds))


def test_images_do_not_depend_on_batch_or_other_seeds(run):
    gen = g.load_generator(run=run[0])
    seeds = list(range(20))
    full = g.generate_images(gen, seeds, batch=64)  # (20, 3, 16, 16)
    assert full.dtype == torch.uint8 and full.shape == (20, 3, 16, 16)
    assert torch.equal(full, g.generate_images(gen, seeds, batch=1))
    assert torch.equal(full, g.generate_images(gen, seeds, batch=7))
    assert torch.equal(full[[13, 2]], g.generate_images(gen, [13, 2]))
    assert not torch.equal(full[0], full[1])


def test_generator_in_training_mode_is_refused(run):
    gen = g.load_generator(run=run[0])
    gen.G.train()
    with pytest.raises(CatganError, match="training mode"):
        g.generate_images(gen, [0])


def test_truncation_pulls_every_seed_to_the_mean(run):
    gen = g.load_generator(run=run[0])
    zero = g.generate_images(gen, [0, 1, 2], truncation=0.0)
    assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
    half = g.generate_images(gen, [4], truncation=0.5)
    with torch.no_grad():
        want = images.to_uint8(gen.G(sampling.latents_from_seeds(TINY, [4]) * 0.5))
    assert torch.equal(half, want)
    with pytest.raises(CatganError, match="truncation must be in"):
        g.generate_images(gen, [0], truncation=1.5)


def test_load_errors_name_the_problem(tmp_path, run):
    with pytest.raises(CatganError, match="run folder not found"):
        g.load_generator(run=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatganError, match="no checkpoints yet"):
        g.load_generator(run=tmp_path / "empty")
    with pytest.raises(CatganError, match="only one of --run, --weights, --model"):
        g.load_generator(run=run[0], model="cats-64")
    with pytest.raises(CatganError, match="weights file not found"):
        g.load_generator(weights=tmp_path / "x.safetensors")
    with pytest.raises(CatganError, match="bad model name"):
        g.load_generator(model="../secrets")


def test_bundled_models_by_name(tmp_path, run, monkeypatch):
    monkeypatch.setattr(sources, "_weights_root", lambda: tmp_path / "weights")
    assert sources.list_bundled() == []
    with pytest.raises(CatganError, match="no bundled model is installed.*pass --run DIR or --weights FILE"):
        g.load_generator()
    (tmp_path / "weights").mkdir()
    export.export_run(run[0], tmp_path / "weights" / "cats-64.safetensors")
    assert sources.list_bundled() == ["cats-64"]
    gen = g.load_generator()  # the default name
    assert gen.name == "cats-64" and gen.source == "bundled:cats-64"
    assert torch.equal(g.generate_images(gen, [1, 2]), forward_u8(run[1]["G_ema"], [1, 2]))
    not_shipped = "no trained thesis-128 is bundled.*bundled models: cats-64.*--preset thesis-128"
    with pytest.raises(CatganError, match=not_shipped):
        g.load_generator(model="thesis-128")  # a preset, but no weights of it in this (patched) package
    with pytest.raises(CatganError, match="unknown model 'dogs-64'; bundled models: cats-64"):
        g.load_generator(model="dogs-64")


# ---- grids and files -----------------------------------------------------------------------------


def test_make_grid_layout():
    imgs = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 4, 5).clone()  # (10, 3, 4, 5)
    grid = images.make_grid(imgs, nrow=4, padding=2)
    assert grid.shape == (3, 3 * 6 + 2, 4 * 7 + 2)
    assert grid[0, 2, 2] == 0 and grid[0, 2, 2 + 7] == 1 and grid[0, 2 + 6, 2] == 4
    assert grid[:, 0].sum() == 0  # the padding is black
    assert images.make_grid(imgs).shape == (3, 3 * 6 + 2, 4 * 7 + 2)  # ceil(sqrt(10)) = 4 per row
    assert images.make_grid(imgs[:1], padding=0).shape == (3, 4, 5)
    with pytest.raises(CatganError, match=r"\(N, 3, H, W\)"):
        images.make_grid(imgs[0])


@pytest.mark.parametrize("name", ["a.png", "b.jpg", "c.JPEG"])
def test_save_image_png_and_jpeg(tmp_path, name):
    img = torch.randint(0, 256, (3, 12, 10), dtype=torch.uint8)
    path = images.save_image(img, tmp_path / "sub" / name)
    with Image.open(path) as im:
        assert im.size == (10, 12) and im.format == ("PNG" if name.endswith("png") else "JPEG")
    if name.endswith("png"):
        assert torch.equal(read_png(path), img)
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temporary file left behind


def test_save_image_refuses_other_suffixes(tmp_path):
    with pytest.raises(CatganError, match="use a .png or .jpg"):
        images.save_image(torch.zeros(3, 4, 4, dtype=torch.uint8), tmp_path / "x.bmp")


# ---- interpolation -------------------------------------------------------------------------------


def test_slerp_endpoints_norms_and_fallback():
    torch.manual_seed(0)
    a, b = torch.randn(64), torch.randn(64)
    b = b * a.norm() / b.norm()  # equal norms
    assert torch.equal(sampling.slerp(a, b, 0.0), a) and torch.equal(sampling.slerp(a, b, 1.0), b)
    path = sampling.slerp(a, b, torch.linspace(0, 1, 11))  # (11, 64)
    assert path.shape == (11, 64)
    torch.testing.assert_close(path.norm(dim=-1), a.norm().expand(11), rtol=1e-5, atol=1e-5)
    e1, e2 = torch.eye(2)
    torch.testing.assert_close(sampling.slerp(e1, e2, 0.5), torch.tensor([1.0, 1.0]) / math.sqrt(2))
    mid = sampling.slerp(a, a * 2, 0.5)  # parallel: straight line, no NaN
    torch.testing.assert_close(mid, a * 1.5)
    assert torch.isfinite(sampling.slerp(torch.zeros(4), torch.ones(4), 0.3)).all()


@pytest.mark.parametrize("loop", [False, True])
def test_interpolation_passes_through_each_seed(loop):
    seeds, frames = [3, 7, 11], 10
    z = sampling.interpolation_latents(TINY, seeds, frames, loop=loop)  # (10, z_dim)
    assert z.shape == (frames, TINY.z_dim)
    keys = sampling.latents_from_seeds(TINY, seeds)
    idx = sampling.keyframe_indices(len(seeds), frames, loop)
    assert idx[0] == 0 and (idx[-1] == frames - 1 or loop)
    for i, f in enumerate(idx):
        assert torch.equal(z[f], keys[i])
    steps = (z[1:] - z[:-1]).norm(dim=-1)
    assert steps.max() < 2 * steps.min() + 1e-6 or loop  # roughly even steps along the walk
    lin = sampling.interpolation_latents(TINY, seeds, frames, loop=loop, spherical=False)
    for i, f in enumerate(idx):
        assert torch.equal(lin[f], keys[i])


def test_interpolation_errors():
    with pytest.raises(CatganError, match="at least 2 seeds"):
        sampling.interpolation_latents(TINY, [3], 10)
    with pytest.raises(CatganError, match="fewer than the 3 seeds"):
        sampling.interpolation_latents(TINY, [1, 2, 3], 2)


def test_gif_loops_forever(tmp_path):
    frames = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    path = images.save_gif(frames, tmp_path / "walk.gif", fps=10)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.info["loop"] == 0 and im.info["duration"] == 100
    slow = images.save_gif(frames[:2], tmp_path / "slow.gif", fps=0.0016)  # the slowest a GIF can go
    with Image.open(slow) as im:
        assert im.info["duration"] == 625000


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_generate_grid_and_per_seed_files(tmp_path, run, capsys):
    path, nets = run
    grid = tmp_path / "grid.png"
    assert main(["generate", "--run", str(path), "--seeds", "0-5", "--out", str(grid), "--nrow", "3"]) == 0
    want = forward_u8(nets["G_ema"], list(range(6)))
    assert torch.equal(read_png(grid), images.make_grid(want, nrow=3))
    out = tmp_path / "each"
    assert main(["generate", "--run", str(path), "--seeds", "12,40", "--out-dir", str(out), "--no-ema"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed000012.png", "seed000040.png"]
    assert torch.equal(read_png(out / "seed000040.png"), forward_u8(nets["G"], [40])[0])
    assert "wrote" in capsys.readouterr().out


def test_cli_interpolate_gif_and_strip(tmp_path, run):
    gif, strip = tmp_path / "walk.gif", tmp_path / "walk.png"
    args = ["interpolate", "--run", str(run[0]), "--seeds", "3,7,11"]
    assert main([*args, "--frames", "7", "--out", str(gif), "--loop"]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 7 and im.size == (16, 16)
    assert main([*args, "--frames", "5", "--out", str(strip)]) == 0
    assert read_png(strip).shape == (3, 20, 5 * 18 + 2)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["generate", "--seeds", "3-1", "--out", "x.png"], "seed range '3-1' goes down"),
        (["generate", "--seeds", "0,x", "--out", "x.png"], "bad seed 'x'"),
        (["generate", "--out", "x.txt"], "use a .png or .jpg"),
        (["generate", "--out", "x.png"], "run folder not found"),
        (["interpolate", "--seeds", "4", "--out", "w.gif"], "at least 2 seeds"),
        (["interpolate", "--seeds", "4,5", "--out", "w.mp4"], "use a .png or .jpg"),
        (["interpolate", "--seeds", "4,5", "--fps", "0.001", "--out", "w.gif"], "fps must be >= 0.0015"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, run, capsys, argv, match):
    argv = [a if not a.startswith(("x.", "w.")) else str(tmp_path / a) for a in argv]
    source = ["--run", str(tmp_path / "missing")] if "run folder" in match else ["--run", str(run[0])]
    assert main([*argv, *source]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err
    assert not list(tmp_path.glob("[xw].*"))
