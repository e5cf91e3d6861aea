"""The class-leak check: Jensen-Shannon distance of ImageNet top-1 histograms and the cat-class share, from
the same pass as the Inception features (on real faces: skipped where ../shared is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catgan.errors import CatganError
from catgan.metrics.classleak import CAT_CLASSES, class_histogram, class_leak, js_distance


def test_js_distance_is_zero_for_the_same_histogram_and_one_for_disjoint():
    a = np.array([281, 281, 282, 7, 9])
    p = class_histogram(a)
    assert p.shape == (1000,) and p.sum() == pytest.approx(1.0)
    assert js_distance(p, class_histogram(a[::-1])) == 0.0  # order does not matter
    assert js_distance(p, class_histogram(np.array([1, 2, 3]))) == pytest.approx(1.0)
    q = class_histogram(np.array([281, 282, 282, 7, 9]))
    d = js_distance(p, q)
    assert 0 < d < 1 and d == pytest.approx(js_distance(q, p))


def test_class_leak_report():
    real = np.array([281, 282, 283, 284, 285, 1])
    leak = class_leak(real, np.array([281, 1, 2, 3]), "test")
    assert leak.cat_share_real == pytest.approx(5 / 6) and leak.cat_share == pytest.approx(0.25)
    assert leak.js_distance > 0 and leak.as_json()["n"] == 4 and leak.n_real == 6
    assert class_leak(real, real.copy(), "test").js_distance == 0.0
    with pytest.raises(CatganError, match=r"classes must be in \[0, 1000\), got 0..1000"):
        class_histogram(np.array([0, 1000]))
    with pytest.raises(CatganError, match="integer classes"):
        class_histogram(np.array([0.5]))


@pytest.mark.slow
def test_one_pass_gives_the_features_and_real_faces_land_in_cat_classes(shared_data):
    from catgan.metrics.inception import InceptionExtractor
    from test_metrics_inception import _faces

    try:
        extractor = InceptionExtractor.load("cpu", batch=8, classes=True)
    except CatganError as err:
        pytest.skip(str(err))
    faces = _faces(shared_data, 16)  # (16, 3, 64, 64)
    noise = torch.randint(0, 256, faces.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    feats, top1 = extractor.features_and_classes(faces)
    np.testing.assert_array_equal(feats, extractor.features(faces))  # the same pool3 features
    assert top1.shape == (16,) and np.isin(top1, CAT_CLASSES).mean() > 0.75  # measured: 92% of 48 faces
    _, noise_top1 = extractor.features_and_classes(noise)
    leak = class_leak(top1, noise_top1, extractor.classifier_name)
    assert leak.cat_share_real > 0.75 and leak.cat_share < 0.1 and leak.js_distance > 0.5
    assert class_leak(top1, top1, extractor.classifier_name).js_distance == 0.0
    bare = InceptionExtractor(model=extractor.model, device=extractor.device)
    with pytest.raises(CatganError, match="classes=True"):
        bare.features_and_classes(faces)


class _ColourClasses:
    """A stand-in extractor with a classifier: mean colour as features, brightest channel as the class."""

    name, resize, classifier_name = "colour", "none", "argmax-channel"
    classifier = object()  # reference_stats only asks whether there is one

    def features(self, images: torch.Tensor) -> np.ndarray:
        return images.double().mean(dim=(2, 3)).numpy()

    def features_and_classes(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        f = self.features(images)
        return f, f.argmax(axis=1).astype(np.int64)


def test_reference_statistics_keep_the_classes_of_the_same_pass(tmp_path):
    synth = pytest.importorskip("synth")
    from catgan.metrics.reference import reference_stats

    data = synth.make_prepared_dataset(tmp_path / "ds", n=6, size=16)
    ex = _ColourClasses()
    first = reference_stats(data, ex, tmp_path / "cache")
    again = reference_stats(data, ex, tmp_path / "cache")
    assert not first.from_cache and again.from_cache
    np.testing.assert_array_equal(first.classes, first.features.argmax(axis=1))
    np.testing.assert_array_equal(again.classes, first.classes)

    class _NoClasses(_ColourClasses):
        classifier = None

    plain = reference_stats(data, _NoClasses(), tmp_path / "cache")  # another cache file, no classes
    assert not plain.from_cache and plain.classes is None and plain.cache_file != first.cache_file
