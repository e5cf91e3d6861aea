"""Projection (catgan.projection, `catgan project`, `catgan train-encoder`, LoadedGenerator.project): the
face found from a .cat file (prepare's exact crop), the user's eyes or OpenCV's detector, with its transform
back; an encoder that learns; an inversion that beats the encoder's guess, also under a mask and a
degradation; the four files; one line per bad photo with the others still written."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import catgan
from catgan.cli import main
from catgan.data import align
from catgan.data.annotations import Landmarks
from catgan.errors import CatganError
from catgan.images import to_uint8
from catgan.projection.encoder import (
    EncoderTrainConfig,
    LatentEncoder,
    LatentEncoderConfig,
    bundled_encoder,
    load_encoder,
    lr_factor,
    save_encoder,
    train_encoder,
)
from catgan.projection.face import FaceError, eyes_box, find_face
from catgan.projection.invert import InvertConfig, invert
from catgan.projection.latent_file import latent_for
from catgan.projection.perceptual import PerceptualDistance
from catgan.projection.project import ProjectConfig, Projector, psnr, to_float
from catgan.sampling import latents_from_seeds
from catgan.sources import list_bundled
from gen_helpers import make_run, read_png
from synth import face_points, write_cat_photo

QUICK = ["--encoder", "none", "--perceptual", "selfsup", "--steps", "3", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proj")
    make_run(root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def gen(run):
    return catgan.load(run)


@pytest.fixture(scope="module")
def distance():
    return PerceptualDistance("selfsup")


@pytest.fixture(scope="module")
def trained(gen):
    """A small encoder for the tiny generator, and its training log."""
    enc = LatentEncoder(LatentEncoderConfig.for_generator(gen.model, width=16, max_width=32))
    real = gen.generate(range(100, 132))  # stand-ins for real faces: (32, 3, 16, 16) uint8
    cfg = EncoderTrainConfig(steps=150, batch=32, recon_batch=4, bank=256, refresh=4, lr=3e-3)
    return train_encoder(gen, cfg, real=real, encoder=enc)


def test_encoder_training_reduces_its_loss(trained):
    enc, log = trained
    assert log.steps == 150 and not enc.training
    assert log.last["latent_mse"] < 0.8 * log.first["latent_mse"]
    assert log.last["total"] < log.first["total"]


def test_encoder_rate_anneals_over_the_steps_or_the_wall_clock_budget_whichever_ends_first(gen):
    inf = float("inf")
    assert lr_factor(0, 100, 0.0, inf) == 1.0 and lr_factor(50, 100, 0.0, inf) == pytest.approx(0.5)
    assert lr_factor(10, 100, 30.0, 60.0) == pytest.approx(0.5)  # half the minutes gone: half-way down
    assert lr_factor(10, 100, 90.0, 60.0) == 0.0  # past the budget: fully annealed, never negative
    cfg = EncoderTrainConfig(steps=10**6, minutes=0.03, batch=8, recon_batch=2, bank=32, refresh=2)
    enc, log = train_encoder(gen, cfg, encoder=LatentEncoder(LatentEncoderConfig.for_generator(gen.model)))
    assert 0 < log.steps < 10**6 and log.seconds < 10  # stopped by its 1.8 s budget, not its steps


def test_projection_of_a_sample_gets_closer_than_the_encoders_guess(gen, trained, distance):
    enc, _ = trained
    target = gen.generate([7, 8])  # (2, 3, 16, 16) uint8: faces G can draw exactly
    projector = Projector(gen, ProjectConfig(steps=40, perceptual="selfsup"), encoder=enc)
    out = projector.invert_faces(target)
    before, after = psnr(out["initial"], target), psnr(out["image"], target)
    assert (after > before + 1.0).all(), (before, after)
    assert out["z"].shape == (2, gen.model.z_dim)


def test_a_batch_inverts_each_face_as_alone(gen, distance):
    target = to_float(gen.generate([3, 4]))
    cfg = InvertConfig(steps=5, noise=0.0)
    both = invert(gen.G, gen.model, target, config=cfg, distance=distance)
    one = invert(gen.G, gen.model, target[1:], config=cfg, distance=distance)
    assert torch.allclose(both.z[1:], one.z, atol=1e-4)


def test_masked_pixels_do_not_count_and_degrade_is_applied_before_the_loss(gen, distance):
    clean = to_float(gen.generate([5]))  # (1, 3, 16, 16)
    damaged = clean.clone()
    damaged[..., :, 8:] = 1.0  # the right half painted white
    keep = torch.ones(1, 1, 16, 16)
    keep[..., 8:] = 0
    cfg = InvertConfig(steps=60, noise=0.0)
    masked = invert(gen.G, gen.model, damaged, config=cfg, distance=distance, mask=keep)
    plain = invert(gen.G, gen.model, damaged, config=cfg, distance=distance)
    right = (slice(None), slice(None), slice(None), slice(8, None))
    assert (masked.image[right] - clean[right]).abs().mean() < (
        plain.image[right] - clean[right]
    ).abs().mean()
    small = F.avg_pool2d(clean, 2)  # (1, 3, 8, 8): the photo as a downscaled copy
    sr = invert(gen.G, gen.model, small, config=cfg, distance=None, degrade=lambda x: F.avg_pool2d(x, 2))
    assert sr.image.shape == (1, 3, 16, 16)
    start = invert(
        gen.G, gen.model, small, config=InvertConfig(steps=0), degrade=lambda x: F.avg_pool2d(x, 2)
    )
    assert sr.losses["pixel_l1"] < start.losses["pixel_l1"]
    with pytest.raises(CatganError, match="mask must be"):
        invert(gen.G, gen.model, damaged, mask=torch.ones(1, 1, 8, 8))


def test_pivotal_tuning_fits_closer_and_leaves_g_alone(gen, distance):
    target = to_float(gen.generate([9]))
    target = target.flip(-1)  # a face the latent alone cannot quite reach
    before = {k: v.clone() for k, v in gen.G.state_dict().items()}
    base = invert(gen.G, gen.model, target, config=InvertConfig(steps=20), distance=distance)
    tuned = invert(gen.G, gen.model, target, config=InvertConfig(steps=20, tune_steps=20), distance=distance)
    assert tuned.G is not None and base.G is None
    assert tuned.losses["total"] < base.losses["total"]
    assert all(torch.equal(before[k], v) for k, v in gen.G.state_dict().items())


def test_encoder_file_round_trips_and_is_refused_for_another_generator(gen, trained, run, tmp_path):
    enc, _ = trained
    path = save_encoder(enc, tmp_path / "e.safetensors", gen, {"note": "test"})
    back = load_encoder(path, gen)
    x = to_float(gen.generate([1]))
    assert torch.equal(back(x), enc(x))
    raw = catgan.load(run, ema=False)  # the run's raw G: other weights, another sha256
    with pytest.raises(CatganError, match="was trained for generator"):
        load_encoder(path, raw)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CatganError, match="changed or damaged"):
        load_encoder(path, gen)


# ---- faces ----------------------------------------------------------------------------------------


def test_cat_file_gives_prepares_crop_exactly(tmp_path):
    for i, angle in enumerate((0.0, 20.0, -30.0)):
        write_cat_photo(tmp_path / "src" / "CAT_00", f"0000000{i}_000", 200, 160, angle=angle, seed=i)
    catgan.prepare([tmp_path / "src"], tmp_path / "out", sizes=(32,), workers=1, progress=False)
    for i in range(3):
        face = find_face(tmp_path / "src" / "CAT_00" / f"0000000{i}_000.jpg", 32)
        prepared = np.asarray(Image.open(tmp_path / "out" / "cats-32" / f"0000000{i}_000.png"))
        assert face.alignment.method == "landmarks"
        assert np.array_equal(face.face, prepared)


def test_alignment_maps_landmarks_there_and_back(tmp_path):
    points = write_cat_photo(tmp_path, "c", 200, 160, angle=25.0)
    found = find_face(tmp_path / "c.jpg", 64)
    a = found.alignment
    inside = a.from_photo(points)
    assert np.allclose(a.to_photo(inside), points, atol=1e-9)
    eyes = inside[:2].round().astype(int)  # the red and blue eye dots land where the transform says
    left, right = found.face[eyes[0, 1], eyes[0, 0]], found.face[eyes[1, 1], eyes[1, 0]]
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]
    assert abs(inside[0, 1] - inside[1, 1]) < 1.0  # levelled


def test_eyes_with_ears_give_the_landmark_square_and_eyes_alone_a_close_one():
    p = face_points((300.0, 250.0), 80.0, 15.0)
    exact = align.face_box(Landmarks(p))
    with_ears = eyes_box((*p[0], *p[1]), (*p[3], *p[8]), 640, 480)
    assert with_ears == exact
    alone = eyes_box((*p[1], *p[0]), None, 640, 480)  # eyes in either order
    assert alone.center == pytest.approx(exact.center) and alone.angle == pytest.approx(exact.angle)
    assert alone.side == pytest.approx(80.0 / 0.435)
    with pytest.raises(FaceError, match="lies outside the 640x480 photo"):
        eyes_box((10, 10, 700, 12), None, 640, 480)


class FakeDetector:
    def __init__(self, faces):
        self.faces = faces

    def face_box(self, image):
        from catgan.projection.detect import FaceDetector

        return FaceDetector.face_box(self, image)

    def detect(self, image):
        return self.faces


def test_detector_results_none_and_several_are_one_line(tmp_path):
    Image.new("RGB", (120, 90), (120, 120, 120)).save(tmp_path / "grey.png")
    with pytest.raises(FaceError, match="no cat face found"):
        find_face(tmp_path / "grey.png", 32, detector=FakeDetector([]))
    with pytest.raises(FaceError, match="found 2 cat faces"):
        find_face(tmp_path / "grey.png", 32, detector=FakeDetector([(0, 0, 40, 40), (60, 10, 40, 40)]))
    face = find_face(tmp_path / "grey.png", 32, detector=FakeDetector([(10, 10, 50, 50)]))
    assert face.alignment.method == "detector" and face.face.shape == (32, 32, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (a decompression bomb) and holds no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_project_cli_writes_four_files_and_one_line_per_bad_photo(run, tmp_path, capsys):
    good = tmp_path / "tom.jpg"
    write_cat_photo(tmp_path, "tom", 200, 160, angle=10.0)  # tom.jpg + tom.jpg.cat
    face = tmp_path / "crop.png"
    Image.fromarray(np.asarray(Image.open(good))[20:120, 40:160]).save(face)
    (tmp_path / "notes.jpg").write_text("not a picture")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(40_000, 40_000))
    out = tmp_path / "out"
    argv = ["project", str(good), str(tmp_path / "notes.jpg"), str(tmp_path / "bomb.png"), "--run", str(run)]
    assert main([*argv, "--out", str(out), *QUICK]) == 1
    err = capsys.readouterr().err
    bad = [line for line in err.splitlines() if line.startswith("catgan project: ")]
    assert len(bad) == 2
    assert "notes.jpg: not an image file" in bad[0] and "bomb.png: decompression bomb" in bad[1]
    for suffix in ("aligned.png", "projected.png", "side.png", "latent.safetensors"):
        assert (out / f"tom.{suffix}").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert read_png(out / "tom.side.png").shape == (3, 16, 34)
    gen = catgan.load(run)
    z = latent_for(out / "tom.latent.safetensors", gen)  # the edit helper's reader takes it
    with torch.no_grad():
        drawn = to_uint8(gen.G(z))[0]
    assert torch.equal(drawn, read_png(out / "tom.projected.png"))
    assert torch.equal(
        read_png(out / "tom.aligned.png"), torch.from_numpy(find_face(good, 16).face).permute(2, 0, 1)
    )
    assert main(["project", str(face), "--aligned", "--run", str(run), "--out", str(out), *QUICK]) == 0
    assert (out / "crop.projected.png").is_file()


def test_project_cli_eyes_outside_and_eyes_inside(run, tmp_path, capsys):
    photo = tmp_path / "cat.png"
    p = face_points((100.0, 80.0), 40.0, 0.0)
    from synth import draw_face

    draw_face(200, 160, p).save(photo)
    out = tmp_path / "out"
    assert (
        main(["project", str(photo), "--eyes", "10,10,500,12", "--run", str(run), "--out", str(out), *QUICK])
        == 1
    )
    assert "cat.png: the eye at (500, 12) lies outside the 200x160 photo" in capsys.readouterr().err
    eyes = f"{p[0, 0]},{p[0, 1]},{p[1, 0]},{p[1, 1]}"
    assert main(["project", str(photo), "--eyes", eyes, "--run", str(run), "--out", str(out), *QUICK]) == 0
    assert (out / "cat.latent.safetensors").is_file()
    with pytest.raises(SystemExit):
        main(["project", str(photo), "--eyes", "1,2,3", "--run", str(run), "--out", str(out)])


def test_api_project_returns_a_projection(gen, tmp_path):
    write_cat_photo(tmp_path, "kit", 200, 160)
    p = gen.project(tmp_path / "kit.jpg", steps=4, encoder="none", perceptual="selfsup")
    assert p.latent.shape == (gen.model.z_dim,) and p.image.dtype == torch.uint8
    assert p.aligned.shape == p.image.shape == (3, 16, 16)
    assert set(p.losses) == {"pixel_l1", "perceptual", "prior", "total"}
    assert p.alignment is not None and p.alignment.method == "landmarks"
    q = gen.project(p.aligned, steps=4, encoder="none", perceptual="selfsup")
    assert q.alignment is None and torch.equal(q.aligned, p.aligned)


# ---- real photos (../shared) ----------------------------------------------------------------------


def test_real_landmark_photos_align_as_prepare_and_the_detector_finds_them(shared_data, tmp_path):
    src = shared_data / "cat-landmarks" / "CAT_00"
    names = ["00000001_000", "00000001_008"]  # both found by the detector
    for n in names:
        for suffix in (".jpg", ".jpg.cat"):
            shutil.copy(src / f"{n}{suffix}", tmp_path / f"{n}{suffix}")
    catgan.prepare([tmp_path], tmp_path / "out", sizes=(64,), workers=1, progress=False)
    prepared = {p.stem for p in (tmp_path / "out" / "cats-64").glob("*.png")}
    from catgan.projection.detect import FaceDetector

    detector, found = FaceDetector.load(), []
    for n in names:
        face = find_face(tmp_path / f"{n}.jpg", 64)
        if n in prepared:
            assert np.array_equal(
                face.face, np.asarray(Image.open(tmp_path / "out" / "cats-64" / f"{n}.png"))
            )
        image = np.asarray(Image.open(src / f"{n}.jpg").convert("RGB"))
        try:
            box = detector.face_box(image)
        except FaceError:
            continue
        found.append(image)
        ref = face.alignment.box
        assert abs(box.center[0] - ref.center[0]) < 0.15 * ref.side
        assert abs(box.side / ref.side - 1) < 0.3
    assert found
    two = np.concatenate([found[-1], found[-1]], axis=1)  # the same cat twice, side by side
    Image.fromarray(two).save(tmp_path / "two.jpg")
    with pytest.raises(FaceError, match="cat faces"):
        find_face(tmp_path / "two.jpg", 64, detector=detector)


@pytest.mark.parametrize("name", list_bundled())
def test_each_bundled_model_ships_an_encoder_that_beats_the_mean_latent(name):
    """`catgan project --model NAME` starts from a shipped encoder's guess: one exists for every bundled
    model, loads for that model's weights, and on G's own samples (latents known) it lands nearer the true
    latent and nearer the image than the mean latent does."""
    gen = catgan.load(name, device="cpu")
    path = bundled_encoder(name)
    assert path is not None, f"{name} has no weights/encoders/{name}.safetensors"
    enc = load_encoder(path, gen, device="cpu")
    seeds = range(900_000, 900_016)  # seeds far from any a test or a doc draws
    z = latents_from_seeds(gen.model, seeds)  # (16, z_dim)
    x = to_float(gen.generate(seeds))  # (16, 3, S, S) in [-1, 1]
    with torch.no_grad():
        guess = enc(x)  # (16, z_dim)
        drawn, mean = gen.G(guess), gen.G(torch.zeros_like(z))
    assert ((guess - z) ** 2).mean() < 0.9 * (z**2).mean()  # the mean latent's error is E[z^2]
    assert (drawn - x).abs().mean() < 0.6 * (mean - x).abs().mean()
