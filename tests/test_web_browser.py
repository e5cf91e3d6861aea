"""The page in a real browser: Playwright drives Debian's chromium, headless, against the app on loopback.

Skips only where no browser can be had: the `playwright` package or the chromium binary is missing
(`.ci/run` installs both). Playwright's own browser download is never used: this machine has no internet.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve,test]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve,test]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed: pip install -e '.[test]'"
)

import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402

from catgan.checkpoint import export_generator  # noqa: E402
from catgan.config import get_preset  # noqa: E402
from catgan.generate import load_generator  # noqa: E402
from catgan.projection.project import ProjectConfig  # noqa: E402
from catgan.web.app import create_app  # noqa: E402
from catgan.web.own import OwnCatLimits  # noqa: E402
from catgan.web.security import HostCheck, HostPolicy  # noqa: E402
from catgan.web.server import server_config  # noqa: E402

CHROMIUM = os.environ.get("CATGAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-background-networking",  # no internet here: no update checks, no phoning home
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    """The app for a random tiny-16 generator, served in a thread on a free loopback port as `serve`
    serves it: the Host check, the security headers (CSP), uvicorn's settings and the request deadline."""
    torch.manual_seed(0)
    cfg = get_preset("tiny-16").model.generator
    from catgan.models import build_generator

    G = build_generator(cfg)
    for p in G.parameters():  # DCGAN's init draws flat grey at this size: give the cats contrast
        if p.dim() > 1:
            torch.nn.init.normal_(p, 0.0, 0.2)
    weights = export_generator(G.state_dict(), cfg, tmp_path_factory.mktemp("web") / "tiny.safetensors")
    # your-own-cat uploads: a small cap and 3 projection steps keep the page tests fast
    own = OwnCatLimits(max_bytes=200_000, steps=3)
    fast = ProjectConfig(steps=3, encoder="none", perceptual="selfsup")
    app = create_app(load_generator(weights=weights), own=own, project_config=fast)
    app.add_middleware(HostCheck, policy=HostPolicy.for_bind("127.0.0.1"))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets NODELAY
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(server_config(app, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium (or set CATGAN_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except sync_api.Error as err:
            pytest.skip(f"chromium at {CHROMIUM} would not start: {str(err).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture
def page(browser, base_url):
    """A fresh page at the app, recording every request and console error so tests can check them."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.requests, pg.errors = [], []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(base_url + "/")
    yield pg
    context.close()


def wait_images(page, selector: str) -> None:
    """Every image matching `selector` has finished loading and decoded to a real picture."""
    page.wait_for_function(
        """sel => {
            const imgs = [...document.querySelectorAll(sel)];
            return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=selector,
    )


def grid_srcs(page) -> list[str]:
    return page.eval_on_selector_all("#grid img", "imgs => imgs.map(i => i.getAttribute('src'))")


def test_page_shows_cats_and_more_cats_brings_new_ones(page, base_url):
    wait_images(page, "#grid img")
    before = grid_srcs(page)
    assert len(before) == 16
    page.wait_for_function("() => document.getElementById('model-info').textContent.includes('tiny')")
    assert "16×16 px" in page.inner_text("#model-info")

    page.get_by_role("button", name="more cats").click()
    page.wait_for_function(
        "old => document.querySelector('#grid img').getAttribute('src') !== old", arg=before[0]
    )
    wait_images(page, "#grid img")
    after = grid_srcs(page)
    assert len(after) == 16 and not set(after) & set(before)
    assert all(u.startswith(base_url) or u.startswith("data:") for u in page.requests), page.requests
    assert page.errors == []


def test_slider_walks_between_two_cats(page):
    wait_images(page, "#walk-img")
    walk = page.locator("#walk-img")
    src_before, shot_before = walk.get_attribute("src"), walk.screenshot()
    assert "t=0.50" in src_before

    page.locator("#t").focus()
    page.keyboard.press("End")  # the slider's right end: t = 1, cat B
    page.wait_for_function("() => document.getElementById('walk-img').getAttribute('src').includes('t=1.00')")
    wait_images(page, "#walk-img")
    assert page.inner_text("#t-value") == "1.00"
    assert walk.screenshot() != shot_before  # the picture itself changed, not only its address

    # and truncation 0 draws every seed as the same mean cat
    page.locator("#truncation").focus()
    page.keyboard.press("Home")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')].every(i => i.src.includes('truncation=0.00'))"
    )
    wait_images(page, "#grid img")
    tiles = page.locator("#grid img")
    assert tiles.nth(4).screenshot() == tiles.nth(5).screenshot()  # (tiles 0 and 1 are framed as A, B)
    assert page.errors == []


def test_click_a_cat_then_download_its_png(page):
    wait_images(page, "#grid img")
    tile = page.locator("#grid .cat").nth(3)
    seed = tile.get_attribute("data-seed")
    tile.click()
    assert page.locator("#detail").is_visible()
    assert page.inner_text("#detail-seed") == seed
    wait_images(page, "#detail-img")

    page.get_by_role("button", name="use as B").click()
    page.wait_for_function("s => document.getElementById('walk-b-seed').textContent === s", arg=seed)

    with page.expect_download() as info:
        page.get_by_role("link", name="download PNG").click()
    download = info.value
    assert download.suggested_filename == f"cat-seed{int(seed):06d}.png"
    img = Image.open(io.BytesIO(Path(download.path()).read_bytes()))
    img.load()
    assert img.format == "PNG" and img.size == (16, 16) and img.mode == "RGB"
    assert page.errors == []


def test_no_other_page_can_frame_it(browser, base_url):
    """frame-ancestors 'none': a page from elsewhere that puts the app in a frame gets nothing drawn."""
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    refused = []
    pg.on("console", lambda m: refused.append(m.text) if "frame-ancestors" in m.text else None)
    pg.set_content(f'<iframe src="{base_url}/" width="600" height="400"></iframe>')
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not refused and time.monotonic() < deadline:
        pg.wait_for_timeout(50)
    assert refused, "chromium reported no frame-ancestors refusal"
    (frame,) = [f for f in pg.frames if f is not pg.main_frame]
    assert not frame.url.startswith(base_url) or frame.query_selector("#grid") is None
    context.close()


def photo_png(size: int = 48, seed: int = 3) -> bytes:
    """A small random RGB photo as PNG bytes."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def upload(page, name: str, mime: str, data: bytes, crop: bool = True) -> None:
    page.set_input_files("#own-file", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.locator("#own-crop").set_checked(crop)
    page.get_by_role("button", name="project").click()


def test_upload_a_photo_then_edit_it_morph_it_and_download_it(page, base_url):
    upload(page, "tom.png", "image/png", photo_png())
    page.wait_for_selector("#own-result:not([hidden])")
    wait_images(page, "#own-result img")
    assert "PSNR" in page.inner_text("#own-status")
    assert page.get_attribute("#own-aligned", "src").startswith("data:image/png;base64,")
    edited = page.locator("#own-edited")
    start_src, start_shot = edited.get_attribute("src"), edited.screenshot()
    drawn = page.get_attribute("#own-projected", "src").split(",", 1)[1]
    assert np.array_equal(
        pixels(page.request.get(base_url + start_src).body()), pixels(base64.b64decode(drawn))
    )
    sliders = page.locator("#own-sliders input[type=range]")
    assert sliders.count() == 5
    labels = page.locator("#own-sliders label").all_inner_texts()
    assert all(t.strip() for t in labels)

    sliders.nth(0).focus()
    page.keyboard.press("End")  # amount +3 along the first direction
    page.wait_for_function(
        "old => document.getElementById('own-edited').getAttribute('src') !== old", arg=start_src
    )
    assert "d=0%3A3.00" in edited.get_attribute("src")  # direction 0 at +3 (URLSearchParams escapes ':')
    wait_images(page, "#own-edited")
    moved_shot = edited.screenshot()
    assert moved_shot != start_shot

    page.fill("#own-seed", "9")
    page.locator("#own-seed").dispatch_event("change")
    page.locator("#own-t").focus()
    page.keyboard.press("End")  # t = 1: the seed's own cat
    page.wait_for_function(
        "() => document.getElementById('own-edited').getAttribute('src').includes('morph=9')"
    )
    wait_images(page, "#own-edited")
    with page.expect_download() as info:
        page.locator("#own-download").click()
    img = Image.open(io.BytesIO(Path(info.value.path()).read_bytes()))
    img.load()
    assert img.format == "PNG" and img.size == (16, 16)
    assert np.array_equal(
        np.asarray(img.convert("RGB")), pixels(page.request.get(f"{base_url}/api/cat/9.png").body())
    )
    assert all(u.startswith(base_url) or u.startswith("data:") for u in page.requests), page.requests
    assert page.errors == []


def test_upload_refuses_a_non_image_and_an_oversized_photo(page, base_url):
    upload(page, "notes.txt", "text/plain", b"not a cat")
    page.wait_for_function("() => document.getElementById('own-status').classList.contains('error')")
    assert "not a PNG, JPEG or WebP" in page.inner_text("#own-status")

    upload(page, "fake.png", "image/png", b"this is no PNG at all")  # the server decodes and refuses it
    page.wait_for_function("() => document.getElementById('own-status').textContent.includes('not an image')")
    assert page.locator("#own-result").is_hidden()

    upload(page, "huge.png", "image/png", photo_png(size=400))  # over the 200,000-byte cap
    page.wait_for_function("() => document.getElementById('own-status').textContent.includes('too large')")
    # and the server refuses it too, whatever the page checks first
    status = page.evaluate(
        """async () => (await fetch('/api/project?align=crop', {method: 'POST',
            headers: {'Content-Type': 'image/png'}, body: new Uint8Array(300000)})).status"""
    )
    assert status == 413
