"""Headless Chromium from Debian's ``chromium`` package, driven by Playwright.

Where Chromium is not installed the browser tests skip with one reason (CI sets
LEAKSCOPE_REQUIRE_SYSTEM_DEPS=1 and fails instead). Where it is installed but
cannot start, every browser test fails: a report nobody has opened in a browser
is a report nobody has tested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import need_program

# LEAKSCOPE_CHROMIUM names another build (and lets a test name a missing one).
CHROMIUM = os.environ.get("LEAKSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox (containers run as root), no GPU, and nothing that phones home,
# so that any request a test sees comes from the page itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    need_program("chromium", CHROMIUM)
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # the test fails; it does not skip
            pytest.fail(f"headless Chromium did not start from {CHROMIUM}: {exc}", pytrace=False)
        yield chromium
        chromium.close()
