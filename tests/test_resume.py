"""Exact resume on the CPU: stop anywhere (epoch end, mid-epoch, SIGKILL, Ctrl-C), continue, same weights."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from catgan import checkpoint as ckpt
from catgan.cli import main
from catgan.config import GANConfig, RunOptions, get_preset
from catgan.errors import CatganError
from catgan.training.loop import train

TINY = get_preset("tiny-16")
# everything that draws random numbers: flips, DiffAugment, lazy R1, EMA
CFG = dataclasses.replace(
    TINY.train, batch=4, ema=0.9, flip=True, diffaug="color,translation,cutout", r1_gamma=0.5, r1_every=2,
)  # fmt: skip
# a sample grid and a checkpoint per epoch of 3 steps
QUIET = RunOptions(
    device="cpu", progress=False, threads=1, sample_every=3, checkpoint_every=3, keep_checkpoints=10
)
COMPARED = ("G", "D", "G_ema", "opt_g", "opt_d", "data_rng", "noise_rng", "cpu_rng", "step", "epoch")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from synth import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("data"), n=12, size=16)  # 3 steps per epoch


def fit(data, run_dir, resume=False, init_from=None, **kw):
    cfg = dataclasses.replace(CFG, **kw)
    return train(
        data,
        TINY.model,
        cfg,
        run_dir,
        QUIET,
        resume=resume,
        log=lambda _: None,
        init_from=init_from,
    )


def wider_g() -> GANConfig:
    return GANConfig(dataclasses.replace(TINY.model.generator, g_base=16), TINY.model.discriminator)


def assert_same_state(a: dict, b: dict, keys=COMPARED) -> None:
    for key in keys:
        _assert_equal(a[key], b[key], key)


def _assert_equal(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _assert_equal(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list | tuple):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _assert_equal(u, v, f"{where}[{i}]")
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y), f"{where} differs"
    else:
        assert x == y, f"{where}: {x} != {y}"


def last_state(run_dir) -> dict:
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> dict:
    """2 epochs (6 steps) in one go."""
    run_dir = tmp_path_factory.mktemp("straight")
    fit(data, run_dir, epochs=2)
    return last_state(run_dir)


def test_one_epoch_then_resume_to_two_is_bit_identical(data, tmp_path, straight):
    assert fit(data, tmp_path, epochs=1).steps == 3
    result = fit(data, tmp_path, epochs=2)  # re-running into the folder continues it
    assert (result.resumed_from, result.steps) == (3, 6)
    assert_same_state(last_state(tmp_path), straight)
    steps = [r.split(",")[0] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps))  # no step logged twice


def test_mid_epoch_stop_then_resume_is_bit_identical(data, tmp_path, straight):
    fit(data, tmp_path, epochs=2, max_steps=4)  # stops at batch 1 of epoch 2
    state = last_state(tmp_path)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    fit(data, tmp_path, epochs=2, max_steps=0, resume=True)
    assert_same_state(last_state(tmp_path), straight)


def test_resume_with_another_config_is_refused_with_the_differences(data, tmp_path):
    fit(data, tmp_path, epochs=1)
    with pytest.raises(CatganError, match=r"train\.lr_d: 0\.0002 -> 0\.0001; train\.flip: True -> False"):
        fit(data, tmp_path, epochs=2, lr_d=1e-4, flip=False)
    with pytest.raises(CatganError, match=r"model\.generator\.g_base: 8 -> 16"):
        model = wider_g()
        train(data, model, CFG, tmp_path, QUIET, log=lambda _: None)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000003.pt"]  # untouched


def test_resume_flag_needs_a_checkpoint(data, tmp_path):
    with pytest.raises(CatganError, match="has no checkpoint to resume from"):
        fit(data, tmp_path, resume=True)


def test_a_checkpoint_that_cannot_resume_is_one_clear_error(data, tmp_path):
    fit(data, tmp_path, epochs=1)
    path = ckpt.latest_checkpoint(tmp_path)
    state = ckpt.load_checkpoint(path)
    del state["train_config"], state["opt_d"]  # e.g. written by another tool: loads, cannot resume
    ckpt.save_checkpoint(path, state)
    with pytest.raises(CatganError, match=r"not a complete training checkpoint \(no opt_d, train_config\)"):
        fit(data, tmp_path, epochs=2)


def _train_process(data, run_dir) -> subprocess.Popen:
    """`catgan train` for (practically) ever, one checkpoint per epoch."""
    args = [sys.executable, "-m", "catgan", "train", str(data), "--preset", "tiny-16", "--run", str(run_dir)]
    args += [
        "--epochs",
        "100000",
        "--batch",
        "4",
        "--ema",
        "0.9",
        "--flip",
        "--diffaug",
        "color,translation,cutout",
    ]
    args += ["--r1", "0.5", "--sample-every", "3", "--checkpoint-every", "3", "--keep", "10"]
    args += ["--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ckpt.latest_checkpoint(run_dir) is None:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(data, tmp_path):
    proc = _train_process(data, tmp_path / "killed")
    try:
        _wait_for_checkpoint(proc, tmp_path / "killed")
        time.sleep(0.1)  # let it get somewhere between checkpoints (or into writing one)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    epochs = last_state(tmp_path / "killed")["epoch"] + 1
    kw = {"epochs": epochs, "r1_every": 1}  # the CLI run has the default R1 interval
    fit(data, tmp_path / "killed", **kw)
    fit(data, tmp_path / "straight", **kw)
    assert_same_state(last_state(tmp_path / "killed"), last_state(tmp_path / "straight"))


def test_ctrl_c_saves_a_valid_checkpoint_and_exits_130(data, tmp_path):
    proc = _train_process(data, tmp_path)
    _wait_for_checkpoint(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in out + err
    state = last_state(tmp_path)
    assert f"saved {ckpt.latest_checkpoint(tmp_path)} (interrupted)" in out + err
    assert all(torch.isfinite(v).all() for v in state["G"].values())
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files


def test_a_decay_added_before_it_starts_resumes_bit_identical(data, tmp_path, straight):
    decayed = tmp_path / "decayed"
    fit(data, decayed, epochs=2, lr_decay_steps=2)  # steps 4 and 5 at 1 and 1/2 of the learning rates
    key = "stem_act.0.weight"
    assert not torch.equal(last_state(decayed)["G_ema"][key], straight["G_ema"][key])
    fit(data, tmp_path / "run", epochs=1)  # 3 steps at constant learning rates, then the CLI adds the decay
    args = ["train", str(data), "--run", str(tmp_path / "run"), "--epochs", "2", "--lr-decay-steps", "2"]
    assert main([*args, "--threads", "1", "--no-progress"]) == 0
    assert_same_state(last_state(tmp_path / "run"), last_state(decayed))


def test_a_decay_that_has_started_cannot_move(data, tmp_path):
    fit(data, tmp_path, epochs=2, max_steps=5, lr_decay_steps=3)  # decays from step 2
    for kw, asked in (({"max_steps": 6}, "decays from step 3"), ({"lr_decay_steps": 0}, "has none")):
        match = f"at step 5 and its decay began at step 2; the asked schedule {asked}"
        with pytest.raises(CatganError, match=match):
            fit(data, tmp_path, **{"epochs": 2, "max_steps": 5, "lr_decay_steps": 3, **kw})
    assert fit(data, tmp_path, epochs=2, max_steps=5, lr_decay_steps=3).resumed_from == 5  # same: fine
    fit(data, tmp_path / "constant", epochs=1)
    with pytest.raises(
        CatganError,
        match="at step 3 and it has run at constant learning rates; the asked schedule decays from step 1",
    ):
        fit(data, tmp_path / "constant", epochs=2, lr_decay_steps=5)  # step 2, done at 1, would be 4/5


# ---- --init-from: a new run that starts from another run's checkpoint --------------------------------


def test_init_from_carries_the_weights_and_the_step_count_with_fresh_adam_moments(data, tmp_path):
    fit(data, tmp_path / "parent", epochs=1)
    parent = last_state(tmp_path / "parent")
    child = tmp_path / "child"
    # the parent's settings, at learning rates too small to move a weight: one step shows what it started from
    result = fit(data, child, epochs=2, max_steps=4, lr_d=1e-30, lr_g=1e-30, init_from=tmp_path / "parent")
    assert (result.resumed_from, result.steps) == (3, 4)  # a run folder: its latest checkpoint
    state = last_state(child)
    for net in ("G", "D"):
        for key, value in parent[net].items():
            if value.is_floating_point() and "running" not in key:  # BatchNorm statistics did move
                torch.testing.assert_close(state[net][key], value, rtol=0, atol=1e-20)
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 1)
    assert all(s["step"] == 1 for s in state["opt_g"]["state"].values())  # fresh moments: 1 step, not 4
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "parent")] == ["step-00000003.pt"]  # untouched
    origin = json.loads((child / "config.json").read_text())["init_from"]
    assert (origin["run"], origin["checkpoint"], origin["step"]) == ("parent", "step-00000003.pt", 3)
    assert state["init_from"] == origin  # every checkpoint of the child carries it


def test_init_from_under_other_settings_trains_on_from_the_parent(data, tmp_path):
    fit(data, tmp_path / "parent", epochs=1)
    parent = last_state(tmp_path / "parent")
    child = tmp_path / "child"
    args = [
        "train",
        str(data),
        "--run",
        str(child),
        "--init-from",
        str(ckpt.latest_checkpoint(tmp_path / "parent")),
    ]
    args += [
        "--epochs",
        "3",
        "--batch",
        "6",
        "--no-flip",
        "--beta1",
        "0.0",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0  # no --preset: the model and the other settings are the checkpoint's
    saved = json.loads((child / "config.json").read_text())
    assert saved["train"]["batch"] == 6 and saved["train"]["flip"] is False and saved["train"]["ema"] == 0.9
    assert saved["init_from"]["train_config"]["batch"] == 4
    state = last_state(child)
    assert (state["step"], state["epoch"]) == (6, 3)  # at batch 6 (2 steps per epoch) step 3 is epoch 1.5
    first = json.loads((child / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] > 3  # the step count goes on from the parent's
    key = "stem_act.0.weight"
    assert not torch.equal(state["G_ema"][key], parent["G_ema"][key])
    # the exported generator names the checkpoint it started from
    out = tmp_path / "child.safetensors"
    assert main(["export", "--run", str(child), "--out", str(out)]) == 0
    _, _, provenance = ckpt.load_generator_file(out)
    assert provenance["init_from"]["step"] == 3 and provenance["step"] == 6


def test_running_the_child_again_resumes_it_not_the_parent(data, tmp_path):
    fit(data, tmp_path / "parent", epochs=1)
    fit(data, tmp_path / "child", epochs=2, max_steps=4, init_from=tmp_path / "parent")
    result = fit(data, tmp_path / "child", epochs=2, init_from=tmp_path / "parent")
    assert (result.resumed_from, result.steps) == (4, 6)
    assert json.loads((tmp_path / "child" / "config.json").read_text())["init_from"]["step"] == 3


def test_init_from_errors_are_one_line_and_write_nothing(data, tmp_path):
    fit(data, tmp_path / "parent", epochs=1)
    child = tmp_path / "child"
    with pytest.raises(CatganError, match="nowhere: no such checkpoint, run folder or .safetensors file"):
        fit(data, child, init_from=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatganError, match="no checkpoint at .*empty"):
        fit(data, child, init_from=tmp_path / "empty")
    with pytest.raises(
        CatganError, match=r"holds another model \(saved -> asked\): generator\.g_base: 8 -> 16"
    ):
        model = wider_g()
        train(data, model, CFG, child, QUIET, init_from=tmp_path / "parent", log=lambda _: None)
    path = ckpt.latest_checkpoint(tmp_path / "parent")
    state = ckpt.load_checkpoint(path)
    del state["opt_g"]
    ckpt.save_checkpoint(tmp_path / "partial.pt", state)
    with pytest.raises(CatganError, match=r"not a complete training checkpoint \(no opt_g\)"):
        fit(data, child, init_from=tmp_path / "partial.pt")
    with pytest.raises(
        CatganError, match="is at step 3, and this run ends at step 3 .*give a later --max-steps"
    ):
        fit(data, child, epochs=1, init_from=path)
    assert not child.exists() or not any(child.rglob("*.pt"))


# ---- --init-from a generator: an exported file or a bundled model, with a new D -----------------------


@pytest.fixture(scope="module")
def generator_file(data, tmp_path_factory) -> Path:
    """A 3-step tiny run exported as fp16 safetensors (step 3 in its provenance)."""
    root = tmp_path_factory.mktemp("gen")
    fit(data, root / "parent", epochs=1)
    out = root / "gen.safetensors"
    assert main(["export", "--run", str(root / "parent"), "--out", str(out), "--fp16"]) == 0
    return out


def test_init_from_a_generator_trains_a_new_d_alone_then_both(data, generator_file, tmp_path, capsys):
    tensors, _, _ = ckpt.load_generator_file(generator_file)
    child = tmp_path / "child"
    args = ["train", str(data), "--run", str(child), "--init-from", str(generator_file), "--epochs", "4"]
    assert main([*args, "--d-warmup", "3", "--checkpoint-every", "3", "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "starting from gen.safetensors at step 3" in out
    assert "training D alone (G frozen) until step 6 (--d-warmup 3)" in out
    at = {s: ckpt.load_checkpoint(p) for s, p in ckpt.step_checkpoints(child)}
    assert sorted(at) == [6, 9, 12]  # one per epoch of 3 steps, counted on from the file's step 3
    weights = [k for k, v in tensors.items() if v.is_floating_point() and "running" not in k]
    for key in weights:  # after the 3 warm-up steps G and its EMA are still the file's weights, in fp32
        assert at[6]["G"][key].dtype == torch.float32
        assert torch.equal(at[6]["G"][key], tensors[key].float()), key
        assert torch.equal(at[6]["G_ema"][key], tensors[key].float()), key
    assert any(not torch.equal(at[9]["G"][k], tensors[k].float()) for k in weights)  # then G trains
    parent_d = last_state(generator_file.parent / "parent")["D"]
    d_key = next(k for k, v in parent_d.items() if v.is_floating_point() and v.dim() == 4)
    assert not torch.equal(at[6]["D"][d_key], parent_d[d_key])  # a new D, not the parent's
    assert all(s["step"] == 9 for s in at[12]["opt_d"]["state"].values())  # D: steps 3..11
    assert all(s["step"] == 6 for s in at[12]["opt_g"]["state"].values())  # G: steps 6..11 only
    origin = json.loads((child / "config.json").read_text())["init_from"]
    recorded = json.loads(generator_file.with_suffix(".json").read_text())
    assert (origin["weights"], origin["step"], origin["sha256"]) == ("gen.safetensors", 3, recorded["sha256"])
    assert origin["train_config"] == recorded["provenance"]["train_config"]
    # the export's lineage knows it came from a file, not from a run to average with
    with pytest.raises(CatganError, match=r"not an ancestor of this run \(child was started from gen"):
        from catgan.export import export_run

        export_run(child, tmp_path / "x.safetensors", average_from=3, average_with=[generator_file.parent])


def test_a_run_from_a_generator_resumes_exactly_mid_warmup(data, generator_file, tmp_path):
    fit(data, tmp_path / "straight", epochs=4, d_warmup=3, init_from=generator_file)
    # stopped at step 5, inside the warm-up (steps 3-5), then run on
    fit(data, tmp_path / "stopped", epochs=4, max_steps=5, d_warmup=3, init_from=generator_file)
    result = fit(data, tmp_path / "stopped", epochs=4, d_warmup=3, init_from=generator_file)
    assert (result.resumed_from, result.steps) == (5, 12)
    assert_same_state(last_state(tmp_path / "straight"), last_state(tmp_path / "stopped"))


def test_init_from_the_bundled_model_fine_tunes_it(tmp_path, capsys):
    from catgan.generate import load_generator
    from synth import make_prepared_dataset

    faces = make_prepared_dataset(tmp_path / "data", n=8, size=64)  # 2 steps per epoch at batch 4
    run = tmp_path / "mine"
    base = ["train", str(faces), "--run", str(run), "--init-from", "cats-64", "--batch", "4"]
    base += ["--threads", "1", "--eval-every", "0", "--no-progress"]
    assert main([*base, "--max-steps", "1000000", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    # the defaults for a new D: a warm-up, no decay, and no epoch limit (--max-steps decides)
    assert all(f'"{k}": {v}' in printed for k, v in (("d_warmup", 100), ("lr_decay_steps", 0), ("epochs", 0)))
    bundled = load_generator(model="cats-64")
    at = bundled.info["step"]  # the bundled model's training steps
    assert main([*base, "--max-steps", str(at)]) == 2
    err = capsys.readouterr().err
    assert f"cats-64 is at step {at}, and this run ends at step {at} (--max-steps {at})" in err
    assert main([*base, "--max-steps", str(at + 3), "--d-warmup", "1"]) == 0
    weights = bundled.G.state_dict()
    state = last_state(run)
    assert state["step"] == at + 3  # the bundled model's steps, then 3: D alone, then 2 of both
    assert json.loads((run / "config.json").read_text())["init_from"]["weights"] == "cats-64"
    key = "stem_act.0.weight"
    assert not torch.equal(state["G"][key], weights[key])
    assert (state["G_ema"][key] - weights[key]).abs().max() < 1e-3  # EMA 0.999: 2 small steps away
    assert main(["generate", "--run", str(run), "--seeds", "0-3", "--out", str(tmp_path / "g.png")]) == 0
    # with a --preset too: its 25 epochs would end the run long before the file's step; --max-steps decides
    other = ["train", str(faces), "--preset", "cats-64", "--run", str(tmp_path / "preset"), *base[4:]]
    capsys.readouterr()
    assert main(other) == 2  # without --max-steps the preset's epochs stand, and the error says what to give
    assert "this run ends at step 50 (25 epochs of 2 steps" in capsys.readouterr().err
    assert main([*other, "--max-steps", str(at + 2), "--d-warmup", "1"]) == 0
    assert last_state(tmp_path / "preset")["step"] == at + 2


def test_init_from_a_generator_errors_are_one_line_and_write_nothing(data, generator_file, tmp_path):
    child = tmp_path / "child"
    with pytest.raises(CatganError, match=r"no bundled model of that name \(bundled: .*cats-64"):
        fit(data, child, init_from="cats-6")
    with pytest.raises(CatganError, match=r"holds another model \(saved -> asked\): g_base: 8 -> 16"):
        model = wider_g()
        train(data, model, CFG, child, QUIET, init_from=generator_file, log=lambda _: None)
    with pytest.raises(CatganError, match="holds another model"):  # the bundled 64 px model, a 16 px run
        fit(data, child, init_from="cats-64")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(generator_file.read_bytes()[:-100])
    with pytest.raises(CatganError, match="cannot read .*broken.safetensors as safetensors"):
        fit(data, child, init_from=broken)
    with pytest.raises(CatganError, match="d_warmup must be >= 0"):
        fit(data, child, init_from=generator_file, d_warmup=-1)
    with pytest.raises(CatganError, match=r"epochs 0 \(no epoch limit\) needs a max_steps > 0"):
        fit(data, child, init_from=generator_file, epochs=0, max_steps=0)
    assert not child.exists() or not any(child.rglob("*.pt"))
