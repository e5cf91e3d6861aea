"""The real CAT data in ../shared/data (skipped where absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catgan.data import align
from catgan.data.annotations import load_outliers, parse_cat
from catgan.data.dataset import load_dataset
from catgan.data.prepare import PrepareConfig, prepare


def meta(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def test_landmark_photos(shared_data, tmp_path):
    src = shared_data / "cat-landmarks"
    report = prepare(PrepareConfig((src,), tmp_path, sizes=(64, 128), workers=2, progress=False))
    assert report.read == 80
    # the geometry check drops none of the 80 (its bounds lie outside their measured range); the ear-only
    # annotation has a face's shape and is dropped by name, with its own reason
    assert report.dropped == {"outlier": 2, "known bad": 1}
    m64, m128 = meta(tmp_path / "cats-64"), meta(tmp_path / "cats-128")
    assert {d["source"] for d in m64["dropped"] if d["reason"] == "outlier"} == {
        "CAT_00/00000004_007.jpg",
        "CAT_00/00000007_002.jpg",
    }
    (bad,) = [d for d in m64["dropped"] if d["reason"] == "known bad"]
    assert bad["source"] == "CAT_00/00000003_015.jpg" and "left ear" in bad["detail"]
    assert "left ear" in (tmp_path / "report.txt").read_text()
    # every one of the 77 others is kept at 64 px or reported too small; none hit the catch-all
    assert len(m64["images"]) + m64["counts"]["too_small"] == 77
    assert len(m64["images"]) >= 70 and len(m128["images"]) >= 50
    recs = {r["source"]: r for r in m64["images"]}
    # faces whose square leaves the photo (ears above it): kept, square, with the outside filled
    filled = {s for s, r in recs.items() if r["fill"] > 0}
    assert {"CAT_00/00000001_005.jpg", "CAT_00/00000002_003.jpg"} <= filled
    assert len(filled) < 10 and all(recs[s]["fill"] < 0.3 for s in filled)
    for rec in m64["images"]:
        lm = np.array(rec["landmarks"])  # (9, 2) in the 64 px image
        assert abs(lm[0, 1] - lm[1, 1]) < 0.01  # eyes level
        assert (lm[0] + lm[1]) / 2 + 0.5 == pytest.approx([32.0, 25.6], abs=0.01)
        assert lm[2, 1] > lm[0, 1]  # mouth below the eyes: no face is upside down
    x = load_dataset(tmp_path, image_size=64)
    assert x.shape == (len(m64["images"]), 3, 64, 64)
    assert Image.open(tmp_path / "contact-64.png").size[0] > 64 * 8


def test_face_crop_sample(shared_data, tmp_path):
    src = shared_data / "cat-faces" / "cats_bigger_than_64x64"
    big = set((shared_data / "cat-faces" / "cats_bigger_than_128x128.txt").read_text().split())
    outliers = load_outliers()
    names = sorted(p.name for p in src.iterdir())
    sample = names[::34][:200]  # every 34th file: 199 files, spread over all ids
    sample += [n for n in names if n[:-4] in outliers and n not in sample][:5]  # and a few outliers
    sample_dir = tmp_path / "faces"
    sample_dir.mkdir()
    for n in sample:
        (sample_dir / n).symlink_to(src / n)
    report = prepare(
        PrepareConfig((sample_dir,), tmp_path / "out", sizes=(64, 128), workers=2, progress=False)
    )
    keep = [n for n in sample if n[:-4] not in outliers]
    assert report.dropped["outlier"] == len(sample) - len(keep) >= 5
    assert report.kept[64] == len(keep)  # every crop in that folder has a shorter side >= 64
    at_128 = {n for n in keep if min(Image.open(src / n).size) >= 128}
    assert report.kept[128] == len(at_128)
    assert len(at_128 ^ (big & set(keep))) <= 2  # the reference's own 128 list (2 files are not in it)
    m = meta(tmp_path / "out" / "cats-64")
    for rec in m["images"][:20]:
        w, h = Image.open(src / rec["source"]).size
        assert rec["original_size"] == [w, h] and rec["crop"]["side"] == min(w, h)
    x = load_dataset(tmp_path / "out" / "cats-64", image_size=64)
    assert x.shape == (len(keep), 3, 64, 64)
    assert 60 < x.float().mean() < 200 and x.float().std() > 30  # real photos, not blank tiles


def test_geometry_bounds_are_outside_the_measured_range(shared_data):
    """align.check_geometry's bounds against the 80 real annotations: every one passes, with a margin,
    and the ratios span what align.py's comment says (the bounds were set from this distribution)."""
    cats = sorted((shared_data / "cat-landmarks" / "CAT_00").glob("*.jpg.cat"))
    assert len(cats) == 80
    g = {c.name: align.geometry(parse_cat(c.read_bytes())) for c in cats}
    for c in cats:
        align.check_geometry(parse_cat(c.read_bytes()))  # none of the 80 is dropped
    share = [v["eye_share"] for v in g.values()]
    mouth = [v["mouth_below"] for v in g.values()]
    tips = [v["tips_above"] for v in g.values()]
    assert (round(min(share), 3), round(max(share), 3)) == (0.313, 0.508)
    assert (round(min(mouth), 3), round(max(mouth), 3)) == (0.545, 1.055)
    assert (round(min(tips), 3), round(max(tips), 3)) == (0.797, 2.147)
    assert align.EYE_SHARE[0] < 0.7 * min(share) and align.EYE_SHARE[1] > 1.3 * max(share)
    assert align.MOUTH_BELOW[0] < 0.5 * min(mouth) and align.MOUTH_BELOW[1] > 2 * max(mouth)
    assert align.TIPS_ABOVE < 0.5 * min(tips)
    # the ear-only annotation has a face's proportions: only its name can catch it
    ear = g["00000003_015.jpg.cat"]
    assert min(share) < ear["eye_share"] < max(share) and min(mouth) < ear["mouth_below"] < max(mouth)
