"""The real Inception-v3 network and the cat-face cascade on real faces (a few dozen images: ~30 s on a
2-core CPU), and `catgan evaluate` end to end on a tiny synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from catgan.errors import CatganError
from catgan.metrics.fid import fid_from_features, kid
from catgan.metrics.inception import (
    EXTRACTOR_NAME,
    FEATURE_DIM,
    InceptionExtractor,
    extractor_path,
    preprocess,
    resolve_precision,
)
from catgan.metrics.reference import feature_pass, reference_stats
from catgan.runtime import cpu_has_native_bf16

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def extractor():
    try:
        extractor_path()
    except CatganError as err:
        pytest.skip(str(err))
    torch.set_num_threads(2)
    return InceptionExtractor.load("cpu", batch=16, precision="fp32")


@pytest.fixture(scope="module")
def cv2_available():
    return pytest.importorskip("cv2")


def _faces(shared_data, n: int, size: int = 64) -> torch.Tensor:
    """The first n real face crops, centre-cropped square and resized to size (uint8 (n, 3, size, size))."""
    from PIL import Image

    files = sorted((shared_data / "cat-faces" / "cats_bigger_than_64x64").glob("*.jpg"))[:n]
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            out.append(np.asarray(im.resize((size, size), Image.LANCZOS)).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma)
    k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)  # (3, 1, 1, 2r+1)
    x = F.pad(images.float(), (r, r, r, r), mode="replicate")
    x = F.conv2d(F.conv2d(x, k, groups=3), k.transpose(2, 3), groups=3)
    return x.round().clamp(0, 255).to(torch.uint8)


def _noised(images: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def test_preprocess_matches_pytorch_fid():
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    y = preprocess(x)
    assert y.shape == (2, 3, 299, 299) and y.min() >= -1 and y.max() <= 1
    expected = 2 * F.interpolate(x.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(y, expected)
    with pytest.raises(CatganError, match="uint8"):
        preprocess(x.float())


def test_features_shape_dtype_and_batch_independence(extractor):
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    f = extractor.features(x)
    assert f.shape == (3, FEATURE_DIM) and f.dtype == np.float64 and (f >= 0).all()  # pool of ReLUs
    np.testing.assert_allclose(extractor.features(x[1:2])[0], f[1], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def real_features(extractor, shared_data):
    faces = _faces(shared_data, 24)  # (24, 3, 64, 64)
    base = faces[:8]
    return {
        "faces": faces,
        "all": extractor.features(faces),
        "blur": [extractor.features(_blur(base, s)) for s in (1.0, 2.0)],
        "noise": [extractor.features(_noised(base, s)) for s in (16.0, 64.0)],
    }


def test_fid_of_a_set_with_itself_is_zero(real_features):
    f = real_features["all"]
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("kind", ["blur", "noise"])
def test_fid_grows_monotonically_with_degradation(real_features, kind):
    base = real_features["all"][:8]
    fids = [fid_from_features(base, base)] + [fid_from_features(base, f) for f in real_features[kind]]
    assert fids[0] < 1e-3 < fids[1] < fids[2], fids


def test_kid_of_two_real_halves_is_near_zero(real_features):
    f = real_features["all"]
    halves, _ = kid(f[:12], f[12:], subsets=20, subset_size=12)
    vs_noise, _ = kid(f[:8], real_features["noise"][1], subsets=20, subset_size=8)
    assert abs(halves) < 0.2 * vs_noise, (halves, vs_noise)


def test_catface_cascade_finds_real_cats_not_noise(cv2_available, shared_data):
    from catgan.metrics.catface import CatFaceDetector

    detector = CatFaceDetector.load()
    faces = _faces(shared_data, 48)
    noise = torch.randint(
        0, 256, (48, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    assert detector.rate(faces) > 0.75
    assert detector.rate(noise) < 0.05
    assert detector.found(faces[:4]).dtype == bool
    with pytest.raises(CatganError, match="at least one image"):
        detector.rate(faces[:0])


def test_cli_evaluate_against_itself(extractor, cv2_available, tmp_path, capsys):
    synth = pytest.importorskip("synth")
    from catgan.cli import main

    data = synth.make_prepared_dataset(tmp_path / "ds", n=8, size=16)
    out = tmp_path / "metrics.json"
    argv = [
        "evaluate",
        "--data",
        str(data),
        "--against",
        str(data),
        "--n",
        "4",
        "--kid-subsets",
        "5",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    for key in (
        "fid",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "catface_rate",
        "catface_rate_real",
        "nn_distance",
        "n",
        "extractor",
        "resize",
        "device",
        "seconds",
    ):
        assert key in result, key
    assert result["n"] == 4 and result["device"] == "cpu" and "bilinear" in result["resize"]
    assert "FID" in capsys.readouterr().out
    assert main(argv[:-2] + ["--n", "5"]) == 2  # more than half of 8 images
    assert "larger than half" in capsys.readouterr().err


def test_precision_choice_and_names():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert (
        resolve_precision("fp32", cpu) == "fp32" and resolve_precision("auto", torch.device("cuda")) == "fp32"
    )
    with pytest.raises(CatganError, match="precision must be one of auto, fp32, bf16, got 'half'"):
        resolve_precision("half", cpu)
    with pytest.raises(CatganError, match="CUDA"):
        resolve_precision("fp32", cpu, fp16=True)


def test_bf16_features_are_close_to_fp32_on_real_faces(extractor, shared_data):
    bf16 = InceptionExtractor(model=extractor.model, device=extractor.device, batch=8, precision="bf16")
    faces = _faces(shared_data, 8)
    exact, fast = extractor.features(faces), bf16.features(faces)
    assert extractor.name == EXTRACTOR_NAME  # fp32 keeps the name, so its cached statistics stay valid
    assert InceptionExtractor.load("cpu", precision="bf16").name == EXTRACTOR_NAME + " bf16-autocast"
    rel = np.linalg.norm(fast - exact) / np.linalg.norm(exact)
    assert 0 < rel < 0.05, rel  # bf16 really ran, and stays within a few percent (measured: ~1.5%)


class _MeanColour:
    """A stand-in extractor: per-channel means (N, 3); counts its calls."""

    name = "mean-colour"
    resize = "none"

    def __init__(self):
        self.calls = 0

    def features(self, images: torch.Tensor) -> np.ndarray:
        self.calls += 1
        return images.double().mean(dim=(2, 3)).numpy()


def test_feature_pass_reports_progress_when_not_a_terminal(capsys):
    ex, images = _MeanColour(), torch.randint(0, 256, (600, 3, 2, 2), dtype=torch.uint8)
    np.testing.assert_allclose(feature_pass(ex, images, "test pass"), ex.features(images))
    lines = capsys.readouterr().err.strip().splitlines()
    assert ex.calls == 4 and lines[0] == "test pass: 600 images ..."  # 3 chunks of at most 256, then 1
    assert lines[1].startswith("test pass: 256/600 images") and "s left" in lines[1]  # each quarter
    assert lines[-1].startswith("test pass: 600/600 images, done in")


def test_reference_n_is_a_seeded_subset_cached_apart(tmp_path):
    synth = pytest.importorskip("synth")
    data = synth.make_prepared_dataset(tmp_path / "ds", n=12, size=16)
    ex = _MeanColour()
    full = reference_stats(data, ex, tmp_path / "cache", progress=False)
    sub = reference_stats(data, ex, tmp_path / "cache", reference_n=5, seed=1)
    again = reference_stats(data, ex, tmp_path / "cache", reference_n=5, seed=1)
    other = reference_stats(data, ex, tmp_path / "cache", reference_n=5, seed=2)
    assert full.n == 12 and sub.n == 5 and again.from_cache and not other.from_cache
    assert len({full.cache_file, sub.cache_file, other.cache_file}) == 3
    rows = {tuple(r) for r in full.features}
    assert all(tuple(r) in rows for r in sub.features)  # a subset of the same faces
    np.testing.assert_array_equal(again.features, sub.features)
    assert reference_stats(data, ex, tmp_path / "cache", reference_n=12).from_cache  # all = the full key
    with pytest.raises(CatganError, match=r"reference_n must be an int in \[2, 12\].*got 13"):
        reference_stats(data, ex, tmp_path / "cache", reference_n=13)
