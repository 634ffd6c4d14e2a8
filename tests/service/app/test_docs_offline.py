"""/docs (Swagger UI) and /redoc work with the network off: headless Chromium (Debian's chromium +
chromium-driver, as in test_demo_page.py) that can reach nothing but loopback renders both pages from
assets the app serves, and runs a request from Swagger UI's "Try it out".

"Network off" for the browser: every host name fails to resolve except the loopback addresses
(--host-resolver-rules) and every non-loopback connection goes to a dead proxy (--proxy-server on a
closed loopback port; Chromium never proxies loopback). A control in the same browser shows that this
really cuts the network: a script from the CDN FastAPI's stock pages use does not load. Every request
the pages made is then read from Chromium's performance log: all went to the server.

Without Chromium the test skips, except in CI (CI set), where it fails: .ci/run installs it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from service_helpers import LiveServer, headless_chromium

#: The CDN FastAPI's stock /docs page loads Swagger UI from (fastapi.openapi.docs defaults).
CDN_SCRIPT = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): the dead proxy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def offline_browser(tmp_path: Path) -> Iterator:
    """Chromium with the network cut: no name resolves but loopback, and every proxied request goes to
    a closed port."""
    flags = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
             f"--proxy-server=http://127.0.0.1:{_closed_port()}"]
    with headless_chromium(tmp_path / "chromium-profile", flags, {"goog:loggingPrefs": {"performance": "ALL"}}) as driver:
        yield driver


def _requested_urls(driver) -> list[str]:
    """Every URL the page sent a request to since the last call (Network.requestWillBeSent in the
    performance log), less those the browser blocked itself (the page's Content-Security-Policy):
    those never left the browser."""
    sent: dict[str, str] = {}
    blocked: set[str] = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif message.get("method") == "Network.loadingFailed" and params.get("blockedReason"):
            blocked.add(params["requestId"])
    return [url for request_id, url in sent.items() if request_id not in blocked]


def _off_server(urls: list[str], server: LiveServer) -> list[str]:
    """The network requests (http, https, ws) that went anywhere but the server (the browser's own
    chrome:// pages, data: and blob: URLs are not network traffic)."""
    origin = urlsplit(server.url)
    return [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")
            and (urlsplit(u).hostname, urlsplit(u).port) != (origin.hostname, origin.port)]


def test_the_browser_really_is_offline(offline_browser, server: LiveServer) -> None:
    """The control: under these flags a CDN script fails to load (so FastAPI's stock /docs would be blank)."""
    offline_browser.get(f"{server.url}/healthz")
    outcome = offline_browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const s = document.createElement('script'); s.src = arguments[0];"
        "s.onload = () => done('loaded'); s.onerror = () => done('failed');"
        "document.head.appendChild(s);", CDN_SCRIPT)
    assert outcome == "failed"


def test_swagger_ui_renders_and_runs_a_request_offline(offline_browser, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_browser
    driver.get(f"{server.url}/docs")
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary"))
    assert "aecodec" in driver.find_element(By.CSS_SELECTOR, ".info .title").text
    summaries = driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    paths = {s.get_attribute("data-path") or s.text for s in summaries}
    assert {"/encode", "/decode", "/reconstruct", "/anomaly-score", "/readyz"} <= paths, paths
    css_applied = driver.execute_script(
        "return getComputedStyle(document.querySelector('.swagger-ui .opblock')).borderRadius")
    assert css_applied not in ("", "0px")  # swagger-ui.css loaded: unstyled blocks have no radius

    # "Try it out" on GET /readyz: Swagger UI sends the request and shows the server's answer.
    block = driver.find_element(By.ID, "operations-health-health-readyz")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    WebDriverWait(driver, 20).until(lambda d: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    WebDriverWait(driver, 20).until(lambda d: block.find_elements(By.CSS_SELECTOR, ".execute"))
    block.find_element(By.CSS_SELECTOR, ".execute").click()
    WebDriverWait(driver, 30).until(
        lambda d: block.find_elements(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"))
    status = block.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status").text
    assert status.strip() == "200"
    assert '"ready"' in block.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text

    urls = _requested_urls(driver)
    assert any(u.endswith("/docs/assets/swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("/openapi.json") for u in urls)
    assert _off_server(urls, server) == []


def test_redoc_renders_offline(offline_browser, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_browser
    driver.get(f"{server.url}/redoc")
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "h1"))
    assert "aecodec" in driver.find_element(By.CSS_SELECTOR, "h1").text
    WebDriverWait(driver, 30).until(lambda d: "Readiness" in d.find_element(By.TAG_NAME, "body").text)
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "/encode" in body and "Liveness: the process answers" in body

    urls = _requested_urls(driver)
    assert any(u.endswith("/docs/assets/redoc.standalone.js") for u in urls)
    assert _off_server(urls, server) == []
