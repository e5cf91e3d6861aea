"""Checkpoints: atomic writes, weights_only loads, pruning, refusal of foreign or damaged files."""

from __future__ import annotations

import errno

import pytest
import torch

from catgan import checkpoint as ckpt
from catgan.config import get_preset
from catgan.errors import CatganError
from catgan.models import build_generator

TINY = get_preset("tiny-16")


def state(step: int = 1) -> dict:
    G = build_generator(TINY.model.generator)
    opt = torch.optim.Adam(G.parameters())
    G(torch.randn(2, TINY.model.generator.z_dim)).mean().backward()
    opt.step()
    return {
        "G": G.state_dict(), "opt_g": opt.state_dict(), "step": step, "rng": torch.get_rng_state(),
        "model_config": {"z_dim": 16}, "G_ema": None, "list": [torch.zeros(1)],
    }  # fmt: skip


def test_save_load_round_trip_without_pickle(tmp_path):
    s = state()
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 7), s)
    assert path.name == "step-00000007.pt"
    back = ckpt.load_checkpoint(path)  # weights_only=True
    assert back["step"] == 1 and back["G_ema"] is None
    assert all(torch.equal(back["G"][k], v) for k, v in s["G"].items())
    assert back["opt_g"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_failed_write_leaves_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.save_checkpoint(path, state(step=1))

    def full(obj, f, *a, **kw):  # f: the file object checkpoint_integrity.save_torch hands torch.save
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(CatganError, match=r"could not write checkpoint .*No space left on device"):
        ckpt.save_checkpoint(path, state(step=2))
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_list_prune_and_latest(tmp_path):
    for step in (3, 10, 2, 100):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), state(step))
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint(folder / "best.pt", state(0))
    (folder / ".step-00000200.pt.tmp-123").write_bytes(b"torn")  # a write killed half-way
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step-00000002.pt", "step-00000003.pt", "step-00000010.pt", "step-00000100.pt"
    ]  # fmt: skip
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in folder.glob("*.pt")) == ["best.pt", "step-00000010.pt", "step-00000100.pt"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000100.pt"
    assert ckpt.latest_checkpoint(tmp_path / "nowhere") is None


def test_truncated_foreign_and_pickled_files_are_refused(tmp_path):
    good = ckpt.save_checkpoint(tmp_path / "good.pt", state())
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:500])
    with pytest.raises(CatganError, match="cannot read checkpoint"):
        ckpt.load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CatganError, match="not a catgan training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"G": {}, "model_config": {}, "evil": Exploit()}, tmp_path / "pickle.pt")
    with pytest.raises(CatganError, match="cannot read checkpoint"):  # weights_only refuses the class
        ckpt.load_checkpoint(tmp_path / "pickle.pt")
    with pytest.raises(CatganError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "zero.pt").write_bytes(b"")  # torch.load's error for it has no message at all
    with pytest.raises(CatganError, match="cannot read checkpoint .*zero.pt"):
        ckpt.load_checkpoint(tmp_path / "zero.pt")


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_run_config_round_trip(tmp_path):
    ckpt.save_run_config(tmp_path, TINY.model, TINY.train)
    assert ckpt.load_run_config(tmp_path) == (TINY.model, TINY.train)
    with pytest.raises(CatganError, match="not a catgan run folder"):
        ckpt.load_run_config(tmp_path / "other")
