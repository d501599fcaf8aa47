"""The Slack console in headless Chromium: a slash command, the DM's link, the CRM's
chooselocation page, and back to Connected."""

from __future__ import annotations

import os

import pytest

from bot.sandbox.browser import missing_browser, open_chromium
from bot.sandbox.runner import Sandbox

WAIT_SECONDS = 20


@pytest.fixture
def browser(tmp_path):
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"The browser test must run in CI, but {reason}")
        pytest.skip(reason)

    driver = open_chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


@pytest.fixture
def sandbox(tmp_path):
    with Sandbox(tmp_path / "sandbox", port=0) as running:
        yield running


def send_command(browser, wait, command: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "command")).select_by_value(command)
    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "send").click()
    wait.until(lambda driver: f"{command} {text}" in driver.find_element(By.ID, "replies").text)


def test_console_connects_account_in_browser(browser, sandbox):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException

    # A wait may read an element of the page that a submit is replacing.
    wait = WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(sandbox.console_url)
    assert "CRM Connect sandbox" in browser.title

    send_command(browser, wait, "/crm-connect", "Acme Dental direct")
    assert "Sent a Direct Connection link for Acme Dental" in browser.find_element(By.ID, "replies").text

    browser.find_element(By.CSS_SELECTOR, "#dms a.button").click()
    wait.until(lambda driver: "Connect the app to your account" in driver.page_source)
    Select(browser.find_element(By.NAME, "login")).select_by_value("location:loc-acme-dental")
    browser.find_element(By.XPATH, "//button[text()='Log in']").click()
    wait.until(lambda driver: "Sub-account user of Acme Dental" in driver.find_element(By.ID, "logged-in").text)
    browser.find_element(By.CSS_SELECTOR, "input[value='location:loc-acme-dental']").click()
    browser.find_element(By.XPATH, "//button[@value='authorize']").click()
    wait.until(lambda driver: "Acme Dental is connected" in driver.page_source)

    browser.get(sandbox.console_url)
    send_command(browser, wait, "/crm-status", "Acme Dental")
    assert "Acme Dental (loc-acme-dental): Connected" in browser.find_element(By.ID, "replies").text
