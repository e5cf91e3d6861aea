"""`catgan edit` and catgan.projection.directions: SeFa directions, their measured names, strips, GIFs,
morphs, latent files and the Python API, on tiny generators (random, and one built so its directions
are known)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from catgan.checkpoint import export_generator
from catgan.cli import main
from catgan.config import get_preset
from catgan.errors import CatganError
from catgan.generate import generate_from_latents, generate_images, load_generator
from catgan.models import build_generator
from catgan.models.dcgan import DCGANGeneratorConfig
from catgan.models.fastgan import FastGANConfig
from catgan.models.mlp import MLPGeneratorConfig
from catgan.projection import directions as D
from catgan.projection.latent_file import load_latent, save_latent
from catgan.sampling import latents_from_seeds
from gen_helpers import read_png

AMOUNTS = [-3.0, -1.5, 0.0, 1.5, 3.0]


def export_tiny(path: Path, seed: int = 0) -> Path:
    """A random tiny-16 DCGAN generator with contrast (DCGAN's std 0.02 init draws flat grey at 16 px)."""
    torch.manual_seed(seed)
    cfg = get_preset("tiny-16").model.generator
    G = build_generator(cfg)
    for p in G.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, 0.0, 0.2)
    return export_generator(G.state_dict(), cfg, path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("edit") / "tiny.safetensors")


@pytest.fixture(scope="module")
def gen(weights):
    return load_generator(weights=weights)


def known_generator(path: Path) -> Path:
    """An MLP generator whose z0 brightens only the face, z1 only the border, z2 and z3 nothing; the first
    layer scales z0..z3 by 4, 3, 2, 1 (undone by the second), so SeFa must find e0, e1, e2, e3 in order."""
    cfg = MLPGeneratorConfig(image_size=16, z_dim=4, hidden=8)
    G = build_generator(cfg)
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])
    face = torch.zeros(3, 16, 16)
    face[:, 4:12, 3:13] = 0.25  # rows 0.25..0.75, columns 0.2..0.8 of the image, all channels
    border = torch.ones(3, 16, 16) * 0.25
    border[:, 2:14, 2:14] = 0  # the outer eighth
    patterns = torch.stack([face, border, torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)]).reshape(4, -1)
    with torch.no_grad():
        G.net[0].weight.copy_(torch.cat([torch.diag(s), -torch.diag(s)]))  # (8, 4): relu(sz) - relu(-sz)
        G.net[0].bias.zero_()
        G.net[2].weight.copy_(torch.cat([patterns.T / s, -patterns.T / s], dim=1))  # (768, 8)
        G.net[2].bias.fill_(-0.1)
    return export_generator(G.state_dict(), cfg, path)


def test_sefa_directions_are_orthonormal_and_move_the_first_layer_by_their_eigenvalue(gen):
    values, rows = D.sefa(gen.G, gen.model.z_dim)  # (z,), (z, z)
    z = gen.model.z_dim
    assert torch.allclose(rows @ rows.T, torch.eye(z), atol=1e-5)
    assert (values[:-1] >= values[1:]).all()
    layer = D.first_layer(gen.G, z)
    with torch.no_grad():
        moved = [layer(d.view(1, z, 1, 1)).norm() ** 2 for d in rows]  # no bias: ||A d||^2
        rand = torch.randn(50, z, generator=torch.Generator().manual_seed(1))
        rand = rand / rand.norm(dim=1, keepdim=True)
        rand_moved = torch.stack([layer(d.view(1, z, 1, 1)).norm() ** 2 for d in rand])
    assert torch.allclose(torch.stack(moved), values, rtol=1e-4)
    assert rand_moved.max() <= values[0] * (1 + 1e-5) and rand_moved.min() >= values[-1] * (1 - 1e-5)


@pytest.mark.parametrize(
    "cfg",
    [
        DCGANGeneratorConfig(image_size=16, z_dim=8, g_base=4, max_channels=16, arch="dcgan"),
        DCGANGeneratorConfig(image_size=16, z_dim=8, g_base=4, max_channels=16, arch="thesis", kernel=5),
        FastGANConfig(image_size=64, z_dim=8, ngf=4),
        MLPGeneratorConfig(image_size=8, z_dim=8, hidden=16),
    ],
    ids=["dcgan", "thesis", "fastgan", "mlp"],
)
def test_first_layer_matrix_is_the_layer_that_maps_z(cfg):
    G = build_generator(cfg).eval()
    A = D.first_layer_matrix(G, cfg.z_dim)  # (F, z)
    layer = D.first_layer(G, cfg.z_dim)
    z = torch.randn(3, cfg.z_dim)
    with torch.no_grad():
        x = z if isinstance(layer, torch.nn.Linear) else z.view(3, -1, 1, 1)
        out = layer(x).reshape(3, -1) - layer(torch.zeros_like(x[:1])).reshape(1, -1)  # minus any bias
    assert A.shape == (out.shape[1], cfg.z_dim)
    assert torch.allclose(z @ A.T, out, atol=1e-5)


def test_top_direction_changes_images_more_than_random_directions_of_the_same_norm(gen):
    values, rows = D.sefa(gen.G, gen.model.z_dim)
    z0 = latents_from_seeds(gen.model, range(8))

    def change(vector: torch.Tensor) -> float:
        ims = generate_from_latents(gen, D.move(z0, vector, [-3.0, 3.0], 1.0)).double()  # (16, 3, H, W)
        return float((ims[1::2] - ims[0::2]).abs().mean())

    rand = torch.randn(8, gen.model.z_dim, generator=torch.Generator().manual_seed(2))
    random_changes = sorted(change(r / r.norm()) for r in rand)
    assert change(rows[0]) > random_changes[len(random_changes) // 2]
    assert change(rows[0]) > change(rows[-1])


def test_known_generator_directions_are_found_and_named_by_what_they_change(tmp_path):
    g = load_generator(weights=known_generator(tmp_path / "known.safetensors"))
    found = D.find_directions(g, D.DirectionConfig(count=4))
    v = torch.stack([d.vector for d in found.items])
    assert torch.allclose(v.abs(), torch.eye(4), atol=1e-5)  # e0, e1, e2, e3, in eigenvalue order
    labels = [d.label for d in found.items]
    assert labels == ["fur brightness", "background brightness", "direction 2", "direction 3"]
    assert v[0, 0] > 0 and v[1, 1] > 0  # + brightens what the direction is named after
    assert found.items[0].effects["fur brightness"] > 0.99
    assert abs(found.items[0].effects["background brightness"]) < 0.1
    assert found.items[2].change == 0 and found.items[0].change > 1


def test_measures_respond_to_what_they_name():
    base = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    centre, border, warm = base.clone(), base.clone(), base.clone()
    centre[..., 8:24, 8:24] = 200
    border[..., :4, :] = 200
    warm[:, 0, 6:26, 6:26], warm[:, 2, 6:26, 6:26] = 160, 40
    m0, mc, mb, mw = (D.measure(x) for x in (base, centre, border, warm))
    assert (
        mc["fur brightness"] > m0["fur brightness"]
        and mc["background brightness"] == m0["background brightness"]
    )
    assert (
        mb["background brightness"] > m0["background brightness"]
        and mb["fur brightness"] == m0["fur brightness"]
    )
    assert mw["fur warmth"] > m0["fur warmth"] and mw["colour saturation"] > m0["colour saturation"]
    tilted = base.clone()
    tilted[..., 4:10, 2:14] = 20  # a dark patch high on the left, low on the right
    tilted[..., 18:24, 18:30] = 20
    assert D.measure(tilted)["head tilt"] > 0.2


def test_labelled_directions_move_their_measure_on_fresh_seeds(gen):
    found = D.find_directions(gen)
    named = [d for d in found.items if not d.label.startswith("direction")]
    assert named, [d.summary() for d in found.items]
    z = latents_from_seeds(gen.model, range(100, 116))  # not the seeds the names were measured on
    for d in named:
        base_label = d.label.rstrip("0123456789").strip()
        assert abs(d.effects[base_label]) >= found.config.min_r
        lo, hi = (generate_from_latents(gen, z + a * found.latent_std * d.vector) for a in (-3.0, 3.0))
        rise = D.measure(hi)[base_label] - D.measure(lo)[base_label]
        assert float(rise.mean()) > 0, d.summary()


def test_cli_strip_gif_and_cache(weights, gen, tmp_path, capsys):
    out, gif = tmp_path / "strip.png", tmp_path / "strip.gif"
    argv = ["edit", "--weights", str(weights), "--seed", "3", "--direction", "0", "--out", str(out)]
    assert main([*argv, "--gif", str(gif), "--device", "cpu"]) == 0
    strip = read_png(out)  # (3, H, W): five 16 px frames in a row with 2 px padding
    assert strip.shape == (3, 20, 5 * 18 + 2)
    middle = strip[:, 2:18, 2 + 2 * 18 : 2 + 2 * 18 + 16]
    assert torch.equal(middle, generate_images(gen, [3])[0])  # amount 0 is the seed's own cat
    with Image.open(gif) as im:
        assert im.n_frames == 30 and im.size == (16, 16)
    cache = tmp_path / f"directions-{gen.sha256[:12]}.json"
    data = json.loads(cache.read_text())
    assert data["generator_sha256"] == gen.sha256 and len(data["items"]) == 10
    cache.write_text(json.dumps({**data, "items": data["items"][:1] * 10}))  # a hand-edited cache is used
    assert main([*argv, "--direction", data["items"][0]["label"]]) == 0
    assert torch.equal(read_png(out), strip)
    assert "direction 0" in capsys.readouterr().out


def test_cli_list_prints_every_direction_with_its_measures(weights, capsys):
    assert main(["edit", "--weights", str(weights), "--list", "--count", "4", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "SeFa" in lines[0]
    assert all("levels/unit" in line and "eigenvalue" in line for line in lines[1:])


def test_morph_from_a_latent_file_ends_at_both_cats(weights, gen, tmp_path):
    z = torch.randn(1, gen.model.z_dim, generator=torch.Generator().manual_seed(5))
    latent = save_latent(tmp_path / "tom.latent.safetensors", z, gen.sha256, generator=gen.name)
    assert torch.equal(load_latent(latent).latent, z)
    out = tmp_path / "morph.png"
    argv = ["edit", "--weights", str(weights), "--latent", str(latent), "--morph-to", "9", "--frames", "6"]
    assert main([*argv, "--out", str(out), "--gif", str(tmp_path / "m.gif")]) == 0
    strip = read_png(out)
    assert strip.shape == (3, 20, 6 * 18 + 2)
    first, last = strip[:, 2:18, 2:18], strip[:, 2:18, 2 + 5 * 18 : 2 + 5 * 18 + 16]
    assert torch.equal(first, generate_from_latents(gen, z)[0])
    assert torch.equal(last, generate_images(gen, [9])[0])
    assert not torch.equal(strip[:, 2:18, 2 + 2 * 18 : 2 + 2 * 18 + 16], first)


def test_python_api_edit_and_directions(gen):
    found = gen.directions()
    assert gen.directions() is found  # computed once per loaded generator
    images = gen.edit(4, 0, [-3.0, 0.0, 3.0])
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(images[1], generate_images(gen, [4])[0])
    one = gen.edit(latents_from_seeds(gen.model, [4]), found.items[1].label, 1.5)
    z = latents_from_seeds(gen.model, [4]) + 1.5 * found.latent_std * found.items[1].vector
    assert torch.equal(one, generate_from_latents(gen, z)[0])
    with pytest.raises(CatganError, match="z_dim 16"):
        gen.edit(torch.zeros(5), 0, 1.0)


def bad(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("catgan edit: error: ")
    return err[-1]


def test_bad_input_is_one_line(weights, gen, tmp_path, capsys):
    src = ["edit", "--weights", str(weights), "--device", "cpu"]
    out = ["--out", str(tmp_path / "x.png")]
    wrong = save_latent(tmp_path / "wrong.latent.safetensors", torch.zeros(1, 7), gen.sha256)
    assert "z_dim 7" in bad([*src, "--latent", str(wrong), "--direction", "0", *out], capsys)
    other = save_latent(
        tmp_path / "other.latent.safetensors", torch.zeros(1, 16), "f" * 64, generator="cats-64"
    )
    assert "projected into cats-64" in bad([*src, "--latent", str(other), "--direction", "0", *out], capsys)
    assert main([*src, "--latent", str(other), "--direction", "0", *out, "--any-generator"]) == 0
    junk = tmp_path / "junk.latent.safetensors"
    junk.write_bytes(b"\x80\x03 not safetensors")
    assert "safetensors" in bad([*src, "--latent", str(junk), "--direction", "0", *out], capsys)
    assert "not found" in bad([*src, "--latent", str(tmp_path / "none"), "--direction", "0", *out], capsys)
    assert "no direction named" in bad([*src, "--seed", "1", "--direction", "whiskers", *out], capsys)
    assert "does not exist" in bad([*src, "--seed", "1", "--direction", "99", *out], capsys)
    assert "--amounts" in bad([*src, "--seed", "1", "--direction", "0", "--amounts", "1,x", *out], capsys)
    assert "[-20, 20]" in bad([*src, "--seed", "1", "--direction", "0", "--amounts", "1,nan", *out], capsys)
    assert "--out" in bad([*src, "--seed", "1", "--direction", "0"], capsys)
    assert ".gif" in bad([*src, "--seed", "1", "--direction", "0", "--gif", str(tmp_path / "a.png")], capsys)
    assert "which cat" in bad([*src, "--direction", "0", *out], capsys)
