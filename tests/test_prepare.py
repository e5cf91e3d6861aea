from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catgan.cli import main
from catgan.data.prepare import PrepareConfig, prepare
from catgan.errors import CatganError
from synth import (
    LEFT_EYE_RGB,
    RIGHT_EYE_RGB,
    cat_text,
    draw_face,
    face_points,
    write_cat_folders,
    write_cat_photo,
    write_face_folder,
    write_zip,
)


def run(sources, out, sizes=(32,), **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return prepare(PrepareConfig(tuple(Path(s) for s in sources), Path(out), sizes=sizes, **kw))


def meta(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def centroid(img: np.ndarray, rgb) -> np.ndarray:
    """Centre (x, y) in pixel indices of the pixels close to a pure colour. img: (H, W, 3) uint8."""
    d = np.abs(img.astype(int) - np.array(rgb)).max(axis=2)
    ys, xs = np.nonzero(d < 90)
    assert len(xs) > 0, f"no {rgb} pixels found"
    return np.array([xs.mean(), ys.mean()])


def drops_by_source(m: dict) -> dict[str, str]:
    return {d["source"]: d["reason"] for d in m["dropped"]}


# ---- geometry ----------------------------------------------------------------------------------


def test_eyes_are_level_and_placed(tmp_path):
    truth = write_cat_folders(tmp_path / "src", {"CAT_00": 6})
    report = run([tmp_path / "src"], tmp_path / "out", sizes=(32,))
    assert report.kept == {32: 6}
    m = meta(tmp_path / "out" / "cats-32")
    assert m["image_size"] == 32 and len(m["images"]) == 6
    for rec in m["images"]:
        img = np.asarray(Image.open(tmp_path / "out" / "cats-32" / rec["file"]))
        assert img.shape == (32, 32, 3)
        left, right = centroid(img, LEFT_EYE_RGB), centroid(img, RIGHT_EYE_RGB)
        assert abs(left[1] - right[1]) < 0.75, rec["file"]  # level
        mid = (left + right) / 2 + 0.5  # continuous position
        assert mid == pytest.approx([16.0, 0.4 * 32], abs=0.75)
        assert left[0] < right[0]
        lm = np.array(rec["landmarks"])  # recorded landmarks agree with the pixels
        assert lm[0] == pytest.approx(left, abs=0.75) and lm[1] == pytest.approx(right, abs=0.75)
        assert rec["source"] == f"CAT_00/{rec['file'][:-4]}.jpg"
        assert rec["original_size"] == [160, 120] and rec["fill"] == 0.0
        assert rec["file"][:-4] in truth


def test_face_partly_outside_is_kept_square_with_fill(tmp_path):
    src = tmp_path / "src" / "CAT_00"
    src.mkdir(parents=True)
    pts = np.round(face_points((20, 60), 30, 10.0))  # left ear far past the left edge
    draw_face(160, 120, pts).save(src / "00000001_000.jpg", quality=95)
    (src / "00000001_000.jpg.cat").write_text(cat_text(pts))
    run([tmp_path / "src"], tmp_path / "pad", sizes=(32,))
    padded = meta(tmp_path / "pad" / "cats-32")["images"][0]
    assert 0.05 < padded["fill"] < 0.5
    assert padded["crop"]["side"] == pytest.approx(69, abs=1)
    run([tmp_path / "src"], tmp_path / "crop", sizes=(32,), square="crop")
    cropped = meta(tmp_path / "crop" / "cats-32")["images"][0]
    # clipped to the rotated canvas as the reference does (only its turned-in corners remain filled)
    assert cropped["fill"] < padded["fill"] and cropped["crop"]["side"] < 60


def test_size_gate(tmp_path):
    write_cat_folders(tmp_path / "src", {"CAT_00": 2}, size=(80, 60))  # faces about 30 px wide
    report = run([tmp_path / "src"], tmp_path / "out", sizes=(16, 64))
    assert report.kept == {16: 2, 64: 0}
    m = meta(tmp_path / "out" / "cats-64")
    assert {d["reason"] for d in m["dropped"]} == {"too small"}
    assert "smaller than 64" in m["dropped"][0]["detail"]


def test_face_folder_crop_pad_and_outliers(tmp_path):
    faces = write_face_folder(tmp_path / "faces", n=4, min_side=20, max_side=40)
    Image.new("RGB", (50, 20), (10, 200, 30)).save(faces / "wide.png")
    Image.new("RGB", (30, 30)).save(faces / "00000004_007.jpg")  # an outlier name
    report = run([faces], tmp_path / "out", sizes=(16,))
    m = meta(tmp_path / "out" / "cats-16")
    files = [r["file"] for r in m["images"]]
    assert files == sorted(files) and "wide.png" in files and len(files) == 5
    assert drops_by_source(m) == {"00000004_007.jpg": "outlier"}
    assert report.dropped == {"outlier": 1}
    wide = next(r for r in m["images"] if r["file"] == "wide.png")
    assert wide["crop"]["side"] == 20 and wide["fill"] == 0.0 and "landmarks" not in wide
    run([faces], tmp_path / "pad", sizes=(16,), square="pad", outliers=False)
    m = meta(tmp_path / "pad" / "cats-16")
    assert len(m["images"]) == 6
    wide = next(r for r in m["images"] if r["file"] == "wide.png")
    assert wide["crop"]["side"] == 50 and wide["fill"] == pytest.approx(0.6)
    assert (np.asarray(Image.open(tmp_path / "pad" / "cats-16" / "wide.png")) == [10, 200, 30]).all()


def test_jpg_format_and_contact_sheet(tmp_path):
    write_face_folder(tmp_path / "faces", n=3, min_side=20, max_side=30)
    run([tmp_path / "faces"], tmp_path / "out", sizes=(16,), image_format="jpg", quality=90)
    m = meta(tmp_path / "out" / "cats-16")
    assert all(r["file"].endswith(".jpg") for r in m["images"]) and m["recipe"]["quality"] == 90
    assert Image.open(tmp_path / "out" / "cats-16" / m["images"][0]["file"]).format == "JPEG"
    sheet = Image.open(tmp_path / "out" / "contact-16.png")
    assert sheet.size == (3 * 18 + 2, 18 + 2)


# ---- bad input ---------------------------------------------------------------------------------


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def _photo(folder: Path, name: str, seed: int = 0, angle: float = 0.0) -> tuple[Image.Image, np.ndarray]:
    """A good face photo written as NAME.jpg + NAME.jpg.cat; returns the image and points."""
    pts = write_cat_photo(folder, name, angle=angle, seed=seed)
    return Image.open(folder / f"{name}.jpg").convert("RGB"), pts


def test_every_bad_input_is_skipped_with_a_reason(tmp_path):
    c0, c1 = tmp_path / "src" / "CAT_00", tmp_path / "src" / "CAT_01"
    good, pts = _photo(c0, "00000001_000")
    jpg = (c0 / "00000001_000.jpg").read_bytes()
    cat = cat_text(pts)

    def case(name: str, photo: bytes | None, annotation: str | None, folder: Path = c0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if photo is not None:
            (folder / f"{name}.jpg").write_bytes(photo)
        if annotation is not None:
            (folder / f"{name}.jpg.cat").write_text(annotation)

    def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    case("00000001_001", b"", cat)  # zero bytes
    case("00000001_002", jpg[: len(jpg) // 2], cat)  # truncated JPEG
    case("00000001_003", b"<html>not a photo</html>", cat)  # not an image, named .jpg
    case("00000001_004", _png_bomb(30000, 30000), cat)  # decompression bomb
    case("00000001_005", jpg, "5 1 2 3 4 5 6 7 8 9 10")  # wrong count
    case("00000001_006", jpg, cat.replace(cat.split()[3], "eye", 1))  # non-number
    case("00000001_007", jpg, cat.rsplit(" ", 2)[0] + " nan")  # NaN
    case("00000001_008", jpg, cat.rsplit(" ", 2)[0] + " 99999")  # a point far outside
    case("00000001_009", jpg, "9 " + " ".join(cat.split()[1:3] * 2 + cat.split()[5:]))  # eyes on one spot
    case("00000001_010", jpg, None)  # photo without .cat
    case("00000001_011", None, cat)  # .cat without photo
    case("00000001_000", jpg, cat, folder=c1)  # the same name in another CAT_0x folder
    os.symlink(tmp_path / "gone.jpg", c0 / "00000001_012.jpg")  # unreadable file
    case("00000001_012", None, cat)
    case("00000003_019", jpg, cat)  # the known-bad annotation
    case("00000004_007", jpg, cat)  # a listed outlier
    # good photos in awkward encodings are converted, never lost
    case("00000001_020", encoded(good.convert("CMYK"), "JPEG", quality=95), cat)
    case("00000001_021", encoded(good.convert("L"), "JPEG", quality=95), cat)
    case("00000001_022", encoded(good.convert("P"), "PNG"), cat)
    sixteen = (np.asarray(good.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
    case("00000001_023", encoded(Image.fromarray(sixteen), "PNG"), cat)
    exif = Image.Exif()
    exif[0x0112] = 6
    case("00000001_024", encoded(good, "JPEG", quality=95, exif=exif.tobytes()), cat)

    report = run([tmp_path / "src"], tmp_path / "out", sizes=(32,))
    m = meta(tmp_path / "out" / "cats-32")
    expected = {
        "CAT_00/00000001_001.jpg": "empty",
        "CAT_00/00000001_002.jpg": "corrupt",
        "CAT_00/00000001_003.jpg": "not an image",
        "CAT_00/00000001_004.jpg": "bomb",
        "CAT_00/00000001_005.jpg": "bad annotation",
        "CAT_00/00000001_006.jpg": "bad annotation",
        "CAT_00/00000001_007.jpg": "bad annotation",
        "CAT_00/00000001_008.jpg": "bad annotation",
        "CAT_00/00000001_009.jpg": "bad annotation",
        "CAT_00/00000001_010.jpg": "no annotation",
        "CAT_00/00000001_011.jpg.cat": "no photo",
        "CAT_01/00000001_000.jpg": "duplicate",
        "CAT_00/00000001_012.jpg": "unreadable",
        "CAT_00/00000003_019.jpg": "known bad",
        "CAT_00/00000004_007.jpg": "outlier",
    }
    assert drops_by_source(m) == expected
    details = {d["source"]: d["detail"] for d in m["dropped"]}
    assert "9' and 18 coordinates" in details["CAT_00/00000001_005.jpg"]
    assert "non-number 'eye'" in details["CAT_00/00000001_006.jpg"]
    assert "NaN" in details["CAT_00/00000001_007.jpg"]
    assert "far outside" in details["CAT_00/00000001_008.jpg"]
    assert "same spot" in details["CAT_00/00000001_009.jpg"]
    assert "30000x30000" in details["CAT_00/00000001_004.jpg"] or "bomb" in details["CAT_00/00000001_004.jpg"]
    assert all("\n" not in d for d in details.values())
    kept = {r["file"]: r for r in m["images"]}
    assert sorted(kept) == [f"00000001_0{i}.png" for i in ("00", "20", "21", "22", "23", "24")]
    assert report.read == 6 + len(expected)
    assert "converted from CMYK" in kept["00000001_020.png"]["notes"]
    assert "converted from L" in kept["00000001_021.png"]["notes"]
    assert "converted from P" in kept["00000001_022.png"]["notes"]
    assert any("16-bit" in n for n in kept["00000001_023.png"]["notes"])
    assert any("EXIF orientation 6 ignored" in n for n in kept["00000001_024.png"]["notes"])
    ref = np.asarray(Image.open(tmp_path / "out" / "cats-32" / "00000001_000.png")).astype(int)
    for f in ("00000001_020.png", "00000001_024.png"):
        img = np.asarray(Image.open(tmp_path / "out" / "cats-32" / f)).astype(int)
        assert np.abs(img - ref).mean() < 8, f  # the same face, not a mangled one
    grey = np.asarray(Image.open(tmp_path / "out" / "cats-32" / "00000001_023.png")).astype(int)
    assert np.abs(grey - ref.mean(axis=2, keepdims=True)).mean() < 12  # 16-bit scaled, not clipped
    with pytest.raises(AssertionError):
        assert report.dropped.get("error")  # nothing fell through to the catch-all


def test_no_outliers_keeps_them(tmp_path):
    _photo(tmp_path / "src" / "CAT_00", "00000004_007")
    report = run([tmp_path / "src"], tmp_path / "out", outliers=False)
    assert report.kept == {32: 1}
    assert meta(tmp_path / "out" / "cats-32")["recipe"]["outliers"] is False


def test_face_folder_applies_exif_orientation(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    upright = draw_face(40, 40, face_points((20, 20), 12, 0.0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; a viewer turns it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(faces / "a.jpg", quality=95, exif=exif.tobytes())
    run([faces], tmp_path / "out", sizes=(40,))
    img = np.asarray(Image.open(tmp_path / "out" / "cats-40" / "a.png"))
    left, right = centroid(img, LEFT_EYE_RGB), centroid(img, RIGHT_EYE_RGB)
    assert abs(left[1] - right[1]) < 1.5 and left[0] < right[0]


@pytest.mark.parametrize("kind", ["missing", "empty", "no-images", "file"])
def test_bad_source_exits_nonzero_naming_the_path(tmp_path, capsys, kind):
    src = tmp_path / "src"
    if kind in ("empty", "no-images"):
        src.mkdir()
    if kind == "no-images":
        (src / "notes.txt").write_text("hi")
    if kind == "file":
        src.write_text("not a zip")
    rc = main(["prepare", str(src), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.count("\n") == 1 and str(src) in err
    assert not (tmp_path / "out" / "cats-64").exists()


def test_out_that_cannot_be_created_is_one_clear_error(tmp_path, capsys):
    write_face_folder(tmp_path / "faces", n=2, min_side=20, max_side=30)
    (tmp_path / "file").write_text("in the way")
    out = tmp_path / "file" / "out"  # its parent is a file: mkdir fails
    rc = main(["prepare", str(tmp_path / "faces"), "--out", str(out), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"cannot create --out {out}" in err


# ---- sources, reruns, crashes ------------------------------------------------------------------


def test_zip_and_folder_give_identical_output(tmp_path):
    write_cat_folders(tmp_path / "src", {"CAT_00": 3, "CAT_01": 2})
    (tmp_path / "src" / "CAT_01" / "00000002_001.jpg").write_bytes(b"")  # a bad one too
    zipped = write_zip(tmp_path / "src", tmp_path / "cats.zip")
    run([tmp_path / "src"], tmp_path / "a", sizes=(16, 32), workers=1)
    run([zipped], tmp_path / "b", sizes=(16, 32), workers=2)  # also: the process pool == inline
    for s in (16, 32):
        a, b = tmp_path / "a" / f"cats-{s}", tmp_path / "b" / f"cats-{s}"
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for p in a.glob("*.png"):
            assert p.read_bytes() == (b / p.name).read_bytes(), p.name
        ma, mb = meta(a), meta(b)
        assert ma["recipe"]["sources"] != mb["recipe"]["sources"]
        ma["recipe"].pop("sources"), mb["recipe"].pop("sources")
        assert ma == mb
        assert len(ma["images"]) == 4


def test_a_zip_rewritten_between_runs_in_one_process_is_read_afresh(tmp_path):
    write_cat_folders(tmp_path / "a", {"CAT_00": 2})
    write_cat_folders(tmp_path / "b", {"CAT_00": 3}, seed=7)
    zipped = write_zip(tmp_path / "a", tmp_path / "cats.zip")
    run([zipped], tmp_path / "out1", sizes=(16,))
    write_zip(tmp_path / "b", zipped)  # same path, other content (no stale open archive may be used)
    run([zipped], tmp_path / "out2", sizes=(16,))
    run([tmp_path / "b"], tmp_path / "ref", sizes=(16,))
    for p in (tmp_path / "ref" / "cats-16").glob("*.png"):
        assert p.read_bytes() == (tmp_path / "out2" / "cats-16" / p.name).read_bytes(), p.name
    assert len(meta(tmp_path / "out2" / "cats-16")["images"]) == 3


def test_several_sources_merge(tmp_path):
    write_cat_folders(tmp_path / "lm", {"CAT_00": 2})
    write_face_folder(tmp_path / "faces", n=3, min_side=32, max_side=40)
    report = run([tmp_path / "lm" / "CAT_00", tmp_path / "faces"], tmp_path / "out")
    assert report.kept == {32: 5} and report.kinds == {"landmarks": 2, "face": 3}


def test_rerun_is_idempotent_and_refuses_other_recipes(tmp_path):
    write_face_folder(tmp_path / "faces", n=3, min_side=20, max_side=30)
    run([tmp_path / "faces"], tmp_path / "out", sizes=(16,))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    report = run([tmp_path / "faces"], tmp_path / "out", sizes=(16,))
    assert report.skipped == [16] and report.kept == {}
    assert "already prepared" in report.format()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")} == before
    report = run([tmp_path / "faces"], tmp_path / "out", sizes=(16, 20))  # adds a size, keeps 16
    assert report.skipped == [16] and report.kept == {20: 3}
    with pytest.raises(CatganError, match="prepared from other sources or options"):
        run([tmp_path / "faces"], tmp_path / "out", sizes=(16,), image_format="jpg")
    (tmp_path / "out" / "cats-24").mkdir()
    with pytest.raises(CatganError, match="not a finished catgan dataset"):
        run([tmp_path / "faces"], tmp_path / "out", sizes=(24,))


def test_killed_run_leaves_no_partial_dataset(tmp_path):
    write_cat_folders(tmp_path / "src", {"CAT_00": 60}, size=(480, 360))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "catgan", "prepare", str(tmp_path / "src"), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--sizes", "16", "--workers", "1", "--no-progress"])
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # wait until it is writing images, then kill it hard
            partial = list(out.glob(".cats-16.partial-*")) if out.exists() else []
            if partial and len(list(partial[0].iterdir())) >= 3:
                break
            assert proc.poll() is None, "prepare finished before it could be killed; make it slower"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "cats-16").exists()
    assert list(out.glob(".cats-16.partial-*"))  # the remains are hidden and named partial
    report = run([tmp_path / "src"], out, sizes=(16,))  # a rerun cleans up and completes
    assert report.kept == {16: 60}
    assert not list(out.glob(".*partial*"))
