"""The generator shipped inside the package: `catgan generate --out cats.png` works after a plain install."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from catgan import generate as g
from catgan.cli import main

pytestmark = pytest.mark.skipif(not g.list_bundled(), reason="no bundled weights in this checkout")


def test_bundled_cats_64_loads_verified_and_draws_distinct_cats():
    gen = g.load_generator()  # the default bundled model, its sha256 checked on load
    assert gen.name == "cats-64" and gen.model.image_size == 64
    images = g.generate_images(gen, [0, 1, 2, 3])  # uint8 (4, 3, 64, 64)
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert images.float().std() > 20  # not a flat grey init
    flat = images.flatten(1).float()
    assert torch.cdist(flat, flat)[~torch.eye(4, dtype=torch.bool)].min() > 100  # four different cats
    assert torch.equal(g.generate_images(gen, [2]), images[2:3])  # a seed is a cat


def test_readme_main_command_writes_a_grid(tmp_path: Path, capsys):
    out = tmp_path / "cats.png"
    assert main(["generate", "--out", str(out), "--device", "cpu"]) == 0
    with Image.open(out) as im:
        assert im.size == (8 * 64 + 9 * 2, 8 * 64 + 9 * 2)  # 64 cats in an 8 x 8 grid, 2 px borders
    assert "64 cats" in capsys.readouterr().out
