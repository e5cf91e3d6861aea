"""The learned upsampler and cascades: pairs from a real `prepare` run, training, exact resume, Ctrl-C,
joining a generator and an upsampler into one file that generate / evaluate load like any other."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from catgan import generate as g
from catgan.checkpoint import export_generator
from catgan.cli import main
from catgan.config import PRESETS, ModelConfig, UpsamplerConfig, from_dict, to_dict
from catgan.data.prepare import PrepareConfig, prepare
from catgan.errors import CatganError
from catgan.models.dcgan import Generator
from catgan.models.upsampler import Cascade, PatchDiscriminator, Upsampler, build_generator
from catgan.train import train
from catgan.upsample import export_cascade, latest_state, load_pairs, train_upsampler
from synth import write_face_folder

TINY = PRESETS["tiny-16"].model  # draws 16 px
CFG = UpsamplerConfig(
    image_size=32, channels=8, blocks=1, d_channels=8, d_layers=2, batch=8, steps=6,
    sample_every=3, checkpoint_every=3, keep_checkpoints=5,
)  # fmt: skip
quiet = lambda _msg: None  # noqa: E731


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """A prepared folder with cats-16 and cats-32 of the same faces (and a few 16 px-only ones)."""
    root = tmp_path_factory.mktemp("pairs")
    src = write_face_folder(root / "_faces", n=20, min_side=20, max_side=64, seed=3)
    prepare(PrepareConfig((src,), root / "faces", sizes=(16, 32), workers=1, progress=False))
    return root / "faces"


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("base") / "tiny.safetensors"
    return export_generator(Generator(TINY).eval().state_dict(), TINY, out, step=123)


@pytest.fixture(scope="module")
def up_run(faces, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("up") / "run"
    train_upsampler(faces, CFG, run, device="cpu", log_every=1, log=quiet)
    return run


def test_an_untrained_upsampler_is_bicubic_upsampling():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    up = Upsampler(channels=8, blocks=2)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.equal(up(x), expected)  # (2, 3, 32, 32)
    assert PatchDiscriminator(8, 2)(expected).shape == (2, 64)  # 32 / 4 = 8: 8 x 8 patches


def test_added_model_fields_stay_out_of_old_configs_and_hashes():
    assert "upsampler" not in to_dict(PRESETS["cats-64"].model)  # the shipped files' configs are unchanged
    cascade = dataclasses.replace(TINY, image_size=32, upsampler=8, upsampler_blocks=1)
    assert from_dict(ModelConfig, to_dict(cascade)) == cascade
    assert isinstance(build_generator(cascade), Cascade) and isinstance(build_generator(TINY), Generator)
    for name in g.list_bundled():  # the hash a loaded model reports is still the one its file records
        meta = json.loads((Path(g.__file__).parent / "weights" / f"{name}.json").read_text())
        assert g.load_generator(model=name).sha256 == meta["sha256"]
    with pytest.raises(CatganError, match="image_size / 2"):
        ModelConfig(image_size=16, upsampler=8)  # would draw 8 px


def test_pairs_match_each_face_with_its_half_size_picture(faces):
    low, high = load_pairs(faces, 32)
    assert low.shape[1:] == (3, 16, 16) and high.shape[1:] == (3, 32, 32) and len(low) == len(high) >= 8
    # the 16 px picture of a face is (nearly) the 32 px one shrunk: the pairs are not shuffled
    shrunk = F.avg_pool2d(high.float(), 2)
    assert (shrunk - low.float()).abs().mean() < 6
    assert (shrunk - low.float().roll(1, 0)).abs().mean() > 2 * (shrunk - low.float()).abs().mean()
    with pytest.raises(CatganError, match="holds both"):
        load_pairs(faces / "cats-32", 32)


def test_training_writes_checkpoints_samples_and_metrics_and_changes_the_upsampler(up_run):
    path, state = latest_state(up_run)
    assert path.name == "step-00000006.pt" and state["step"] == 6
    assert state["U"]["up.3.weight"].abs().sum() > 0  # no longer plain bicubic
    records = [json.loads(line) for line in (up_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7)) and all(r["l1"] > 0 for r in records)
    assert sorted(p.name for p in (up_run / "samples").iterdir()) == ["step-000003.png", "step-000006.png"]


def test_resume_continues_bit_exactly_and_refuses_another_recipe(faces, up_run, tmp_path):
    run = tmp_path / "run"
    train_upsampler(faces, dataclasses.replace(CFG, steps=3), run, device="cpu", log=quiet)
    result = train_upsampler(faces, CFG, run, device="cpu", log=quiet)
    assert result.resumed_from == 3 and result.steps == 6
    resumed, straight = latest_state(run)[1]["U"], latest_state(up_run)[1]["U"]
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    with pytest.raises(CatganError, match="channels"):
        train_upsampler(faces, dataclasses.replace(CFG, channels=4, steps=8), run, device="cpu", log=quiet)
    # the adversarial weight may change (ESRGAN: L1 first, then adversarial); the checkpoint says when
    train_upsampler(faces, dataclasses.replace(CFG, adv_weight=0.5, steps=7), run, device="cpu", log=quiet)
    assert latest_state(run)[1]["stages"] == [
        {"from_step": 0, "adv_weight": CFG.adv_weight},
        {"from_step": 6, "adv_weight": 0.5},
    ]


def test_ctrl_c_saves_a_checkpoint_and_the_same_call_continues(faces, tmp_path):
    run = tmp_path / "run"

    def interrupt_after_step_2(msg: str) -> None:
        if msg.startswith("step 2:"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_upsampler(faces, CFG, run, device="cpu", log_every=1, log=interrupt_after_step_2)
    assert latest_state(run)[1]["step"] == 2
    assert train_upsampler(faces, CFG, run, device="cpu", log=quiet).steps == 6


def test_a_cascade_file_draws_the_base_cats_at_twice_the_size(base_file, up_run, tmp_path):
    out = export_cascade(base_file, up_run, tmp_path / "c32.safetensors")
    cascade, base = g.load_generator(weights=out), g.load_generator(weights=base_file)
    assert cascade.model.image_size == 32 and cascade.model.upsampler == CFG.channels
    assert cascade.info["provenance"]["upsampler"]["step"] == 6 and cascade.info["step"] == 123
    big, small = g.generate_images(cascade, [0, 1, 2]), g.generate_images(base, [0, 1, 2])
    assert big.shape == (3, 3, 32, 32) and small.shape == (3, 3, 16, 16)
    # the upsampler adds detail but keeps the cat: shrunk back, the images are the base's
    assert (F.avg_pool2d(big.float(), 2) - small.float()).abs().mean() < 8
    half = export_cascade(base_file, up_run, tmp_path / "c16.safetensors", fp16=True)
    assert half.stat().st_size < 0.6 * out.stat().st_size


def test_a_cascade_refuses_a_base_of_the_wrong_size_and_the_gan_trainer(base_file, up_run, tmp_path):
    wrong = dataclasses.replace(TINY, image_size=32)
    other = export_generator(Generator(wrong).state_dict(), wrong, tmp_path / "g32.safetensors")
    with pytest.raises(CatganError, match="draws 32 px but the upsampler"):
        export_cascade(other, up_run, tmp_path / "x.safetensors")
    cascade = export_cascade(base_file, up_run, tmp_path / "c.safetensors")
    with pytest.raises(CatganError, match="already a cascade"):
        export_cascade(cascade, up_run, tmp_path / "y.safetensors")
    with pytest.raises(CatganError, match="train-upsampler"):
        model, images = g.load_generator(weights=cascade).model, torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
        train(
            images, model, PRESETS["tiny-16"].train, tmp_path / "run", device="cpu", progress=False, log=quiet
        )
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CatganError, match="cannot read upsampler checkpoint .*empty.pt"):
        export_cascade(base_file, tmp_path / "empty.pt", tmp_path / "z.safetensors")
    torch.save({"G": {}, "model_config": {}}, tmp_path / "gan.pt")  # a GAN run's checkpoint
    with pytest.raises(CatganError, match="not a catgan upsampler checkpoint"):
        export_cascade(base_file, tmp_path / "gan.pt", tmp_path / "z.safetensors")


def test_cli_trains_joins_and_draws(faces, base_file, tmp_path, capsys):
    run, out, png = tmp_path / "up", tmp_path / "c.safetensors", tmp_path / "cats.png"
    opts = ["--size", "32", "--steps", "2", "--batch", "4", "--channels", "4", "--blocks", "1"]
    assert main(["train-upsampler", str(faces), "--run", str(run), *opts, "--device", "cpu"]) == 0
    assert "upsampler at step 2" in capsys.readouterr().out
    assert main(["cascade", "--base", str(base_file), "--upsampler", str(run), "--out", str(out)]) == 0
    draw = ["generate", "--weights", str(out), "--seeds", "0-3", "--out", str(png), "--device", "cpu"]
    assert main(draw) == 0
    assert "dcgan 16px + learned upsampler -> 32px" in capsys.readouterr().err  # what was loaded
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 2 * 32  # a grid of 32 px cats
    assert main(["cascade", "--base", str(base_file), "--upsampler", str(tmp_path), "--out", str(out)]) == 2
    assert "no upsampler checkpoints" in capsys.readouterr().err
