"""Data-parallel training under torchrun on the CPU (gloo, 2 processes)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from catgan import checkpoint as ckpt
from catgan.config import RunOptions, get_preset
from catgan.distributed import DistContext, GlobalBatchNorm2d, global_batchnorm
from catgan.errors import CatganError
from catgan.training.loop import train

TINY = get_preset("tiny-16")
# --sync-bn: BatchNorm over the global batch, so 2 ranks x 4 images compute what 1 process x 8 does
CFG = dataclasses.replace(TINY.train, batch=8, sync_batchnorm=True)
OUTPUT = {"sample_every": 0, "checkpoint_every": 2, "keep_checkpoints": 10}  # a checkpoint per epoch
# 2 ranks vs 1 process differ only in the order of float sums (all-reduce, BatchNorm statistics)
TOL = {"rtol": 1e-5, "atol": 2e-6}  # measured: max |diff| 1.8e-7 after 4 steps


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from synth import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("data"), n=16, size=16)  # 2 steps per epoch


def fit(data, run_dir, epochs: int):
    cfg = dataclasses.replace(CFG, epochs=epochs)
    opts = RunOptions(device="cpu", progress=False, threads=1, log_every=1, **OUTPUT)
    return train(data, TINY.model, cfg, run_dir, opts, log=lambda _: None)


def torchrun(data, run_dir, *extra: str, tag: str = "") -> subprocess.Popen:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    args += ["-m", "catgan", "train", str(data), "--preset", "tiny-16"]
    args += ["--run-dir", str(run_dir), "--batch", "8", "--sync-bn", "--sample-every", "0", "--keep", "10"]
    args += ["--checkpoint-every", "2"]
    args += ["--threads", "1", "--log-every", "1", "--no-progress", *extra]
    env = {**os.environ, "CATGAN_TEST_TAG": tag, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def weights(run_dir, step: int) -> dict[str, torch.Tensor]:
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, step))
    return {f"{net}.{k}": v for net in ("G", "D") for k, v in state[net].items() if v.is_floating_point()}


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def test_two_ranks_match_one_process_and_resume_across_world_sizes(data, tmp_path):
    fit(data, tmp_path / "one", epochs=3)  # the reference: 1 process, 3 epochs (6 steps)
    run = tmp_path / "ddp"
    fit(data, run, epochs=1)  # 1 process ...
    proc = torchrun(data, run, "--epochs", "2")  # ... -> 2 processes ...
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert_close(weights(run, 4), weights(tmp_path / "one", 4))  # 2 ranks x 4 images == 1 x 8
    assert out.count('"sync_batchnorm": true') == 1  # only rank 0 prints
    assert "resuming" in out and "(4 x 2 processes)" in out
    fit(data, run, epochs=3)  # ... -> 1 process again
    assert_close(weights(run, 6), weights(tmp_path / "one", 6))
    # only rank 0 writes: one metrics record per step, one file of each, no temp files left behind
    steps = [int(re.search(r'"step": (\d+)', x)[1]) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == [
        "checkpoints/step-00000002.pt", "checkpoints/step-00000004.pt", "checkpoints/step-00000006.pt",
        "config.json", "loss.png", "metrics.jsonl",
        "samples/step-000000.png", "samples/step-000002.png",
        "samples/step-000004.png", "samples/step-000006.png",
    ]  # fmt: skip


def _pids_with(tag: str, rank: int) -> list[int]:
    """Processes started with CATGAN_TEST_TAG=tag and RANK=rank (torchrun's workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"CATGAN_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_a_killed_rank_ends_the_job_naming_it_and_keeps_the_checkpoint(data, tmp_path):
    tag = uuid.uuid4().hex
    proc = torchrun(data, tmp_path, "--epochs", "100000", tag=tag)
    try:
        deadline = time.monotonic() + 90
        while ckpt.latest_checkpoint(tmp_path) is None:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        (victim,) = _pids_with(tag, rank=1)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert time.monotonic() - killed < 60
    assert proc.returncode != 0
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", err) and "SIGKILL" in err, err[-3000:]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))  # the last checkpoint is intact
    assert all(torch.isfinite(v).all() for v in state["G"].values())


def test_global_batch_must_divide_by_the_processes(tmp_path):
    with pytest.raises(CatganError, match="--batch 8 is the global batch and must divide by the 3 processes"):
        train(
            torch.zeros(16, 3, 16, 16, dtype=torch.uint8), TINY.model, CFG, tmp_path,
            RunOptions(device="cpu", progress=False), dist_ctx=DistContext(rank=0, world=3),
        )  # fmt: skip


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    ref = nn.Sequential(*[m for m in net])  # the same modules, before conversion
    x = torch.randn(6, 3, 8, 8)
    expected, ref_state = ref(x), {k: v.clone() for k, v in ref.state_dict().items()}
    torch.manual_seed(0)
    conv = global_batchnorm(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    )
    assert sum(isinstance(m, GlobalBatchNorm2d) for m in conv.modules()) == 2
    torch.testing.assert_close(conv(x), expected)
    assert conv.state_dict().keys() == ref_state.keys()
