"""Growing a generator to twice its size: it first draws the small one's pictures, bilinearly upsampled."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from catgan.config import ModelConfig, get_preset
from catgan.errors import CatganError
from catgan.models.dcgan import Generator, g_channels, sample_latents
from catgan.models.grow import check_growable, grow_generator

# init_std 0.3: a random G whose pictures have contrast (DCGAN's 0.02 draws near-uniform grey)
SMALL = ModelConfig(arch="dcgan", image_size=16, z_dim=16, g_base=16, d_base=8, max_channels=32, init_std=0.3)
BIG = dataclasses.replace(SMALL, image_size=32, g_base=8)  # layers 32-16 -> 32-16-8


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return Generator(SMALL).state_dict()


def _small(state) -> Generator:
    G = Generator(SMALL)
    G.load_state_dict(state)
    return G


def _grown(state, **kw) -> Generator:
    G = Generator(BIG)
    G.load_state_dict(grow_generator(state, SMALL, BIG, **kw))
    return G


INNER = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # the outer ring weighs its pixel 3/4


def test_the_grown_g_keeps_the_trunk_and_adds_one_layer(small_state):
    assert (g_channels(SMALL), g_channels(BIG)) == ([32, 16], [32, 16, 8])
    grown = grow_generator(small_state, SMALL, BIG)
    assert grown.keys() == Generator(BIG).state_dict().keys()
    trunk = [k for k in small_state if not k.startswith("body.3.")]  # body.3: the small G's to-RGB
    assert trunk and all(torch.equal(grown[k], small_state[k]) for k in trunk)
    assert grown["body.3.weight"].shape == (16, 8, 4, 4)  # the new hidden layer, 16 -> 8 channels


def test_in_eval_mode_the_grown_g_draws_the_small_pre_activation_bilinearly_upsampled(small_state):
    small, big = _small(small_state).eval(), _grown(small_state).eval()
    z = sample_latents(SMALL, 8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = small.body[:3](small.stem_act(z.view(8, -1, 1, 1)))  # (8, 16, 8, 8): the trunk's last map
        a = small.body[3](h)  # (8, 3, 16, 16): the to-RGB pre-activation
        want = torch.tanh(F.interpolate(a, scale_factor=2, mode="bilinear", align_corners=False))
        got = big(z)  # (8, 3, 32, 32)
    assert got.shape == (8, 3, 32, 32)
    assert want.std() > 0.2  # pictures with contrast, so the next line says something
    assert (got[INNER] - want[INNER]).abs().max() < 1e-5


@pytest.mark.parametrize("train_mode", [False, True])
def test_the_bundled_cats_64_grown_to_128_px_draws_its_own_cats_upsampled(train_mode):
    from catgan.generate import read_generator

    state, small_cfg, _ = read_generator("cats-64")
    big_cfg = get_preset("cats-128-lite").model
    small, big = Generator(small_cfg), Generator(big_cfg)
    small.load_state_dict({k: v.float() for k, v in state.items()})
    big.load_state_dict(grow_generator(state, small_cfg, big_cfg))
    small.train(train_mode), big.train(train_mode)
    z = sample_latents(small_cfg, 32, torch.Generator().manual_seed(1))
    with torch.no_grad():
        cats = F.interpolate(
            small(z.view(32, -1, 1, 1)), scale_factor=2, mode="bilinear", align_corners=False
        )
        got = big(z)  # (32, 3, 128, 128)
        fresh = Generator(big_cfg).train(train_mode)(z)  # the same model from scratch: something else
    assert got.shape == cats.shape == (32, 3, 128, 128)
    assert (got[INNER] - cats[INNER]).abs().mean() < 0.02  # tanh before or after the upsampling
    assert (fresh[INNER] - cats[INNER]).abs().mean() > 0.2


def test_the_seed_decides_the_new_channels_and_the_global_rng_is_untouched(small_state):
    before = torch.get_rng_state()
    a, b = grow_generator(small_state, SMALL, BIG, seed=0), grow_generator(small_state, SMALL, BIG, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = grow_generator(small_state, SMALL, BIG, seed=1)
    assert not torch.equal(a["body.3.weight"][:, 6:], c["body.3.weight"][:, 6:])
    assert torch.equal(a["body.3.weight"][:, :6], c["body.3.weight"][:, :6])  # the copied to-RGB
    assert torch.count_nonzero(a["body.6.weight"][6:]) == 0  # the other channels start silent


def test_the_bundled_cats_64_grows_into_cats_128_lite():
    check_growable(get_preset("cats-64").model, get_preset("cats-128-lite").model)


@pytest.mark.parametrize(
    "big, match",
    [
        (dataclasses.replace(BIG, image_size=64), "to 64 px: it grows by one layer, to 32 px"),
        (dataclasses.replace(BIG, g_base=16), r"layers 32-16 into one with layers 32-32-16: .*plus one"),
        (dataclasses.replace(BIG, g_base=4, max_channels=16), "into one with layers 16-8-4"),
        (dataclasses.replace(BIG, latent="normal"), r"differs in more than size \(latent"),
        (dataclasses.replace(BIG, arch="thesis", kernel=5), "differs in more than size"),
    ],
)
def test_what_cannot_grow_is_refused_in_one_line(small_state, big, match):
    with pytest.raises(CatganError, match=match) as err:
        grow_generator(small_state, SMALL, big)
    assert "\n" not in str(err.value)


def test_cats_64_into_the_full_width_cats_128_is_refused_with_the_model_that_fits():
    with pytest.raises(
        CatganError, match="512-256-128-64 into one with layers 512-512-256-128-64.*cats-128-lite"
    ):
        check_growable(get_preset("cats-64").model, get_preset("cats-128").model)


# ---- through the trainer: --init-from a smaller generator, --freeze-trunk ---------------------------


@pytest.fixture(scope="module")
def grow_setup(small_state, tmp_path_factory):
    """A 16 px generator file (step 3 in its provenance) and a 32 px dataset of 12 faces (3 steps/epoch)."""
    from catgan.checkpoint import export_generator
    from synth import make_prepared_dataset

    root = tmp_path_factory.mktemp("grow")
    small = export_generator(small_state, SMALL, root / "small.safetensors", dtype=torch.float16, step=3)
    return small, make_prepared_dataset(root / "data", n=12, size=32)


def _fit(data, run, small, **kw):
    from catgan.train import train

    cfg = dataclasses.replace(get_preset("tiny-16").train, batch=4, ema=0.9, flip=True, keep_checkpoints=10)
    cfg = dataclasses.replace(cfg, **{"epochs": 0, "max_steps": 12, "d_warmup": 2, "freeze_trunk": 4, **kw})
    quiet = {"device": "cpu", "progress": False, "threads": 1, "log": lambda _: None}
    return train(data, BIG, cfg, run, init_from=small, **quiet)


def test_a_grown_run_trains_d_alone_then_the_new_layers_then_all(grow_setup, small_state, tmp_path):
    from catgan import checkpoint as ckpt

    small, data = grow_setup
    run = tmp_path / "grown"
    _fit(data, run, small)
    start = grow_generator(ckpt.load_generator_file(small)[0], SMALL, BIG)  # the fp16 file, grown
    at = {s: ckpt.load_checkpoint(p) for s, p in ckpt.step_checkpoints(run)}
    assert sorted(at) == [6, 9, 12]  # steps 3-4: D alone; 5-8: the new layers; 9-11: all of G
    params = dict(Generator(BIG).named_parameters())
    new = [k for k in params if k.startswith(("body.3.", "body.4.", "body.6."))]
    trunk = [k for k in params if k not in new]
    assert all(torch.equal(at[9]["G"][k], start[k]) for k in trunk)  # frozen through step 8
    assert all(not torch.equal(at[9]["G"][k], start[k]) for k in new)
    assert any(not torch.equal(at[12]["G"][k], start[k]) for k in trunk)  # then trained
    adam = at[12]["opt_g"]["state"]  # Adam steps per parameter, in G.parameters() order
    steps = {k: int(adam[i]["step"]) for i, k in enumerate(params)}
    assert {steps[k] for k in new} == {7} and {steps[k] for k in trunk} == {3}
    origin = json.loads((run / "config.json").read_text())["init_from"]
    assert origin["grown_from"] == {"image_size": 16, "g_base": 16} and origin["step"] == 3


def test_a_grown_run_resumes_exactly_mid_freeze(grow_setup, tmp_path):
    from catgan import checkpoint as ckpt

    small, data = grow_setup
    _fit(data, tmp_path / "straight", small)
    _fit(data, tmp_path / "stopped", small, max_steps=7)  # stopped inside the freeze (steps 5-8)
    result = _fit(data, tmp_path / "stopped", small)
    assert (result.resumed_from, result.steps) == (7, 12)
    a, b = (ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / r)) for r in ("straight", "stopped"))
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


def test_freeze_trunk_without_growth_is_one_error_line_and_writes_nothing(grow_setup, small_state, tmp_path):
    from catgan.checkpoint import export_generator
    from catgan.train import train

    _, data = grow_setup
    same = export_generator(
        grow_generator(small_state, SMALL, BIG), BIG, tmp_path / "big.safetensors", step=3
    )
    run = tmp_path / "run"
    with pytest.raises(CatganError, match="--freeze-trunk needs a run grown from a smaller generator"):
        _fit(data, run, same)
    with pytest.raises(CatganError, match="freeze_trunk must be >= 0"):
        _fit(data, run, same, freeze_trunk=-1)
    cfg = dataclasses.replace(get_preset("tiny-16").train, batch=4, epochs=1)
    wide = dataclasses.replace(BIG, g_base=16)
    with pytest.raises(
        CatganError, match=r"--init-from .*small.safetensors: cannot grow a G with layers 32-16"
    ):
        train(data, wide, cfg, run, init_from=grow_setup[0], device="cpu", progress=False, log=lambda _: None)
    assert not run.exists() or not any(run.rglob("*.pt"))


def test_cli_grows_the_bundled_cats_64_into_cats_128_lite(tmp_path, capsys):
    from catgan.cli import main
    from synth import make_prepared_dataset

    faces = make_prepared_dataset(tmp_path / "data", n=8, size=128)  # 2 steps per epoch at batch 4
    run = tmp_path / "c128"
    args = ["train", str(faces), "--preset", "cats-128-lite", "--init-from", "cats-64", "--run", str(run)]
    args += ["--batch", "4", "--max-steps", "22003", "--d-warmup", "1", "--freeze-trunk", "1"]  # no --epochs
    assert main([*args, "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "starting from cats-64 at step 22000" in out
    frozen = "training only G's new layers (its grown-from layers frozen) until step 22002 (--freeze-trunk 1)"
    assert frozen in out
    assert json.loads((run / "config.json").read_text())["init_from"]["grown_from"]["image_size"] == 64
    out_png = tmp_path / "g.png"
    assert main(["generate", "--run", str(run), "--seeds", "0-3", "--out", str(out_png)]) == 0
    from PIL import Image

    assert Image.open(out_png).size[0] > 2 * 128  # a 2 x 2 grid of 128 px cats


def test_a_run_started_from_a_grown_runs_checkpoint_may_freeze_the_trunk_too(grow_setup, tmp_path):
    from catgan import checkpoint as ckpt

    small, data = grow_setup
    _fit(data, tmp_path / "parent", small, max_steps=9)
    parent = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "parent"))
    child = tmp_path / "child"
    _fit(data, child, tmp_path / "parent", d_warmup=0, freeze_trunk=3)  # steps 9-11: the new layers only
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(child))
    trunk = [
        k for k, _ in Generator(BIG).named_parameters() if not k.startswith(("body.3.", "body.4.", "body.6."))
    ]
    assert state["step"] == 12 and all(torch.equal(state["G"][k], parent["G"][k]) for k in trunk)
    assert not torch.equal(state["G"]["body.6.weight"], parent["G"]["body.6.weight"])
    assert json.loads((child / "config.json").read_text())["init_from"]["grown_from"]["image_size"] == 16
