"""A screenshot of the `catgan serve` page for the README, taken in headless Debian chromium.

    python benchmarks/serve_screenshot.py docs/images/serve.png                 # the bundled cats-64
    python benchmarks/serve_screenshot.py docs/images/serve.png --run runs/cats64 --no-ema

Everything after OUT is passed to `catgan serve`. Shows seeds 0-15 with seed 3 opened, so the picture
is the same every time for the same model. Saved as a 256-colour PNG to keep the repository small.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
import urllib.request

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
LOADED = (  # every image with an address has loaded and decoded
    "() => [...document.images].filter(i => i.getAttribute('src'))"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    from playwright.sync_api import sync_playwright

    out, source = sys.argv[1], sys.argv[2:]
    cmd = [sys.executable, "-m", "catgan", "serve", "--port", "0", "--quiet", *source]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        m = re.search(r"http://\S+/", proc.stdout.readline())
        if m is None:
            raise SystemExit("catgan serve did not start (see its error above)")
        url = m.group(0)
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "api/info", timeout=2).close()
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1180, "height": 860})
            page.goto(url + "?seeds=" + ",".join(str(s) for s in range(16)))
            page.wait_for_function(LOADED)
            page.locator("#grid .cat").nth(3).click()
            page.wait_for_function(LOADED)
            page.wait_for_function(
                "() => document.getElementById('model-info').textContent.startsWith('model')"
            )
            shot = page.screenshot()
            browser.close()
        # 256 colours, dithered: half the bytes of the full-colour PNG and no visible loss at this size
        from PIL import Image

        image = Image.open(io.BytesIO(shot)).convert("RGB")
        image.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(out, optimize=True)
        print(f"wrote {out}")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
