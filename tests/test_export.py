"""Export: run -> .safetensors -> load -> the same cats; foreign, truncated and tampered files refused."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
import torch

from catgan import checkpoint as ckpt
from catgan import export
from catgan import generate as g
from catgan.checkpoint import export_generator, load_generator_file
from catgan.cli import main
from catgan.config import RunOptions, get_preset
from catgan.errors import CatganError
from gen_helpers import STEP, make_run, read_png

QUIET = RunOptions(device="cpu", progress=False, threads=1)
EVERY_2 = RunOptions(  # a checkpoint per epoch of 2 steps
    device="cpu", progress=False, threads=1, sample_every=0, checkpoint_every=2, keep_checkpoints=5
)

SEEDS = list(range(16))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "run"
    make_run(path)
    return path


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    return export.export_run(run, tmp_path_factory.mktemp("out") / "cats.safetensors")


def test_export_reproduces_the_run_bit_exactly(run, exported):
    from_run, from_file = g.load_generator(run=run), g.load_generator(weights=exported)
    assert from_file.model == from_run.model and from_file.sha256 == from_run.sha256
    assert torch.equal(g.generate_images(from_file, SEEDS), g.generate_images(from_run, SEEDS))
    assert from_file.source == f"file:{exported}" and from_file.name == "cats"
    prov = from_file.info["provenance"]
    assert prov["step"] == STEP and prov["ema"] is True and prov["checkpoint"] == f"step-{STEP:08d}.pt"
    assert prov["run"] == run.name and prov["train_config"]["batch"] == 8
    assert prov["train_seconds"] == 12.5
    assert prov["catgan_version"] == "0.1.0"  # copied from the run's config.json
    side = json.loads(exported.with_suffix(".json").read_text())
    assert side["sha256"] == from_file.sha256 and side["generator_config"]["image_size"] == 16
    assert side["format"] == "catgan-generator-v2" and side["generator_config"]["family"] == "dcgan"


def test_export_without_ema_and_in_fp16(run, exported, tmp_path):
    raw = export.export_run(run, tmp_path / "raw.safetensors", ema=False)
    want = g.generate_images(g.load_generator(run=run, ema=False), SEEDS)
    assert torch.equal(g.generate_images(g.load_generator(weights=raw), SEEDS), want)
    half = export.export_run(run, tmp_path / "half.safetensors", fp16=True)
    assert half.stat().st_size < 0.6 * exported.stat().st_size
    tensors, _, prov = load_generator_file(half)
    assert tensors["body.0.weight"].dtype == torch.float16 and prov["weights_dtype"] == "float16"
    gen = g.load_generator(weights=half)
    assert next(gen.G.parameters()).dtype == torch.float32  # fp16 storage, fp32 compute
    full = g.generate_images(g.load_generator(run=run), SEEDS).int()
    diff = (g.generate_images(gen, SEEDS).int() - full).abs()
    assert diff.max() <= 3 and diff.float().mean() < 0.1


def test_export_with_standing_stats_keeps_the_weights_and_re_estimates_batchnorm(run, exported, tmp_path):
    a = export.export_run(run, tmp_path / "a.safetensors", standing=4)
    b = export.export_run(run, tmp_path / "b.safetensors", standing=4, device="auto")  # auto: the CPU here
    plain, _, plain_prov = load_generator_file(exported)
    tensors, _, prov = load_generator_file(a)
    again, _, _ = load_generator_file(b)
    assert prov["standing_stats_batches"] == 4 and plain_prov["standing_stats_batches"] == 0
    assert again.keys() == tensors.keys()
    assert all(torch.equal(t, again[k]) for k, t in tensors.items())  # seeded: the same file again
    stats = [k for k in tensors if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(tensors[k], plain[k]) for k in stats)
    weights = [k for k in tensors if k not in stats and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(tensors[k], plain[k]) for k in weights)  # the weights themselves are kept
    drawn = g.generate_images(g.load_generator(weights=a), SEEDS)
    assert not torch.equal(drawn, g.generate_images(g.load_generator(weights=exported), SEEDS))
    with pytest.raises(CatganError, match="--standing-stats must be >= 0"):
        export.export_run(run, tmp_path / "c.safetensors", standing=-1)


def test_export_errors(run, tmp_path, capsys):
    with pytest.raises(CatganError, match="must end in .safetensors"):
        export.export_run(run, tmp_path / "cats.pt")
    with pytest.raises(CatganError, match="run folder not found"):
        export.export_run(tmp_path / "nope", tmp_path / "x.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatganError, match="no checkpoints yet"):
        export.export_run(tmp_path / "empty", tmp_path / "x.safetensors")
    with pytest.raises(CatganError, match="--device must be"):
        export.export_run(run, tmp_path / "x.safetensors", standing=2, device="gpu")
    if not torch.cuda.is_available():
        assert (
            main(["export", "--run", str(run), "--out", str(tmp_path / "x.safetensors"), "--device", "cuda"])
            == 2
        )
        assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_run_may_name_one_checkpoint_file(tmp_path, capsys):
    """--run RUN/checkpoints/best.pt: that checkpoint, not the newest; provenance names the run folder."""
    run = tmp_path / "myrun"
    make_run(run)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run, STEP))
    state["G_ema"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in state["G_ema"].items()}
    best = ckpt.save_checkpoint(run / ckpt.CHECKPOINT_DIR / "best.pt", state)
    from_best, from_run = g.load_generator(run=best), g.load_generator(run=run)
    assert from_best.sha256 != from_run.sha256
    assert not torch.equal(g.generate_images(from_best, SEEDS), g.generate_images(from_run, SEEDS))

    out = tmp_path / "best.safetensors"
    assert main(["export", "--run", str(best), "--out", str(out)]) == 0
    exported = g.load_generator(weights=out)
    assert exported.sha256 == from_best.sha256
    prov = exported.info["provenance"]
    assert prov["checkpoint"] == "best.pt" and prov["run"] == "myrun"
    assert prov["catgan_version"] == "0.1.0"  # the run's config.json was found from the checkpoint
    assert main(["generate", "--run", str(best), "--seeds", "0-3", "--out", str(tmp_path / "b.png")]) == 0
    capsys.readouterr()
    assert main(["export", "--run", str(run / "checkpoints" / "nope.pt"), "--out", str(out)]) == 2
    assert "run folder not found" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder no file can go in)")
def test_export_to_an_unwritable_folder_is_one_clear_error(run):
    with pytest.raises(CatganError, match="could not write generator weights /proc/"):
        export.export_run(run, "/proc/cats.safetensors")


# ---- files that are not ours ---------------------------------------------------------------------


def _data_offset(path: Path) -> int:
    """Where a safetensors file's tensor bytes start: 8-byte header length + JSON header."""
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


def test_truncated_file_refused(exported, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    with pytest.raises(CatganError, match="cannot read .*cut.safetensors as safetensors"):
        g.load_generator(weights=bad)


def test_tampered_tensor_byte_refused(exported, tmp_path):
    data = bytearray(exported.read_bytes())
    data[_data_offset(exported) + 101] ^= 0x01
    bad = tmp_path / "edit.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CatganError, match="do not match their recorded sha256"):
        g.load_generator(weights=bad)


def test_foreign_files_refused(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.randn(4, 4)}, str(plain))  # valid safetensors, no catgan metadata
    with pytest.raises(CatganError, match="is not a catgan generator"):
        g.load_generator(weights=plain)
    pickled = tmp_path / "pickle.safetensors"
    torch.save({"G": {"w": torch.randn(3)}}, pickled)  # a torch pickle under our suffix: never unpickled
    with pytest.raises(CatganError, match="cannot read .* as safetensors"):
        g.load_generator(weights=pickled)
    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights\n" * 10)
    with pytest.raises(CatganError, match="cannot read .* as safetensors"):
        g.load_generator(weights=text)


def test_weights_that_do_not_fit_their_config_refused(tmp_path):
    small = get_preset("tiny-16").model.generator
    wrong = dataclasses.replace(small, g_base=4)
    from catgan.models import build_generator

    out = export_generator(build_generator(small).state_dict(), wrong, tmp_path / "mix.safetensors")
    with pytest.raises(CatganError, match="do not fit the model config"):
        g.load_generator(weights=out)


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_export_then_generate_from_the_file(run, tmp_path, capsys):
    out = tmp_path / "cats.safetensors"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert "sha256" in capsys.readouterr().out
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["generate", "--weights", str(out), "--seeds", "0-7", "--out", str(a)]) == 0
    assert main(["generate", "--run", str(run), "--seeds", "0-7", "--out", str(b), "--batch", "3"]) == 0
    assert torch.equal(read_png(a), read_png(b))
    standing = tmp_path / "standing.safetensors"
    assert main(["export", "--run", str(run), "--out", str(standing), "--standing-stats", "2"]) == 0
    assert load_generator_file(standing)[2]["standing_stats_batches"] == 2
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x.bin")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_cli_refuses_a_foreign_weights_file_in_one_line(tmp_path, capsys):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    assert main(["generate", "--weights", str(text), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err and not (tmp_path / "g.png").exists()


# ---- end to end with the real trainer ------------------------------------------------------------


def test_trained_run_exports_and_redraws_its_own_samples(tmp_path):
    train_mod = pytest.importorskip("catgan.training.loop")
    synth = pytest.importorskip("synth")
    data = synth.make_prepared_dataset(tmp_path / "data", n=16, size=16)
    preset = get_preset("tiny-16")
    cfg = dataclasses.replace(preset.train, ema=0.9, max_steps=5, epochs=10)
    run = tmp_path / "run"
    opts = RunOptions(device="cpu", progress=False, sample_every=4, checkpoint_every=0)
    result = train_mod.train(data, preset.model, cfg, run, opts, log=print)
    assert result.steps == 5
    out = export.export_run(run, tmp_path / "cats.safetensors")
    grid = tmp_path / "grid.png"
    argv = ["generate", "--weights", str(out), "--seeds", "0-63", "--nrow", "8", "--out", str(grid)]
    assert main(argv) == 0
    assert torch.equal(read_png(grid), read_png(run / "samples" / "step-000005.png"))


def test_average_from_averages_the_run_checkpoints_up_to_the_exported_one(tmp_path, capsys):
    train_mod = pytest.importorskip("catgan.training.loop")
    synth = pytest.importorskip("synth")
    data = synth.make_prepared_dataset(tmp_path / "data", n=16, size=16)  # 2 steps per epoch
    preset = get_preset("tiny-16")
    cfg = dataclasses.replace(preset.train, batch=8, ema=0.9, epochs=3)
    run = tmp_path / "run"
    train_mod.train(data, preset.model, cfg, run, EVERY_2, log=lambda m: None)
    emas = {s: ckpt.load_checkpoint(p)["G_ema"] for s, p in ckpt.step_checkpoints(run)}
    assert sorted(emas) == [2, 4, 6]

    out = tmp_path / "avg.safetensors"
    assert main(["export", "--run", str(run), "--out", str(out), "--average-from", "3"]) == 0
    tensors, _, prov = load_generator_file(out)
    assert prov["averaged_steps"] == [4, 6] and prov["step"] == 6
    for k, t in tensors.items():
        want = (emas[4][k] + emas[6][k]) / 2 if t.is_floating_point() else emas[6][k]
        assert torch.allclose(t, want, atol=1e-7), k
    assert not torch.equal(tensors["stem_act.0.weight"], emas[6]["stem_act.0.weight"])

    at_4 = ckpt.load_checkpoint(ckpt.checkpoint_path(run, 4))
    best = ckpt.save_checkpoint(run / "checkpoints" / "best.pt", at_4)
    from_best = export.export_run(best, tmp_path / "b.safetensors", average_from=0, standing=2)
    _, _, prov = load_generator_file(from_best)
    assert prov["averaged_steps"] == [2, 4] and prov["standing_stats_batches"] == 2  # best.pt counted once
    assert load_generator_file(export.export_run(run, tmp_path / "p.safetensors"))[2]["averaged_steps"] == []

    with pytest.raises(CatganError, match="--average-from 7 is after the exported checkpoint's step 6"):
        export.export_run(run, out, average_from=7)
    with pytest.raises(CatganError, match="keeps no step checkpoints from step 6 to 6"):
        export.export_run(run, out, average_from=6)
    other = ckpt.load_checkpoint(ckpt.checkpoint_path(run, 2))
    other["model_config"]["generator"] = {**other["model_config"]["generator"], "init_std": 0.5}
    ckpt.save_checkpoint(ckpt.checkpoint_path(run, 2), other)
    with pytest.raises(CatganError, match="step-00000002.pt holds another generator than step-00000006.pt"):
        export.export_run(run, out, average_from=0)
    assert load_generator_file(out)[2]["averaged_steps"] == [4, 6]  # the refused exports left it alone


def test_average_with_takes_the_parent_run_up_to_the_fork_point(tmp_path):
    train_mod = pytest.importorskip("catgan.training.loop")
    synth = pytest.importorskip("synth")
    data = synth.make_prepared_dataset(tmp_path / "data", n=16, size=16)  # 2 steps per epoch
    preset = get_preset("tiny-16")
    cfg = dataclasses.replace(preset.train, batch=8, ema=0.9, epochs=3)
    parent, child = tmp_path / "parent", tmp_path / "child"
    quiet = {"options": EVERY_2, "log": lambda m: None}
    train_mod.train(data, preset.model, cfg, parent, **quiet)
    fork = ckpt.checkpoint_path(parent, 4)  # the parent goes on to step 6: another branch, left out
    train_mod.train(data, preset.model, dataclasses.replace(cfg, epochs=4), child, init_from=fork, **quiet)
    emas = {s: ckpt.load_checkpoint(p)["G_ema"] for s, p in ckpt.step_checkpoints(parent) if s <= 4}
    emas |= {s: ckpt.load_checkpoint(p)["G_ema"] for s, p in ckpt.step_checkpoints(child)}
    assert sorted(emas) == [2, 4, 6, 8]

    out = tmp_path / "avg.safetensors"
    argv = ["export", "--run", str(child), "--out", str(out), "--average-from", "2"]
    assert main([*argv, "--average-with", str(parent)]) == 0
    tensors, _, prov = load_generator_file(out)
    assert prov["averaged_steps"] == [2, 4, 6, 8] and prov["averaged_with_runs"] == ["parent"]
    for k, t in tensors.items():
        want = sum(e[k].double() for e in emas.values()) / 4 if t.is_floating_point() else emas[8][k]
        assert torch.allclose(t, want.to(t.dtype), atol=1e-7), k
    alone = load_generator_file(export.export_run(child, tmp_path / "alone.safetensors", average_from=2))[2]
    assert alone["averaged_steps"] == [6, 8]  # without --average-with: the child's own checkpoints

    with pytest.raises(CatganError, match=r"child: not an ancestor of this run \(parent was"):
        export.export_run(child, out, average_from=2, average_with=[parent, child])
    with pytest.raises(CatganError, match="--average-with needs --average-from"):
        export.export_run(child, out, average_with=[parent])
    with pytest.raises(CatganError, match="--average-with .*nowhere: no such run folder"):
        export.export_run(child, out, average_from=2, average_with=[tmp_path / "nowhere"])
    assert load_generator_file(out)[2]["averaged_steps"] == [2, 4, 6, 8]  # the refused exports left it alone
