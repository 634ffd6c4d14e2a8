"""The demo page at `/`, end to end in headless Chromium (Debian's chromium + chromium-driver, driven
by Selenium): pick an image, wait for the results, and check the figures shown against the API's.

Without Chromium the test skips, except in CI (CI set), where it fails: .ci/run installs it.
A screenshot goes to the test's tmp dir and, outside CI, to artifacts/demo.png for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import ROOT, headless_chromium, live_server, noise_image, to_bytes


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator:
    with headless_chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def _value(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).get_attribute("data-value")


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _wait_done(driver, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element("id", "status").get_attribute("data-state") in ("done", "error"))
    status = driver.find_element("id", "status")
    assert status.get_attribute("data-state") == "done", status.text


def test_demo_page_shows_the_api_figures(browser, server, client: httpx.Client, model_store, tmp_path) -> None:
    from selenium.webdriver.support.ui import Select, WebDriverWait

    photo = tmp_path / "digit.png"
    photo.write_bytes(to_bytes(model_store.normal[0]))
    png = photo.read_bytes()

    browser.get(f"{server.url}/")
    WebDriverWait(browser, 30).until(lambda d: len(Select(d.find_element("id", "model")).options) >= 2)
    models = Select(browser.find_element("id", "model"))
    assert models.first_selected_option.get_attribute("value") == "tiny@1"  # the service's default
    assert {o.get_attribute("value") for o in models.options} >= {"tiny@1", "tiny-reject@1"}

    browser.find_element("id", "file").send_keys(str(photo))
    _wait_done(browser)

    # The same requests through the API: the page must show exactly these figures.
    encoded = client.post("/encode?model=tiny&version=1", content=png)
    recon = client.post("/reconstruct?model=tiny&version=1", content=png)
    scored = client.post("/anomaly-score?model=tiny&version=1", content=png).json()
    stream_bytes = len(encoded.content)
    assert int(_value(browser, "stream-bytes")) == stream_bytes
    assert int(_value(browser, "file-bytes")) == len(png)
    assert float(_value(browser, "bpp")) == pytest.approx(float(encoded.headers["x-bpp"]))
    assert _text(browser, "bpp") == f"{float(encoded.headers['x-bpp']):.4f}"
    assert float(_value(browser, "ratio")) == pytest.approx(len(png) / stream_bytes)
    assert _text(browser, "ratio") == f"{len(png) / stream_bytes:.2f} : 1"
    assert float(_value(browser, "psnr")) == pytest.approx(float(recon.headers["x-psnr"]), abs=1e-4)
    assert _text(browser, "psnr") == f"{float(recon.headers['x-psnr']):.2f} dB"
    assert float(_value(browser, "mse")) == pytest.approx(float(recon.headers["x-mse"]), rel=1e-6)
    assert float(_value(browser, "score")) == pytest.approx(scored["score"], rel=1e-6)
    assert float(_value(browser, "threshold")) == pytest.approx(scored["threshold"])
    assert _value(browser, "verdict") == str(scored["is_anomaly"]).lower()
    assert _text(browser, "verdict").startswith("Normal")
    sizes = browser.execute_script(
        "return ['original', 'reconstruction', 'heatmap'].map(id => document.getElementById(id).naturalWidth)")
    assert sizes == [28, 28, 28]  # all three images really loaded

    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot))
    if not os.environ.get("CI"):
        (ROOT / "artifacts").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "artifacts" / "demo.png")


def test_demo_page_without_threshold_and_with_a_bad_file(browser, server, tmp_path) -> None:
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(f"{server.url}/")
    WebDriverWait(browser, 30).until(lambda d: len(Select(d.find_element("id", "model")).options) >= 2)
    Select(browser.find_element("id", "model")).select_by_value("tiny-reject@1")
    photo = tmp_path / "noise.png"
    photo.write_bytes(to_bytes(noise_image(28, 28, seed=5)))
    browser.find_element("id", "file").send_keys(str(photo))
    _wait_done(browser)
    assert _text(browser, "verdict") == "No threshold"
    assert float(_value(browser, "bpp")) > 0

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    browser.find_element("id", "file").send_keys(str(junk))
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element("id", "status").get_attribute("data-state") == "error")
    assert "unsupported_image" in _text(browser, "status")


def test_demo_page_quality_slider_for_a_variable_rate_model(browser, variable_rate_store, tmp_path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "photo.png"
    photo.write_bytes(to_bytes(noise_image(96, 128, seed=9)))
    with live_server(models_dir=variable_rate_store, default_model="codec-vr", reload_interval_s=0,
                     log_level="WARNING") as srv:
        browser.get(f"{srv.url}/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "model").get_attribute("value"))
        assert browser.find_element("id", "quality-control").is_displayed()
        assert browser.find_element("id", "quality").get_attribute("max") == "2"
        browser.find_element("id", "file").send_keys(str(photo))
        _wait_done(browser)
        assert _text(browser, "status").endswith("at quality 1.00.")  # the card's default
        low = float(_value(browser, "bpp"))
        browser.execute_script("const q = document.getElementById('quality'); q.value = '2';"
                               "q.dispatchEvent(new Event('change'));")
        WebDriverWait(browser, 60).until(lambda d: _text(d, "status").endswith("at quality 2.00."))
        assert float(_value(browser, "bpp")) > low
