"""`catgan prepare` at its edges: hostile files, name clashes, its own output, a full disk, killed runs,
signals, the report and the held-out split."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catgan.data import prepare as prepare_mod
from catgan.data.dataset import load_dataset
from catgan.data.prepare import PrepareConfig, prepare
from catgan.data.split import is_holdout
from catgan.errors import CatganError
from synth import write_cat_folders, write_face_folder


def run(sources, out, sizes=(16,), **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return prepare(PrepareConfig(tuple(Path(s) for s in sources), Path(out), sizes=sizes, **kw))


def meta(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def drops(m: dict) -> dict[str, str]:
    return {d["source"]: d["reason"] for d in m["dropped"]}


# ---- bounded reads (issue 37.2) ----------------------------------------------------------------


def test_a_huge_zip_member_is_refused_before_it_is_read(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=2, min_side=20, max_side=24)
    zipped = tmp_path / "faces.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(faces.iterdir()):
            z.write(p, p.name)
        with z.open("huge.jpg", "w", force_zip64=True) as f:  # 64 MiB of zeros, ~64 KB compressed
            chunk = bytes(2**20)
            for _ in range(64):
                f.write(chunk)
    assert zipped.stat().st_size < 2**20
    tracemalloc.start()
    try:
        run([zipped], tmp_path / "out", max_bytes=2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    m = meta(tmp_path / "out" / "cats-16")
    assert drops(m) == {"huge.jpg": "too large"} and len(m["images"]) == 2
    assert "67108864 bytes, over the 1048576-byte limit" in m["dropped"][0]["detail"]
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB: the member was inflated"


def test_a_large_file_and_non_regular_files_are_skipped_with_a_reason(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=2, min_side=20, max_side=24)
    os.symlink("/dev/zero", faces / "zero.jpg")  # would read until memory runs out
    os.mkfifo(faces / "pipe.jpg")  # would block forever
    (faces / "big.png").write_bytes(bytes(3 * 2**20))
    result: dict = {}

    def target() -> None:
        try:
            result["report"] = run([faces], tmp_path / "out", max_bytes=2**20)
        except BaseException as err:  # report it to the test thread
            result["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "prepare blocked on the FIFO"
    assert "error" not in result, result.get("error")
    m = meta(tmp_path / "out" / "cats-16")
    assert drops(m) == {"big.png": "too large", "pipe.jpg": "not a file", "zero.jpg": "not a file"}
    details = {d["source"]: d["detail"] for d in m["dropped"]}
    assert details["pipe.jpg"] == "a FIFO, not a regular file"
    assert len(m["images"]) == 2


def test_a_fifo_as_the_source_is_one_clear_line(tmp_path):
    os.mkfifo(tmp_path / "cats.zip")
    with pytest.raises(CatganError, match="not a regular file"):
        run([tmp_path / "cats.zip"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- no lost photos (37.3) ---------------------------------------------------------------------


def test_name_clashes_keep_every_photo_under_a_unique_name(tmp_path):
    src = tmp_path / "src"
    names = [
        "a/001.jpg",
        "b/001.jpg",
        "a b.jpg",
        "a_b.jpg",
        "Tom.jpg",
        "Tom.png",
        "tom.jpg",
        "café.jpg",
        "cafè.jpg",
    ]
    for i, n in enumerate(names):
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (10 * i, 200 - 10 * i, 7 * i)).save(src / n)  # all different
    run([src], tmp_path / "out")
    m = meta(tmp_path / "out" / "cats-16")
    by_source = {r["source"]: r["file"] for r in m["images"]}
    assert sorted(by_source) == sorted(names) and m["dropped"] == []
    files = list(by_source.values())
    assert len({f.casefold() for f in files}) == len(names)  # distinct even on a case-folding filesystem
    assert by_source["a/001.jpg"] == "001.png" and by_source["a_b.jpg"] == "a_b.png"  # first, or already safe
    assert by_source["Tom.jpg"] == "Tom.png" and by_source["b/001.jpg"].startswith("001-")
    assert all(f.isascii() for f in files)
    for r in m["images"]:  # each file holds its own photo
        want = Image.open(src / r["source"]).convert("RGB").getpixel((0, 0))
        assert Image.open(tmp_path / "out" / "cats-16" / r["file"]).getpixel((0, 0)) == want
    again = tmp_path / "again"
    run([src], again)  # stable: the same inputs get the same names
    assert {r["source"]: r["file"] for r in meta(again / "cats-16")["images"]} == by_source


def test_identical_photos_are_kept_once(tmp_path):
    faces = write_face_folder(tmp_path / "src" / "a", n=2, min_side=20, max_side=24)
    (tmp_path / "src" / "b").mkdir()
    (tmp_path / "src" / "b" / "face000.jpg").write_bytes((faces / "face000.jpg").read_bytes())
    run([tmp_path / "src"], tmp_path / "out")
    m = meta(tmp_path / "out" / "cats-16")
    assert drops(m) == {"b/face000.jpg": "duplicate"} and "a/face000.jpg" in m["dropped"][0]["detail"]
    assert sorted(p.name for p in (tmp_path / "out" / "cats-16").glob("*.png")) == [
        "face000.png",
        "face001.png",
    ]


# ---- --out inside a source (37.4) --------------------------------------------------------------


def test_out_inside_the_source_is_never_read(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=3, min_side=20, max_side=24)
    run([faces], faces / "prepared")
    run([faces], faces / "prepared", sizes=(16, 20))  # a rerun adding a size must not take cats-16 in
    for s in (16, 20):
        m = meta(faces / "prepared" / f"cats-{s}")
        assert sorted(r["source"] for r in m["images"]) == ["face000.jpg", "face001.jpg", "face002.jpg"]
    with pytest.raises(CatganError, match="is a SOURCE itself"):
        run([faces], faces)
    run([faces / "prepared" / "cats-20"], faces / "prepared", sizes=(8,))  # a dataset inside --out: fine
    assert len(meta(faces / "prepared" / "cats-8")["images"]) == 3


# ---- disk full, bad names (37.6) ---------------------------------------------------------------


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    faces = write_face_folder(tmp_path / "faces", n=3, min_side=20, max_side=24)
    real_save = Image.Image.save
    calls = []

    def full(self, fp, *args, **kw):
        calls.append(fp)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kw)

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "out"
    with pytest.raises(CatganError, match="cannot write .*: the disk is full; nothing was kept") as err:
        run([faces], out)
    assert "\n" not in str(err.value)
    assert not out.exists()  # created by this run and left empty: removed
    (out / "keep").mkdir(parents=True)  # an existing --out stays, without partial folders
    calls.clear()
    with pytest.raises(CatganError, match="the disk is full"):
        run([faces], out)
    assert sorted(p.name for p in out.iterdir()) == ["keep"]


def test_non_utf8_names_are_safe_on_a_strict_terminal(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=1, min_side=20, max_side=24)
    bad = os.fsencode(faces) + b"/caf\xe9-\xff.jpg"  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as f:
        f.write(b"not an image")
    Image.new("RGB", (20, 20)).save(faces / "naïve.jpg")
    report = run([faces], tmp_path / "out")
    text = report.text("ascii")
    text.encode("ascii")  # strict: never raises
    assert "caf\\xe9-\\xff.jpg" in text and "\\u" not in text.replace("\\xe9", "")
    assert report.text("utf-8").encode("utf-8") and "naïve" not in text
    m = meta(tmp_path / "out" / "cats-16")
    assert {r["file"] for r in m["images"]} == {"face000.png", "na_ve.png"}
    assert (tmp_path / "out" / "report.txt").read_text(encoding="utf-8").startswith("read 3 inputs")


# ---- interrupted writes (37.7) -----------------------------------------------------------------


def test_stale_temp_files_are_cleaned_and_a_missing_contact_sheet_is_written(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=3, min_side=20, max_side=24)
    out = tmp_path / "out"
    run([faces], out)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = [out / f".contact-16.png.partial-{dead}", out / f".report.txt.tmp-{dead}"]
    for p in stale:
        p.write_bytes(b"half")
    (out / f".cats-16-holdout.partial-{dead}").mkdir()
    (out / "contact-16.png").unlink()  # killed after renaming cats-16, before its sheet
    report = run([faces], out)
    assert report.skipped == [16]
    assert not list(out.glob(".*partial*"))
    assert Image.open(out / "contact-16.png").size == (3 * 18 + 2, 18 + 2)


# ---- signals (37.8) ----------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """PIDs whose parent is pid (Linux /proc)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_workers_and_removes_temp_output(tmp_path):
    write_cat_folders(tmp_path / "src", {"CAT_00": 80}, size=(480, 360))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "catgan", "prepare", str(tmp_path / "src"), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--sizes", "16", "--workers", "2", "--no-progress"], stderr=subprocess.PIPE, text=True
    )
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the pool writes images
            kids |= _children(proc.pid)
            partial = list(out.glob(".cats-16.partial-*")) if out.exists() else []
            if partial and len(list(partial[0].iterdir())) >= 3:
                break
            assert proc.poll() is None, "prepare finished before it could be stopped; make it slower"
            time.sleep(0.01)
        kids |= _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (130, 143), (proc.returncode, err)  # like Ctrl-C, not killed by the signal
    assert err.strip().count("\n") == 0 and "interrupted" in err
    assert len(kids) >= 3  # two workers and the resource tracker were running
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() for k in kids):
        time.sleep(0.05)
    alive = [k for k in kids if Path(f"/proc/{k}").exists() and "Z" not in _state(k)]
    assert not alive, f"processes left running: {alive}"
    assert not (out / "cats-16").exists() and not list(out.glob(".*partial*"))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_sigterm_in_process_raises_terminated_and_cleans_up(tmp_path, monkeypatch):
    faces = write_face_folder(tmp_path / "faces", n=4, min_side=20, max_side=24)
    real = prepare_mod.process
    seen = []

    def process(job):
        seen.append(job)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread at once
        return real(job)

    monkeypatch.setattr(prepare_mod, "process", process)
    with pytest.raises(prepare_mod.Terminated) as err:
        run([faces], tmp_path / "out")
    assert err.value.signum == signal.SIGTERM and isinstance(err.value, KeyboardInterrupt)
    assert len(seen) == 2 and not (tmp_path / "out").exists()


def test_sigterm_handler_is_restored_after_prepare(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=1, min_side=20, max_side=24)
    before = signal.getsignal(signal.SIGTERM)
    run([faces], tmp_path / "out")
    assert signal.getsignal(signal.SIGTERM) is before


# ---- the report, an empty source (38.8) --------------------------------------------------------


def test_the_report_is_written_and_says_where(tmp_path):
    write_cat_folders(tmp_path / "src", {"CAT_00": 3})
    (tmp_path / "src" / "CAT_00" / "00000001_001.jpg").write_bytes(b"")
    report = run([tmp_path / "src"], tmp_path / "out")
    saved = (tmp_path / "out" / "report.txt").read_text()
    assert saved == report.text("utf-8") + "\n"
    assert "empty" in saved and "00000001_001.jpg" in saved
    assert f"this report: {tmp_path / 'out' / 'report.txt'}" in report.format()


def test_an_empty_source_leaves_no_output_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatganError, match="holds no images"):
        run([tmp_path / "empty"], tmp_path / "out" / "cats")
    assert not (tmp_path / "out").exists()


# ---- --holdout (34.1) --------------------------------------------------------------------------


def test_holdout_splits_by_the_photo_key_at_every_size(tmp_path):
    truth = write_cat_folders(tmp_path / "src", {"CAT_00": 30})
    out = tmp_path / "out"
    report = run([tmp_path / "src"], out, sizes=(16, 32), holdout=0.3)
    expect = {n for n in truth if is_holdout(n, 0.3)}
    assert 3 <= len(expect) <= 15  # the rule's share on 30 names
    for s in (16, 32):
        train, held = meta(out / f"cats-{s}"), meta(out / f"cats-{s}-holdout")
        assert {r["file"][:-4] for r in held["images"]} == expect  # the same photos at every size
        assert {r["file"][:-4] for r in train["images"]} == set(truth) - expect
        assert train["holdout"]["side"] == "train" and held["holdout"]["side"] == "holdout"
        assert train["holdout"]["fraction"] == held["holdout"]["fraction"] == 0.3
        assert train["holdout"]["images"] == {"train": 30 - len(expect), "held_out": len(expect)}
        assert report.held_out[s] == len(expect) and report.kept[s] == 30 - len(expect)
        x = load_dataset(out / f"cats-{s}-holdout", image_size=s)
        assert x.shape == (len(expect), 3, s, s)
    assert load_dataset(out, image_size=16).shape[0] == 30 - len(expect)  # DIR still means cats-16
    assert run([tmp_path / "src"], out, sizes=(16,), holdout=0.3).skipped == [16]
    with pytest.raises(CatganError, match="prepared from other sources or options"):
        run([tmp_path / "src"], out, sizes=(16,), holdout=0.2)
    with pytest.raises(CatganError, match="prepared from other sources or options"):
        run([tmp_path / "src"], out, sizes=(16,))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.51, 1.0, float("nan")])
def test_holdout_fraction_out_of_range_is_one_line(tmp_path, fraction):
    with pytest.raises(CatganError, match=r"held-out fraction must be in \(0, 0.5\]"):
        PrepareConfig((tmp_path,), tmp_path / "out", holdout=fraction)


def test_an_empty_holdout_folder_says_so_when_loaded(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=2, min_side=20, max_side=24)
    names = [p.name for p in faces.iterdir()]
    fraction = 1e-6
    assert not any(is_holdout(n, fraction) for n in names)
    report = run([faces], tmp_path / "out", holdout=fraction)
    assert report.held_out == {16: 0} and "empty: raise --holdout" in report.format()
    with pytest.raises(
        CatganError, match=r"held-out dataset .*cats-16-holdout holds no images: --holdout 1e-06"
    ):
        load_dataset(tmp_path / "out" / "cats-16-holdout")


def test_old_datasets_keep_their_recipe(tmp_path):
    """A dataset made before --holdout existed has no 'holdout' in its recipe and is still skipped."""
    faces = write_face_folder(tmp_path / "faces", n=2, min_side=20, max_side=24)
    run([faces], tmp_path / "out")
    assert "holdout" not in meta(tmp_path / "out" / "cats-16")["recipe"]
    assert "holdout" not in prepare_mod.PrepareConfig((faces,), tmp_path / "out").recipe()


def test_a_huge_face_square_is_resampled_at_a_bounded_side(tmp_path):
    """Ears annotated far outside the photo make a 5,000 px face square: memory stays bounded."""
    src = tmp_path / "src" / "CAT_00"
    src.mkdir(parents=True)
    Image.new("RGB", (2000, 1600), (90, 120, 150)).save(src / "00000001_000.jpg", "PNG")  # lossless
    pts = [(500, 800), (1500, 800), (1000, 1500), (-1500, 300), (-1000, -200), (300, 100)]
    pts += [(1700, 100), (3000, -200), (3500, 300)]  # a plausible shape: eyes 0.2 of the face apart
    (src / "00000001_000.jpg.cat").write_text("9 " + " ".join(f"{x} {y}" for x, y in pts))
    tracemalloc.start()
    try:
        run([tmp_path / "src"], tmp_path / "out", sizes=(16,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (rec,) = meta(tmp_path / "out" / "cats-16")["images"]
    assert rec["crop"]["side"] == pytest.approx(5000) and rec["fill"] > 0.5
    # unbounded, 5,000^2 pixels of float temporaries would take over 2 GB
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert (np.asarray(Image.open(tmp_path / "out" / "cats-16" / rec["file"])) == [90, 120, 150]).all()
