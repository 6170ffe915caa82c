"""Debian's headless Chromium driven by selenium, for the pages edgeseg serves and writes.

No browser is downloaded: /usr/bin/chromium and /usr/bin/chromedriver come from Debian's packages
(scripts/test.sh installs them). Without them the browser tests skip, unless
EDGESEG_REQUIRE_BROWSER=1 (scripts/test.sh sets it, so CI runs them) turns the skip into a failure.
Chromium is started without its background connections, so every request it makes is the page's own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("EDGESEG_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("EDGESEG_CHROMEDRIVER", "/usr/bin/chromedriver"))
REQUIRE_ENV = "EDGESEG_REQUIRE_BROWSER"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000")  # fmt: skip
PAGE_LOAD_S = 30


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the dev extra: pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} is missing (apt-get install chromium chromium-driver; scripts/test.sh does it)"
    return None


def start():
    """A new headless Chromium with an empty profile, logging the console and every network request."""
    why = missing()
    if why is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the browser tests cannot run: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="edgeseg-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_S)
    driver.set_script_timeout(PAGE_LOAD_S)
    driver.edgeseg_profile = profile
    blank(driver)
    return driver


def blank(driver) -> None:
    """An empty page and empty logs: from here on they hold only what the next test opens (a page left open
    by an earlier test would go on polling its closed server, and its failed requests would count)."""
    driver.get("about:blank")
    console_errors(driver), requested_urls(driver)


def stop(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.edgeseg_profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """The console's SEVERE entries since the last call (errors, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def requested_urls(driver) -> list[str]:
    """Every URL the browser requested since the last call (the DevTools network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot(driver):
    """The viewport as a BGR image."""
    import cv2
    import numpy as np

    return cv2.imdecode(np.frombuffer(driver.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)


def not_blank(image) -> bool:
    """More than a flat page: many distinct colours and real contrast."""
    import numpy as np

    colours = len(np.unique(image.reshape(-1, 3)[::7], axis=0))
    return colours > 200 and float(image.std()) > 20
