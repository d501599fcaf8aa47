"""Headless Chromium for the sandbox's browser test and screenshots.

Uses Debian's `chromium` and `chromium-driver` packages through Selenium, never a
browser that a tool downloads. Selenium is in the `test` extra.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def missing_browser() -> str | None:
    """Return why headless Chromium cannot run here, or None when it can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing: install it with `apt-get install -y {package}`"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing: install the test extra with `pip install -e '.[test]'`"
    return None


def open_chromium(user_data_dir: Path, *, width: int = 1400, height: int = 1000):
    """Start headless Chromium with a fresh profile in `user_data_dir` and return the Selenium driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={width},{height}")

    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver


def remove_profile(user_data_dir: Path) -> None:
    shutil.rmtree(user_data_dir, ignore_errors=True)
