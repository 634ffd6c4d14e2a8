"""The demo page on the shipped `natural` codec, state by state, in headless Chromium at 1280×800 and at a
phone's 390 px: what a user sees, with a screenshot of each state.

States: initial, after compress, wipe moved, zoomed, compare panel, error, phone width. Checked in the DOM:
the verdict within the first 800 px, the header not moving when the quality slider appears, the viewer at
full resolution and zoomed, the wipe and flip, the same-bytes comparison and the downloads, the heat map
at the chosen quality, a failed upload clearing the old image, no horizontal overflow at 390 px.

Screenshots are made smaller (a palette of at most 256 colours) and checked under 300 KB each. They go to the test's
tmp dir; with AEC_DEMO_SCREENSHOTS=1 to docs/demo/*.png, the ones README links (committed), else outside
CI to artifacts/demo/ for a look. The photo is McMaster's 18.png where the datasets are
(`$AEC_DATASETS` or ../shared/datasets, as the committed screenshots were made), else a synthetic one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_helpers import ROOT, headless_chromium, to_bytes

from contract.card import ModelCard


def _default_quality() -> float:
    """The page starts at the newest natural card's default quality."""
    return ModelCard.read(_newest_natural()).rate.default_quality


def _newest_natural() -> Path:
    folder = ROOT / "models_store" / "natural"
    return max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


DATASETS = Path(os.environ.get("AEC_DATASETS", ROOT.parent / "shared" / "datasets"))
DOCS = ROOT / "docs" / "demo"
MAX_SHOT_BYTES = 300 * 1024
WAIT_S = 240  # a 500×500 photo through four endpoints and three classic codecs on a busy 2-core machine


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator:
    with headless_chromium(tmp_path / "chromium-profile") as driver:
        yield driver


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    real = DATASETS / "natural" / "McMaster" / "18.png"
    if real.is_file():
        return real.resolve()  # chromedriver wants a canonical path
    y, x = np.mgrid[0:240, 0:320] / 50.0
    rgb = np.stack([0.5 + 0.3 * np.sin(x + 2 * y), 0.5 + 0.2 * np.cos(3 * x - y), 0.4 + 0.1 * x / 6], -1)
    rgb += np.random.default_rng(0).normal(0, 0.02, rgb.shape)
    path = tmp_path / "photo.png"
    path.write_bytes(to_bytes(np.clip(rgb, 0, 1)))
    return path


def _viewport(driver, width: int, height: int, mobile: bool = False) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def _wait_state(driver, element_id: str, states: tuple[str, ...], timeout: float = WAIT_S) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element("id", element_id).get_attribute("data-state") in states)
    return driver.find_element("id", element_id).get_attribute("data-state")


def _wait_done(driver) -> None:
    state = _wait_state(driver, "status", ("done", "error"))
    assert state == "done", driver.find_element("id", "status").text


def _js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def _rect(driver, element_id: str) -> dict:
    return _js(driver, "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
               "return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height};",
               element_id)


class Shots:
    """Screenshots, made small (palette PNG), kept under MAX_SHOT_BYTES, written where the docstring says."""

    def __init__(self, tmp: Path) -> None:
        self.dirs = [tmp]
        if os.environ.get("AEC_DEMO_SCREENSHOTS") == "1":
            self.dirs.append(DOCS)
        elif not os.environ.get("CI"):
            self.dirs.append(ROOT / "artifacts" / "demo")
        for folder in self.dirs:
            folder.mkdir(parents=True, exist_ok=True)
        self.sizes: dict[str, int] = {}

    def take(self, driver, name: str) -> None:
        data = small_png(driver.get_screenshot_as_png())
        assert len(data) < MAX_SHOT_BYTES, (name, len(data))
        self.sizes[name] = len(data)
        for folder in self.dirs:
            (folder / f"{name}.png").write_bytes(data)


def small_png(data: bytes) -> bytes:
    """A screenshot as a palette PNG: 256 colours if that stays under MAX_SHOT_BYTES, else fewer (a third to
    a quarter of the bytes of the RGB one; text sharp, photos slightly posterised)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    for colours in (256, 128, 64, 32):
        buffer = io.BytesIO()
        image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buffer, format="PNG", optimize=True)
        if buffer.tell() < MAX_SHOT_BYTES:
            break
    return buffer.getvalue()


def _header_layout(driver) -> list:
    return _js(driver, "return [...document.querySelectorAll('header > *')].map(e => {"
               "const r = e.getBoundingClientRect(); return [e.id || e.tagName, r.left, r.top, r.width, r.height]; })"
               ".concat([['header', 0, 0, 0, document.querySelector('header').offsetHeight]])")


def _select_model(driver, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "model")).select_by_value(value)


def test_demo_page_states_with_screenshots(browser, photo_server, photo: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait

    shots = Shots(tmp_path / "shots")
    _viewport(browser, 1280, 800)
    browser.get(f"{photo_server.url}/")
    WebDriverWait(browser, 30).until(lambda d: len(Select(d.find_element("id", "model")).options) >= 2)
    natural = Select(browser.find_element("id", "model")).first_selected_option.get_attribute("value")
    assert natural.startswith("natural@")

    # the header keeps its layout whether the quality slider shows (natural) or not (tiny, single-rate)
    with_slider = _header_layout(browser)
    _select_model(browser, "tiny@1")
    assert not browser.find_element("id", "quality-control").is_displayed()
    without_slider = _header_layout(browser)
    _select_model(browser, natural)
    assert browser.find_element("id", "quality-control").is_displayed()
    assert without_slider == with_slider == _header_layout(browser)
    shots.take(browser, "01-initial")

    # ---- after compress: figures, verdict above the fold, the viewer at full resolution, downloads
    browser.find_element("id", "file").send_keys(str(photo))
    _wait_done(browser)
    assert _wait_state(browser, "compare-status", ("done", "error")) == "done"
    assert _js(browser, "return window.scrollY") == 0
    assert _rect(browser, "verdict")["bottom"] <= 800 and _rect(browser, "summary")["bottom"] <= 800
    assert browser.find_element("id", "verdict").text in ("Normal", "Anomalous")
    width, height = _js(browser, "const i = document.getElementById('original'); return [i.naturalWidth, i.naturalHeight]")
    stream_bytes = int(browser.find_element("id", "stream-bytes").get_attribute("data-value"))
    stage = _rect(browser, "stage")
    viewer = _rect(browser, "viewer")
    assert viewer["bottom"] <= 800  # the whole viewer in view at 1280×800
    if width <= viewer["width"] and height <= viewer["height"]:
        # whole pixels: 1:1, or the largest integer zoom that still fits (a small image is enlarged
        # pixel-exact, never smoothed); clientWidth/Height, as the page measures it
        inner = _js(browser, "const v = document.getElementById('viewer'); return [v.clientWidth, v.clientHeight]")
        scale = max(1, int(min(inner[0] / width, inner[1] / height)))
        assert (stage["width"], stage["height"]) == (width * scale, height * scale)
    assert _js(browser, "return document.getElementById('view-b').getAttribute('src')").startswith("blob:")
    links = _js(browser, "return ['download-stream', 'download-reconstruction'].map(id => {"
                "const a = document.getElementById(id); return [a.getAttribute('href'), a.download]; })")
    assert links[0][0].startswith("blob:") and links[0][1] == f"{photo.stem}.q{_default_quality():.2f}.aec"
    assert links[1][0].startswith("blob:") and links[1][1].endswith(".png")
    downloaded = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(['download-stream', 'download-reconstruction'].map(id =>"
        " fetch(document.getElementById(id).href).then(r => r.arrayBuffer())))"
        ".then(([s, p]) => done([s.byteLength, Array.from(new Uint8Array(p.slice(1, 4))).join(',')]));")
    assert downloaded == [stream_bytes, "80,78,71"]  # the stream's bytes, and a PNG
    tiles = _js(browser, "return [...document.querySelectorAll('#compare-tiles .tile')].map(t =>"
                " [t.dataset.codec, t.dataset.state, Number(t.dataset.bytes), t.querySelector('img').naturalWidth])")
    assert [t[0] for t in tiles] == ["aec", "jpeg", "webp", "avif"]
    for codec, state, size, shown in tiles:
        assert state in ("ok", "nofit", "unavailable"), codec
        if state == "ok":
            assert size <= stream_bytes and shown == width, codec
    heat_at_4 = _js(browser, "return document.getElementById('heatmap').src")
    assert heat_at_4.startswith("data:image/png;base64,")
    assert f"quality {_default_quality():.2f}" in browser.find_element("id", "heatmap-caption").text
    shots.take(browser, "02-compressed")

    # ---- wipe moved: by the slider, by dragging, and flipped
    _js(browser, "const w = document.getElementById('wipe'); w.value = '25'; w.dispatchEvent(new Event('input'));")
    viewer_el = browser.find_element("id", "viewer")
    # the left inset of the reconstruction's clip-path (CSS shorthand: 1 to 4 values)
    clip = lambda: _js(browser, "const v = getComputedStyle(document.getElementById('view-b')).clipPath"
                       ".match(/inset\\(([^)]*)\\)/)[1].split(' ').map(parseFloat);"
                       "return v[v.length === 4 ? 3 : v.length === 1 ? 0 : 1];")
    line = lambda: _rect(browser, "wipe-line")["left"]
    assert line() == pytest.approx(viewer["left"] + 0.25 * _js(browser, "return arguments[0].clientWidth", viewer_el), abs=3)
    assert clip() == pytest.approx(line() - _rect(browser, "stage")["left"], abs=3)
    offset = int(0.2 * viewer["width"])  # from the viewer's centre: the wipe follows the mouse to 70%
    ActionChains(browser).move_to_element_with_offset(viewer_el, 0, 0).click_and_hold() \
        .move_by_offset(offset, 0).release().perform()
    assert line() == pytest.approx(viewer["left"] + viewer["width"] / 2 + offset, abs=4)
    browser.find_element("id", "flip").click()
    assert viewer_el.get_attribute("data-mode") == "b" and clip() == 0  # the reconstruction whole
    browser.find_element("id", "flip").click()
    assert viewer_el.get_attribute("data-mode") == "a"
    assert not browser.find_element("id", "view-b").is_displayed()  # the original whole
    _js(browser, "const w = document.getElementById('wipe'); w.value = '40'; w.dispatchEvent(new Event('input'));")
    assert viewer_el.get_attribute("data-mode") == "wipe"
    shots.take(browser, "03-wipe")

    # ---- zoomed: 4x, pixel for pixel, centre kept
    browser.find_element("css selector", "[data-zoom='4']").click()
    stage = _rect(browser, "stage")
    assert (round(stage["width"]), round(stage["height"])) == (4 * width, 4 * height)
    assert "pixelated" in browser.find_element("id", "stage").get_attribute("class")
    assert browser.find_element("id", "zoom-level").text == "400%"
    scroll = _js(browser, "const v = document.getElementById('viewer'); return [v.scrollLeft + v.clientWidth / 2,"
                 " v.scrollWidth]")
    assert scroll[0] / scroll[1] == pytest.approx(0.5, abs=0.02)
    shots.take(browser, "04-zoomed")

    # ---- the compare panel: JPEG, WebP and AVIF at our bytes; a click wipes against one
    browser.find_element("css selector", "[data-zoom='fit']").click()
    _js(browser, "document.getElementById('compare').scrollIntoView({block: 'end'})")
    jpeg = browser.find_element("css selector", ".tile[data-codec='jpeg'] .thumb")
    jpeg.click()
    assert _js(browser, "return document.getElementById('view-b').src").startswith("data:image/jpeg;base64,")
    assert browser.find_element("id", "tag-b").text.startswith("JPEG")
    assert browser.find_element("css selector", ".tile[data-codec='jpeg']").get_attribute("data-selected") == "true"
    psnrs = {t.get_attribute("data-codec"): t.get_attribute("data-psnr")
             for t in browser.find_elements("css selector", "#compare-tiles .tile")}
    assert all(float(v) > 10 for k, v in psnrs.items() if v), psnrs
    assert browser.find_element("id", "best").get_attribute("data-value") in psnrs
    shots.take(browser, "05-compare")

    # ---- the heat map follows the quality slider
    _js(browser, "window.scrollTo(0, 0); const q = document.getElementById('quality'); q.value = '1';"
        "q.dispatchEvent(new Event('input')); q.dispatchEvent(new Event('change'));")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element("id", "status").text.endswith("at quality 1.00."))
    _wait_done(browser)
    assert "quality 1.00" in browser.find_element("id", "heatmap-caption").text
    heat_at_1 = _js(browser, "return document.getElementById('heatmap').src")
    assert heat_at_1.startswith("data:image/png;base64,") and heat_at_1 != heat_at_4
    assert int(browser.find_element("id", "stream-bytes").get_attribute("data-value")) < stream_bytes

    # ---- a failed upload: the error, and nothing left of the previous image
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    browser.find_element("id", "file").send_keys(str(junk))
    assert _wait_state(browser, "status", ("error",)) == "error"
    assert "unsupported_image" in browser.find_element("id", "status").text
    gone = _js(browser, "return ['original', 'view-b', 'reconstruction', 'heatmap'].map(id =>"
               " document.getElementById(id).getAttribute('src'))")
    assert gone == [None, None, None, None]
    assert browser.find_element("id", "original-caption").text == ""
    assert browser.find_element("id", "reconstruction-caption").text == ""
    assert browser.find_element("id", "stream-bytes").text == "\u2013"
    assert _js(browser, "return document.getElementById('compare-tiles').children.length") == 0
    assert browser.find_element("id", "download-stream").get_attribute("href") is None
    assert browser.find_element("id", "viewer-empty").is_displayed()
    assert browser.find_element("id", "viewer-empty").text.startswith("Nothing to show: junk.png")
    shots.take(browser, "06-error")

    # ---- a phone: 390 px wide, nothing wider than the screen
    _viewport(browser, 390, 844, mobile=True)
    browser.get(f"{photo_server.url}/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "model").get_attribute("value"))
    browser.find_element("id", "file").send_keys(str(photo))
    _wait_done(browser)
    _wait_state(browser, "compare-status", ("done", "error"))
    overflow = _js(browser, "return [document.documentElement.scrollWidth, window.innerWidth,"
                   " [...document.querySelectorAll('body *')].filter(e => { const r = e.getBoundingClientRect();"
                   " return r.width && r.right > window.innerWidth + 1 && !e.closest('#viewer'); }).map(e => e.id || e.className)]")
    assert overflow[0] <= overflow[1] == 390 and overflow[2] == [], overflow
    shots.take(browser, "07-phone")

    assert sum(shots.sizes.values()) < 2 * 2**20
    if DOCS in shots.dirs:
        print("screenshots:", {name: f"{size / 1024:.0f} KiB" for name, size in shots.sizes.items()})
