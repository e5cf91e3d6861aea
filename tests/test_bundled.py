"""The generator shipped inside the package: `catgan generate --out cats.png` works after a plain install."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from catgan import generate as g
from catgan import sources
from catgan.cli import main
from catgan.config import PRESETS, to_dict
from catgan.training.state import RESUMABLE_FIELDS
from gen_helpers import read_png

pytestmark = pytest.mark.skipif(not sources.list_bundled(), reason="no bundled weights in this checkout")
needs_cats_128 = pytest.mark.skipif(
    "cats-128" not in sources.list_bundled(), reason="no cats-128 in this checkout"
)


def test_the_default_is_cats_64():
    gen = g.load_generator()
    assert gen.name == sources.DEFAULT_MODEL == "cats-64" and gen.model.image_size == 64


@pytest.mark.parametrize("name", sources.list_bundled())
def test_bundled_model_loads_verified_and_draws_distinct_cats(name: str):
    gen = g.load_generator(model=name)  # its sha256 checked on load
    size = int(name.rsplit("-", 1)[1])  # cats-64 draws 64 px, cats-128 128 px
    assert gen.name == name and gen.model.image_size == size and gen.source == f"bundled:{name}"
    images = g.generate_images(gen, [0, 1, 2, 3])  # uint8 (4, 3, size, size)
    assert images.shape == (4, 3, size, size) and images.dtype == torch.uint8
    assert images.float().std() > 20  # not a flat grey init
    flat = images.flatten(1).float()
    assert torch.cdist(flat, flat)[~torch.eye(4, dtype=torch.bool)].min() > size * 1.5  # four different cats
    assert torch.equal(g.generate_images(gen, [2]), images[2:3])  # a seed is a cat


@pytest.mark.parametrize(
    "name, preset", [("cats-64", "cats-64"), pytest.param("cats-128", "cats-128-lite", marks=needs_cats_128)]
)
def test_bundled_model_was_trained_with_the_preset_that_names_its_recipe(name: str, preset: str):
    _, model, provenance = sources.read_generator(sources.resolve(name))
    trained = provenance["train_config"]  # the run's TrainConfig, as the export recorded it
    assert model == PRESETS[preset].model.generator
    assert provenance["discriminator_config"] == to_dict(PRESETS[preset].model.discriminator)  # a v1 file's
    # every setting that shapes the weights (not when to stop or log); e.g. cats-64 was trained with flips
    shaping = to_dict(PRESETS[preset].train).items()
    recipe = {k: v for k, v in shaping if k in trained and k not in RESUMABLE_FIELDS}
    assert {k: trained[k] for k in recipe} == recipe


def test_readme_main_command_writes_a_grid(tmp_path: Path, capsys):
    out = tmp_path / "cats.png"
    assert main(["generate", "--out", str(out), "--device", "cpu"]) == 0
    with Image.open(out) as im:
        assert im.size == (8 * 64 + 9 * 2, 8 * 64 + 9 * 2)  # 64 cats in an 8 x 8 grid, 2 px borders
    assert "64 cats" in capsys.readouterr().out


@needs_cats_128
def test_model_cats_128_from_the_command_line(tmp_path: Path, capsys):
    out = tmp_path / "cats128.png"
    args = "generate --model cats-128 --seeds 0-3 --nrow 2 --device cpu --out".split() + [str(out)]
    assert main(args) == 0
    with Image.open(out) as im:
        assert im.size == (2 * 128 + 3 * 2, 2 * 128 + 3 * 2)  # 4 cats in a 2 x 2 grid of 128 px
    captured = capsys.readouterr()
    assert "4 cats" in captured.out and "cats-128, dcgan 128px" in captured.err  # the bundled one was used


@needs_cats_128
def test_interpolate_with_model_cats_128_passes_through_the_seeds(tmp_path: Path):
    out = tmp_path / "walk.png"
    args = "interpolate --model cats-128 --seeds 3,7 --frames 4 --device cpu --out".split() + [str(out)]
    assert main(args) == 0
    strip = read_png(out)  # uint8 (3, H, W)
    assert strip.shape == (3, 128 + 2 * 2, 4 * 128 + 5 * 2)  # one row of 4 frames of 128 px
    ends = g.generate_images(g.load_generator(model="cats-128"), [3, 7])  # uint8 (2, 3, 128, 128)
    assert torch.equal(strip[:, 2:130, 2:130], ends[0])  # the walk starts on seed 3's cat ...
    assert torch.equal(strip[:, 2:130, -130:-2], ends[1])  # ... and ends on seed 7's
