from __future__ import annotations

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from catgan.data.dataset import (
    dataset_fingerprint,
    epoch_permutation,
    load_dataset,
    to_float,
    to_uint8,
)
from catgan.errors import CatganError
from synth import make_prepared_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared_dataset(tmp_path_factory.mktemp("ds"), n=12, size=16)


def test_make_prepared_dataset_writes_what_prepare_writes(prepared):
    assert prepared.name == "cats-16"
    meta = json.loads((prepared / "dataset.json").read_text())
    assert meta["format"] == "catgan-dataset" and meta["image_size"] == 16
    assert len(meta["images"]) == 12 == len(list(prepared.glob("*.png")))


def test_load_dataset(prepared):
    x = load_dataset(prepared)
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.uint8
    files = sorted(p.name for p in prepared.glob("*.png"))
    first = torch.from_numpy(np.array(Image.open(prepared / files[0]))).permute(2, 0, 1)
    assert torch.equal(x[0], first)  # sorted file order, channels first
    assert torch.equal(load_dataset(prepared.parent), x)  # the parent with one cats-S
    assert torch.equal(load_dataset(prepared.parent, image_size=16), x)


def test_load_dataset_errors(prepared, tmp_path):
    with pytest.raises(CatganError, match="holds 16x16 images, expected 64x64"):
        load_dataset(prepared, image_size=64)
    with pytest.raises(CatganError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatganError, match="no dataset.json"):
        load_dataset(tmp_path / "empty")
    copy = shutil.copytree(prepared, tmp_path / "copy" / "cats-16")
    meta = json.loads((copy / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps(meta | {"images": []}))
    with pytest.raises(CatganError, match="holds no images"):
        load_dataset(copy)
    shutil.copytree(prepared, tmp_path / "copy" / "cats-32")
    with pytest.raises(CatganError, match="several datasets"):
        load_dataset(tmp_path / "copy")


def test_fingerprint_changes_with_any_image(prepared, tmp_path):
    copy = shutil.copytree(prepared, tmp_path / "cats-16")
    fp = dataset_fingerprint(copy)
    assert fp == dataset_fingerprint(prepared) and len(fp) == 64
    victim = sorted(copy.glob("*.png"))[5]
    img = Image.open(victim).convert("RGB")
    img.putpixel((0, 0), tuple(255 - v for v in img.getpixel((0, 0))))
    img.save(victim)
    assert dataset_fingerprint(copy) != fp


def test_permutation_is_shuffled_and_reproducible():
    g = torch.Generator().manual_seed(0)
    p = epoch_permutation(10, g)
    assert sorted(p.tolist()) == list(range(10)) and p.dtype == torch.int64
    assert torch.equal(p, epoch_permutation(10, torch.Generator().manual_seed(0)))
    assert not torch.equal(p, epoch_permutation(10, g))  # the generator moves on: the next epoch differs


def test_a_decompression_bomb_in_a_dataset_is_one_clear_line(prepared, tmp_path):
    copy = shutil.copytree(prepared, tmp_path / "cats-16")
    victim = sorted(copy.glob("*.png"))[3]
    victim.write_bytes(_png_header(30000, 30000))  # claims 900 Mpx: Pillow refuses it at open
    with pytest.raises(
        CatganError, match=rf"cannot read dataset image .*{victim.name}: .*decompression bomb"
    ):
        load_dataset(copy)
    victim.write_bytes(_png_header(8000, 8000))  # under Pillow's limit: the header check stops it
    with pytest.raises(CatganError, match=rf"{victim.name} is 8000x8000, the dataset's images are 16x16"):
        load_dataset(copy)
    victim.write_bytes(b"not a png")
    with pytest.raises(CatganError, match=f"cannot read dataset image .*{victim.name}"):
        load_dataset(copy)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_float_uint8_round_trip():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    f = to_float(u)
    assert f.dtype == torch.float32 and f.min() == -1 and f.max() == 1
    assert torch.equal(to_uint8(f), u)
    assert torch.equal(to_uint8(torch.tensor([-5.0, 5.0])), torch.tensor([0, 255], dtype=torch.uint8))
