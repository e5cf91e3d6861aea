from __future__ import annotations

import math

import numpy as np
import pytest

from catgan.data import align
from catgan.data.annotations import AnnotationError, Landmarks
from synth import face_points


@pytest.mark.parametrize("angle", [0.0, 17.0, -33.0, 80.0])
def test_face_box_levels_eyes_and_places_them(angle):
    pts = face_points((200.0, 150.0), 40.0, angle)
    box = align.face_box(Landmarks(pts))
    assert math.degrees(box.angle) == pytest.approx(angle, abs=1e-9)
    assert box.side == pytest.approx(2.3 * 40.0)  # ear 1 to ear 3 of the template
    in_crop = align.to_box(pts, box, 64)
    assert in_crop[0, 1] == pytest.approx(in_crop[1, 1])  # eyes level
    mid = (in_crop[0] + in_crop[1]) / 2
    assert mid + 0.5 == pytest.approx([32.0, 0.4 * 64])  # continuous position: 50% width, 40% height
    assert in_crop[0, 0] < in_crop[1, 0]  # left eye on the left
    assert in_crop[2, 1] > mid[1]  # mouth below the eyes


def test_upside_down_face_swaps_eye_labels_like_the_reference():
    pts = face_points((200.0, 150.0), 40.0, 160.0)  # left eye right of and above the right eye
    assert pts[0, 0] > pts[1, 0] and pts[0, 1] < pts[1, 1] and pts[2, 0] > pts[1, 0]
    box = align.face_box(Landmarks(pts))
    assert math.degrees(box.angle) == pytest.approx(160.0 - 180.0)  # small turn, labels swapped


def test_degenerate_face_raises():
    pts = face_points((50.0, 50.0), 10.0, 0.0)
    pts[8, 0] = pts[3, 0]  # right ear 3 on top of left ear 1
    with pytest.raises(AnnotationError, match="narrower than one pixel"):
        align.face_box(Landmarks(pts))


def test_sample_identity_and_rotation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    box = align.FaceBox((15.0, 10.0), 0.0, 5.0, 2.0, 10.0)
    out, fill = align.sample(img, box, 10)
    assert fill == 0.0 and np.array_equal(out, img[2:12, 5:15])
    # eye line pointing down (+90 deg): levelling turns the photo a quarter counter-clockwise
    box = align.FaceBox((15.0, 10.0), math.pi / 2, 10.0, 5.0, 10.0)
    out, _ = align.sample(img, box, 10)
    assert np.array_equal(out, np.rot90(img[5:15, 10:20], k=1))


def test_sample_fills_outside_with_edge_pixels():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, -1] = 200  # right edge column
    box = align.FaceBox((5.0, 5.0), 1e-9, 5.0, 0.0, 10.0)  # right half lies outside the photo
    out, fill = align.sample(img, box, 10)
    assert fill == pytest.approx(0.5)
    assert (out[:, 5:] == 200).all() and (out[:, :4] == 0).all()


def test_square_box_and_clip():
    assert align.square_box(40, 30, "crop").side == 30
    assert (align.square_box(40, 30, "crop").x0, align.square_box(40, 30, "crop").y0) == (5.0, 0.0)
    pad = align.square_box(40, 30, "pad")
    assert (pad.side, pad.x0, pad.y0) == (40.0, 0.0, -5.0)
    out, fill = align.sample(np.full((30, 40, 3), 7, np.uint8), pad, 40)
    assert out.shape == (40, 40, 3) and fill == pytest.approx(0.25) and (out == 7).all()
    box = align.FaceBox((50.0, 50.0), 0.0, -10.0, 20.0, 60.0)  # sticks out left and bottom
    clipped = align.clip_to_photo(box, 100, 70)
    assert clipped.side == pytest.approx(50.0)
    assert clipped.x0 >= 0 and clipped.y0 + clipped.side <= 70


def test_geometry_check_drops_impossible_faces_with_the_failed_rule():
    good = face_points((200.0, 150.0), 40.0, 25.0)
    align.check_geometry(Landmarks(good))  # the synthetic template is a plausible face at any angle
    cases = {
        "of the face width apart": _squeeze_eyes,
        "below the eyes": lambda p: _move(p, 2, (0.0, -0.8)),  # the mouth above the eye line
        "ear tip": lambda p: _move(p, 4, (0.0, 2.0)),  # the left ear tip below the eyes
    }
    for match, broken in cases.items():
        p = broken(face_points((200.0, 150.0), 40.0, 0.0))
        with pytest.raises(AnnotationError, match=match):
            align.check_geometry(Landmarks(p))


def _squeeze_eyes(p: np.ndarray) -> np.ndarray:
    mid = (p[0] + p[1]) / 2
    p[0], p[1] = mid - [3.0, 0.0], mid + [3.0, 0.0]  # eyes 6 px apart on a 92 px wide face
    return p


def _move(p: np.ndarray, i: int, by_eye_distances: tuple[float, float]) -> np.ndarray:
    p[i] = (p[0] + p[1]) / 2 + np.asarray(by_eye_distances) * 40.0
    return p
