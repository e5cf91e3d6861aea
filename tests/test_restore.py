"""catgan.projection.restore and `catgan restore`: the damage in the loss, the paste back into the photo,
bad masks; on a tiny generator's own samples (faces it can draw exactly, so restoration can be scored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from catgan.cli import main
from catgan.errors import CatganError
from catgan.generate import generate_images, load_generator
from catgan.projection.face import FaceHint, find_face
from catgan.projection.project import ProjectConfig, Projector, psnr
from catgan.projection.restore import RestoreConfig, feather_alpha, paste, read_mask, restore_face
from gen_helpers import read_png
from test_edit import export_tiny


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("restore") / "tiny.safetensors")


@pytest.fixture(scope="module")
def gen(weights):
    return load_generator(weights=weights)


@pytest.fixture(scope="module")
def projector(gen):
    return Projector(gen, ProjectConfig(steps=50, encoder="none", perceptual="selfsup"))


def masked_psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    err = (a.double() - b.double())[:, where].pow(2).mean()
    return float(10 * torch.log10(255**2 / err))


def test_a_mask_restores_the_damaged_pixels_of_the_generators_own_cat(gen, projector):
    truth = generate_images(gen, [3])[0]  # (3, 16, 16)
    damaged = torch.zeros(16, 16, dtype=torch.bool)
    damaged[4:11, 3:10] = True
    face = truth.clone()
    face[:, damaged] = 0
    out = restore_face(projector, face, RestoreConfig("mask"), damaged)
    before, after = masked_psnr(face, truth, damaged), masked_psnr(out["face"], truth, damaged)
    assert after > before + 10, (before, after)
    far = ~F.max_pool2d(damaged.float()[None, None], 5, 1, 2)[0, 0].bool()  # well away from the damage
    assert torch.equal(out["face"][:, far], truth[:, far])  # the undamaged pixels are kept as they were


def test_upscale_restores_a_half_size_face_with_the_full_size_generator(gen, projector):
    truth = generate_images(gen, [5])[0]
    small = F.avg_pool2d(truth[None].float(), 2).round().byte()[0]  # (3, 8, 8)
    out = restore_face(projector, small, RestoreConfig("upscale"), None)
    assert out["face"].shape == (3, 16, 16)
    bicubic = F.interpolate(small[None].float(), size=16, mode="bicubic", align_corners=False)
    bicubic = bicubic.round().clamp(0, 255).byte()
    assert float(psnr(out["face"][None], truth[None])) > float(psnr(bicubic, truth[None])) + 3
    shrunk = F.avg_pool2d(out["face"][None].float(), 2)[0]  # consistent with what the photo shows
    assert (shrunk - small.float()).abs().mean() < (
        F.avg_pool2d(out["drawn"][None].float(), 2)[0] - small.float()
    ).abs().mean() + 1e-6
    assert (shrunk - small.float()).abs().mean() < 1.0
    with pytest.raises(CatganError, match=r"\(3, 8, 8\)"):
        restore_face(projector, truth, RestoreConfig("upscale"), None)


def smooth_photo(w: int = 120, h: int = 100) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 90 * np.sin(x / 9), 128 + 90 * np.cos(y / 11), 128 + 60 * np.sin((x + y) / 15)], -1)
    return rgb.clip(0, 255).astype(np.uint8)


def test_paste_is_the_inverse_of_the_alignment(tmp_path):
    photo = smooth_photo()
    path = tmp_path / "tilted.png"
    Image.fromarray(photo).save(path)
    found = find_face(path, 32, FaceHint(eyes=(45.0, 40.0, 75.0, 52.0)))  # eyes tilted by ~22 degrees
    assert abs(found.alignment.box.angle) > 0.3
    blank = np.zeros_like(photo)
    back = paste(blank, found.face, found.alignment, np.ones((32, 32), np.float32))
    covered = back.sum(-1) > 0
    assert covered.sum() > 500  # the face square, turned, in the photo
    err = np.abs(back[covered].astype(float) - photo[covered].astype(float))
    assert np.median(err) < 8, np.median(err)  # the face lands where it was taken from
    alpha = feather_alpha(32, 0.1)
    assert alpha[16, 16] == 1 and alpha[0, 16] < 0.3 and alpha[16, 0] < 0.3


def test_cli_restore_a_masked_photo_and_refuse_a_mask_of_the_wrong_size(weights, gen, tmp_path, capsys):
    truth = generate_images(gen, [4])[0].permute(1, 2, 0).numpy()  # (16, 16, 3)
    photo = truth.copy()
    photo[5:10, 5:11] = 255
    Image.fromarray(photo).save(tmp_path / "tom.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[5:10, 5:11] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    argv = ["restore", str(tmp_path / "tom.png"), "--aligned", "--weights", str(weights), "--steps", "40"]
    argv += ["--encoder", "none", "--perceptual", "selfsup", "--device", "cpu", "--no-progress"]
    out = tmp_path / "out"
    assert main([*argv, "--mask", str(tmp_path / "mask.png"), "--out", str(out)]) == 0
    restored = read_png(out / "tom.restored.png")  # (3, 16, 16): the photo, its damage repaired
    where = torch.from_numpy(mask > 0)
    t = torch.from_numpy(truth).permute(2, 0, 1)
    assert (
        masked_psnr(restored, t, where) > masked_psnr(torch.from_numpy(photo).permute(2, 0, 1), t, where) + 6
    )
    assert read_png(out / "tom.side.png").shape == (3, 16, 34)
    capsys.readouterr()

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "small-mask.png")
    assert main([*argv, "--mask", str(tmp_path / "small-mask.png"), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any("mask small-mask.png is 12x10, the photo is 16x16" in line for line in err), err
    assert not (tmp_path / "o2" / "tom.restored.png").exists()


def test_bad_masks_are_one_line(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(CatganError, match="marks nothing"):
        read_mask(tmp_path / "empty.png", (8, 8))
    (tmp_path / "junk.png").write_bytes(b"no image")
    with pytest.raises(CatganError, match="not an image"):
        read_mask(tmp_path / "junk.png", (8, 8))
    with pytest.raises(CatganError, match="not found"):
        read_mask(tmp_path / "none.png", (8, 8))
    with pytest.raises(CatganError, match="factor"):
        RestoreConfig("upscale", factor=3)
