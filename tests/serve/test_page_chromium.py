"""The DrawingBot page end to end in a real headless Chromium (Debian's ``chromium`` package,
driven by Playwright; ``playwright install`` is never needed): the test starts
``attngan-fast serve`` on a free port, types a caption, clicks Generate and checks that every
stage's images, the word list, the unknown words and the attention maps appear, that hovering and
clicking a word change the map shown, and that the page asked nothing of any other host.

Environment (optional): ``ATTNGAN_FAST_CHROMIUM`` the browser (default /usr/bin/chromium),
``ATTNGAN_FAST_SERVE_RUN`` a trained run to serve instead of the tiny untrained model,
``ATTNGAN_FAST_SCREENSHOT`` where to save the page's screenshot (default: the test's tmp dir).
The README's screenshot is this test's, on the demo's run.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import attngan_fast

CHROMIUM = Path(os.environ.get("ATTNGAN_FAST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CAPTION = "this bird has a red crown, a white belly and glossy blue wings"
VIEWPORT = {"width": 1100, "height": 900}

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    """``attngan-fast serve RUN --port P`` in a subprocess; yields its base URL."""
    run = os.environ.get("ATTNGAN_FAST_SERVE_RUN") or str(tiny_run)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(attngan_fast.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    ))  # fmt: skip
    command = [sys.executable, "-m", "attngan_fast.cli", "serve", run, "--port", str(port)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server stopped ({proc.returncode}):\n{proc.stdout.read()}")
            try:
                with urllib.request.urlopen(base + "/api/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer within 120 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _canvas_is_drawn(page, selector: str) -> bool:
    return page.eval_on_selector(
        selector,
        """c => { const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                  let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1];
                  return c.width > 0 && s > 0; }""",
    )


def test_the_page_draws_a_caption_in_chromium(server, tmp_path):
    expect = sync_api.expect
    outside, problems = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("request", lambda r: None if r.url.startswith((server, "data:")) else
                    outside.append(r.url))  # fmt: skip
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(server + "/")
            expect(page.locator("#model-info")).to_contain_text("stages")
            stages = json.loads(page.evaluate("fetch('/api/health').then(r => r.text())"))
            n_stages = len(stages["model"]["stages"])

            page.fill("#caption", CAPTION)
            page.fill("#n", "2")
            page.fill("#seed", "7")
            with page.expect_response("**/api/generate") as answer:
                page.click("#generate")
            result = answer.value.json()
            assert answer.value.status == 200 and result["seed"] == 7

            images = page.locator("#samples img.stage")
            expect(images).to_have_count(2 * n_stages)
            widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
            assert widths == [64 * 2**s for s in range(n_stages)] * 2
            words = page.locator("#words button")
            expect(words).to_have_count(len(result["tokens"]))
            assert words.all_inner_texts() == result["tokens"]
            assert "glossy" in result["unknown"] and "glossy" not in result["tokens"]
            expect(page.locator("#unknown")).to_contain_text("glossy")
            expect(page.locator("#status")).to_contain_text("2 images")
            expect(page.locator("#seed")).to_have_value("7")

            # each attention stage: a large map of the word shown, and one thumbnail per word
            n_att = len(result["attention"])
            assert n_att == n_stages - 1 >= 1
            expect(page.locator("canvas.focus")).to_have_count(2 * n_att)
            expect(page.locator("canvas.thumb")).to_have_count(2 * n_att * len(result["tokens"]))
            assert _canvas_is_drawn(page, "canvas.focus")
            red = result["tokens"].index("red")
            focus = page.locator("figure.attention figcaption").first
            expect(focus).to_contain_text(f"“{result['tokens'][0]}”")
            before = page.eval_on_selector("canvas.focus", "c => c.toDataURL()")
            words.nth(red).hover()
            expect(focus).to_contain_text("“red”")
            assert page.eval_on_selector("canvas.focus", "c => c.toDataURL()") != before
            words.nth(red).click()
            expect(words.nth(red)).to_have_attribute("aria-pressed", "true")
            page.mouse.move(5, 5)  # leaving the words keeps the clicked one
            expect(focus).to_contain_text("“red”")

            shot = Path(os.environ.get("ATTNGAN_FAST_SCREENSHOT") or tmp_path / "page.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)

            # errors come back as a message on the page
            page.fill("#caption", "zebra crossing")
            page.click("#generate")
            expect(page.locator("#error")).to_contain_text("no word of the caption")
        finally:
            browser.close()
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.width == VIEWPORT["width"]
        assert image.height >= VIEWPORT["height"]
    assert outside == [], "the page asked another host"
    assert [p for p in problems if "422" not in p] == []  # the 422 of the last request only
