"""Faults around a run folder (issue 37): run locks, SIGTERM, stale temp files, and kill -9 at random
points of `catgan train` followed by a rerun that ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from catgan import checkpoint as ckpt
from catgan.cli import main
from catgan.training.lock import LOCK_NAME

TESTS = Path(__file__).parent
SRC = Path(ckpt.__file__).parents[1]  # subprocesses run the catgan this process imported
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(SRC)]), "OMP_NUM_THREADS": "1"}
TRAIN = ["--preset", "tiny-16", "--batch", "4", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from synth import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("data"), n=12, size=16)  # 3 steps per epoch


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this PID now (PIDs are not reused this quickly)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_live_lock_of_another_process_refuses_a_second_trainer(data, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom catgan.training.lock import acquire\n"
         f"acquire({str(run)!r}, 'train')\nprint('locked', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", str(data), "--run", str(run), "--max-steps", "2", *TRAIN]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"is in use by catgan train (PID {holder.pid} on {socket.gethostname()})" in line
        assert not (run / "checkpoints").exists() and not (run / "config.json").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_message_and_released_at_the_end(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "catgan train"}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    assert main(["train", str(data), "--run", str(run), "--max-steps", "2", *TRAIN]) == 0
    out = capsys.readouterr().out
    assert f"taking over the stale lock of {run} (held by catgan train (PID {stale['pid']}" in out
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["step"] == 2
    assert not (run / LOCK_NAME).exists()  # released


def test_the_lock_is_released_when_training_fails(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(data), "--run", str(run), "--max-steps", "2", *TRAIN, "--batch", "64"]) == 2
    assert "larger than the dataset" in _one_line(capsys.readouterr().err)
    assert not (run / LOCK_NAME).exists()
    assert main(["train", str(data), "--run", str(run), "--max-steps", "2", *TRAIN]) == 0


def test_a_lock_of_another_host_is_refused_naming_the_file(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "catgan train"}))
    assert main(["train", str(data), "--run", str(run), "--max-steps", "2", *TRAIN]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "PID 1 on elsewhere" in line and f"delete {run / LOCK_NAME}" in line


def test_stale_temp_files_of_killed_writers_are_removed_at_the_start(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(data), "--run", str(run), "--max-steps", "2", *TRAIN]) == 0
    folder = run / "checkpoints"
    dead, alive = (
        folder / f".step-00000003.pt.tmp-{_dead_pid()}",
        folder / f".step-00000003.pt.tmp-{os.getppid()}",
    )
    dead.write_bytes(b"torn"), alive.write_bytes(b"still being written")
    assert main(["train", str(data), "--run", str(run), "--max-steps", "3", *TRAIN]) == 0
    assert f"removed {dead}, left by a killed writer" in capsys.readouterr().out
    assert not dead.exists() and alive.exists()  # a live writer's file is not ours to remove


def _train_process(data: Path, run: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "catgan", "train", str(data), "--run", str(run), *TRAIN, *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def test_sigterm_saves_a_checkpoint_exits_143_and_the_run_resumes(data, tmp_path):
    run = tmp_path / "run"
    proc = _train_process(data, run, "--max-steps", "100000", "--log-every", "1")
    try:
        for line in proc.stdout:  # the first logged step
            if line.startswith("step ") or '"step"' in line or (run / "metrics.jsonl").is_file():
                break
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 143, out
    assert "(interrupted)" in out and "catgan train: interrupted" in out
    step = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["step"]
    assert step >= 1 and not (run / LOCK_NAME).exists()
    assert main(["train", str(data), "--run", str(run), "--max-steps", str(step + 1), *TRAIN]) == 0
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["step"] == step + 1


# ---- export into a run: the run's lock (37.1) ---------------------------------------------------

RUN6 = [*TRAIN, "--max-steps", "6", "--checkpoint-every", "0", "--keep", "3", "--sample-every", "0"]


@pytest.fixture(scope="module")
def run6(data, tmp_path_factory) -> Path:
    """A finished tiny run with step checkpoints at steps 3 and 6 (copy it before changing it)."""
    run = tmp_path_factory.mktemp("run6") / "run"
    assert main(["train", str(data), "--run", str(run), *RUN6, "--max-steps", "3"]) == 0  # saved at the end
    assert main(["train", str(data), "--run", str(run), *RUN6]) == 0
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-00000003.pt", "step-00000006.pt"]
    return run


def _copy_run(run: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, dest))


def _holder(run: Path, command: str = "train") -> subprocess.Popen:
    """A process holding `run`'s lock, as `catgan COMMAND` would, until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom catgan.training.lock import acquire\n"
         f"acquire({str(run)!r}, {command!r})\nprint('locked', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_export_into_a_run_in_use_is_refused_and_elsewhere_is_not(run6, tmp_path, capsys):
    run = _copy_run(run6, tmp_path / "run")
    inside, outside = run / "exports" / "g.safetensors", tmp_path / "g.safetensors"
    holder = _holder(run)
    try:
        assert main(["export", "--run", str(run), "--out", str(inside)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"{run} is in use by catgan train (PID {holder.pid} on {socket.gethostname()})" in line
        assert not (run / "exports").exists()  # nothing written
        assert main(["export", "--run", str(run), "--out", str(outside)]) == 0  # reading needs no lock
        assert outside.is_file()
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--out", str(inside)]) == 0  # the stale lock is taken over
    assert "taking over the stale lock" in capsys.readouterr().out
    assert inside.is_file() and not (run / LOCK_NAME).exists()


def test_a_trainer_is_refused_while_an_export_writes_into_the_run(data, run6, tmp_path, capsys):
    run = _copy_run(run6, tmp_path / "run")
    holder = _holder(run, "export")
    try:
        assert main(["train", str(data), "--run", str(run), *RUN6, "--max-steps", "9"]) == 2
        assert "is in use by catgan export" in _one_line(capsys.readouterr().err)
    finally:
        holder.kill()
        holder.wait()
    assert ckpt.latest_checkpoint(run).name == "step-00000006.pt"


# ---- one line, not a traceback (37.6) -----------------------------------------------------------


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_previous(
    run6, tmp_path, monkeypatch
):
    """torch.save swallows the ENOSPC of a full disk and raises a RuntimeError with no errno; the writer
    keeps the real error. os.write is the only thing replaced: it fills the disk half way through."""
    import errno

    from catgan import checkpoint_integrity
    from catgan.errors import CatganError

    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run6))
    target = tmp_path / "checkpoints" / "step-00000006.pt"
    ckpt.save_checkpoint(target, state)
    before = target.read_bytes()
    real_write, budget = os.write, [len(before) // 2]

    def write(fd, data):
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= n
        return n

    monkeypatch.setattr(checkpoint_integrity.os, "write", write)
    with pytest.raises(CatganError) as err:
        ckpt.save_checkpoint(target, {**state, "step": 7})
    assert (
        str(err.value)
        == f"could not write checkpoint {target}: No space left on device; nothing was overwritten"
    )
    assert target.read_bytes() == before and sorted(p.name for p in target.parent.iterdir()) == [target.name]


def _file_size_limit(limit: int):
    """For preexec_fn: files may grow to `limit` bytes (a write past it fails with EFBIG, the kernel's
    refusal, as a full disk's ENOSPC would), and SIGXFSZ does not kill the process."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_train_that_cannot_write_its_checkpoint_exits_in_one_line(data, run6, tmp_path):
    run = _copy_run(run6, tmp_path / "run")
    size = ckpt.latest_checkpoint(run).stat().st_size  # the samples, metrics and config stay below half
    args = [sys.executable, "-m", "catgan", "train", str(data), "--run", str(run), *RUN6, "--max-steps", "9"]
    env = {**ENV, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        args, capture_output=True, text=True, env=env, preexec_fn=_file_size_limit(size // 2)
    )
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert line == (
        f"catgan train: error: could not write checkpoint {run}/checkpoints/step-00000009.pt: "
        "File too large; "
        "nothing was overwritten"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003.pt", "step-00000006.pt"]
    assert not (run / LOCK_NAME).exists()


def _mutations() -> list[tuple[str, object]]:
    bad_opt = {"state": {}, "param_groups": [{"params": [0], "lr": "fast", "betas": (0.5, 0.9)}]}
    return [
        ("format", 2), ("step", "6"), ("step", -1), ("epoch", 1.5), ("batch_in_epoch", True),
        ("G", [1, 2]), ("G", {"w": 1.0}), ("G", {0: torch.zeros(1)}), ("D", "D"), ("G_ema", 3),
        ("opt_g", [1]), ("opt_d", {"state": {}, "param_groups": "all"}), ("opt_g", bad_opt),
        ("data_rng", torch.zeros(3, dtype=torch.uint8)), ("cpu_rng", torch.zeros(5056)),
        ("noise_rng", "seed"), ("cuda_rng", [1]), ("model_config", []), ("train_config", "x"),
        ("elapsed", "1 s"), ("best_fid", float("nan")), ("init_from", 5), ("world_size", 1.0),
    ]  # fmt: skip


def test_loadable_checkpoints_with_wrong_types_inside_are_one_line(run6, tmp_path):
    from catgan.errors import CatganError

    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run6))
    for i, (field, value) in enumerate(_mutations()):
        path = tmp_path / f"bad-{i}.pt"
        torch.save({**state, field: value}, path)  # loads with weights_only=True
        with pytest.raises(
            CatganError, match=rf"^{path} is damaged or not a catgan checkpoint: its {field} "
        ):
            ckpt.load_checkpoint(path)


def test_wrong_types_or_shapes_through_the_commands_are_one_line(data, run6, tmp_path, capsys):
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run6))
    run = _copy_run(run6, tmp_path / "run")
    (run / "checkpoints" / "step-00000003.pt").unlink()
    newest = run / "checkpoints" / "step-00000006.pt"
    torch.save({**state, "cpu_rng": torch.zeros(7, dtype=torch.uint8)}, newest)
    for argv in (
        ["generate", "--run", str(newest), "--seeds", "0", "--out", str(tmp_path / "a.png")],
        ["export", "--run", str(run), "--out", str(tmp_path / "a.safetensors")],
        ["train", str(data), "--run", str(run), *RUN6, "--max-steps", "9"],
    ):
        assert main(argv) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"{newest} is damaged or not a catgan checkpoint: its cpu_rng should be a CPU random" in line
    name = next(iter(state["G"]))
    wrong = {**state["G"], name: torch.zeros(1, *state["G"][name].shape)}  # right types, wrong shape
    torch.save({**state, "G": wrong}, newest)
    assert main(["train", str(data), "--run", str(run), *RUN6, "--max-steps", "9"]) == 2
    assert "the saved state does not fit this run's networks: " in _one_line(capsys.readouterr().err)
    assert main(["generate", "--run", str(run), "--seeds", "0", "--out", str(tmp_path / "a.png")]) == 2
    assert "weights do not fit the model config" in _one_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("a.*"))


def test_non_utf8_names_on_a_strict_ascii_terminal(data, tmp_path):
    """PYTHONIOENCODING=ascii and a run folder whose name is not UTF-8 (nor ASCII): every command that
    prints it finishes its work and prints the name with backslash escapes."""
    root = os.fsencode(tmp_path)
    run, out_dir = root + b"/run-\xff\xe9", root + b"/cats-\xe9"
    env = {**ENV, "PYTHONIOENCODING": "ascii"}
    for argv, rc in (
        ([b"train", os.fsencode(data), b"--run", run, *map(os.fsencode, RUN6), b"--max-steps", b"3"], 0),
        ([b"generate", b"--run", run, b"--seeds", b"0-1", b"--out-dir", out_dir, b"--device", b"cpu"], 0),
        ([b"export", b"--run", run, b"--out", out_dir + b"/g\xff.safetensors"], 0),
        ([b"generate", b"--run", run + b"/missing", b"--seeds", b"0", b"--out", b"x.png"], 2),  # an error
    ):
        proc = subprocess.run([sys.executable, "-m", "catgan", *argv], capture_output=True, env=env)
        out, err = proc.stdout.decode("ascii"), proc.stderr.decode("ascii")  # strict: ASCII only
        assert proc.returncode == rc and "Traceback" not in err, err
        assert "-\\udcff" in out + err or "-\\udce9" in out + err  # a name printed, escaped
    assert sorted(os.listdir(out_dir)) == [
        b"g\xff.json",
        b"g\xff.safetensors",
        b"seed000000.png",
        b"seed000001.png",
    ]


# ---- a damaged newest checkpoint: fall back to the newest readable one (37.7) -------------------


def _damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a torn copy: a truncated zip


def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(data, run6, tmp_path, capsys):
    from safetensors import safe_open

    run = _copy_run(run6, tmp_path / "run")
    newest, older = run / "checkpoints" / "step-00000006.pt", run / "checkpoints" / "step-00000003.pt"
    good = ckpt.load_checkpoint(newest)
    _damage(newest)
    warned = f"warning: skipped an unreadable checkpoint: cannot read checkpoint {newest}: "
    using = f"warning: using {older}, the newest readable checkpoint"

    assert main(["generate", "--run", str(run), "--seeds", "0-3", "--out", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    assert warned in err and using in err
    assert main(["generate", "--run", str(older), "--seeds", "0-3", "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # drawn by step 3

    assert main(["export", "--run", str(run), "--out", str(tmp_path / "g.safetensors")]) == 0
    err = capsys.readouterr().err
    assert warned in err and using in err
    with safe_open(str(tmp_path / "g.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["provenance"])["step"] == 3
    assert newest.is_file()  # reading commands change nothing

    assert main(["train", str(data), "--run", str(run), *RUN6]) == 0  # resumes at 3, trains to 6 again
    out = capsys.readouterr().out
    assert f"warning: cannot read checkpoint {newest}: " in out
    assert "moved it to step-00000006.pt.unreadable and going on from step-00000003.pt" in out
    assert (run / "checkpoints" / "step-00000006.pt.unreadable").is_file()
    _assert_same(ckpt.load_checkpoint(newest), good)  # an exact resume redid the lost steps


def test_no_readable_checkpoint_is_one_line_and_nothing_is_moved(data, run6, tmp_path, capsys):
    run = _copy_run(run6, tmp_path / "run")
    for p in ckpt.list_checkpoints(run):
        _damage(p)
    newest = run / "checkpoints" / "step-00000006.pt"
    for argv in (
        ["generate", "--run", str(run), "--seeds", "0", "--out", str(tmp_path / "a.png")],
        ["train", str(data), "--run", str(run), *RUN6, "--max-steps", "9"],
    ):
        assert main(argv) == 2
        line = _one_line(capsys.readouterr().err)
        assert (
            f"cannot read checkpoint {newest}: " in line and "(and the 1 older one(s) cannot be read" in line
        )
    assert len(ckpt.list_checkpoints(run)) == 2 and not list(run.glob("checkpoints/*.unreadable"))


def _assert_same(a, b, where: str = "state") -> None:
    """Equal to the bit: tensors, numbers, strings, in nested dicts and lists (but "elapsed", wall time)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - {"elapsed"}
        assert isinstance(b, dict) and keys == set(b) - {"elapsed"}, where
        for k in keys:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


# ---- generate --out-dir streams (37.9) ----------------------------------------------------------


def test_generate_out_dir_writes_each_batch_before_drawing_the_next(run6, tmp_path, monkeypatch, capsys):
    import catgan.generate as generate

    out_dir, seen = tmp_path / "cats", []
    real = generate.to_uint8

    def counting(images):  # called once per batch drawn: how many files exist by then
        seen.append(len(list(out_dir.glob("*.png"))) if out_dir.is_dir() else 0)
        return real(images)

    monkeypatch.setattr(generate, "to_uint8", counting)
    argv = ["generate", "--run", str(run6), "--seeds", "0-36", "--batch", "8", "--out-dir", str(out_dir)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert seen == [0, 8, 16, 24, 32]  # each batch on disk before the next is drawn: memory stays flat
    assert len(list(out_dir.glob("seed*.png"))) == 37 and "wrote 37 images" in capsys.readouterr().out
    import numpy as np
    from PIL import Image

    every = generate.generate_images(generate.load_generator(run=run6), list(range(37)), batch=37)
    last = torch.from_numpy(np.asarray(Image.open(out_dir / "seed000036.png"))).permute(2, 0, 1)
    assert torch.equal(last, every[36])  # the pixels of one batch of all


def test_a_grid_of_too_many_seeds_is_refused_before_any_work(tmp_path, capsys):
    assert (
        main(["generate", "--seeds", "0-999999", "--out", str(tmp_path / "g.png"), "--weights", "nope"]) == 2
    )
    line = _one_line(capsys.readouterr().err)
    assert "--out draws one grid of all 1,000,000 seeds, at most 10,000; use --out-dir DIR" in line


# ---- evaluate: too small an n is refused before any work (37.11) --------------------------------


def test_evaluate_refuses_too_small_numbers_before_any_work(data, tmp_path, monkeypatch, capsys):
    import catgan.generate
    import catgan.metrics.features

    def work(*a, **kw):
        raise AssertionError("work started")

    monkeypatch.setattr(catgan.metrics.features, "load_extractor", work)
    monkeypatch.setattr(catgan.generate, "load", work)
    need = "FID needs 2 samples, KID 2 per subset, precision/recall with k=3 need 4"
    for extra, wanted in (
        (["--n", "2"], f"n must be >= 4 ({need}), got 2"),
        (["--n", "3", "--against", str(data)], f"n must be >= 4 ({need}), got 3"),
        (["--kid-subset-size", "1"], "kid_subset_size must be a whole number >= 2, got 1"),
    ):
        assert main(["evaluate", "--data", str(data), *extra]) == 2
        assert _one_line(capsys.readouterr().err) == f"catgan evaluate: error: {wanted}"


def test_evaluate_refuses_a_dataset_too_small_for_the_metrics_before_any_pass(tmp_path):
    from catgan.errors import CatganError
    from catgan.metrics.evaluate import EvalConfig, evaluate, evaluate_real
    from synth import make_prepared_dataset

    class NoPass:
        name, resize, device = "none", "none", torch.device("cpu")

        def features(self, images):
            raise AssertionError("a feature pass started")

    small = make_prepared_dataset(tmp_path / "small", n=3, size=16)
    cfg = EvalConfig(n=4, catface=False)
    with pytest.raises(CatganError, match=r"dataset .*cats-16 holds 3 images; the metrics need >= 4 \(FID"):
        evaluate(lambda seeds: torch.zeros(len(seeds), 3, 16, 16, dtype=torch.uint8), small, NoPass(), cfg)
    with pytest.raises(
        CatganError, match=r"each side of the comparison holds 3 images; the metrics need >= 4"
    ):
        evaluate_real(small, make_prepared_dataset(tmp_path / "other", n=3, size=16, seed=1), NoPass())


# ---- kill -9 at random moments, then rerun: the same result as an uninterrupted run ------------

KILL_SEED = 37  # the schedule of kills is drawn from this: the same moments (as shares of a run) every time
STEPS9 = [*TRAIN, "--max-steps", "9", "--checkpoint-every", "1", "--sample-every", "0", "--log-every", "1"]
STEPS9 = [*STEPS9, "--keep", "2"]


def _until_done(args: list[str], log: Path, kill_after: float | None) -> tuple[int, float]:
    """Run `args` (stdout and stderr to `log`); kill -9 it after `kill_after` seconds if still running.
    Returns (exit status, -9 when killed; seconds it ran)."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return proc.returncode, time.perf_counter() - t0


def _killed_then_rerun(args_for, tmp_path: Path, kills: int) -> tuple[Path, Path, list[int]]:
    """An uninterrupted run into ref/, then runs into out/ each killed -9 at a random share of the
    uninterrupted run's wall time, then one run to the end. Returns (ref, out, the killed runs' statuses)."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    status, took = _until_done(args_for(ref), tmp_path / "ref.log", None)
    assert status == 0, (tmp_path / "ref.log").read_text()
    rng, statuses = random.Random(KILL_SEED), []
    for share in [rng.uniform(0.15, 0.95) for _ in range(kills)]:
        statuses.append(_until_done(args_for(out), tmp_path / "out.log", share * took)[0])
    status, _ = _until_done(args_for(out), tmp_path / "out.log", None)
    assert status == 0, (tmp_path / "out.log").read_text()
    assert -signal.SIGKILL in statuses, "no kill landed before the end: the test tested nothing"
    return ref, out, statuses


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl without its timings (time, img/s), which no two runs share."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "img/s")} for r in rows]


def test_kill_9_at_random_moments_of_train_then_rerun_is_bit_identical(data, tmp_path):
    """kill -9 lands anywhere: at start-up, before or inside the lock, mid-step, mid-checkpoint (its
    temp file), between a checkpoint and its pruning. The rerun (the same command) takes the stale lock
    over, removes the temp files and resumes; the end is bit-identical to a run never interrupted."""

    def args_for(run: Path) -> list[str]:
        return [sys.executable, "-m", "catgan", "train", str(data), "--run", str(run), *STEPS9]

    ref, out, _ = _killed_then_rerun(args_for, tmp_path, kills=3)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (ref / "checkpoints").iterdir())  # no temp file, nothing set aside
    assert names[-1] == "step-00000009.pt" and len(names) == 2
    _assert_same(
        ckpt.load_checkpoint(out / "checkpoints" / names[-1]),
        ckpt.load_checkpoint(ref / "checkpoints" / names[-1]),
    )
    assert _files(out / "samples") == _files(ref / "samples")  # the grids, to the byte
    assert _metrics(out) == _metrics(ref)  # every step's losses, once each
    assert not (out / LOCK_NAME).exists()


class _Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing in catgan catches it."""


def test_a_run_killed_at_its_end_save_draws_its_last_grid_again_on_the_rerun(data, tmp_path, monkeypatch):
    """The last grid comes before the end save, so a run stopped between the two has a grid but no end
    checkpoint and its rerun redoes both; a run killed after the end save has its grid (the CI failure of
    stop 39: the grid came after the save and a finished rerun never drew it)."""
    from catgan.training import state as run_state

    args = [*TRAIN, "--max-steps", "4", "--checkpoint-every", "2", "--sample-every", "0", "--log-every", "1"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["train", str(data), "--run", str(ref), *args]) == 0
    real_save = run_state.save

    def save_then_die_at_the_end(run_dir, state, keep):
        if state["step"] == 4:
            raise _Killed()
        return real_save(run_dir, state, keep)

    monkeypatch.setattr(run_state, "save", save_then_die_at_the_end)
    with pytest.raises(_Killed):
        main(["train", str(data), "--run", str(out), *args])
    assert (out / "samples" / "step-000004.png").is_file()  # drawn before the save that died
    assert ckpt.latest_checkpoint(out).name == "step-00000002.pt"
    monkeypatch.setattr(run_state, "save", real_save)
    assert main(["train", str(data), "--run", str(out), *args]) == 0
    assert _files(out / "samples") == _files(ref / "samples")
    _assert_same(
        ckpt.load_checkpoint(ckpt.latest_checkpoint(out)), ckpt.load_checkpoint(ckpt.latest_checkpoint(ref))
    )
    assert _metrics(out) == _metrics(ref)


def test_kill_9_at_random_moments_of_prepare_then_rerun_gives_the_same_dataset(tmp_path):
    """kill -9 during `prepare` (scanning, processing, writing dataset.json, renaming, the contact
    sheets), then the same command again: the same files with the same bytes as an uninterrupted run
    (the report, with its timings, apart), and no temporary file left."""
    from synth import write_cat_folders

    write_cat_folders(tmp_path / "cats", {"CAT_00": 20, "CAT_01": 20})

    def args_for(out: Path) -> list[str]:
        src = str(tmp_path / "cats")
        return [
            sys.executable,
            "-m",
            "catgan",
            "prepare",
            src,
            "--out",
            str(out),
            "--sizes",
            "16,32",
            "--workers",
            "1",
        ]

    ref, out, _ = _killed_then_rerun(args_for, tmp_path, kills=3)
    got, want = _files(out), _files(ref)
    assert sorted(got) == sorted(want) and "report.txt" in got
    assert {k: v for k, v in got.items() if k != "report.txt"} == {
        k: v for k, v in want.items() if k != "report.txt"
    }
