"""The web app in a real browser (Debian's Chromium, driven by Playwright), against `serve`
over real HTTP: the journey of issue 12, axe-core on every page, the keyboard, a phone's
screen, scripts turned off, and the weight of the first load."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from tests.helpers.browser import (
    DESKTOP,
    PHONE,
    chromium,
    serious_accessibility_problems,
    sign_in,
    web_server,
)
from tests.helpers.paths import STATEMENTS
from tests.helpers.users import PASSWORD, login, register
from tests.helpers.web import PAGES

pytestmark = [pytest.mark.database, pytest.mark.browser]

FIRST_LOAD_BUDGET_BYTES = 150 * 1024
HEADER = "occurred_on,amount,currency,description,notes,merchant,category,tags,external_id\n"


@pytest.fixture(scope="module")
def base_url(module_database_url: str) -> Iterator[str]:
    with web_server(module_database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport=DESKTOP, locale="en-GB", accept_downloads=True)
    yield context
    await context.close()


async def new_account(base_url: str, expenses: int = 0) -> tuple[str, str]:
    """An account made through the public API, with ``expenses`` imported (for long lists)."""
    email = f"browser-{uuid.uuid4().hex[:10]}@example.org"
    async with httpx.AsyncClient(base_url=base_url) as api:
        await register(api, email)
        if expenses:
            account = await login(api, email)
            rows = "".join(
                f"2026-{month:02d}-{day:02d},{n}.25,EUR,{'Shop' if n % 3 else 'Market'} {n},,,,,\n"
                for n in range(expenses)
                for month, day in [((n % 10) + 1, (n % 27) + 1)]
            )
            response = await api.post(
                "/api/v1/expenses/import",
                content=(HEADER + rows).encode(),
                headers={**account.headers, "content-type": "text/csv"},
            )
            assert response.status_code == 201, response.text
    return email, PASSWORD


def watch_csp(page: Page) -> list[str]:
    """Every Content-Security-Policy violation the page reports."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return violations


async def fill_expense(form: Page | Locator, description: str, amount: str) -> None:
    """Types an expense in euros into the quick-add form, on its page or in its dialog."""
    await form.get_by_label("Description").fill(description)
    await form.get_by_label("Amount").fill(amount)
    await form.get_by_label("Currency", exact=True).fill("EUR")


async def expense_rows(page: Page) -> int:
    return await page.locator("#expense-rows > tr:not(.more):not(.empty)").count()


async def test_the_journey(context: BrowserContext, base_url: str, tmp_path: Path) -> None:
    page = await context.new_page()
    csp_violations = watch_csp(page)
    problems: dict[str, list[str]] = {}

    async def audit(name: str) -> None:
        found = await serious_accessibility_problems(page)
        if found:
            problems[name] = found

    # 1. Sign up (which signs in), with the keyboard.
    email = f"journey-{uuid.uuid4().hex[:10]}@example.org"
    await page.goto(f"{base_url}/signup")
    await audit("signup")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Your name (optional)").fill("Journey")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{base_url}/")
    await expect(page.get_by_role("heading", name="Hello, Journey")).to_be_visible()
    await audit("dashboard (empty)")

    # 2. Quick-add from the keyboard; a double-clicked submit makes exactly one expense.
    await page.keyboard.press("n")
    dialog = page.get_by_role("dialog", name="Add an expense")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Description")).to_be_focused()
    await audit("quick-add dialog")
    await dialog.get_by_label("Description").fill("Double espresso")
    await dialog.get_by_label("Amount").fill("3.40")
    await dialog.get_by_label("Currency").fill("EUR")
    await dialog.get_by_label("Date").fill(date.today().isoformat())
    await dialog.get_by_role("button", name="Add the expense").dblclick()
    await expect(dialog.get_by_text("Added: Double espresso")).to_be_visible()
    await expect(page.locator("#announcer")).to_have_text("Expense added.")
    await dialog.get_by_role("button", name="Close").click()
    await page.goto(f"{base_url}/expenses?q=espresso")
    assert await expense_rows(page) == 1

    # 3. Filter, search and scroll past the first page (60 more expenses through the API).
    async with httpx.AsyncClient(base_url=base_url) as api:
        account = await login(api, email)
        rows = "".join(f"2026-0{n % 9 + 1}-1{n % 9},{n}.10,EUR,Item {n},,,,,\n" for n in range(60))
        await api.post(
            "/api/v1/expenses/import",
            content=(HEADER + rows).encode(),
            headers={**account.headers, "content-type": "text/csv"},
        )
    await page.goto(f"{base_url}/expenses")
    await audit("expenses")
    assert await expense_rows(page) == 50
    await page.locator("tr.more").scroll_into_view_if_needed()
    await expect(page.locator("#expense-rows > tr:not(.more)")).to_have_count(61)
    # The last page too is announced, so that a screen reader knows where the list ends.
    await expect(page.locator("#announcer")).to_have_text("61 expenses shown.")
    await page.get_by_text("Filter and search").click()
    await page.get_by_label("Text in description or notes").fill("Item 5")
    await page.get_by_label("Minimum amount").fill("50")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(re.compile(r"q=Item\+5.*min_amount=50"))
    assert await expense_rows(page) == 10  # Item 50 ... Item 59
    bookmarked = page.url
    await page.goto(bookmarked)
    assert await expense_rows(page) == 10
    await expect(page.get_by_label("Text in description or notes")).to_have_value("Item 5")

    # Inline edit and delete, in place.
    row = page.locator("#expense-rows > tr").first
    await row.get_by_role("link", name=re.compile("^Edit")).click()
    editing = page.locator("tr.editing")
    await editing.get_by_label("Description").fill("Item renamed")
    await editing.get_by_role("button", name="Save").click()
    await expect(page.locator("tr.updated")).to_contain_text("Item renamed")
    # Delete asks first, in the row: no window to dismiss.
    await page.locator("tr.updated summary", has_text="Delete").click()
    await expect(page.locator("tr.updated")).to_contain_text("Delete “Item renamed”?")
    await page.locator("tr.updated").get_by_role("button", name=re.compile("^Yes, delete")).click()
    await expect(page.locator("#announcer")).to_have_text("Expense deleted.")
    assert await expense_rows(page) == 9

    # 4. Import a file with one bad row: its line is shown, nothing saved; fixed, it imports.
    bad = HEADER + "2026-11-01,7.00,EUR,Bakery,,,,,imp-1\n2026-11-02,7.001,EUR,Bad,,,,,imp-2\n"
    good = HEADER + "2026-11-01,7.00,EUR,Bakery,,,,,imp-1\n2026-11-02,7.01,EUR,Good,,,,,imp-2\n"
    (tmp_path / "bad.csv").write_text(bad)
    (tmp_path / "good.csv").write_text(good)
    await page.goto(f"{base_url}/import")
    await audit("import")
    await page.get_by_label("File to import").set_input_files(tmp_path / "bad.csv")
    await page.get_by_role("button", name="Check the file").click()
    errors = page.get_by_role("table", name="Rows to fix (nothing has been saved)")
    await expect(errors).to_contain_text("3")
    await expect(errors).to_contain_text("amount")
    await audit("import (refused)")
    await page.goto(f"{base_url}/expenses?q=Bakery")
    assert await expense_rows(page) == 0
    await page.goto(f"{base_url}/import")
    await page.get_by_label("File to import").set_input_files(tmp_path / "good.csv")
    await page.get_by_role("button", name="Check the file").click()
    await expect(page.get_by_text("2 will be added")).to_be_visible()
    added = page.get_by_role("table", name="To be added")
    await expect(added.get_by_role("row")).to_have_count(3)  # the header and the two rows
    await expect(added).to_contain_text("Bakery")
    await expect(added).to_contain_text("Good")
    await audit("import (preview)")
    await page.get_by_role("button", name="Import 2 expenses").click()
    await expect(page.get_by_text("Imported: 2 new expenses")).to_be_visible()

    # 5. A budget pushed over its limit: on the dashboard, and in the reports (chart and table).
    await page.goto(f"{base_url}/budgets")
    await page.get_by_label("Name", exact=True).fill("Coffee")
    await page.get_by_label("Monthly limit").fill("5.00")
    await page.get_by_label("Currency", exact=True).fill("EUR")
    await page.get_by_role("button", name="Add the budget").click()
    await expect(page.locator(".budget", has_text="Coffee")).to_contain_text("On track")
    await audit("budgets")
    await page.keyboard.press("n")  # 3.40 + 2.50 > 5.00
    await dialog.get_by_label("Description").fill("Cake")
    await dialog.get_by_label("Amount").fill("2.50")
    await dialog.get_by_label("Currency").fill("EUR")
    await dialog.get_by_label("Date").fill(date.today().isoformat())
    await dialog.get_by_role("button", name="Add the expense").click()
    await expect(dialog.get_by_text("Added: Cake")).to_be_visible()
    await dialog.get_by_role("button", name="Close").click()
    await page.goto(f"{base_url}/")
    await expect(page.locator(".budget.state-over")).to_contain_text("Coffee")
    await expect(page.locator("figure.chart canvas").first).to_be_visible()
    await audit("dashboard")
    await page.goto(f"{base_url}/reports")
    category_figure = page.locator("figure[data-table=by-category]")
    await expect(category_figure.locator("canvas")).to_have_count(1)
    await expect(category_figure.get_by_role("table")).to_contain_text("€")
    await audit("reports")
    for name in ("/categories", "/recurring", "/account"):
        await page.goto(f"{base_url}{name}")
        await audit(name)

    # 6. Export.
    await page.goto(f"{base_url}/import")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="download CSV").click()
    exported = (await (await download.value).path()).read_text()
    assert exported.startswith("occurred_on,") and "Double espresso" in exported
    # The header, two quick-adds, 60 items less the deleted one, and the two imported.
    assert exported.count("\n") == 1 + 2 + 60 - 1 + 2

    # 7. Change the password, sign out everywhere, delete the account.
    new_password = "a new and long passphrase"
    await page.goto(f"{base_url}/account")
    await page.get_by_label("Current password").fill(PASSWORD)
    await page.get_by_label("New password").fill(new_password)
    await page.get_by_role("button", name="Change the password").click()
    await expect(page.get_by_text("Your password has been changed")).to_be_visible()
    await page.get_by_role("button", name="Sign out everywhere").click()
    await page.wait_for_url(re.compile(r"/login"))
    await sign_in(page, base_url, email, new_password)
    await page.goto(f"{base_url}/account")
    await page.get_by_label("Your password").fill(new_password)
    await page.get_by_label("I understand that everything will be deleted").check()
    await page.get_by_role("button", name="Delete my account").click()
    await expect(
        page.get_by_text("Your account and all its data have been deleted")
    ).to_be_visible()
    await audit("login (after deletion)")
    async with httpx.AsyncClient(base_url=base_url) as api:
        gone = await api.post("/api/v1/auth/login", json={"email": email, "password": new_password})
        assert gone.status_code == 401

    assert problems == {}, problems
    assert csp_violations == []


async def test_a_phone_screen_has_no_sideways_scrolling_and_no_accessibility_problems(
    browser: Browser, base_url: str
) -> None:
    email, password = await new_account(base_url, expenses=30)
    # This month in three currencies, with big amounts: the widest tables the pages can show.
    async with httpx.AsyncClient(base_url=base_url) as api:
        account = await login(api, email)
        listed = await api.get("/api/v1/categories", headers=account.headers)
        category = listed.json()["items"][0]["id"]
        for amount, currency in (("999999999.99", "EUR"), ("1500000", "JPY"), ("1234.567", "KWD")):
            expense = {
                "amount": amount,
                "currency": currency,
                "occurred_on": date.today().isoformat(),
                "description": f"Something bought in {currency}",
                "merchant": "A merchant with a rather long name",
                "category_id": category,
            }
            created = await api.post("/api/v1/expenses", json=expense, headers=account.headers)
            assert created.status_code == 201, created.text
        # A description with no space to break at, on the dashboard's latest and in the list.
        unbroken = {**expense, "description": "=HYPERLINK(" + "x" * 60 + ")"}
        created = await api.post("/api/v1/expenses", json=unbroken, headers=account.headers)
        assert created.status_code == 201, created.text
        # A recurring expense: its table's row actions hold hidden labels.
        monthly = {**expense, "frequency": "monthly", "starts_on": date.today().isoformat()}
        del monthly["occurred_on"]
        created = await api.post(
            "/api/v1/expenses/recurring", json=monthly, headers=account.headers
        )
        assert created.status_code == 201, created.text
        # Names with no space to break at, as long as the API takes them: a category's (in every
        # category select), a budget's (beside its badge), a rule's pattern.
        long_names = (
            ("/api/v1/categories", {"name": "C" * 50}),
            ("/api/v1/budgets", {"name": "B" * 100, "amount": "10", "currency": "EUR"}),
            ("/api/v1/expenses/rules", {"field": "any", "pattern": "P" * 200, "tags": ["t"]}),
        )
        for path, body in long_names:
            created = await api.post(path, json=body, headers=account.headers)
            assert created.status_code == 201, created.text
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/expenses")
    first = await page.locator("#expense-rows > tr").first.get_attribute("id")
    expense_edit = f"/expenses/{first.removeprefix('expense-')}/edit"
    await page.goto(f"{base_url}/budgets")
    budget_edit = await page.locator("a[href$='/edit']").first.get_attribute("href")
    converted = ("/?in=home", "/reports?in=home")
    for path in (*PAGES, *converted, expense_edit, budget_edit, "/no-such-page"):
        await page.goto(f"{base_url}{path}")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width} px wide"
        assert await serious_accessibility_problems(page) == [], path
    await context.close()


async def test_the_keyboard_alone_reaches_everything_and_focus_is_visible(
    context: BrowserContext, base_url: str
) -> None:
    email, password = await new_account(base_url, expenses=3)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/expenses")
    seen: list[str] = []
    for _ in range(40):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            """() => {
                const el = document.activeElement;
                if (el === document.body) return [null, true];  // past the last, before the first
                const style = getComputedStyle(el);
                return [el.textContent.trim().slice(0, 30) || el.getAttribute('name') || el.id,
                        style.outlineStyle !== 'none' && style.outlineWidth !== '0px'];
            }"""
        )
        assert focused[1], f"no visible focus on {focused[0]!r}"
        if focused[0] is not None:
            seen.append(focused[0])
    assert "Skip to content" in seen
    assert "Add expense" in seen
    assert any(label.startswith("Edit") for label in seen)
    # The quick-add link is a button once the script runs: it opens the dialog with Enter and
    # with Space, and Escape closes it.
    for key in ("Enter", " "):
        await page.get_by_role("button", name="Add expense").focus()
        await page.keyboard.press(key)
        await expect(page.get_by_role("dialog")).to_be_visible()
        await page.keyboard.press("Escape")
        await expect(page.get_by_role("dialog")).to_be_hidden()
    # A delete's question opens with Enter and, like a dialog, closes with Escape, focus back on
    # the "Delete" that opened it.
    question = page.locator("#expense-rows details.confirm").first
    await question.locator("summary").focus()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await expect(question.get_by_role("button", name=re.compile("^Yes, delete"))).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(question).not_to_have_attribute("open", "")
    await expect(question.locator("summary")).to_be_focused()


async def focus_moves_to(page: Page, name: str, row: str | None = None) -> None:
    """Waits until the focused element's name (or text) starts with ``name``, in the table row
    ``row`` when given: focus moves once a partial update has settled."""
    await page.wait_for_function(
        """([name, row]) => {
            const el = document.activeElement;
            if (!el || el === document.body) return false;
            const label = el.getAttribute("name") || el.textContent.trim();
            return label.startsWith(name) && (row === null || el.closest("tr")?.id === row);
        }""",
        arg=[name, row],
        timeout=5000,
    )


async def test_focus_stays_where_the_work_is_after_each_partial_update(
    context: BrowserContext, base_url: str
) -> None:
    email, password = await new_account(base_url, expenses=55)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/expenses")
    rows = page.locator("#expense-rows > tr:not(.more)")
    first, second = await rows.nth(0).get_attribute("id"), await rows.nth(1).get_attribute("id")
    announcer = page.locator("#announcer")
    # Edit opens with focus in the form; Escape gives the row back, with focus on its Edit.
    await page.locator(f"#{first} a", has_text="Edit").focus()
    await page.keyboard.press("Enter")
    await focus_moves_to(page, "description", row=first)
    await page.keyboard.press("Escape")
    await focus_moves_to(page, "Edit", row=first)
    # Saved with Enter: said, and focus back on the row's Edit.
    await page.keyboard.press("Enter")
    await focus_moves_to(page, "description", row=first)
    await page.keyboard.type(" (edited)")
    await page.keyboard.press("Enter")
    await expect(announcer).to_have_text("Expense saved.")
    await focus_moves_to(page, "Edit", row=first)
    await expect(page.locator(f"#{first}")).to_contain_text("(edited)")
    # Deleted, asked first: focus on the next row's Edit.
    await page.locator(f"#{first} summary", has_text="Delete").focus()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await focus_moves_to(page, "Yes, delete", row=first)
    await page.keyboard.press("Enter")
    await expect(announcer).to_have_text("Expense deleted.")
    await focus_moves_to(page, "Edit", row=second)
    # The next page loads where the keyboard is: focus on its first new row.
    await page.get_by_role("link", name="More expenses").focus()
    await expect(rows).to_have_count(54)
    await focus_moves_to(page, "Edit", row=await rows.nth(49).get_attribute("id"))
    # Quick-add: after saving, focus on "Add another"; then in the new form. An inline edit not
    # saved yet is kept, not reloaded away.
    await page.locator(f"#{second} a", has_text="Edit").focus()
    await page.keyboard.press("Enter")
    await focus_moves_to(page, "description", row=second)
    await page.keyboard.type(" unsaved")
    await page.get_by_role("button", name="Add expense").click()
    dialog = page.get_by_role("dialog")
    await fill_expense(dialog, "Focus test", "2.00")
    await dialog.get_by_label("Amount").press("Enter")
    await expect(announcer).to_have_text("Expense added.")
    await focus_moves_to(page, "Add another")
    await page.keyboard.press("Enter")
    await expect(dialog.get_by_label("Description")).to_be_focused()
    await page.keyboard.press("Escape")
    assert "unsaved" in await page.locator(f"#{second} [name=description]").input_value()
    # On the add page itself, "n" goes to its form instead of opening a copy of it.
    await page.goto(f"{base_url}/expenses/new")
    await page.keyboard.press("n")
    await focus_moves_to(page, "description")
    await expect(page.get_by_role("dialog")).to_be_hidden()
    ids = await page.evaluate("[...document.querySelectorAll('[id]')].map((e) => e.id)")
    assert len(ids) == len(set(ids))


async def test_a_form_refused_in_place_puts_focus_on_the_field_with_the_problem(
    context: BrowserContext, base_url: str
) -> None:
    """The quick-add and an inline edit, refused: focus on the field the problem is at, what was
    typed kept; sent with a click on the button (which is disabled while it is sent), the focus
    still follows the answer instead of falling to the page itself."""
    email, password = await new_account(base_url, expenses=1)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/expenses")
    await page.get_by_role("button", name="Add expense").click()
    dialog = page.get_by_role("dialog")
    await fill_expense(dialog, "Lunch ☕", "1e3")
    await dialog.get_by_label("Merchant").fill("Café")
    await dialog.get_by_role("button", name="Add the expense").click()
    amount = dialog.get_by_label("Amount")
    await expect(amount).to_have_attribute("aria-invalid", "true")
    await expect(amount).to_be_focused()
    await expect(amount).to_have_value("1e3")
    await expect(dialog.get_by_label("Description")).to_have_value("Lunch ☕")
    # In the merchant field, Enter sends the form: focus goes to the problem all the same.
    await dialog.get_by_label("Date").fill("1960-01-01")
    await amount.fill("12.50")
    await dialog.get_by_label("Merchant").press("Enter")
    day = dialog.get_by_label("Date")
    await expect(day).to_have_attribute("aria-invalid", "true")
    await expect(day).to_be_focused()
    await day.fill(date.today().isoformat())
    await dialog.get_by_role("button", name="Add the expense").click()
    await expect(page.locator("#announcer")).to_have_text("Expense added.")
    await focus_moves_to(page, "Add another")
    await page.keyboard.press("Escape")
    # An inline edit refused: focus on its amount, not on its first field.
    row = page.locator("#expense-rows > tr", has_text="Market 0")
    row_id = await row.get_attribute("id")
    await row.get_by_role("link", name=re.compile("^Edit")).click()
    await focus_moves_to(page, "description", row=row_id)
    editing = page.locator(f"#{row_id}")
    await editing.get_by_label("Amount").fill("abc")
    await editing.get_by_role("button", name="Save").click()
    await expect(editing.get_by_label("Amount")).to_have_attribute("aria-invalid", "true")
    await expect(editing.get_by_label("Amount")).to_be_focused()


async def test_the_empty_list_says_so_until_an_expense_is_added_in_the_dialog(
    context: BrowserContext, base_url: str
) -> None:
    """A new person's list says it is empty; the first expense added in the dialog reloads the
    list, which then shows that expense and no longer says it has none."""
    email, password = await new_account(base_url)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/expenses")
    empty = page.get_by_text("No expenses.")
    await expect(empty).to_be_visible()
    await page.get_by_role("button", name="Add expense").click()
    dialog = page.get_by_role("dialog")
    await fill_expense(dialog, "The first one", "4.20")
    await dialog.get_by_role("button", name="Add the expense").click()
    await expect(page.locator("#expense-rows > tr", has_text="The first one")).to_have_count(1)
    await expect(empty).to_have_count(0)
    await expect(page.locator("#announcer")).to_have_text("Expense added.")
    await page.keyboard.press("Escape")
    await expect(empty).to_have_count(0)


async def test_the_dashboard_shows_the_first_expense_added_in_its_dialog(
    context: BrowserContext, base_url: str
) -> None:
    """A new person's dashboard says there are no expenses yet; the first expense added in the
    dialog opened there reloads the latest expenses, which then show it instead. The dialog,
    closed, gives focus to them: the link that opened it is gone."""
    email, password = await new_account(base_url)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    latest = page.get_by_role("region", name="Latest expenses")
    empty = latest.get_by_text("No expenses yet.")
    await expect(empty).to_be_visible()
    await latest.get_by_role("button", name="Add the first one").click()
    dialog = page.get_by_role("dialog")
    await fill_expense(dialog, "The first one", "4.20")
    await dialog.get_by_role("button", name="Add the expense").click()
    await expect(page.locator("#announcer")).to_have_text("Expense added.")
    await expect(latest.get_by_role("cell", name="The first one")).to_be_visible()
    await expect(empty).to_have_count(0)
    await page.keyboard.press("Escape")
    await expect(empty).to_have_count(0)
    await expect(latest.get_by_role("link", name="All expenses")).to_be_focused()


async def signed_in_with_a_budget(context: BrowserContext, base_url: str) -> Page:
    """A new account's page, on /budgets after adding "Pocket money", 10 euros a month."""
    email, password = await new_account(base_url)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/budgets")
    await page.get_by_label("Name").fill("Pocket money")
    await page.get_by_label("Monthly limit").fill("10")
    await page.get_by_label("Currency", exact=True).fill("EUR")
    await page.get_by_role("button", name="Add the budget").click()
    return page


async def test_an_expense_added_in_the_dashboards_dialog_counts_in_its_month_budgets_and_trend(
    context: BrowserContext, base_url: str
) -> None:
    """The month by category, the budgets next to it and the trend are reloaded with the
    latest expenses: the expense just added shows in all, not in one while the others stay as
    they were."""
    page = await signed_in_with_a_budget(context, base_url)
    await page.goto(f"{base_url}/")
    month = page.locator("section[aria-labelledby=month-title]")
    budgets = page.get_by_role("region", name="Budgets this month")
    await expect(month).to_contain_text("Nothing spent this month yet.")
    await expect(budgets).to_contain_text("€0.00 of €10.00")
    await page.get_by_role("button", name="Add expense").click()
    dialog = page.get_by_role("dialog")
    await fill_expense(dialog, "Sweets", "4.20")
    await dialog.get_by_role("button", name="Add the expense").click()
    await expect(page.get_by_role("region", name="Latest expenses")).to_contain_text("Sweets")
    await expect(month).to_contain_text("€4.20")
    await expect(budgets).to_contain_text("€4.20 of €10.00")
    this_month = page.locator("#trend-table tbody tr").last
    await expect(this_month).to_contain_text("€4.20")
    await expect(page.locator("figure[data-table=trend-table] canvas")).to_have_count(1)
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("button", name="Add expense")).to_be_focused()
    # Opened with "n" from inside what reloads: focus comes back there, not to the page's top.
    manage = page.get_by_role("link", name="Manage budgets")
    await manage.focus()
    await page.keyboard.press("n")
    await fill_expense(dialog, "More sweets", "1.00")
    await dialog.get_by_role("button", name="Add the expense").click()
    await expect(budgets).to_contain_text("€5.20 of €10.00")
    await page.keyboard.press("Escape")
    await expect(manage).to_be_focused()


async def test_an_expense_added_in_the_dialog_on_the_budgets_page_moves_its_budget(
    context: BrowserContext, base_url: str
) -> None:
    page = await signed_in_with_a_budget(context, base_url)
    status = page.locator("section[aria-labelledby=status-title]")
    await expect(status).to_contain_text("€0.00 of €10.00")
    await page.get_by_role("button", name="Add expense").click()
    dialog = page.get_by_role("dialog")
    await fill_expense(dialog, "Sweets", "4.20")
    await dialog.get_by_role("button", name="Add the expense").click()
    await expect(page.locator("#announcer")).to_have_text("Expense added.")
    await expect(status).to_contain_text("€4.20 of €10.00")


async def test_an_expense_added_in_the_dialog_shows_in_the_reports_and_the_tags(
    context: BrowserContext, base_url: str
) -> None:
    """The reports and the list of tags stayed as they were until the page was loaded again."""
    email, password = await new_account(base_url)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    dialog = page.get_by_role("dialog")

    async def add_in_the_dialog(tag: str) -> None:
        await page.get_by_role("button", name="Add expense").click()
        await fill_expense(dialog, "Sweets", "4.20")
        await dialog.get_by_label("Tags").fill(tag)
        await dialog.get_by_role("button", name="Add the expense").click()
        await expect(page.locator("#announcer")).to_have_text("Expense added.")
        await page.keyboard.press("Escape")

    await page.goto(f"{base_url}/reports")
    by_tag = page.get_by_role("region", name="By tag", exact=True)
    await expect(by_tag).not_to_contain_text("treats")
    await add_in_the_dialog("treats")
    await expect(by_tag).to_contain_text("treats")
    await expect(page.locator("figure[data-table=by-tag] canvas")).to_have_count(1)
    await page.goto(f"{base_url}/categories")
    tags = page.get_by_role("region", name="Tags", exact=True)
    await expect(tags).to_contain_text("treats")
    await add_in_the_dialog("gifts")
    await expect(tags).to_contain_text("gifts")


async def test_deleting_the_last_row_in_place_says_the_list_is_empty(
    context: BrowserContext, base_url: str
) -> None:
    """The last row deleted in place leaves the list saying what the page would say reloaded:
    "No expenses match these filters." in a filtered list, "No expenses." once none is left."""
    email, password = await new_account(base_url, expenses=2)  # "Market 0" and "Shop 1"
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    rows = page.locator("#expense-rows > tr")
    for place, name, said in [
        ("?q=Market", "Market 0", "No expenses match these filters."),
        ("", "Shop 1", "No expenses."),
    ]:
        await page.goto(f"{base_url}/expenses{place}")
        await expect(rows).to_have_count(1)
        row = rows.filter(has_text=name)
        await row.locator("summary", has_text="Delete").click()
        await row.get_by_role("button", name=re.compile("^Yes, delete")).click()
        await expect(page.locator("#announcer")).to_have_text("Expense deleted.")
        await expect(rows).to_have_text([said])
        await expect(rows).to_have_class(["empty"])


async def test_with_scripts_off_signing_in_listing_adding_and_deleting_work(
    browser: Browser, base_url: str
) -> None:
    email, password = await new_account(base_url, expenses=55)
    context = await browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/expenses")
    assert await page.locator("#expense-rows > tr:not(.more)").count() == 50
    await page.get_by_role("link", name="More expenses").click()
    assert await page.locator("#expense-rows > tr:not(.more)").count() == 5
    # Without the script the quick-add is the link it is in the HTML, to the form's own page.
    await page.get_by_role("link", name="Add expense").click()
    await page.wait_for_url(f"{base_url}/expenses/new")
    await fill_expense(page, "No script needed", "1.00")
    await page.get_by_role("button", name="Add the expense").click()
    await page.wait_for_url(f"{base_url}/expenses?added=1")
    await expect(page.get_by_role("status").first).to_have_text("Expense added.")
    row = page.locator("tr", has_text="No script needed")
    await row.locator("summary", has_text="Delete").click()  # asks first, without scripts too
    await row.get_by_role("button", name=re.compile("^Yes, delete")).click()
    await page.wait_for_url(f"{base_url}/expenses?done=deleted")
    await expect(page.get_by_role("status").first).to_have_text("Expense deleted.")
    await expect(page.locator("tr", has_text="No script needed")).to_have_count(0)
    await context.close()


async def test_with_scripts_off_a_refused_form_leads_to_its_fields(
    browser: Browser, base_url: str
) -> None:
    """Without scripts a refused form is a new page: its error summary has focus (not the top
    of the page), the title says Error, and each of its links puts focus in the field it names.
    With scripts, a form that posts without htmx alike, and axe finds no serious problem."""
    email, password = await new_account(base_url)
    context = await browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/expenses/new")
    await fill_expense(page, "Lunch", "1e3")
    await page.get_by_label("Date").fill("1960-01-01")
    await page.get_by_role("button", name="Add the expense").click()
    await expect(page).to_have_title(re.compile("^Error: Add an expense"))
    summary = page.get_by_role("alert")
    await expect(summary).to_be_focused()
    links = summary.get_by_role("link")
    await expect(links).to_have_count(2)
    await expect(links.first).to_have_text(re.compile("^Amount: "))
    await expect(links.last).to_have_text(re.compile("^Date: "))
    await page.keyboard.press("Tab")
    await expect(links.first).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Amount")).to_be_focused()
    await expect(page.get_by_label("Amount")).to_have_value("1e3")
    await links.last.click()
    await expect(page.get_by_label("Date")).to_be_focused()
    await context.close()
    # Another kind of form (a rate of one's own), with and without scripts.
    for scripts in (False, True):
        context = await browser.new_context(viewport=DESKTOP, java_script_enabled=scripts)
        page = await context.new_page()
        await sign_in(page, base_url, email, password)
        await page.goto(f"{base_url}/rates")
        rate = page.get_by_role("textbox", name="Rate")
        await page.get_by_label("Day").fill("2026-01-02")
        await page.get_by_label("From", exact=True).fill("USD")
        await page.get_by_label("To", exact=True).fill("EUR")
        await rate.fill("many")
        await page.get_by_role("button", name="Save the rate").click()
        await expect(page).to_have_title(re.compile("^Error: Exchange rates"))
        await expect(page.get_by_role("alert")).to_be_focused()
        if scripts:  # axe-core needs them
            assert await serious_accessibility_problems(page) == []
        await page.get_by_role("alert").get_by_role("link", name=re.compile("^Rate: ")).click()
        await expect(rate).to_be_focused()
        await context.close()


async def test_a_refused_delete_with_scripts_shows_the_page_once(
    context: BrowserContext, base_url: str
) -> None:
    """A delete posted in place and refused (here a category's "move to" choice edited to one
    that is not the person's) brings its page with the problem instead of this one, never a
    second page inside the confirm form: its question open, the choice kept, the problem at it."""
    email, password = await new_account(base_url)
    page = await context.new_page()
    await sign_in(page, base_url, email, password)
    await page.goto(f"{base_url}/categories")
    category = page.locator("details.category").first
    await category.locator("summary").first.click()
    confirm = category.locator("details.confirm")
    await confirm.locator("summary").click()
    await confirm.locator("select[name=move_to]").evaluate(
        "select => { const other = new Option('', '00000000-0000-0000-0000-000000000000');"
        " select.append(other); select.value = other.value; }"
    )
    async with page.expect_response(re.compile(r"/delete$")) as answer:
        await confirm.get_by_role("button", name=re.compile("^Yes, delete")).click()
    assert (await answer.value).status == 422
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.locator("header.site-header")).to_have_count(1)
    await expect(page.locator("h1")).to_have_count(1)
    asked = page.locator("details.confirm[open]")
    await expect(asked.locator("select[name=move_to]")).to_have_value(
        "00000000-0000-0000-0000-000000000000"
    )
    await expect(asked.locator("p.error")).to_have_text("Not another of your categories.")
    await expect(asked.locator("p.error")).to_be_visible()


async def test_no_inline_script_runs(context: BrowserContext, base_url: str) -> None:
    page = await context.new_page()
    violations = watch_csp(page)
    await page.goto(f"{base_url}/login")
    with pytest.raises(Exception, match=r"Content Security Policy|inline"):
        await page.add_script_tag(content="window.injected = true;")
    await page.evaluate(
        "() => { const b = document.createElement('button'); b.id = 'x';"
        " b.setAttribute('onclick', 'window.clicked = true'); document.body.append(b); }"
    )
    await page.click("#x")
    assert await page.evaluate("() => [window.injected, window.clicked]") == [None, None]
    assert violations, "the browser reported no refused script"


async def test_the_first_load_of_the_dashboard_is_light(browser: Browser, base_url: str) -> None:
    email, password = await new_account(base_url, expenses=200)
    # Everything a browser with an empty cache fetches from the sign-in page to the drawn
    # dashboard (an upper bound: the sign-in page itself is counted too).
    fresh = await browser.new_context(viewport=DESKTOP)
    page = await fresh.new_page()
    transferred: list[tuple[str, int]] = []

    # `response` is Playwright's Response, typed here as object: its attributes (request, url)
    # go unchecked, hence the two ignores.
    async def record(response: object) -> None:
        sizes = await response.request.sizes()  # type: ignore[attr-defined]
        transferred.append(
            (response.url, sizes["responseBodySize"] + sizes["responseHeadersSize"])  # type: ignore[attr-defined]
        )

    page.on("response", record)
    await page.goto(f"{base_url}/login")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/")
    await page.wait_for_load_state("networkidle")
    await expect(page.locator("figure.chart canvas").first).to_be_visible()
    total = sum(size for _, size in transferred)
    print(f"first load of the dashboard: {total} bytes in {len(transferred)} responses")
    for url, size in transferred:
        print(f"  {size:>8}  {url}")
    assert any("chart.umd.min" in url for url, _ in transferred)
    assert total <= FIRST_LOAD_BUDGET_BYTES
    await fresh.close()


async def test_a_statement_rates_rules_and_the_home_currency_in_the_browser(
    context: BrowserContext, base_url: str
) -> None:
    """Issue 15 on the web: each new screen works, shows the API's problems next to the field,
    and has no serious accessibility problem."""
    email, password = await new_account(base_url)
    page = await context.new_page()
    csp_violations = watch_csp(page)
    await sign_in(page, base_url, email, password)
    problems: dict[str, list[str]] = {}

    async def audit(name: str) -> None:
        found = await serious_accessibility_problems(page)
        if found:
            problems[name] = found

    # The home currency, on the account page.
    await page.get_by_role("link", name="Account").click()
    await page.get_by_role("combobox", name="Home currency").fill("EUR")
    await page.get_by_role("button", name="Save the home currency").click()
    await expect(page.get_by_role("status").first).to_have_text("Your home currency is saved.")
    await audit("account")

    # A bank statement, detected, previewed (credits counted), then imported whole.
    await page.get_by_role("link", name="Import & export").click()
    await page.get_by_label("File to import").set_input_files(STATEMENTS / "checking.ofx")
    await expect(page.get_by_label("Format")).to_have_value("")
    await page.get_by_role("button", name="Check the file").click()
    preview = page.locator(".preview")
    await expect(preview).to_contain_text("Read as OFX / QFX. 3 payments read: 3 will be added.")
    await expect(preview).to_contain_text("1 credit (money coming in) will be skipped")
    await expect(preview.get_by_role("table", name="To be added")).to_contain_text("Tokyo Ramen")
    skipped = preview.get_by_role("table", name="Skipped as not spending")
    await expect(skipped).to_contain_text("money coming in")
    await audit("import (statement preview)")
    other = await context.new_page()  # nothing is saved before the confirmation
    await other.goto(f"{base_url}/expenses")
    assert await expense_rows(other) == 0
    await other.close()
    await page.get_by_role("button", name="Import 3 expenses").click()
    await expect(page.get_by_text("Imported: 3 new expenses")).to_be_visible()
    await page.goto(f"{base_url}/expenses")
    assert await expense_rows(page) == 3

    # A rate of their own: a bad one is refused next to its field, then one is saved.
    await page.get_by_role("link", name="Rates").click()
    await page.get_by_label("From", exact=True).fill("JPY")
    await page.get_by_label("To", exact=True).fill("EUR")
    await page.get_by_label("Rate", exact=True).fill("0,00x")
    await page.get_by_label("Day").fill("2026-03-05")
    await page.get_by_role("button", name="Save the rate").click()
    rate = page.get_by_label("Rate", exact=True)
    await expect(rate).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#rate-rate-error")).to_be_visible()
    await expect(rate).to_have_value("0,00x")
    await audit("rates (refused)")
    await rate.fill("0.0062")
    await page.get_by_role("button", name="Save the rate").click()
    await expect(page.get_by_role("row", name=re.compile("1 JPY → EUR"))).to_contain_text("Yours")
    await audit("rates")

    # The converted view: totals in EUR, each saying how it was made, chart and table.
    await page.goto(f"{base_url}/reports?from=2026-03-01&to=2026-03-31")
    await page.get_by_role("link", name="In my home currency").click()
    await page.wait_for_url(re.compile(r"in=home"))
    await expect(page.get_by_text("In all: €71.79")).to_be_visible()  # 12.50 + 49.99 + 9.30
    table = page.locator("#by-month")
    await expect(table).to_contain_text(
        "2 already in EUR; 1 at an exchange rate (oldest 5 Mar 2026)"
    )
    await expect(page.locator("figure[data-table=by-month] canvas")).to_have_count(1)
    await audit("reports (home currency)")
    await page.goto(f"{base_url}/?in=home")
    await expect(page.get_by_role("link", name="In my home currency")).to_have_attribute(
        "aria-current", "page"
    )
    await audit("dashboard (home currency)")

    # A rule, previewed over the existing expenses, then applied.
    await page.get_by_role("link", name="Rules").click()
    await page.get_by_label("Look at").select_option("merchant")
    await page.get_by_label("Pattern").fill("ramen")
    await page.get_by_label("Add tags").fill("food, travel")
    await page.get_by_role("button", name="Add the rule").click()
    await expect(page.locator("ol.rules")).to_contain_text("Merchant contains “ramen”")
    await audit("rules")
    await page.get_by_role("link", name="Edit the rule").click()
    await expect(page.get_by_label("Pattern")).to_have_value("ramen")
    await audit("rule edit")
    await page.get_by_label("Add tags").fill("food, travel, japan")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("ol.rules")).to_contain_text("japan")
    await page.get_by_role("button", name="Apply to my existing expenses").click()
    await expect(page.locator(".preview")).to_contain_text(
        "1 uncategorised expense would be changed. Nothing has changed yet."
    )
    await audit("rules (preview)")
    await page.get_by_role("button", name="Apply to 1 expense").click()
    await expect(page.get_by_text("1 expense changed.")).to_be_visible()
    await page.goto(f"{base_url}/expenses?tag=travel")
    assert await expense_rows(page) == 1

    assert problems == {}
    assert csp_violations == []
