"""Driving headless Chromium from the system packages through selenium and the system chromedriver (no browser
download): the `browser` fixture in tests/conftest.py starts one; these helpers read and click the live page."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


def wait(driver: Any, condition: Callable[[Any], Any], timeout_s: float = 15, what: str = "") -> Any:
    """Poll `condition`; the page redraws its tables every second, so an element gone stale is polled again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiter = WebDriverWait(driver, timeout_s, 0.1, ignored_exceptions=(StaleElementReferenceException,))
    return waiter.until(condition, f"timed out waiting for {what}")


def cell(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def read(driver: Any, selector: str, attribute: str = "textContent") -> str | None:
    """One read of the live page, in the page (no element handle to go stale)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;"
    if attribute == "textContent":
        script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;"
    result: str | None = driver.execute_script(script, selector, attribute)
    return result


def click(driver: Any, selector: str) -> bool:
    found = cell(driver, selector)
    if found is None:
        return False
    found.click()
    return True
