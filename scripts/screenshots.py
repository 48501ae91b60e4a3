"""Desktop and phone screenshots of every main page of the web app, into docs/screenshots/.

    make screenshots

Runs `expensetracker up --demo` in a temporary data folder (the newcomer's way in), signs in
to the demo account with the sign-in page's button, and photographs each page with Debian's
Chromium (apt-get install chromium).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.async_api import Page  # noqa: E402

from tests.helpers.browser import DESKTOP, PHONE, chromium  # noqa: E402
from tests.helpers.processes import clean_env, cli, free_port, spawn  # noqa: E402

OUT = REPO / "docs" / "screenshots"
PAGES = {
    "login": "/login",
    "dashboard": "/",
    "expenses": "/expenses",
    "budgets": "/budgets",
    "reports": "/reports",
    "reports-home": "/reports?in=home",
    "categories": "/categories",
    "recurring": "/recurring",
    "rules": "/rules",
    "rates": "/rates",
    "import": "/import",
    "account": "/account",
}
STATEMENT = REPO / "tests" / "statements" / "checking.ofx"


async def prepare(page: Page, base_url: str) -> None:
    """What the demo account lacks to show the new screens: a rule and a rate of its own, set
    through the pages as a person would."""
    await page.goto(f"{base_url}/rules")
    await page.get_by_label("Pattern").fill("Streaming")
    await page.get_by_label("Add tags").fill("subscription")
    await page.get_by_role("button", name="Add the rule").click()
    await page.wait_for_url(f"{base_url}/rules")
    await page.goto(f"{base_url}/rates")
    await page.get_by_label("From", exact=True).fill("JPY")
    await page.get_by_label("To", exact=True).fill("EUR")
    await page.get_by_label("Rate", exact=True).fill("0.0062")
    await page.get_by_role("button", name="Save the rate").click()
    await page.wait_for_url(f"{base_url}/rates")


async def photograph_import_preview(page: Page, base_url: str, target: Path) -> None:
    """The preview of a bank statement: nothing is imported (no confirmation is given)."""
    await page.goto(f"{base_url}/import")
    await page.get_by_label("File to import").set_input_files(STATEMENT)
    await page.get_by_role("button", name="Check the file").click()
    await page.locator(".preview").wait_for()
    await page.screenshot(path=target)


async def photograph(base_url: str) -> list[Path]:
    saved = []
    async with chromium() as browser:
        for device, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            context = await browser.new_context(
                viewport=viewport, locale="en-GB", is_mobile=device == "phone"
            )
            page = await context.new_page()
            await page.goto(f"{base_url}/login")
            await page.screenshot(path=OUT / f"login-{device}.png")
            saved.append(OUT / f"login-{device}.png")
            await page.get_by_role("button", name="Sign in to the demo account").click()
            await page.wait_for_url(f"{base_url}/")
            if device == "desktop":
                await prepare(page, base_url)
            for name, path in PAGES.items():
                if name == "login":
                    continue
                await page.goto(f"{base_url}{path}")
                await page.wait_for_load_state("networkidle")
                target = OUT / f"{name}-{device}.png"
                await page.screenshot(path=target)
                saved.append(target)
            target = OUT / f"import-preview-{device}.png"
            await photograph_import_preview(page, base_url, target)
            saved.append(target)
            await context.close()
    return saved


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as folder:
        env = clean_env(EXPENSETRACKER_RATE_LIMIT="off")
        args = cli("up", "--demo", "--data-dir", folder, "--port", str(free_port()))
        with spawn(args, env) as server:
            base_url = server.wait_ready(timeout=120)
            for path in asyncio.run(photograph(base_url)):
                print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
