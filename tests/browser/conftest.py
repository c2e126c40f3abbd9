"""Headless Chromium from Debian's ``chromium`` package, driven by Playwright.

There is no skip: where the browser cannot start, every browser test fails,
because a report nobody has opened in a browser is a report nobody has tested.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
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
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # the test fails; it does not skip
            pytest.fail(f"headless Chromium did not start from {CHROMIUM}: {exc}", pytrace=False)
        yield chromium
        chromium.close()
