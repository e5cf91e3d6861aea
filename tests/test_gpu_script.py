"""benchmarks/gpu/run.sh and unpack.sh end to end on the CPU, with tiny budgets on tiny synthetic data.

A lent GPU is 15 minutes a session: a script that breaks there (a renamed option, a file too large to
come back) wastes it, so the CPU rehearses the same script here. About 110 s on an idle 2-core CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from catgan.errors import CatganError

synth = pytest.importorskip("synth", reason="tests/synth.py (synthetic datasets) is missing")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MODELS = ("cats-64", "cats-64-diffaug", "cats-128", "thesis-128")
MAX_FILES, MAX_BYTES = 8, 16 * 1024 * 1024  # what one device call may bring back


def _bash(script: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "2", **env}
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


@pytest.fixture(scope="module")
def brought_back(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    env = {
        "DEVICE": "cpu",
        "DATA": str(data),
        "OUT": str(out),
        "B64": "12",
        "BDIFF": "12",
        "B128": "14",
        "BTHESIS": "14",
        "STANDING": "1",
        "BENCH": "0",
        "TRAIN_ARGS": "--batch 4 --threads 2",
    }
    done = _bash("run.sh", env=env, cwd=tmp_path_factory.mktemp("cwd"))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_run_sh_trains_exports_all_four_and_fits_what_a_call_brings_back(brought_back, tmp_path):
    files = sorted(p for p in brought_back.iterdir())
    assert (brought_back / "log.txt").is_file()
    assert 2 <= len(files) <= MAX_FILES, [p.name for p in files]
    assert all(p.stat().st_size < MAX_BYTES for p in files)
    log = (brought_back / "log.txt").read_text()
    for m in MODELS:
        assert f"== train {m} ({m}," in log
    joined = tmp_path / "bundle.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in files if p.name.startswith("bundle.tar.part-")))
    with tarfile.open(joined) as tar:
        names = set(tar.getnames())
    for m in MODELS:
        assert f"./{m}.safetensors" in names
        assert f"{m}/metrics.jsonl" in names and f"{m}/config.json" in names
        assert len([n for n in names if n.startswith(f"{m}/samples/") and n.endswith(".png")]) == 1
    assert not any("checkpoints" in n for n in names)


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
    for m in MODELS:
        result = json.loads((dest / f"{m}-eval.json").read_text())
        assert result["n"] == 8 and result["image_size"] == (64 if "-64" in m else 128)
        assert result["fid"] > 0 and 0 <= result["precision"] <= 1
        assert (dest / f"{m}-samples.jpg").stat().st_size > 0


def test_unpack_sh_without_parts_is_one_clear_error(tmp_path):
    done = _bash("unpack.sh", str(tmp_path), env={}, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"no bundle.tar.part-* in {tmp_path}"
