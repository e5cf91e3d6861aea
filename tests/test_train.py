"""The training loop on tiny configs: every parameter moves, outputs are written, bad input is refused."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re

import numpy as np
import pytest
import torch

from catgan import checkpoint as ckpt
from catgan import losses
from catgan.cli import main
from catgan.config import RunOptions, dcgan, get_preset
from catgan.errors import CatganError
from catgan.models import build_discriminator, build_generator
from catgan.training.loop import train

TINY = get_preset("tiny-16")


def tiny_cfg(**kw):
    return dataclasses.replace(TINY.train, **{"epochs": 1, **kw})


# a checkpoint per epoch of images(): 32 images, batch 8
OUTPUT = {"sample_every": 0, "checkpoint_every": 4, "keep_checkpoints": 5}


def images(n: int = 32, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 (n, 3, size, size) images: enough structure for a few GAN steps."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=size, mode="bilinear") * 255).to(torch.uint8)


def run(tmp_path, model=TINY.model, name="run", data=None, **kw):
    cfg = tiny_cfg(**{k: v for k, v in kw.items() if k in {f.name for f in dataclasses.fields(TINY.train)}})
    opts = {k: v for k, v in kw.items() if k not in {f.name for f in dataclasses.fields(TINY.train)}}
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    options = RunOptions(**{"device": "cpu", "progress": False, "threads": 1, "log_every": 1, **OUTPUT,
                            **{k: v for k, v in opts.items() if k in run_fields}})  # fmt: skip
    rest = {"log": lambda _: None, **{k: v for k, v in opts.items() if k not in run_fields}}
    return train(images() if data is None else data, model, cfg, tmp_path / name, options, **rest)


def initial(model, seed=0):
    torch.manual_seed(seed)  # the same order as train(): G, then D
    G, D = build_generator(model.generator), build_discriminator(model.discriminator)
    return G.state_dict(), D.state_dict()


VARIANTS = {
    "bce": ({}, {"label_smoothing": 0.9}),
    "hinge": ({}, {"loss": "hinge"}),
    "rasgan": ({}, {"loss": "rasgan"}),
    "ralsgan": ({}, {"loss": "ralsgan"}),
    "ema-r1-diffaug-flip": (
        {}, {"ema": 0.9, "r1_gamma": 1.0, "r1_every": 2, "diffaug": "color,translation,cutout", "flip": True}
    ),
    "spectral-norm": ({"spectral_norm": True, "d_batchnorm": False}, {"loss": "hinge"}),
    "thesis-arch": ({"arch": "thesis", "kernel": 5, "latent": "uniform"}, {}),
    "amp-channels-last": ({}, {"amp": True, "channels_last": True}),
    "mlp-family": ({}, {}),  # the test family (catgan.models.mlp): the same loop, another registry line
}  # fmt: skip
TINY_FLAT = dict(arch="dcgan", image_size=16, z_dim=16, g_base=8, d_base=8, max_channels=32)  # tiny-16


@pytest.mark.parametrize("name", list(VARIANTS))
def test_steps_move_every_parameter_and_keep_losses_finite(tmp_path, name):
    model_kw, kw = VARIANTS[name]
    model = get_preset("mlp-16").model if name == "mlp-family" else dcgan(**{**TINY_FLAT, **model_kw})
    result = run(tmp_path, model=model, max_steps=3, **kw)
    assert result.steps == 3 and math.isfinite(result.loss_d) and math.isfinite(result.loss_g)
    g0, d0 = initial(model)
    state = ckpt.load_checkpoint(result.checkpoint)
    for net, before in (("G", g0), ("D", d0)):
        build = build_generator(model.generator) if net == "G" else build_discriminator(model.discriminator)
        params = dict(build.named_parameters())  # trainable tensors (BN running stats, SN vectors: buffers)
        for key in params:
            if kw.get("loss") == "hinge" and key.startswith("head.0.bias"):
                # while every logit is inside the margin (as at init), the hinge loss's gradient on D's
                # last bias is exactly 1 - 1 = 0: it cannot move in the first steps, by design
                continue
            assert not torch.equal(state[net][key], before[key]), f"{net}.{key} did not move ({name})"
            assert torch.isfinite(state[net][key]).all()
    if kw.get("ema"):
        assert not torch.equal(state["G_ema"]["body.0.weight"], state["G"]["body.0.weight"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1 and r["img/s"] > 0 for r in records)


def test_cli_run_writes_config_samples_metrics_plot_and_prunes_checkpoints(tmp_path, capsys):
    from synth import make_prepared_dataset

    data = make_prepared_dataset(tmp_path / "data", n=16, size=16)
    argv = ["train", str(data), "--preset", "tiny-16", "--run", str(tmp_path / "r"), "--epochs", "4"]
    argv += ["--batch", "4", "--keep", "2", "--sample-every", "6", "--checkpoint-every", "4"]
    argv += ["--threads", "1", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert '"batch": 4' in out  # the final config is printed
    run = tmp_path / "r"
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["batch"] == 4 and saved["model"]["generator"]["image_size"] == 16
    assert saved["format"] == "catgan-run-v2" and saved["model"]["generator"]["family"] == "dcgan"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-00000012.pt", "step-00000016.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step-000000.png", "step-000006.png", "step-000012.png", "step-000016.png"
    ]  # fmt: skip
    assert (run / "loss.png").stat().st_size > 1000
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last) >= {"step", "epoch", "loss_d", "loss_g", "d_real", "d_fake", "img/s", "time"}
    assert last["step"] == 16 and last["epoch"] == 4.0
    state = ckpt.load_checkpoint(run / "checkpoints" / "step-00000016.pt")  # weights_only=True inside
    assert {"G", "D", "G_ema", "opt_g", "opt_d", "data_rng", "noise_rng", "cpu_rng"} <= set(state)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (16, 4, 0)


def test_sample_grid_uses_the_seed_latents_of_generate(tmp_path):
    from PIL import Image

    from catgan.generate import generate_images, load_generator
    from catgan.images import make_grid

    run(tmp_path, max_steps=2)
    loaded = load_generator(run=tmp_path / "run", device="cpu")
    expected = make_grid(generate_images(loaded, list(range(64))), nrow=8)  # (3, H, W)
    grid = torch.from_numpy(np.array(Image.open(tmp_path / "run" / "samples" / "step-000002.png")))
    grid = grid.permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    assert torch.equal(grid, expected)


def test_evaluator_hook_logs_fid_and_keeps_the_best_checkpoint(tmp_path):
    calls = []

    def evaluator(sample_fn):
        imgs = sample_fn(range(5))
        assert imgs.dtype == torch.uint8 and imgs.shape == (5, 3, 16, 16)
        calls.append(imgs)
        return {"fid": [30.0, 10.0, 20.0][len(calls) - 1], "extractor": "fake"}

    result = run(tmp_path, epochs=2, max_steps=6, eval_every=2)
    assert result.best_fid is None  # no evaluator: no FID
    result = run(tmp_path, name="ev", epochs=2, max_steps=6, eval_every=2, evaluator=evaluator)
    assert result.best_fid == 10.0 and len(calls) == 3
    assert ckpt.load_checkpoint(tmp_path / "ev" / "checkpoints" / "best.pt")["step"] == 4
    fids = [json.loads(x) for x in (tmp_path / "ev" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["fid"]) for r in fids if "fid" in r] == [(2, 30.0), (4, 10.0), (6, 20.0)]


def test_dry_run_checks_and_writes_nothing(tmp_path):
    result = run(tmp_path, dry_run=True)
    assert result.steps == 0 and not (tmp_path / "run").exists()


# ---- errors: one clear line, a non-zero exit, nothing lost ------------------------------------------


@pytest.mark.parametrize(
    "data, batch, match",
    [
        (torch.zeros(0, 3, 16, 16, dtype=torch.uint8), 8, "empty"),
        (torch.zeros(8, 3, 32, 32, dtype=torch.uint8), 8, "32x32 but the model makes 16x16"),
        (torch.zeros(6, 3, 16, 16, dtype=torch.uint8), 8, "--batch 8 is larger than the dataset"),
    ],
)
def test_bad_data_is_refused(tmp_path, data, batch, match):
    with pytest.raises(CatganError, match=match):
        run(tmp_path, data=data, batch=batch)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    from synth import make_prepared_dataset

    base = ["--preset", "tiny-16", "--run", str(tmp_path / "r"), "--threads", "1", "--no-progress"]
    assert main(["train", str(tmp_path / "nope"), *base]) == 2
    assert "does not exist" in capsys.readouterr().err
    data = make_prepared_dataset(tmp_path / "d32", n=4, size=32)
    assert main(["train", str(data), *base]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected 16x16" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing was written for a refused run
    if not torch.cuda.is_available():
        assert main(["train", str(data), *base, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, match",
    [
        (["--beta1", "1.5"], r"expected a number in \[0, 1\), got 1.5"),
        (["--r1", "-1"], "expected a number >= 0"),
        (["--lr-decay-steps", "-5"], "expected a whole number >= 0"),
    ],
)
def test_cli_refuses_out_of_range_optimizer_options(tmp_path, capsys, option, match):
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage + one error line, exit 2
        main(["train", str(tmp_path / "d"), "--preset", "tiny-16", "--run", str(tmp_path / "r"), *option])
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_d_loss, calls = losses.d_loss, []

    def d_loss(*args, **kw):
        calls.append(1)
        out = real_d_loss(*args, **kw)
        return out * math.nan if len(calls) == 6 else out

    monkeypatch.setattr(losses, "d_loss", d_loss)
    with pytest.raises(CatganError, match=r"non-finite loss at step 6 .*step-00000004\.pt"):
        run(tmp_path, epochs=3, log_every=3)  # 4 steps per epoch: a checkpoint at 4, NaN at 6
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step-00000004.pt"]
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000004.pt")
    assert all(torch.isfinite(v).all() for v in state["G"].values())


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save, saves = torch.save, []

    def save(obj, f, *a, **kw):
        saves.append(f)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(CatganError, match="No space left on device; nothing was overwritten"):
        run(tmp_path, epochs=3)
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000004.pt"]  # no temp file left
    assert ckpt.load_checkpoint(folder / "step-00000004.pt")["step"] == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's refusal")
def test_cuda_asked_but_absent(tmp_path):
    with pytest.raises(CatganError, match="CUDA is not available"):
        run(tmp_path, device="cuda")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("CATGAN_RUN_SLOW"),
    reason="torch.compile on the CPU takes ~50 s of C++ builds on 2 cores; set CATGAN_RUN_SLOW=1 to run it",
)
def test_compile_path_on_cpu(tmp_path):
    result = run(tmp_path, max_steps=2, compile=True)
    assert math.isfinite(result.loss_d)


def test_ema_averages_parameters_copies_buffers_and_warms_up():
    from catgan.training.step import ema_decay, update_ema

    model = torch.nn.BatchNorm1d(3)
    ema = torch.nn.BatchNorm1d(3).requires_grad_(False)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    update_ema(ema, model, decay=0.75)
    assert torch.allclose(ema.weight, torch.full((3,), 1.25))  # 0.75 * 1 + 0.25 * 2
    assert torch.equal(ema.running_mean, model.running_mean)
    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 10**6) == 0.999


def test_a_step_launches_one_fused_adam_per_network_and_one_ema_update():
    """On a GPU a small model's step is launch-bound: benchmarks/step_ops.py counts what train() runs."""
    from bench_helpers import load_benchmark

    step_ops = load_benchmark("step_ops")
    per = step_ops.ops_per_step("cats-64", width=2)  # the cats-64 layers: BatchNorm in G and D, an EMA of G
    assert per["_fused_adam_"] == 2  # one per optimizer, not per parameter
    assert per["_foreach_lerp_"] == 1 and per["_foreach_copy_"] == 1  # the EMA: parameters, then buffers
    assert per["convolution"] == 5 + 3 * 5  # G once, D on real, fake and fake again for G's step
    assert "_local_scalar_dense" not in per  # no host sync inside a step


def test_lr_scale_is_constant_then_a_straight_line_down():
    from catgan.training.state import lr_scale

    assert [lr_scale(s, 10, 4) for s in range(10)] == [1.0] * 7 + [0.75, 0.5, 0.25]
    assert {lr_scale(s, 10, 0) for s in range(10)} == {1.0}  # 0: constant
    assert lr_scale(0, 4, 8) == 0.5  # a decay longer than the run starts part-way down


def test_lr_decay_lowers_both_learning_rates_over_the_last_steps(tmp_path):
    result = run(tmp_path, name="decay", epochs=2, max_steps=5, lr_decay_steps=3)
    records = [json.loads(x) for x in (tmp_path / "decay" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr_scale"] for r in records if "lr_scale" in r] == pytest.approx([1, 1, 1, 2 / 3, 1 / 3])
    state = ckpt.load_checkpoint(result.checkpoint)
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(TINY.train.lr_g / 3)
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(TINY.train.lr_d / 3)
    constant = ckpt.load_checkpoint(run(tmp_path, name="constant", epochs=2, max_steps=5).checkpoint)
    for name, weights in state["G"].items():  # smaller last steps: other weights, though the same data
        if weights.is_floating_point() and "running" not in name:
            assert not torch.equal(weights, constant["G"][name]), name


# ---- a new user's first hour (issue 38): the run folder, the data it records, nothing left to do -------


def _train_argv(data, run, *extra: str) -> list[str]:
    base = ["train", str(data), "--preset", "tiny-16", "--run", str(run), "--batch", "4", "--epochs", "0"]
    return base + ["--threads", "1", "--no-progress", "--sample-every", "0", *extra]


def test_a_folder_that_is_not_a_catgan_run_is_refused_naming_what_is_in_it(tmp_path, capsys):
    from synth import make_prepared_dataset

    data = make_prepared_dataset(tmp_path / "data", n=8, size=16)
    mine = tmp_path / "holiday"
    mine.mkdir()
    for name in ("beach.jpg", "notes.txt", "tax-2025.pdf", "cat.png", "zoo.jpg"):
        (mine / name).write_text("mine")
    assert main(_train_argv(data, mine, "--max-steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a catgan run" in err and "5 other file(s)" in err
    assert "beach.jpg" in err and "--run" in err and "new folder" in err
    assert sorted(p.name for p in mine.iterdir()) == [
        "beach.jpg",
        "cat.png",
        "notes.txt",
        "tax-2025.pdf",
        "zoo.jpg",
    ]
    # an empty folder and a catgan run (its config.json, or its checkpoints/) are taken
    (tmp_path / "empty").mkdir()
    assert main(_train_argv(data, tmp_path / "empty", "--max-steps", "1")) == 0
    assert main(_train_argv(data, tmp_path / "empty", "--max-steps", "2")) == 0  # a run now: it goes on
    capsys.readouterr()


def test_a_new_run_takes_the_recommended_preset():
    from catgan.training.state import DEFAULT_PRESET, resolve_configs

    model, cfg, _ = resolve_configs("no/such/run", None, None, {})
    assert DEFAULT_PRESET == "cats-64" and (model, cfg) == (
        get_preset("cats-64").model,
        get_preset("cats-64").train,
    )


def test_resuming_on_a_smaller_dataset_past_its_epoch_end_does_not_hang(tmp_path):
    """The issue's case: saved at epoch 0, batch 6; resumed on data of 5 steps per epoch (it spun forever)."""
    import subprocess
    import sys

    from synth import make_prepared_dataset

    big, small = (
        make_prepared_dataset(tmp_path / "big", n=40),
        make_prepared_dataset(tmp_path / "small", n=20),
    )
    run_dir = tmp_path / "r"
    assert main(_train_argv(big, run_dir, "--max-steps", "6")) == 0  # 10 steps per epoch
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (6, 0, 6)
    argv = _train_argv(small, run_dir, "--max-steps", "8", "--allow-new-data")  # 5 steps per epoch
    done = subprocess.run(
        [sys.executable, "-m", "catgan", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 1, 2)  # the next epoch, 2 steps in


def test_check_dataset_refuses_other_data_naming_both_unless_allowed(tmp_path):
    from catgan.data.dataset import load_dataset
    from catgan.training.state import check_dataset, dataset_identity
    from synth import make_prepared_dataset

    a, b = make_prepared_dataset(tmp_path / "a", n=8), make_prepared_dataset(tmp_path / "b", n=8, seed=1)
    id_a, id_b = (dataset_identity(p, load_dataset(p)) for p in (a, b))
    assert id_a["images"] == 8 and id_a["path"] == str(a.resolve()) and id_a["sha256"] != id_b["sha256"]
    assert dataset_identity(tmp_path / "a", load_dataset(a)) == id_a  # the folder above names the same data
    run_dir = tmp_path / "r"
    assert check_dataset(run_dir, id_b, allow_new_data=False) is None  # a new run records nothing yet
    ckpt.save_run_config(run_dir, TINY.model, TINY.train, dataset=id_a)  # as the loop records it
    assert check_dataset(run_dir, id_a, allow_new_data=False) is None
    with pytest.raises(CatganError, match="the dataset changed") as info:
        check_dataset(run_dir, id_b, allow_new_data=False)
    msg = str(info.value)
    assert (
        str(a.resolve()) in msg and str(b.resolve()) in msg and "--allow-new-data" in msg and "\n" not in msg
    )
    assert "--allow-new-data" in check_dataset(run_dir, id_b, allow_new_data=True)
    tensor = images(8)
    assert dataset_identity(tensor, tensor)["sha256"] == dataset_identity(tensor.clone(), tensor)["sha256"]


def test_finished_says_the_step_and_what_to_raise():
    from catgan.training.state import finished

    assert finished(None, 10) is None and finished({"step": 9}, 10) is None
    assert (
        finished({"step": 10}, 10) == "this run finished at step 10; raise --max-steps or --epochs to go on"
    )
