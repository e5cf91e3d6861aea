"""`catgan serve`'s API through FastAPI's test client: every endpoint, every bad input, ETags, limits."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve,test]'")
try:  # Starlette's test client prefers httpx2 and still takes httpx
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip(
        "httpx", reason="neither httpx2 nor httpx (the test client's transport) is installed"
    )

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from catgan.checkpoint import export_generator  # noqa: E402
from catgan.config import get_preset  # noqa: E402
from catgan.generate import LoadedGenerator, generate_from_latents, generate_images, load_generator  # noqa: E402
from catgan.images import make_grid  # noqa: E402
from catgan.models import build_generator  # noqa: E402
from catgan.web.app import PngCache, create_app, make_etag, parse_seed_list  # noqa: E402

SEED_LIMIT = 2**32


def export_tiny(path: Path, seed: int = 0) -> Path:
    """A random tiny-16 generator exported as the CLI would load it."""
    torch.manual_seed(seed)
    G = build_generator(get_preset("tiny-16").model.generator)
    for p in G.parameters():  # DCGAN's init (std 0.02) draws flat grey at this size: give the cats contrast
        if p.dim() > 1:
            torch.nn.init.normal_(p, 0.0, 0.2)
    return export_generator(G.state_dict(), get_preset("tiny-16").model.generator, path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("web") / "tiny.safetensors")


@pytest.fixture(scope="module")
def gen(weights) -> LoadedGenerator:
    return load_generator(weights=weights)


@pytest.fixture(scope="module")
def client(gen):
    with TestClient(create_app(gen)) as c:
        yield c


def png_array(body: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(body))
    img.load()
    assert img.format == "PNG" and img.mode == "RGB"
    return np.asarray(img)


def expected(images: torch.Tensor) -> np.ndarray:
    """uint8 (3, H, W) -> (H, W, 3), as the PNG should decode."""
    return images.permute(1, 2, 0).numpy()


# ---- endpoints -----------------------------------------------------------------------------------


def test_info(client, gen):
    r = client.get("/api/info")
    assert r.status_code == 200
    info = r.json()
    assert info["name"] == gen.name and info["sha256"] == gen.sha256
    assert info["image_size"] == 16 and info["model"]["z_dim"] == 16
    assert info["g_params"] == sum(p.numel() for p in gen.G.parameters())
    assert info["limits"]["max_images"] == 64 and info["limits"]["seed_limit"] == SEED_LIMIT


def test_openapi_schema_lists_every_endpoint(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in ("/api/info", "/api/cat/{seed}.png", "/api/grid.png", "/api/interpolate.png"):
        assert path in paths
    seed = paths["/api/cat/{seed}.png"]["get"]["parameters"][0]["schema"]
    assert seed["type"] == "integer" and seed["minimum"] == 0 and seed["exclusiveMaximum"] == SEED_LIMIT
    names = {p["name"] for p in paths["/api/interpolate.png"]["get"]["parameters"]}
    assert names == {"a", "b", "t", "truncation"}
    errors = paths["/api/grid.png"]["get"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert errors["$ref"].endswith("/ApiError")  # the documented error body is the one sent
    # Swagger UI / ReDoc would load scripts from a CDN: they are off
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_page_and_assets_are_local(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "more cats" in r.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
        assert client.get(asset).status_code == 200
    for name in ("index.html", "app.js", "style.css"):
        text = client.get(f"/static/{name}").text
        assert not re.search(r"https?://|//cdn|googleapis|analytics", text), f"{name} loads something remote"


def test_cat_png_matches_generator_and_is_stable(client, gen):
    r = client.get("/api/cat/7.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["etag"].startswith('"') and "max-age" in r.headers["cache-control"]
    np.testing.assert_array_equal(png_array(r.content), expected(generate_images(gen, [7])[0]))
    assert client.get("/api/cat/7.png").content == r.content  # cached
    with TestClient(create_app(gen)) as fresh:  # and recomputed by a new app: the same bytes
        assert fresh.get("/api/cat/7.png").content == r.content
    assert client.get("/api/cat/8.png").content != r.content
    assert client.get(f"/api/cat/{SEED_LIMIT - 1}.png").status_code == 200


@pytest.mark.parametrize("seeds, expect, nrow", [("0,1,2", [0, 1, 2], None), ("0-15", list(range(16)), 4)])
def test_grid(client, gen, seeds, expect, nrow):
    r = client.get("/api/grid.png", params={"seeds": seeds, **({"nrow": nrow} if nrow else {})})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    want = make_grid(generate_images(gen, expect), nrow=nrow)
    np.testing.assert_array_equal(png_array(r.content), expected(want))


def test_grid_of_64_is_allowed(client):
    assert client.get("/api/grid.png", params={"seeds": "0-31,100-131"}).status_code == 200


def test_interpolate_ends_are_the_two_cats(client):
    cat = {s: png_array(client.get(f"/api/cat/{s}.png").content).astype(int) for s in (3, 9)}
    walk = {t: png_array(client.get(f"/api/interpolate.png?a=3&b=9&t={t}").content) for t in (0, 0.5, 1)}
    assert np.abs(walk[0].astype(int) - cat[3]).max() <= 1  # slerp's ends equal a and b up to rounding
    assert np.abs(walk[1].astype(int) - cat[9]).max() <= 1
    assert not np.array_equal(walk[0.5], walk[0]) and not np.array_equal(walk[0.5], walk[1])


def test_truncation_changes_the_image(client):
    full = client.get("/api/cat/5.png").content
    half = client.get("/api/cat/5.png?truncation=0.5")
    assert half.status_code == 200 and half.content != full
    assert client.get("/api/cat/5.png?truncation=1").content == full


# ---- ETags and caching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/api/cat/1.png", "/api/grid.png?seeds=0-3", "/api/interpolate.png?a=1&b=2&t=0.25"]
)
def test_etag_if_none_match_gives_304(client, url):
    r = client.get(url)
    etag = r.headers["etag"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(url, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_etag_names_model_and_parameters(client, gen):
    tags = {
        client.get(u).headers["etag"]
        for u in (
            "/api/cat/1.png",
            "/api/cat/2.png",
            "/api/cat/1.png?truncation=0.5",
            "/api/grid.png?seeds=1",
        )
    }
    assert len(tags) == 4
    assert make_etag(gen.sha256, "cat", {"seed": 1}) != make_etag("0" * 64, "cat", {"seed": 1})


def test_cache_is_bounded_and_per_app(gen):
    cache = PngCache(max_entries=2, max_bytes=10)
    for key in "abc":
        cache.put(key, b"1234")
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") == b"1234"
    cache.put("d", b"12345678")  # over the byte bound: the oldest go
    assert cache.nbytes <= 10 and cache.get("d") == b"12345678"
    one, two = create_app(gen, cache_entries=4), create_app(gen)
    with TestClient(one) as c:
        for s in range(6):
            c.get(f"/api/cat/{s}.png")
    assert len(one.state.cache) == 4 and len(two.state.cache) == 0


# ---- bad input: 4xx JSON naming the parameter, never a 500 ---------------------------------------

BAD = [
    ("/api/cat/-1.png", "seed"),
    (f"/api/cat/{SEED_LIMIT}.png", "seed"),
    ("/api/cat/abc.png", "seed"),
    ("/api/cat/1.5.png", "seed"),
    ("/api/cat/99999999999999999999999999999.png", "seed"),
    ("/api/cat/+5.png", "seed"),
    ("/api/cat/1_000.png", "seed"),
    ("/api/cat/%205.png", "seed"),
    ("/api/cat/0x10.png", "seed"),
    ("/api/interpolate.png?a=1_0&b=2&t=0.5", "a"),
    ("/api/cat/1.png?truncation=1.5", "truncation"),
    ("/api/cat/1.png?truncation=-0.1", "truncation"),
    ("/api/cat/1.png?truncation=nan", "truncation"),
    ("/api/cat/1.png?truncation=much", "truncation"),
    ("/api/grid.png", "seeds"),
    ("/api/grid.png?seeds=", "seeds"),
    ("/api/grid.png?seeds=a,b", "seeds"),
    ("/api/grid.png?seeds=1.5", "seeds"),
    ("/api/grid.png?seeds=-1", "seeds"),
    ("/api/grid.png?seeds=0,,1", "seeds"),
    ("/api/grid.png?seeds=5-3", "seeds"),
    ("/api/grid.png?seeds=1-2-3", "seeds"),
    ("/api/grid.png?seeds=0-", "seeds"),
    (f"/api/grid.png?seeds={SEED_LIMIT}", "seeds"),
    (f"/api/grid.png?seeds=0-{SEED_LIMIT}", "seeds"),
    ("/api/grid.png?seeds=0-64", "seeds"),  # 65 images
    ("/api/grid.png?seeds=0-4294967295", "seeds"),  # 4 billion: refused before expanding
    ("/api/grid.png?seeds=" + ",".join(str(i) for i in range(65)), "seeds"),
    ("/api/grid.png?seeds=" + "1," * 600 + "1", "seeds"),  # too long a query
    ("/api/grid.png?seeds=0-3&nrow=0", "nrow"),
    ("/api/grid.png?seeds=0-3&truncation=2", "truncation"),
    ("/api/interpolate.png?a=1&b=2", "t"),
    ("/api/interpolate.png?a=1&b=2&t=-0.01", "t"),
    ("/api/interpolate.png?a=1&b=2&t=1.01", "t"),
    ("/api/interpolate.png?a=1&b=2&t=inf", "t"),
    ("/api/interpolate.png?a=1&b=2&t=nan", "t"),
    ("/api/interpolate.png?a=1&b=2&t=half", "t"),
    ("/api/interpolate.png?b=2&t=0.5", "a"),
    ("/api/interpolate.png?a=-1&b=2&t=0.5", "a"),
    (f"/api/interpolate.png?a=1&b={SEED_LIMIT}&t=0.5", "b"),
    ("/api/interpolate.png?a=1&b=x&t=0.5", "b"),
    ("/api/interpolate.png?a=1&b=2&t=0.5&truncation=-1", "truncation"),
]


@pytest.mark.parametrize("url, parameter", BAD)
def test_bad_input_is_a_json_4xx_naming_the_parameter(client, url, parameter):
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
    body = r.json()
    assert body["parameter"] == parameter
    assert parameter in body["error"] and "\n" not in body["error"]
    assert "Traceback" not in r.text and len(r.text) < 400


def test_unknown_paths_and_methods_are_json(client):
    r = client.get("/api/dog/1.png")
    assert r.status_code == 404 and "error" in r.json()
    r = client.post("/api/info")
    assert r.status_code == 405 and "error" in r.json()


def test_parse_seed_list():
    assert parse_seed_list("3, 10-12,3") == [3, 10, 11, 12, 3]
    assert parse_seed_list(f"{SEED_LIMIT - 1}") == [SEED_LIMIT - 1]
    assert parse_seed_list("00000000007") == [7]


# ---- concurrency: off the event loop, bounded, and refusing a pile-up ----------------------------


class SlowG(torch.nn.Module):
    """Wraps G: sleeps in forward (as a big model would compute) and records how many run at once."""

    def __init__(self, G: torch.nn.Module, delay: float):
        super().__init__()
        self.inner, self.delay = G, delay
        self.lock, self.running, self.peak = threading.Lock(), 0, 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay)
            return self.inner(z)
        finally:
            with self.lock:
                self.running -= 1


def slow(gen: LoadedGenerator, delay: float) -> tuple[LoadedGenerator, SlowG]:
    g = SlowG(gen.G, delay).eval()
    return LoadedGenerator(g, gen.model, gen.name, gen.sha256, gen.source, gen.info), g


def test_generation_is_bounded_and_off_the_event_loop(gen):
    slow_gen, g = slow(gen, 0.1)
    app = create_app(slow_gen, max_concurrency=2)

    async def main() -> tuple[list[int], float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            images = [asyncio.create_task(c.get(f"/api/cat/{s}.png")) for s in range(6)]
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            assert (await c.get("/api/info")).status_code == 200
            info_s = time.perf_counter() - t0
            return [r.status_code for r in await asyncio.gather(*images)], info_s

    codes, info_s = asyncio.run(main())
    assert codes == [200] * 6
    assert g.peak == 2  # ran in parallel threads, never more than max_concurrency
    assert info_s < 0.1  # the event loop answered while 6 x 0.1 s of generation was under way


def test_too_many_queued_is_a_503(gen):
    slow_gen, _ = slow(gen, 0.2)
    app = create_app(slow_gen, max_concurrency=1, max_waiting=2)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return list(await asyncio.gather(*(c.get(f"/api/cat/{s}.png") for s in range(4))))

    responses = asyncio.run(main())
    assert sorted(r.status_code for r in responses) == [200, 200, 503, 503]
    busy = next(r for r in responses if r.status_code == 503)
    assert "busy" in busy.json()["error"] and busy.headers["retry-after"] == "1"


# ---- the command ---------------------------------------------------------------------------------


def _catgan(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "catgan", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def test_cli_serve_prints_url_answers_and_stops_on_ctrl_c(weights):
    proc = _catgan("serve", "--weights", str(weights), "--port", "0", "--device", "cpu", "--quiet")
    try:
        line = proc.stdout.readline()  # printed once the port is bound and listening
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        url = m.group(0)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "api/info", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with urllib.request.urlopen(url + "api/cat/1.png", timeout=10) as r:
            png_array(r.read())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "70000"], "port number"),
        (["--weights", "nope.safetensors"], "nope.safetensors"),
        (["--device", "tpu"], "--device"),
        (["--model", "nope"], "nope"),
        (["--run", "no/such/run"], "no/such/run"),
        (["--run", "r", "--weights", "w"], "not allowed with"),
    ],
)
def test_cli_serve_bad_options_are_one_line_errors(args, message, capsys):
    from catgan.cli import main

    try:
        rc = main(["serve", "--port", "0", *args])
    except SystemExit as exit:  # argparse's own errors
        rc = exit.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert sum(line.startswith("catgan serve: error:") for line in err.splitlines()) == 1  # after any usage


def test_bind_makes_a_tcp_socket_and_names_a_busy_port():
    from catgan.errors import CatganError
    from catgan.web.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        # proto TCP (not 0) is what makes asyncio set TCP_NODELAY: without it keep-alive waits ~40 ms
        assert sock.proto == socket.IPPROTO_TCP
        with pytest.raises(CatganError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            _bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


# ---- your own cat: upload, project, edit, morph (web.own) ------------------------------------------


@pytest.fixture(scope="module")
def own_client(gen):
    from catgan.projection.project import ProjectConfig
    from catgan.web.own import OwnCatLimits

    limits = OwnCatLimits(max_bytes=100_000, max_pixels=300 * 300, steps=3)
    config = ProjectConfig(steps=3, encoder="none", perceptual="selfsup")
    with TestClient(create_app(gen, own=limits, project_config=config)) as c:
        yield c


def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()


def data_url_array(url: str) -> np.ndarray:
    import base64

    assert url.startswith("data:image/png;base64,")
    return png_array(base64.b64decode(url.split(",", 1)[1]))


def test_upload_projects_and_its_latent_edits_and_morphs(own_client, gen, monkeypatch):
    import builtins
    import tempfile

    from catgan.web.own import decode_latent

    real_open = builtins.open

    def no_writes(file, mode="r", *a, **kw):  # nothing of the upload may reach the disk
        assert not set(mode) & set("wax+"), f"opened {file} for writing during an upload"
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", no_writes)
    for name in ("mkstemp", "NamedTemporaryFile", "SpooledTemporaryFile", "TemporaryFile"):
        monkeypatch.setattr(tempfile, name, lambda *a, **k: pytest.fail("a temporary file was made"))
    own_cat = generate_images(gen, [7])[0]  # (3, 16, 16): a face this generator can draw
    photo = torch.nn.functional.interpolate(own_cat[None].float(), size=48, mode="nearest")[0].byte()
    r = own_client.post(
        "/api/project?align=crop", content=png_bytes(photo), headers={"content-type": "image/png"}
    )
    monkeypatch.undo()
    assert r.status_code == 200, r.text
    assert r.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in r.headers
    body = r.json()
    z = decode_latent(body["latent"], 16)  # (1, 16)
    assert data_url_array(body["aligned"]).shape == (16, 16, 3)
    projected = data_url_array(body["projected"])
    assert np.array_equal(projected, expected(generate_from_latents(gen, z)[0]))
    assert body["psnr"] > 5 and body["seconds"] >= 0

    plain = own_client.get(f"/api/edit.png?z={body['latent']}")
    assert plain.status_code == 200 and "etag" in plain.headers
    assert np.array_equal(png_array(plain.content), projected)
    moved = own_client.get(f"/api/edit.png?z={body['latent']}&d=0:2,1:-1.5")
    found = gen.directions()
    w = z + (2.0 * found.items[0].vector - 1.5 * found.items[1].vector) * found.latent_std
    want = generate_from_latents(gen, w)[0]
    assert np.array_equal(png_array(moved.content), expected(want))
    end = own_client.get(f"/api/edit.png?z={body['latent']}&morph=9&t=1")
    assert np.array_equal(png_array(end.content), expected(generate_images(gen, [9])[0]))
    again = own_client.get(
        f"/api/edit.png?z={body['latent']}&morph=9&t=1", headers={"If-None-Match": end.headers["etag"]}
    )
    assert again.status_code == 304

    listed = own_client.get("/api/directions").json()
    assert [d["label"] for d in listed["directions"]] == [d.label for d in found.items]
    assert listed["latent_std"] == pytest.approx(found.latent_std)


def test_upload_refusals_are_one_line(own_client):
    def post(body, kind="image/png", query="align=crop", **kw):
        r = own_client.post(f"/api/project?{query}", content=body, headers={"content-type": kind}, **kw)
        assert r.headers["x-content-type-options"] == "nosniff"
        return r.status_code, r.json()["error"]

    status, error = post(b"GIF? no: plain text, not an image")
    assert status == 422 and "not an image" in error
    status, error = post(b"hello", kind="text/plain")
    assert status == 415 and "image/png" in error
    status, error = post(b"\x89PNG" + b"\0" * 200_000)
    assert status == 413 and "too large" in error
    status, error = post(iter([b"\x89PNG", b"\0" * 60_000, b"\0" * 60_000]))  # no Content-Length
    assert status == 413 and "too large" in error
    status, error = post(b"")
    assert status == 422 and "empty" in error
    big = png_bytes(torch.zeros(3, 400, 400, dtype=torch.uint8))  # 160,000 pixels > the 90,000 allowed
    status, error = post(big)
    assert status == 422 and "decompression bomb" in error
    status, error = post(png_bytes(torch.zeros(3, 20, 20, dtype=torch.uint8)), query="align=sideways")
    assert status == 422 and "align" in error
    status, error = post(png_bytes(torch.zeros(3, 20, 20, dtype=torch.uint8)), query="align=crop&steps=900")
    assert status == 422 and "steps" in error
    for z in ("AAAA", "A" * 90, "%%%", base64_latent([float("nan")] + [0.0] * 15)):
        r = own_client.get("/api/edit.png", params={"z": z})
        assert r.status_code == 422 and r.json()["parameter"] == "z", (z, r.text)
    z = base64_latent([0.5] * 16)
    assert own_client.get(f"/api/edit.png?z={z}").status_code == 200
    for d in ("0:99", "77:1", "x:1", "0:1:2"):
        r = own_client.get(f"/api/edit.png?z={z}&d={d}")
        assert r.status_code == 422 and r.json()["parameter"] == "d", (d, r.text)


def base64_latent(values: list[float]) -> str:
    import base64

    return base64.urlsafe_b64encode(np.asarray(values, dtype="<f4").tobytes()).decode().rstrip("=")
