"""A real browser for the web app's tests and screenshots: Debian's Chromium driven by Playwright
(its own browser download cannot work here), against `expensetracker serve` over real HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright

from tests.helpers.processes import clean_env, cli, free_port, spawn
from tests.helpers.web import SESSION_KEY

CHROMIUM = os.environ.get("EXPENSETRACKER_TEST_CHROMIUM", "/usr/bin/chromium")
# Headless, and quiet: without these Chromium keeps calling hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


@contextmanager
def web_server(database_url: str) -> Iterator[str]:
    """Every component in one `serve` process on a free port; yields its base URL."""
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_RATE_LIMIT="off",
        EXPENSETRACKER_WEB_SESSION_KEY=SESSION_KEY,
        EXPENSETRACKER_LOG_LEVEL="WARNING",
    )
    port = free_port()
    with spawn(cli("serve", "--target", "all", "--port", str(port)), env) as server:
        yield server.wait_ready(timeout=60)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


_axe = Axe()


async def serious_accessibility_problems(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    results = await _axe.run(page)
    return [
        f"{violation['id']}: {violation['help']} ({len(violation['nodes'])} nodes)"
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


async def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    await page.goto(f"{base_url}/login")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/")
