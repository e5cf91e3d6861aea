from __future__ import annotations

import numpy as np
import pytest

from catgan.data.annotations import (
    KNOWN_BAD,
    AnnotationError,
    Landmarks,
    load_outliers,
    parse_cat,
    photo_key,
    validate,
)

GOOD = "9 175 160 239 162 199 199 149 121 137 78 166 93 281 101 312 96 296 133 "


def test_parse_real_line():
    lm = parse_cat(GOOD.encode())
    assert lm.points.shape == (9, 2)
    assert lm.left_eye.tolist() == [175, 160]
    assert lm.right_eye.tolist() == [239, 162]
    assert lm.points[8].tolist() == [296, 133]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("9 1 2 3", "9' and 18 coordinates"),
        ("8 " + " ".join(["10"] * 16), "9' and 18 coordinates"),
        ("9 " + " ".join(["10"] * 20), "9' and 18 coordinates"),
        ("9 " + " ".join(["10"] * 17) + " abc", "non-number 'abc'"),
        ("9 " + " ".join(["10"] * 17) + " nan", "NaN"),
        ("9 " + " ".join(["10"] * 17) + " inf", "NaN or infinite"),
    ],
)
def test_parse_rejects(text, match):
    with pytest.raises(AnnotationError, match=match):
        parse_cat(text)


def test_parse_rejects_binary():
    with pytest.raises(AnnotationError, match="not text"):
        parse_cat(b"\xff\xfe\x00garbage")


def test_validate_accepts_ears_outside_but_not_far_outside():
    lm = parse_cat(GOOD)
    validate(lm, 400, 300)
    pts = lm.points.copy()
    pts[4] = [137, -92]  # an ear tip above the photo, as in the real data
    validate(Landmarks(pts), 400, 300)
    pts[4] = [137, -1000]
    with pytest.raises(AnnotationError, match=r"landmark 5 at \(137, -1000\) lies far outside the 400x300"):
        validate(Landmarks(pts), 400, 300)


def test_validate_rejects_eye_outside_and_coinciding_eyes():
    pts = parse_cat(GOOD).points.copy()
    pts[2] = [199, 300]
    with pytest.raises(AnnotationError, match="mouth at"):
        validate(Landmarks(pts), 400, 300)
    pts = parse_cat(GOOD).points.copy()
    pts[1] = pts[0]
    with pytest.raises(AnnotationError, match="same spot"):
        validate(Landmarks(pts), 400, 300)


def test_outlier_list_is_shipped():
    names = load_outliers()
    assert len(names) == 134
    assert {"00000004_007", "00000007_002", "00001487_020"} <= names
    assert all(len(n) == 12 and n[8] == "_" for n in names)
    assert "00000003_019.jpg.cat" in KNOWN_BAD


def test_photo_key():
    assert photo_key("CAT_00/00000001_005.jpg") == "00000001_005"
    assert photo_key("00000001_005.png") == "00000001_005"
    assert photo_key("noext") == "noext"


def test_landmarks_points_are_float():
    assert parse_cat(GOOD).points.dtype == np.float64
