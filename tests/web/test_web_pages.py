"""The web app over HTTP, without JavaScript: what a browser with scripts off gets, and what an
attacker's requests get. The browser tests (test_web_browser.py) cover the rest."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
from markupsafe import escape

from expensetracker.expenses.models import idempotency_keys
from expensetracker.platform.config import Settings
from expensetracker.platform.idempotency import lock_scope
from expensetracker.targets import resolve_targets
from expensetracker.web import routes, views
from expensetracker.web.session import CSRF_COOKIE
from tests.helpers.apps import AppFactory, app_of
from tests.helpers.database import connected
from tests.helpers.paths import STATEMENTS
from tests.helpers.processes import http_server
from tests.helpers.web import (
    PAGES,
    SESSION_KEY,
    Person,
    csrf_token,
    idempotency_key,
    signed_up_person,
)

pytestmark = pytest.mark.database

STATIC = Path(views.__file__).with_name("static")
_ROW_ID = re.compile(r'<tr id="expense-([0-9a-f-]{36})"')


@pytest.fixture
async def web(serve_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(
        resolve_targets("all"), base_url="https://testserver", web_session_key=SESSION_KEY
    ) as client:
        yield client


def expense_ids(html: str) -> list[str]:
    return _ROW_ID.findall(html)


def table_of(html: str, caption: str) -> str:
    """The table whose caption starts with ``caption``, from its caption to its end."""
    match = re.search(rf"<caption[^>]*>{re.escape(caption)}.*?</table>", html, re.DOTALL)
    assert match, f"no table {caption!r}"
    return match.group(0)


async def added_category(person: Person, name: str) -> str:
    """Adds a category through its page; its id, from the expense filter's choices."""
    await person.submit("/categories", "/categories", {"name": name})
    choice = rf'<option value="([0-9a-f-]{{36}})"[^>]*>{re.escape(escape(name))}</option>'
    return re.search(choice, (await person.client.get("/expenses")).text).group(1)


async def added_budget(person: Person, **fields: str) -> None:
    """Adds a budget of 10 euros a month through its page."""
    form = (await person.client.get("/budgets")).text
    budget = {"idempotency_key": idempotency_key(form), "amount": "10.00", "currency": "EUR"}
    created = await person.submit("/budgets", "/budgets", {**budget, **fields})
    assert created.status_code == 303, created.text


async def test_signing_in_sets_a_hardened_session_cookie(web: httpx.AsyncClient) -> None:
    person = await signed_up_person(web)
    web.cookies.clear()
    response = await person.submit(
        "/login", "/login", {"email": person.email, "password": person.password, "next": "/"}
    )
    assert response.status_code == 303
    cookie = next(
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith("et_session=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= flags
    # The tokens inside are sealed into one base64url string, which has no dots; a JWT that
    # showed through would bring its two. ("eyJ" alone appears in random ciphertext by chance.)
    sealed = cookie.split(";")[0].removeprefix("et_session=")
    assert re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", sealed), sealed
    assert (await web.get("/")).status_code == 200


async def test_the_csrf_cookie_lasts_as_long_as_a_session_can(web: httpx.AsyncClient) -> None:
    """A phone's browser drops cookies without an age when it is closed, and keeps its tabs: a
    form in such a tab, still signed in, would be refused as too old, and what was typed lost."""
    response = await web.get("/login")
    cookie = next(
        value for value in response.headers.get_list("set-cookie") if value.startswith("et_csrf=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    ttl = Settings.model_fields["refresh_token_ttl_seconds"].default
    assert f"max-age={ttl}" in flags
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags


async def test_every_page_has_a_strict_csp_and_no_inline_script_or_style(
    web: httpx.AsyncClient,
) -> None:
    await signed_up_person(web)
    for path in (*PAGES, "/login", "/signup", "/no-such-page"):
        response = await web.get(path)
        assert response.status_code in (200, 404), path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy, path
        assert "frame-ancestors 'none'" in policy
        html = response.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+=", html), f"inline event handler on {path}"
        assert not re.search(r"\sstyle=", html), f"inline style on {path}"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_cross_site_or_tokenless_form_post_changes_nothing(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    form = (await web.get("/expenses/new")).text
    data = {
        "csrf_token": csrf_token(form),
        "idempotency_key": idempotency_key(form),
        "description": "Forged",
        "amount": "99.00",
        "currency": "EUR",
        "occurred_on": "2026-11-02",
    }
    attempts = [
        ({"Sec-Fetch-Site": "cross-site"}, data),
        ({"Origin": "https://evil.example.net"}, data),
        ({"Sec-Fetch-Site": "same-origin"}, {**data, "csrf_token": "0" * 64}),
        ({"Sec-Fetch-Site": "same-origin"}, {k: v for k, v in data.items() if k != "csrf_token"}),
    ]
    for headers, body in attempts:
        response = await web.post("/expenses/new", data=body, headers=headers)
        assert response.status_code == 403, (headers, response.text)
        assert "another site" in response.text
    assert expense_ids((await web.get("/expenses")).text) == []
    assert (await person.add_expense(description="Mine")).status_code == 303


async def test_a_form_submitted_twice_creates_one_expense(web: httpx.AsyncClient) -> None:
    await signed_up_person(web)
    form = (await web.get("/expenses/new")).text
    data = {
        "csrf_token": csrf_token(form),
        "idempotency_key": idempotency_key(form),
        "description": "Double click",
        "amount": "4.50",
        "currency": "EUR",
        "occurred_on": "2026-11-03",
    }
    first = await web.post("/expenses/new", data=data)
    second = await web.post("/expenses/new", data=data)
    assert (first.status_code, second.status_code) == (303, 303)
    assert len(expense_ids((await web.get("/expenses")).text)) == 1
    # A new rendering of the form is a new expense.
    other = (await web.get("/expenses/new")).text
    assert idempotency_key(other) != data["idempotency_key"]
    # Sent again changed (back in the browser's history, another amount): nothing is saved,
    # the form says why and carries a new key, with which these values are added once.
    changed = await web.post("/expenses/new", data={**data, "amount": "5.00"})
    assert changed.status_code == 422 and "This form was saved before" in changed.text
    assert 'value="5.00"' in changed.text
    assert idempotency_key(changed.text) != data["idempotency_key"]
    assert len(expense_ids((await web.get("/expenses")).text)) == 1
    again = {**data, "amount": "5.00", "idempotency_key": idempotency_key(changed.text)}
    assert (await web.post("/expenses/new", data=again)).status_code == 303
    assert len(expense_ids((await web.get("/expenses")).text)) == 2


@pytest.mark.parametrize(
    "key", ["€uro", "two words", "k" * 256, ""], ids=["non-ascii", "space", "too-long", "empty"]
)
async def test_a_form_key_the_api_would_refuse_still_creates_once(
    web: httpx.AsyncClient, key: str
) -> None:
    """Only a hand-made form sends such a key (the page renders a UUID): it is not passed on as
    a header, which a non-ASCII one cannot even be; the form gets a new key instead."""
    await signed_up_person(web)
    form = (await web.get("/expenses/new")).text
    data = {
        "csrf_token": csrf_token(form),
        "idempotency_key": key,
        "description": "Hand-made form",
        "amount": "1.25",
        "currency": "EUR",
        "occurred_on": "2026-11-04",
    }
    assert (await web.post("/expenses/new", data=data)).status_code == 303
    assert len(expense_ids((await web.get("/expenses")).text)) == 1


async def test_another_users_ids_answer_not_found(web: httpx.AsyncClient) -> None:
    alice = await signed_up_person(web)
    await alice.add_expense(description="Alice's lunch")
    alice_cookies = dict(web.cookies)
    [alice_expense] = expense_ids((await web.get("/expenses")).text)
    web.cookies.clear()
    bob = await signed_up_person(web)
    for path in (f"/expenses/{alice_expense}/edit", f"/expenses/{alice_expense}/row"):
        response = await web.get(path)
        assert response.status_code == 404, path
        assert "Alice" not in response.text
    for action in (f"/expenses/{alice_expense}/delete", f"/expenses/{alice_expense}"):
        response = await bob.submit("/expenses", action, {"description": "Bob was here"})
        assert response.status_code == 404, action
    assert (await web.get("/budgets/00000000-0000-0000-0000-000000000000/edit")).status_code == 404
    web.cookies.clear()
    web.cookies.update(alice_cookies)
    page = (await web.get("/expenses")).text
    assert expense_ids(page) == [alice_expense] and "Alice&#39;s lunch" in page


@pytest.mark.parametrize("how", ["logout", "logout-all", "password"])
async def test_after_signing_out_the_old_cookie_opens_nothing(
    web: httpx.AsyncClient, how: str
) -> None:
    person = await signed_up_person(web)
    old = dict(web.cookies)
    if how == "logout":
        response = await person.submit("/", "/logout", {})
    elif how == "logout-all":
        response = await person.submit("/account", "/account/logout-all", {})
    else:
        response = await person.submit(
            "/account",
            "/account/password",
            {"current_password": person.password, "new_password": "a different passphrase 2"},
        )
        assert response.status_code == 303, response.text
        # The password change ends every *other* session: sign in again, then out.
        response = await person.submit("/", "/logout", {})
    assert response.status_code == 303
    web.cookies.clear()
    web.cookies.update(old)
    for path in PAGES:
        response = await web.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login")


async def test_a_form_sent_once_the_session_ended_leads_back_to_its_page_after_signing_in(
    web: httpx.AsyncClient,
) -> None:
    """A form's action is often no page (``/expenses/{id}``, ``/account/password``): signing in
    again leads to the page the form was on, not to an error."""
    person = await signed_up_person(web)
    await person.add_expense()
    expense = expense_ids((await web.get("/expenses")).text)[0]
    token = csrf_token((await web.get("/account")).text)
    await person.submit("/", "/logout", {})  # as "sign out everywhere" on another device
    back = {
        f"/expenses/{expense}": "/expenses",
        "/expenses/new": "/expenses/new",
        "/account/password": "/account",
        "/import/confirm": "/import",
        f"/budgets/{uuid.uuid4()}/delete": "/budgets",
        "/rules/apply/confirm": "/rules",
    }
    for action, page in back.items():
        response = await web.post(action, data={"csrf_token": token})
        assert response.status_code == 303, action
        assert response.headers["location"] == f"/login?next={quote(page, safe='')}", action
    signed_in = await web.post(
        "/login",
        data={
            "csrf_token": token,
            "email": person.email,
            "password": person.password,
            "next": "/account",
        },
    )
    assert signed_in.headers["location"] == "/account"
    for page in back.values():
        assert (await web.get(page)).status_code == 200, page


async def test_a_partial_update_asked_once_the_session_ended_leads_back_to_the_page_shown(
    web: httpx.AsyncClient,
) -> None:
    """What htmx asks for is part of a page (a row, the next rows): signing in again leads to
    the page it was asked from, not to the part alone."""
    person = await signed_up_person(web)
    await person.add_expense()
    expense = expense_ids((await web.get("/expenses")).text)[0]
    await person.submit("/", "/logout", {})
    shown = "https://testserver/expenses?q=Coffee&currency=EUR"
    for part in (f"/expenses/{expense}/row", f"/expenses/{expense}/edit", "/expenses?rows=1"):
        response = await web.get(part, headers={"HX-Request": "true", "HX-Current-URL": shown})
        assert response.headers["hx-redirect"] == "/login?next=" + quote(
            "/expenses?q=Coffee&currency=EUR", safe=""
        ), part


async def test_a_refused_sign_up_blames_the_address_not_the_name_left_empty(
    web: httpx.AsyncClient,
) -> None:
    """The optional name, left empty, is made from the address: a wrong address is said at the
    address, never as a problem of the name nobody typed."""
    page = (await web.get("/signup")).text
    for email in ("", "a" * 300 + "@example.org"):
        refused = await web.post(
            "/signup",
            data={"csrf_token": csrf_token(page), "email": email, "password": "a passphrase 9"},
            headers={"Sec-Fetch-Site": "same-origin"},
        )
        assert refused.status_code == 422, email
        assert 'id="email-error"' in refused.text, email
        assert 'id="display_name-error"' not in refused.text, email


async def test_signing_in_never_tells_whether_an_address_is_registered(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    web.cookies.clear()

    async def attempt(email: str) -> tuple[int, str]:
        response = await person.submit("/login", "/login", {"email": email, "password": "wrong!!"})
        return response.status_code, re.sub(r'value="[^"]*"', "", response.text)

    known, unknown = await attempt(person.email), await attempt("nobody@example.org")
    assert known[0] == unknown[0] == 401
    assert known[1] == unknown[1]
    assert "email address or the password is wrong" in known[1]
    # Signing up with a taken address says what a new one would, and opens nothing.
    taken = await person.submit(
        "/signup", "/signup", {"email": person.email, "password": "another passphrase 9"}
    )
    assert taken.status_code == 200
    assert "If this address was not registered yet" in taken.text
    assert "et_session" not in taken.headers.get("set-cookie", "")


async def test_a_wrong_field_is_shown_next_to_it_and_what_was_typed_stays(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    response = await person.add_expense(
        description="Kuwaiti dinar", amount="1.2345", currency="KWD"
    )
    assert response.status_code == 422
    html = response.text
    assert 'id="new-amount-error"' in html and 'aria-invalid="true"' in html
    assert 'value="Kuwaiti dinar"' in html and 'value="1.2345"' in html
    # The error summary, focused on load, links to the field and says it; the title says Error.
    assert "<title>Error: Add an expense · ExpenseTracker</title>" in html
    summary = html.split('<div class="alert error-summary" role="alert" tabindex="-1" autofocus>')
    assert len(summary) == 2 and '<a href="#new-amount">Amount: ' in summary[1].split("</div>")[0]
    assert expense_ids((await web.get("/expenses")).text) == []


async def test_money_is_exact_and_in_the_readers_locale(web: httpx.AsyncClient) -> None:
    person = await signed_up_person(web)
    for amount, currency in (("1234.5", "EUR"), ("1200", "JPY"), ("1.25", "KWD")):
        assert (await person.add_expense(amount=amount, currency=currency)).status_code == 303
    english = (await web.get("/expenses", headers={"Accept-Language": "en-GB"})).text
    german = (await web.get("/expenses", headers={"Accept-Language": "de-DE,de;q=0.9"})).text
    assert "€1,234.50" in english and "JP¥1,200" in english and "KWD1.250" in english
    assert "1.234,50\xa0€" in german and "1.200\xa0¥" in german and "1,250\xa0KWD" in german


async def test_amounts_are_read_as_people_type_them(web: httpx.AsyncClient) -> None:
    """A decimal comma, thousands separators in either style, and "1,500" yen as 1500 (a comma
    before three digits in a currency without three decimals); in dinars, "1,500" is 1.5."""
    person = await signed_up_person(web)
    typed = [
        ("12,50", "EUR", "12.50"),
        ("1,500", "jpy", "1500"),
        ("1,500", "KWD", "1.500"),
        ("1,500,000.50", "USD", "1500000.50"),
        ("1.234,56", "EUR", "1234.56"),
    ]
    for amount, currency, _ in typed:
        added = await person.add_expense(amount=amount, currency=currency)
        assert added.status_code == 303, (amount, currency, added.text)
    exported = (await web.get("/export?format=json")).json()
    stored = sorted((item["currency"], item["amount"]) for item in exported)
    assert stored == sorted((currency.upper(), exact) for _, currency, exact in typed)
    # What still is not an amount stays as typed, with the API's reason next to it.
    refused = await person.add_expense(amount="1,234,5", currency="EUR")
    assert refused.status_code == 422 and 'value="1,234,5"' in refused.text


async def test_a_service_that_is_down_gives_a_friendly_page_with_the_request_id(
    serve_app: AppFactory,
) -> None:
    # auth here, expenses and reports "elsewhere" on a port where nothing listens.
    async with serve_app(
        resolve_targets("auth,web"),
        base_url="https://testserver",
        web_session_key=SESSION_KEY,
        expenses_url="http://127.0.0.1:9",
        reports_url="http://127.0.0.1:9",
    ) as web:
        await signed_up_person(web)
        for path in ("/", "/expenses"):
            response = await web.get(path)
            assert response.status_code == 503
            assert response.headers["content-type"].startswith("text/html")
            request_id = response.headers["x-request-id"]
            assert request_id in response.text
            assert "Traceback" not in response.text and "ConnectError" not in response.text
        # What still works, works.
        assert (await web.get("/account")).status_code == 200


async def test_a_file_too_large_or_too_many_requests_give_a_page_not_a_json_document(
    serve_app: AppFactory,
) -> None:
    """Refused before any page runs (the body's size, the rate limit): a browser still gets a
    page, with the request id; the API's clients still get problem documents. The size is said
    in the unit people read, and the page links back to where a smaller file can be chosen."""
    async with serve_app(
        resolve_targets("all"),
        base_url="https://testserver",
        web_session_key=SESSION_KEY,
        max_import_body_bytes=4096,
        rate_limit="3/minute",
    ) as web:
        upload = {"file": ("big.csv", b"x" * 8192, "text/csv")}
        too_large = await web.post("/import", files=upload)
        confirmed_too_large = await web.post("/import/confirm", files=upload)
        api_too_large = await web.post("/api/v1/expenses/import", content=b"x" * 8192)
        for _ in range(3):  # the refusals above were refused before the rate limit counted
            await web.get("/login")
        too_many = await web.get("/login")
    for response, status, title in (
        (too_large, 413, "That file is too large"),
        (too_many, 429, "Too many requests"),
    ):
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        assert f"<h1>{title}</h1>" in response.text
        assert response.headers["x-request-id"] in response.text
    assert int(too_many.headers["retry-after"]) >= 1
    assert "The request body is over 4 KiB." in too_large.text
    for refused in (too_large, confirmed_too_large):
        assert '<a href="/import">Choose a smaller file</a>' in refused.text
    assert api_too_large.status_code == 413
    assert api_too_large.json()["detail"] == "The request body is over 4 KiB."
    assert api_too_large.headers["content-type"] == "application/problem+json"


@pytest.fixture
def redirecting_service() -> Iterator[str]:
    """A real HTTP server that answers everything with a redirect, as a proxy sending plain
    HTTP to HTTPS does: the URL of a service set up wrong."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(308)
            self.send_header("Location", f"https://127.0.0.1{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Redirect) as port:
        yield f"http://127.0.0.1:{port}"


async def test_a_service_that_redirects_gives_the_friendly_page_too(
    serve_app: AppFactory, redirecting_service: str
) -> None:
    async with serve_app(
        resolve_targets("auth,web"),
        base_url="https://testserver",
        web_session_key=SESSION_KEY,
        expenses_url=redirecting_service,
        reports_url=redirecting_service,
    ) as web:
        await signed_up_person(web)
        for path in ("/expenses", "/export?format=csv"):
            response = await web.get(path)
            assert response.status_code == 503, path
            assert response.headers["x-request-id"] in response.text
            assert "Traceback" not in response.text


async def test_a_page_answers_head_as_get_without_its_body(web: httpx.AsyncClient) -> None:
    """Uptime checks send HEAD: a page answers it with its GET's status and headers (uvicorn
    sends no body; this client calls the app in-process, past it). The API's routes still take
    only the methods they declare."""
    signed_out = await web.head("/login")
    login = await web.get("/login")
    assert signed_out.status_code == 200
    assert signed_out.headers["content-type"] == login.headers["content-type"]
    assert signed_out.headers["content-length"] == login.headers["content-length"]
    await signed_up_person(web)
    for path in ("/", "/expenses", "/budgets", "/recurring"):
        assert (await web.head(path)).status_code == 200, path
    refused = await web.head("/api/v1/tags")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"


async def test_a_pages_405_names_the_methods_its_path_takes(web: httpx.AsyncClient) -> None:
    """A 405 must say what the path takes (RFC 9110): the web's friendly page did not."""
    for method, path, allowed in (("DELETE", "/", "GET, HEAD"), ("GET", "/logout", "POST")):
        response = await web.request(method, path)
        assert response.status_code == 405, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert response.headers["allow"] == allowed, path


async def test_static_files_have_hashed_names_long_caching_and_compression(
    web: httpx.AsyncClient,
) -> None:
    html = (await web.get("/login")).text
    urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {re.sub(r"\.[0-9a-f]{12}\.", ".", url) for url in urls} == {
        "/static/app.css",
        "/static/htmx.min.js",
        "/static/app.js",
    }
    for url in urls:
        response = await web.get(url, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-encoding"] == "gzip"
        etag = response.headers["etag"]
        assert (await web.get(url, headers={"If-None-Match": etag})).status_code == 304
    assert (await web.get("/static/app.000000000000.js")).status_code == 404


def test_vendored_files_match_this_table() -> None:
    """Each vendored script is the package's file named in VENDORED.md, with its licence."""
    table = (STATIC / "VENDORED.md").read_text()
    rows = re.findall(
        r"\| `([^`]+)` \| .*? \| ([\d.]+) \| .*?`(LICENSE-[^`]+)`.*? \| `([0-9a-f]{64})` \|", table
    )
    assert {name for name, *_ in rows} == {"htmx.min.js", "chart.umd.min.js"}
    for name, _version, licence, digest in rows:
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
        assert (STATIC / licence).read_text().strip()


async def test_the_list_keeps_filters_in_the_url_and_pages_on_the_cursor(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    content = "occurred_on,amount,currency,description,notes,merchant,category,tags,external_id\n"
    content += "".join(
        f"2026-10-{day % 28 + 1:02d},{day}.00,EUR,{'Shop' if day % 2 else 'Cafe'} {day},,,,,\n"
        for day in range(1, 56)
    )
    token = csrf_token((await web.get("/import")).text)
    preview = await web.post(
        "/import",
        data={"csrf_token": token},
        files={"file": ("bank.csv", content.encode(), "text/csv")},
    )
    packed = re.search(r'name="packed" value="([^"]+)"', preview.text).group(1)
    confirm = {"packed": packed, "idempotency_key": idempotency_key(preview.text)}
    confirmed = await person.submit("/import", "/import/confirm", confirm)
    assert "Imported: 55 new expenses" in confirmed.text
    # Confirmed again (a double click, a reload of the answer): no row has an external id,
    # and still nothing is imported twice.
    resent = await person.submit("/import", "/import/confirm", confirm)
    assert "Imported: 55 new expenses" in resent.text
    first = (await web.get("/expenses")).text
    assert len(expense_ids(first)) == 50
    more = re.search(r'<a href="(/expenses\?cursor=[^"]+)">More expenses</a>', first).group(1)
    rest = await web.get(more.replace("&amp;", "&"), headers={"HX-Request": "true"})
    assert "<html" not in rest.text and len(expense_ids(rest.text)) == 5
    assert set(expense_ids(first)).isdisjoint(expense_ids(rest.text))
    filtered = (await web.get("/expenses?q=Shop&min_amount=40&currency=EUR")).text
    ids = expense_ids(filtered)
    assert len(ids) == 8  # Shop 41, 43, ..., 55
    assert 'value="Shop"' in filtered and 'value="40"' in filtered
    bad = await web.get("/expenses?from=yesterday")
    assert bad.status_code == 422 and 'id="filter-from-error"' in bad.text
    # A currency in lower case, as every form takes it; a range that ends before it begins is
    # said next to "To" (as the reports say it), not shown as an empty list.
    lower = (await web.get("/expenses?q=Shop&min_amount=40&currency=eur")).text
    assert expense_ids(lower) == ids and 'value="EUR"' in lower
    forged = await web.get("/expenses?q=Shop&cursor=garbage")
    assert forged.status_code == 422
    assert 'not valid: <a href="/expenses?q=Shop">see the list from its first page' in forged.text
    reversed_range = await web.get("/expenses?from=2026-10-20&to=2026-10-10")
    assert reversed_range.status_code == 422, reversed_range.text
    assert 'id="filter-to-error">Must not be before the first day.' in reversed_range.text
    assert expense_ids(reversed_range.text) == []
    # Amounts are read as every amount field reads them ("40,00"), and a highest amount below
    # the lowest is said next to it.
    comma = (await web.get("/expenses?q=Shop&min_amount=40,00&currency=EUR")).text
    assert expense_ids(comma) == ids
    reversed_amounts = await web.get("/expenses?min_amount=40&max_amount=4")
    assert reversed_amounts.status_code == 422
    assert 'id="filter-max_amount-error">Must not be below the lowest amount.' in (
        reversed_amounts.text
    )


async def test_without_scripts_a_save_or_a_delete_comes_back_to_the_filtered_list(
    web: httpx.AsyncClient,
) -> None:
    """The rows' Edit link and delete form carry where the list is (its filters); the edit page
    keeps it, and each redirect goes back there, saying what was done. Only the list's own
    parameters go back: a forged `back` cannot send anyone elsewhere."""
    person = await signed_up_person(web)
    for description in ("Shop one", "Shop two", "Cafe"):
        assert (await person.add_expense(description=description)).status_code == 303
    listed = (await web.get("/expenses?q=Shop&currency=eur")).text
    place = "q=Shop&amp;currency=EUR"
    assert listed.count(f'<input type="hidden" name="back" value="{place}">') == 2
    first, second = expense_ids(listed)
    assert f'href="/expenses/{first}/edit?{place}"' in listed
    edit_page = (await web.get(f"/expenses/{first}/edit?q=Shop&currency=EUR")).text
    assert f'name="back" value="{place}"' in edit_page
    assert f'<a href="/expenses?{place}">Cancel</a>' in edit_page
    saved = await person.submit(
        "/expenses",
        f"/expenses/{first}",
        {"description": "Shop one, edited", "back": "q=Shop&currency=EUR"},
    )
    assert saved.headers["location"] == "/expenses?q=Shop&currency=EUR&done=saved"
    shown = (await web.get(saved.headers["location"])).text
    assert '<p class="notice" role="status">Expense saved.' in shown
    assert "Shop one, edited" in shown and "Cafe" not in shown
    deleted = await person.submit(
        "/expenses", f"/expenses/{second}/delete", {"back": "q=Shop&next=//elsewhere.example"}
    )
    assert deleted.headers["location"] == "/expenses?q=Shop&done=deleted"
    shown = (await web.get(deleted.headers["location"])).text
    assert '<p class="notice" role="status">Expense deleted.' in shown
    assert expense_ids(shown) == [first]


async def test_emptying_a_required_field_of_an_expense_is_refused_next_to_it(
    web: httpx.AsyncClient,
) -> None:
    """Saved with its description or its amount emptied, an expense is not "saved" unchanged:
    the form comes back with the reason by that field, and the expense stays as it was."""
    person = await signed_up_person(web)
    assert (await person.add_expense(description="Bakery", amount="4.10")).status_code == 303
    [expense_id] = expense_ids((await web.get("/expenses")).text)
    edit = f"/expenses/{expense_id}/edit"
    typed = {
        "description": "Bakery",
        "amount": "4.10",
        "currency": "EUR",
        "occurred_on": "2026-11-02",
    }
    for emptied in ("description", "amount"):
        form = {**typed, emptied: " "}
        refused = await person.submit(edit, f"/expenses/{expense_id}", form)
        assert refused.status_code == 422, emptied
        assert f'id="edit-{emptied}-error"' in refused.text
    listed = (await web.get("/expenses")).text
    assert "Bakery" in listed and "€4.10" in listed


async def test_a_confirm_sent_while_the_first_one_imports_says_so(
    web: httpx.AsyncClient, database_url: str
) -> None:
    # The first confirm is still importing: it holds its Idempotency-Key's lock (taken here).
    person = await signed_up_person(web)
    content = "occurred_on,amount,currency,description\n2026-11-01,5.00,EUR,Once\n"
    token = csrf_token((await web.get("/import")).text)
    preview = await web.post(
        "/import",
        data={"csrf_token": token},
        files={"file": ("a.csv", content.encode(), "text/csv")},
    )
    confirm = {
        "packed": packed_upload(preview.text),
        "idempotency_key": idempotency_key(preview.text),
    }
    async with connected(database_url) as connection:
        user_id = await connection.fetchval(
            "SELECT id FROM auth.users WHERE email = $1", person.email
        )
        scope = lock_scope(idempotency_keys, user_id=user_id, key=confirm["idempotency_key"])
        await connection.execute("SELECT pg_advisory_lock(hashtext($1))", scope)
        second = await person.submit("/import", "/import/confirm", confirm)
        await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", scope)
    assert second.status_code == 409 and "being imported already" in second.text
    first = await person.submit("/import", "/import/confirm", confirm)
    assert "Imported: 1 new expense" in first.text
    assert len(expense_ids((await web.get("/expenses")).text)) == 1


async def test_an_import_with_a_bad_row_shows_its_line_and_saves_nothing(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    header = "occurred_on,amount,currency,description,notes,merchant,category,tags,external_id\n"
    bad = header + "2026-11-01,5.00,EUR,Fine,,,,,b-1\n2026-11-02,5.001,EUR,Too precise,,,,,b-2\n"
    token = csrf_token((await web.get("/import")).text)
    refused = await web.post(
        "/import", data={"csrf_token": token}, files={"file": ("a.csv", bad.encode(), "text/csv")}
    )
    assert refused.status_code == 422
    assert re.search(r"<td class=\"num\">3</td><td>amount</td>", refused.text)
    empty = await web.post(
        "/import", data={"csrf_token": token}, files={"file": ("a.csv", b"", "text/csv")}
    )
    none = await web.post(
        "/import", data={"csrf_token": token}, files={"file": ("", b"", "application/octet-stream")}
    )
    assert (empty.status_code, none.status_code) == (422, 422)
    assert "The file is empty." in empty.text and "Choose a file to import." in none.text
    assert expense_ids((await web.get("/expenses")).text) == []
    await person.add_expense(description="Earlier")  # not from the file
    good = header + "2026-11-01,5.00,EUR,Fine,,,,,b-1\n2026-11-02,5.00,EUR,Fixed,,,,,b-2\n"
    preview = await web.post(
        "/import", data={"csrf_token": token}, files={"file": ("a.csv", good.encode(), "text/csv")}
    )
    assert (
        "2 will be added" in preview.text and "Nothing is saved until you confirm" in preview.text
    )
    added = table_of(preview.text, "To be added")
    assert '<th scope="col" class="num">Line</th>' in added
    assert re.search(r'<td class="num">2</td>\s*<td>[^<]+</td>\s*<td>Fine</td>', added)
    assert re.search(r'<td class="num">3</td>\s*<td>[^<]+</td>\s*<td>Fixed</td>', added)
    assert len(expense_ids((await web.get("/expenses")).text)) == 1
    packed = re.search(r'name="packed" value="([^"]+)"', preview.text).group(1)
    done = await person.submit("/import", "/import/confirm", {"packed": packed})
    assert "Imported: 2 new expenses" in done.text
    again = await web.post(
        "/import", data={"csrf_token": token}, files={"file": ("a.csv", good.encode(), "text/csv")}
    )
    assert "2 will be skipped as already imported" in again.text
    assert "To be added" not in again.text
    assert "Nothing to import" in again.text and 'action="/import/confirm"' not in again.text
    assert re.findall(
        r'<td class="num">(\d+)</td><td><code>([^<]+)</code></td>',
        table_of(again.text, "Skipped as already imported"),
    ) == [("2", "b-1"), ("3", "b-2")]
    export = await web.get("/export?format=csv")
    assert export.headers["content-disposition"] == 'attachment; filename="expenses.csv"'
    assert export.text.count("\n") == 4 and "Fixed" in export.text
    assert (await web.get("/export?format=json")).json()[0]["description"] in (
        "Fine",
        "Fixed",
        "Earlier",
    )
    # A format there is none of is a page saying so, not a CSV file.
    unknown = await web.get("/export?format=xml")
    assert unknown.status_code == 422 and unknown.headers["content-type"].startswith("text/html")
    assert "content-disposition" not in unknown.headers
    assert "Format must be one of &#39;csv&#39; or &#39;json&#39;." in unknown.text


async def test_a_budget_pushed_over_its_limit_shows_on_the_dashboard(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    await added_budget(person, name="Coffee money", thresholds="50, 100")
    today = date.today().isoformat()
    await person.add_expense(amount="6.00", occurred_on=today)
    assert "Warning" in (await web.get("/")).text
    await person.add_expense(amount="6.00", occurred_on=today)
    dashboard = (await web.get("/")).text
    assert "Over budget" in dashboard and "€2.00 over" in dashboard
    assert 'low="50" high="99.99"' in dashboard
    budgets = (await web.get("/budgets")).text
    assert "Over budget" in budgets and "thresholds 50%, 100%" in budgets


async def test_budget_thresholds_may_be_typed_with_their_percent_sign(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    await added_budget(person, name="Snacks", thresholds="75%, 100 %")
    assert "thresholds 75%, 100%" in (await web.get("/budgets")).text


async def test_budget_percents_are_in_the_readers_format(web: httpx.AsyncClient) -> None:
    """A budget spent 123 times over: its percent and thresholds grouped and spaced as the
    reader's language writes them, like the amounts beside them."""
    person = await signed_up_person(web)
    await added_budget(person, name="Holiday", thresholds="80, 100")
    await person.add_expense(amount="1234.00", occurred_on=date.today().isoformat())
    english = (await web.get("/budgets", headers={"Accept-Language": "en-GB"})).text
    german = (await web.get("/budgets", headers={"Accept-Language": "de-DE"})).text
    assert "· 12,340% · thresholds 80%, 100%" in english
    assert "· 12.340\xa0% · thresholds 80\xa0%, 100\xa0%" in german


async def test_a_budget_percent_is_never_rounded_across_its_limit(web: httpx.AsyncClient) -> None:
    """99.6 % used reads 99% beside "On track", 100.4 % reads 101% beside "Over budget": the
    whole percent never says the other side of the limit from the state beside it."""
    person = await signed_up_person(web)
    await added_budget(person, name="Bakery", thresholds="100")
    await person.add_expense(amount="9.96", occurred_on=date.today().isoformat())
    within = (await web.get("/budgets")).text
    assert "On track" in within and "· 99% · thresholds" in within
    assert 'aria-label="Bakery: 99 percent used">99%<' in within
    await person.add_expense(amount="0.08", occurred_on=date.today().isoformat())
    over = (await web.get("/budgets")).text
    assert "Over budget" in over and "· 101% · thresholds" in over
    assert 'aria-label="Bakery: 101 percent used">101%<' in over


async def test_a_budget_that_a_rollover_left_nothing_shows_a_full_bar_not_0_percent(
    web: httpx.AsyncClient,
) -> None:
    """Overspent last month by more than its limit, a rollover budget has nothing available
    this month (the API has no percent then): the bar is full and says so, never "0%". A single
    low threshold keeps the meter's zones in order."""
    person = await signed_up_person(web)
    today = date.today()
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    await added_budget(
        person, name="Lunches", rollover="on", starts=last_month.strftime("%Y-%m"), thresholds="10"
    )
    await person.add_expense(amount="30.00", occurred_on=last_month.isoformat())
    await person.add_expense(amount="5.00", occurred_on=today.isoformat())
    for page in ("/", "/budgets"):
        html = (await web.get(page)).text
        assert "Over budget" in html and "€5.00 of -€10.00" in html, page
        assert 'low="10" high="10" optimum="0" value="100"' in html, page
        assert 'aria-label="Lunches: nothing available, over budget">nothing available' in html
        assert "· nothing available · thresholds 10%" in html, page
        assert ">0%<" not in html and "· 0% ·" not in html and "0 percent" not in html, page


async def test_a_rollover_says_plainly_what_last_month_left_or_overspent(
    web: httpx.AsyncClient,
) -> None:
    """What a rollover carries in reads "(€3.00 carried over)"; what it takes away reads
    "(€4.00 overspent last month)", never "(-€4.00 carried over)"."""
    person = await signed_up_person(web)
    today = date.today()
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    starts = last_month.strftime("%Y-%m")
    under = await added_category(person, "Under")
    over = await added_category(person, "Over")
    await added_budget(person, name="Saved", rollover="on", starts=starts, category_id=under)
    await added_budget(person, name="Spent", rollover="on", starts=starts, category_id=over)
    for category, amount in ((under, "7.00"), (over, "14.00")):
        await person.add_expense(
            amount=amount, occurred_on=last_month.isoformat(), category_id=category
        )
    html = (await web.get("/budgets")).text
    assert "(€3.00 carried over)" in html
    assert "(€4.00 overspent last month)" in html
    assert "-€4.00" not in html


async def test_a_deletion_is_confirmed_on_the_page_it_returns_to(web: httpx.AsyncClient) -> None:
    person = await signed_up_person(web)
    category = await added_category(person, "Snacks")
    await added_budget(person, name="Snack money")
    form = (await web.get("/recurring")).text
    await person.submit(
        "/recurring",
        "/recurring",
        {
            "idempotency_key": idempotency_key(form),
            "description": "Gym",
            "amount": "30.00",
            "currency": "EUR",
            "frequency": "monthly",
            "starts_on": date.today().isoformat(),
        },
    )
    await person.submit("/rules", "/rules", {"pattern": "bakery", "category_id": category})
    pages = {
        "/budgets": ("Budget deleted.", r'action="(/budgets/[0-9a-f-]{36}/delete)"'),
        "/recurring": ("Recurring expense stopped", r'action="(/recurring/[0-9a-f-]{36}/delete)"'),
        "/rules": ("Rule deleted.", r'action="(/rules/[0-9a-f-]{36}/delete)"'),
        "/categories": ("Category deleted.", rf'action="(/categories/{category}/delete)"'),
    }
    for page, (said, action) in pages.items():
        html = (await web.get(page)).text
        assert said not in html, page
        htmx = {"HX-Request": "true"} if page == "/rules" else {}  # the script's way, too
        deleted = await person.submit(page, re.search(action, html).group(1), {}, **htmx)
        back = deleted.headers["hx-redirect" if htmx else "location"]
        assert back == f"{page}?deleted=1", page
        shown = (await web.get(back)).text
        assert f'<p class="notice" role="status">{said}' in shown, page
        assert re.search(action, shown) is None, page


async def test_deleting_a_category_can_move_its_expenses_to_another(
    web: httpx.AsyncClient,
) -> None:
    """The delete's question offers the other categories (not itself) for its expenses; the one
    chosen gets them. A choice the API refuses (deleted meanwhile) is said, and nothing goes."""
    person = await signed_up_person(web)
    old, new = await added_category(person, "Snacks"), await added_category(person, "Treats")
    assert (await person.add_expense(description="Crisps", category_id=old)).status_code == 303
    html = (await web.get("/categories")).text
    question = html.split(f'action="/categories/{old}/delete"')[1].split("</form>")[0]
    label = f'<label for="{old}-move-move_to">Its expenses, recurring expenses and rules go to'
    assert label in question
    assert f'value="{new}"' in question and f'value="{old}"' not in question
    gone = str(uuid.uuid4())
    refused = await person.submit("/categories", f"/categories/{old}/delete", {"move_to": gone})
    assert refused.status_code == 422 and "Category deleted." not in refused.text
    assert f'action="/categories/{old}/delete"' in refused.text  # still there
    moved = await person.submit("/categories", f"/categories/{old}/delete", {"move_to": new})
    assert moved.headers["location"] == "/categories?deleted=1"
    listed = (await web.get("/expenses", params={"category_id": new})).text
    assert "Crisps" in listed


async def test_only_a_category_with_subcategories_warns_that_they_move_up(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    parent = await added_category(person, "Home")
    await added_category(person, "Sport")
    await person.submit("/categories", "/categories", {"name": "Garden", "parent_id": parent})
    html = (await web.get("/categories")).text
    questions = dict(re.findall(r"<p>Delete the category “(\w+)”\?([^<]*)</p>", html))
    assert {"Home", "Sport", "Garden"} <= set(questions)
    assert "subcategories" in questions["Home"]
    assert "subcategories" not in questions["Sport"] + questions["Garden"]


async def test_a_refused_move_to_is_shown_at_its_field_with_the_choice_kept(
    web: httpx.AsyncClient,
) -> None:
    """A delete's "move to" that the API refuses (here forged, with a valid token: another
    person's category) is said next to that field, in its question open again with the choice
    kept, and by the page's alert as any refused form; the same when htmx posts it. Nothing is
    deleted, and nothing of the other person's category shows."""
    alice = await signed_up_person(web)
    alices = await added_category(alice, "Alice's food")
    web.cookies.clear()
    bob = await signed_up_person(web)
    snacks = await added_category(bob, "Snacks")
    for headers in ({}, {"HX-Request": "true"}):
        refused = await bob.submit(
            "/categories", f"/categories/{snacks}/delete", {"move_to": alices}, **headers
        )
        assert refused.status_code == 422, headers
        assert refused.headers.get("hx-retarget") == ("body" if headers else None)
        html = refused.text
        summary = r'<div class="alert error-summary" role="alert"[^>]*>\s*<p>[^<]+</p>'
        assert re.search(summary, html), headers
        # Focused on load only without htmx, whose script puts focus in the field instead.
        assert ("autofocus>" in html) is not bool(headers), headers
        assert f'<a href="#{snacks}-move-move_to">Its expenses, recurring' in html, headers
        assert re.search(r'<details class="category" open>\s*<summary>Snacks</summary>', html)
        question = html.split('<details class="confirm" open>')[1].split("</form>")[0]
        assert html.count('<details class="confirm" open>') == 1, headers
        assert f'action="/categories/{snacks}/delete"' in question, headers
        field = f"{snacks}-move-move_to"
        assert f'aria-invalid="true" aria-describedby="{field}-error"' in question, headers
        assert f'id="{field}-error">Not another of your categories.</p>' in question, headers
        assert f'<option value="{alices}" selected>(not another of your categories)</option>' in (
            question
        )
        assert 'id="new-category-name-error"' not in html and "Alice" not in html, headers
        assert "<summary>Snacks</summary>" in (await web.get("/categories")).text
    # Itself, which its question does not offer: kept as chosen too, not shown as "No category".
    itself = await bob.submit("/categories", f"/categories/{snacks}/delete", {"move_to": snacks})
    assert itself.status_code == 422
    chosen = f'<option value="{snacks}" selected>(not another of your categories)</option>'
    assert chosen in itself.text


async def test_a_budget_whose_category_was_deleted_asks_for_another(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    category = await added_category(person, "Snacks")
    await added_budget(person, name="Snack money", category_id=category)
    note = "Its category was deleted"
    assert note not in (await web.get("/budgets")).text
    deleted = await person.submit("/categories", f"/categories/{category}/delete", {})
    assert deleted.status_code == 303, deleted.text
    for page in ("/budgets", "/"):
        html = (await web.get(page)).text
        assert note in html
        edit = re.search(r'<a href="(/budgets/[0-9a-f-]{36}/edit)">give it another category', html)
        assert edit
    # Its edit form says so at the field, rather than quietly showing "Everything" chosen.
    form = (await web.get(edit.group(1))).text
    assert 'id="budget-category_id" name="category_id" aria-invalid="true"' in form
    assert "The category it had was deleted: choose another." in form
    choices = form.split('name="category_id"')[1].split("</select>")[0]
    assert re.findall(r"<option [^>]*selected>([^<]*)<", choices) == ["(deleted category)"]
    # Saved as it stands, the API refuses it next to the field; nothing becomes "Everything".
    saved = await person.submit(
        edit.group(1),
        edit.group(1).removesuffix("/edit"),
        {"name": "Snack money", "amount": "10.00", "currency": "EUR", "category_id": category},
    )
    assert saved.status_code == 422 and "Not one of your categories." in saved.text


async def test_what_people_typed_is_shown_escaped_in_the_list_and_its_rows(
    web: httpx.AsyncClient,
) -> None:
    """The expense rows are escaped before the template (views.expense_rows), not by it."""
    person = await signed_up_person(web)
    category = await added_category(person, '<b>Tea & "Co"</b>')
    added = await person.add_expense(
        description="<script>alert(1)</script> & more",
        merchant="<i>Shop</i>",
        tags="<u>tag</u>",
        category_id=category,
    )
    assert added.status_code == 303
    listed = (await web.get("/expenses")).text
    [expense] = expense_ids(listed)
    row = (await web.get(f"/expenses/{expense}/row")).text
    for html in (listed, row):
        assert "<script>alert" not in html and "<i>Shop" not in html and "<u>tag" not in html
        assert "<b>Tea" not in html
        # The cell, the names of Edit, Delete and "Yes, delete", and the delete's question; once.
        assert html.count("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more") == 5
        assert "&amp;lt;" not in html
        assert "&lt;i&gt;Shop&lt;/i&gt;" in html and "&lt;u&gt;tag&lt;/u&gt;" in html
        assert "<td>&lt;b&gt;Tea &amp; &#34;Co&#34;&lt;/b&gt;</td>" in html


async def test_a_kept_row_follows_every_change_of_what_it_shows(web: httpx.AsyncClient) -> None:
    """A row is rendered once for what it shows and kept (views.expense_rows): a renamed
    category, an edited expense, a new form token or another place in the list shows anew."""
    person = await signed_up_person(web)
    category = await added_category(person, "Bakery")
    await person.add_expense(description="Bread", amount="2.40", category_id=category)
    listed = (await web.get("/expenses")).text
    [expense] = expense_ids(listed)
    assert "<td>Bakery</td>" in listed and "€2.40" in listed
    renamed = await person.submit("/categories", f"/categories/{category}", {"name": "Baked goods"})
    assert renamed.status_code == 303, renamed.text
    edited = await person.submit(
        "/expenses",
        f"/expenses/{expense}",
        {"description": "Rye bread", "amount": "3.10", "currency": "EUR", "category_id": category},
    )
    assert edited.status_code == 303, edited.text
    listed = (await web.get("/expenses")).text
    assert "<td>Baked goods</td>" in listed and "Bakery" not in listed
    assert "<td>Rye bread</td>" in listed and "€3.10" in listed and "€2.40" not in listed
    # A new CSRF cookie (another browser of the same person): the row's forms carry its token.
    web.cookies.delete(CSRF_COOKIE)
    again = await web.get("/expenses", params={"q": "bread"})
    row = again.text.split(f'<tr id="expense-{expense}"')[1].split("</tr>")[0]
    assert f'name="csrf_token" value="{csrf_token(again.text)}"' in row
    assert 'name="back" value="q=bread"' in row
    assert csrf_token(again.text) != csrf_token(listed)


async def test_a_merchant_is_shown_under_its_expense_unless_it_repeats_the_description(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    for description, merchant in (("Weekly shop", "Corner Shop"), ("Landlord", "Landlord")):
        added = await person.add_expense(description=description, merchant=merchant)
        assert added.status_code == 303
    listed = (await web.get("/expenses")).text
    assert "<td>Weekly shop<br><small>Corner Shop</small></td>" in listed
    assert "<td>Landlord</td>" in listed and "<small>Landlord</small>" not in listed


async def test_htmx_gets_fragments_and_plain_forms_get_redirects(web: httpx.AsyncClient) -> None:
    person = await signed_up_person(web)
    htmx = {"HX-Request": "true", "X-CSRF-Token": ""}
    form = (await web.get("/expenses/new", headers={"HX-Request": "true"})).text
    assert "<html" not in form and "<form" in form
    htmx["X-CSRF-Token"] = csrf_token(form)
    added = await web.post(
        "/expenses/new",
        data={
            "idempotency_key": idempotency_key(form),
            "description": "Tea",
            "amount": "2.00",
            "currency": "EUR",
            "occurred_on": "2026-11-04",
        },
        headers=htmx,
    )
    assert added.status_code == 200 and added.headers["hx-trigger"] == "expense-added"
    assert "Added: Tea" in added.text
    [tea] = expense_ids((await web.get("/expenses")).text)
    edit = await web.get(f"/expenses/{tea}/edit", headers={"HX-Request": "true"})
    assert edit.text.lstrip().startswith("<tr") and 'value="Tea"' in edit.text
    saved = await web.post(
        f"/expenses/{tea}", data={"description": "Green tea", "amount": "2.50"}, headers=htmx
    )
    assert saved.status_code == 200 and "Green tea" in saved.text and "€2.50" in saved.text
    deleted = await web.post(f"/expenses/{tea}/delete", headers=htmx)
    assert deleted.status_code == 200
    assert expense_ids((await web.get("/expenses")).text) == []
    plain = await person.add_expense()
    assert plain.status_code == 303 and plain.headers["location"] == "/expenses?added=1"
    # A whole page answering a post made in place (a refusal the form cannot show) replaces
    # the page, not the form.
    refused = await web.post("/rates/2026-02-30/EUR/USD/delete", headers=htmx)
    assert refused.status_code == 422 and "<html" in refused.text
    assert (refused.headers["hx-retarget"], refused.headers["hx-reswap"]) == ("body", "innerHTML")


async def test_deleting_the_account_needs_the_box_and_the_password(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    await person.add_expense()
    unticked = await person.submit("/account", "/account/delete", {"password": person.password})
    assert unticked.status_code == 422, unticked.text[-1500:]
    assert "Tick the box" in unticked.text
    wrong = await person.submit("/account", "/account/delete", {"password": "no", "confirm": "yes"})
    assert wrong.status_code == 422 and "The password is wrong" in wrong.text
    # The box stays ticked: only the password is typed again.
    assert re.search(r'<input type="checkbox" id="delete-confirm"[^>]* checked', wrong.text)
    assert not re.search(r'<input type="checkbox" id="delete-confirm"[^>]* checked', unticked.text)
    done = await person.submit(
        "/account", "/account/delete", {"password": person.password, "confirm": "yes"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/login?deleted=1"
    assert (await web.get("/")).headers["location"] == "/login"
    web.cookies.clear()
    back = await person.submit(
        "/login", "/login", {"email": person.email, "password": person.password}
    )
    assert back.status_code == 401


async def test_deleting_the_account_after_too_many_wrong_passwords_says_so(
    web: httpx.AsyncClient,
) -> None:
    """Throttled, the right password is refused too: the page says to wait, not that it is
    wrong."""
    person = await signed_up_person(web)
    wrong = {"password": "not the password", "confirm": "yes"}
    for _ in range(5):  # auth's default failures of an account from one address
        await person.submit("/account", "/account/delete", wrong)
    right = {"password": person.password, "confirm": "yes"}
    throttled = await person.submit("/account", "/account/delete", right)
    assert throttled.status_code == 422
    assert "Too many failed attempts" in throttled.text
    assert "The password is wrong" not in throttled.text
    assert (await web.get("/account")).status_code == 200  # nothing was deleted


async def test_wrong_passwords_on_the_account_page_throttle_their_sender_not_everyone(
    serve_app: AppFactory,
) -> None:
    """Auth counts failed password checks by address: the address is the person's, as for a
    login, not the web app's own, which every person's attempts would share."""
    async with serve_app(
        resolve_targets("all"),
        base_url="https://testserver",
        web_session_key=SESSION_KEY,
        login_max_failures_per_address=2,
    ) as web:
        guesser = await signed_up_person(web)
        for _ in range(2):
            wrong = {"current_password": "not the password", "new_password": "whatever 12345"}
            await guesser.submit("/account", "/account/password", wrong)
            await guesser.submit(
                "/account", "/account/delete", {"password": "no", "confirm": "yes"}
            )
        transport = httpx.ASGITransport(app=app_of(web), client=("198.51.100.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as other:
            person = await signed_up_person(other)
            changed = await person.submit(
                "/account",
                "/account/password",
                {"current_password": person.password, "new_password": "a new passphrase 3"},
            )
            assert changed.status_code == 303, changed.text
            person.password = "a new passphrase 3"
            deleted = await person.submit(
                "/account", "/account/delete", {"password": person.password, "confirm": "yes"}
            )
            assert deleted.status_code == 303, deleted.text
        # The guesser's own address is throttled.
        throttled = await guesser.submit(
            "/account", "/account/delete", {"password": guesser.password, "confirm": "yes"}
        )
        assert throttled.status_code == 422 and "Too many failed attempts" in throttled.text


async def test_up_demo_offers_the_demo_account_on_the_sign_in_page_in_development_only(
    serve_app: AppFactory,
) -> None:
    demo = ("demo@example.org", "demo-expenses-2026")
    async with serve_app(resolve_targets("all"), demo_credentials=demo) as web:
        page = (await web.get("/login")).text
        assert "Sign in to the demo account" in page and 'value="demo-expenses-2026"' in page
    async with serve_app(resolve_targets("all")) as web:
        assert "demo" not in (await web.get("/login")).text
    production = Settings(
        env="production",
        database_url="postgresql://u:a-real-password-1@db/expensetracker",
        demo_credentials=demo,
    )
    # Only the settings of the app's typed state (platform/state.py) are read.
    state = SimpleNamespace(platform=SimpleNamespace(settings=production))
    request = SimpleNamespace(app=SimpleNamespace(state=state))
    # A SimpleNamespace with just what _demo reads, in place of a Request.
    assert routes._demo(request) is None  # type: ignore[arg-type]


async def test_editing_a_budget_or_a_category_shows_refusals_on_the_form(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    page = (await web.get("/budgets")).text
    await web.post(
        "/budgets",
        data={
            "csrf_token": csrf_token(page),
            "idempotency_key": idempotency_key(page),
            "name": "Books",
            "amount": "30",
            "currency": "EUR",
        },
    )
    [budget_id] = re.findall(
        r'href="/budgets/([0-9a-f-]{36})/edit"', (await web.get("/budgets")).text
    )
    edit = f"/budgets/{budget_id}/edit"
    refused = await person.submit(
        edit, f"/budgets/{budget_id}", {"name": "Books", "amount": "30.001", "currency": "EUR"}
    )
    assert refused.status_code == 422
    assert 'id="budget-amount-error"' in refused.text and 'value="30.001"' in refused.text
    # Thresholds that are no whole percent are refused at their field, never replaced.
    for thresholds in ("80.5", "abc, 100", "0", ""):
        refused = await person.submit(
            edit,
            f"/budgets/{budget_id}",
            {"name": "Books", "amount": "30", "currency": "EUR", "thresholds": thresholds},
        )
        assert refused.status_code == 422, thresholds
        assert 'id="budget-thresholds-error"' in refused.text, thresholds
        assert f'id="budget-thresholds" name="thresholds" type="text" value="{thresholds}"' in (
            refused.text
        )
    saved = await person.submit(
        edit, f"/budgets/{budget_id}", {"name": "Novels", "amount": "35", "currency": "EUR"}
    )
    assert saved.status_code == 303
    assert "Novels" in (await web.get("/budgets")).text
    categories = (await web.get("/categories")).text
    ids = re.findall(r'action="/categories/([0-9a-f-]{36})"', categories)
    taken = re.search(r"<summary>([^<]+)</summary>", categories).group(1)
    clash = await person.submit("/categories", f"/categories/{ids[1]}", {"name": taken})
    assert clash.status_code in (409, 422) and 'role="alert"' in clash.text


async def test_a_refused_recurring_frequency_is_shown_next_to_its_field(
    web: httpx.AsyncClient,
) -> None:
    """A frequency the API does not know (a page's select edited): its reason by the select."""
    person = await signed_up_person(web)
    page = (await web.get("/recurring")).text
    refused = await person.submit(
        "/recurring",
        "/recurring",
        {
            "idempotency_key": idempotency_key(page),
            "description": "Rent",
            "amount": "900",
            "currency": "EUR",
            "frequency": "daily",
            "starts_on": "2026-01-01",
        },
    )
    assert refused.status_code == 422
    assert 'aria-describedby="rule-frequency-error"' in refused.text
    assert re.search(r'<p class="error" id="rule-frequency-error">[^<]+</p>', refused.text)
    assert 'value="Rent"' in refused.text and 'value="900"' in refused.text


async def test_the_recurring_list_shows_each_ones_category_merchant_and_tags(
    web: httpx.AsyncClient,
) -> None:
    """As the expense list does: under its own column headers, the merchant under the
    description, a recurring expense without a category marked "—"."""
    person = await signed_up_person(web)
    housing = await added_category(person, "Housing")
    for fields in (
        {
            "description": "Rent",
            "category_id": housing,
            "merchant": "Acme Homes",
            "tags": "home, fixed",
        },
        {"description": "Gym", "merchant": "Gym"},
    ):
        page = (await web.get("/recurring")).text
        body = {"idempotency_key": idempotency_key(page), "amount": "900", "currency": "EUR"}
        body |= {"frequency": "monthly", "starts_on": date.today().isoformat(), **fields}
        created = await person.submit("/recurring", "/recurring", body)
        assert created.status_code == 303, created.text
    table = table_of((await web.get("/recurring")).text, "Recurring expenses")
    assert '<th scope="col">Category</th><th scope="col">Tags</th>' in table
    rent, gym = table.split("<tr>")[2:]
    assert "<td>Rent<br><small>Acme Homes</small></td>" in rent
    assert "<td>Housing</td>" in rent
    assert '<span class="tag">home</span> <span class="tag">fixed</span>' in rent
    assert "<td>Gym</td>" in gym and "<td>—</td>" in gym and "<small>" not in gym


async def test_a_creating_form_saved_before_and_sent_again_changed_says_so(
    web: httpx.AsyncClient,
) -> None:
    """A budget form saved, then sent again with another name (back in the browser's history):
    nothing is saved, the page says why, and its new form adds the budget once."""
    person = await signed_up_person(web)
    page = (await web.get("/budgets")).text
    form = {"idempotency_key": idempotency_key(page), "amount": "30", "currency": "EUR"}
    saved = await person.submit("/budgets", "/budgets", {**form, "name": "Books"})
    assert saved.status_code == 303
    changed = await person.submit("/budgets", "/budgets", {**form, "name": "Films"})
    assert changed.status_code == 422 and "This form was saved before" in changed.text
    assert 'value="Films"' in changed.text
    again = {**form, "name": "Films", "idempotency_key": idempotency_key(changed.text)}
    assert (await person.submit("/budgets", "/budgets", again)).status_code == 303
    assert (
        "Books" in (await web.get("/budgets")).text and "Films" in (await web.get("/budgets")).text
    )


async def test_a_refused_category_change_is_shown_on_that_category_as_typed(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    listed = (await web.get("/categories")).text
    ids = dict(
        re.findall(r'<summary>([^<]+)</summary>\s*<form[^>]*action="/categories/([^"]+)"', listed)
    )
    # A name taken by another category (in other case): the 409 at this category's name.
    clash = await person.submit("/categories", f"/categories/{ids['Travel']}", {"name": "HEALTH"})
    assert clash.status_code == 409
    refused = clash.text.split(f'action="/categories/{ids["Travel"]}"')[1].split("</details>")[0]
    assert 'value="HEALTH"' in refused and 'aria-invalid="true"' in refused
    assert f'id="{ids["Travel"]}-name-error"' in refused
    assert '<details class="category" open>\n  <summary>Travel</summary>' in clash.text
    assert 'id="new-category-name-error"' not in clash.text
    # A second level of nesting: the API's reason next to "Inside", the choice kept.
    nested = await person.submit(
        "/categories", f"/categories/{ids['Food']}", {"name": "Food", "parent_id": ids["Housing"]}
    )
    assert nested.status_code == 422
    refused = nested.text.split(f'action="/categories/{ids["Food"]}"')[1].split("</details>")[0]
    assert (
        f'id="{ids["Food"]}-parent-error">A category with subcategories stays at the top level.'
        in refused
    )
    assert f'<option value="{ids["Housing"]}" selected>' in refused


def encoded(value: str) -> str:
    """Percent-encoded as a browser would send it, lone surrogates included."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


async def test_malformed_input_never_answers_a_server_error(web: httpx.AsyncClient) -> None:
    await signed_up_person(web)
    weird = ["\x00", "\ud800", "9" * 400, "2026-02-30", "0000-01-01", "9999-12-31", "../..", "İ"]
    for value in weird:
        for path, name in (
            ("/expenses", "q"),
            ("/expenses", "from"),
            ("/expenses", "cursor"),
            ("/expenses", "min_amount"),
            ("/expenses", "category_id"),
            ("/budgets", "month"),
            ("/reports", "from"),
            ("/reports", "to"),
            ("/login", "next"),
        ):
            response = await web.get(f"{path}?{name}={encoded(value)}")
            assert response.status_code < 500, (path, name, value, response.status_code)
        form = (await web.get("/expenses/new")).text
        for field in ("description", "amount", "currency", "occurred_on", "tags", "category_id"):
            fields = {
                "csrf_token": csrf_token(form),
                "description": "Odd",
                "amount": "1.00",
                "currency": "EUR",
                "occurred_on": "2026-11-02",
                field: value,
            }
            response = await web.post(
                "/expenses/new",
                content="&".join(f"{k}={encoded(v)}" for k, v in fields.items()),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code < 500, (field, value, response.status_code)
        for path in (f"/expenses/{encoded(value)}/edit", f"/budgets/{encoded(value)}/edit"):
            assert (await web.get(path)).status_code < 500, path


async def test_refused_report_and_budget_months_stay_as_typed_with_their_reason(
    web: httpx.AsyncClient,
) -> None:
    await signed_up_person(web)
    month = (await web.get("/budgets?month=2026-13")).text
    assert 'value="2026-13"' in month and 'id="budget-month-error">must be a month as' in month
    backwards = (await web.get("/reports?from=2026-05-01&to=2026-01-01")).text
    assert 'value="2026-05-01"' in backwards and 'value="2026-01-01"' in backwards  # as typed
    # In the API's words, as the expenses list says it.
    assert 'id="report-to-error">Must not be before the first day.' in backwards
    page = (await web.get("/reports?from=1900-01-01&to=1900-02-28")).text
    assert (
        'id="report-to-error">The trends&#39; months up to here must not reach back before 1900-01.'
        in page
    )


# Issue 15 on the web: the home currency, rates, charged amounts, statements, rules.

_RULE_ID = re.compile(r'action="/rules/([0-9a-f-]{36})/delete"')


async def test_reports_with_only_one_end_of_the_range_take_the_other_in_its_year(
    web: httpx.AsyncClient,
) -> None:
    await signed_up_person(web)
    this_year = date.today().year
    for query, shown in (
        (f"to={this_year - 1}-06-30", f"Jan 1, {this_year - 1} to Jun 30, {this_year - 1}."),
        (f"from={this_year + 1}-03-01", f"Mar 1, {this_year + 1} to Dec 31, {this_year + 1}."),
        (f"from={this_year - 2}-03-01", f"Mar 1, {this_year - 2} to Dec 31, {this_year}."),
    ):
        response = await web.get(f"/reports?{query}")
        assert response.status_code == 200, query
        assert shown in response.text, query


def packed_upload(html: str) -> str:
    match = re.search(r'name="packed" value="([^"]+)"', html)
    assert match, "the page has no confirm form"
    return match.group(1)


async def test_the_home_currency_is_shown_and_set_on_the_account_page(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    assert "Not set yet" in (await web.get("/account")).text
    refused = await person.submit("/account", "/account/home-currency", {"currency": "EURO"})
    assert refused.status_code == 422
    assert 'id="home-currency-error"' in refused.text and 'value="EURO"' in refused.text
    saved = await person.submit("/account", "/account/home-currency", {"currency": "chf"})
    assert (saved.status_code, saved.headers["location"]) == (303, "/account?home=1")
    page = (await web.get("/account?home=1")).text
    assert "<strong>CHF</strong>" in page and "Your home currency is saved" in page


async def test_own_rates_are_added_replaced_listed_and_deleted(web: httpx.AsyncClient) -> None:
    person = await signed_up_person(web)
    rate = {"day": "2026-11-02", "base": "usd", "quote": "eur", "rate": "0,9177"}
    assert (await person.submit("/rates", "/rates", rate)).status_code == 303
    assert (await person.submit("/rates", "/rates", {**rate, "rate": "0.95"})).status_code == 303
    page = (await web.get("/rates")).text
    assert "1 USD → EUR" in page and "0.95" in page and "0.9177" not in page and "Yours" in page
    german = (await web.get("/rates", headers={"Accept-Language": "de-DE"})).text
    assert '<td class="num">0,95</td>' in german
    bad = await person.submit("/rates", "/rates", {**rate, "rate": "-1"})
    assert bad.status_code == 422 and 'id="rate-rate-error"' in bad.text
    assert 'value="-1"' in bad.text  # what was typed stays
    same = await person.submit("/rates", "/rates", {**rate, "quote": "USD"})
    assert same.status_code == 422 and 'id="rate-quote-error"' in same.text
    # An empty part of the rate's path is refused next to its field, never sent as a path.
    empty = await person.submit("/rates", "/rates", {**rate, "day": "", "quote": " "})
    assert empty.status_code == 422
    assert 'id="rate-day-error"' in empty.text and 'id="rate-quote-error"' in empty.text
    # Nor is a part no path segment can carry (a hand-made form: the date picker sends none).
    slashed = await person.submit("/rates", "/rates", {**rate, "day": "02/11/2026", "base": ".."})
    assert slashed.status_code == 422 and 'value="02/11/2026"' in slashed.text
    assert 'id="rate-day-error">must be a date as YYYY-MM-DD' in slashed.text
    assert 'id="rate-base-error"' in slashed.text
    filtered = await web.get("/rates?base=US")
    assert filtered.status_code == 422 and 'id="filter-base-error"' in filtered.text
    assert 'name="base" type="text" value="US"' in filtered.text  # kept as typed
    assert "0.95" in (await web.get("/rates?base=USD&quote=EUR")).text
    assert "No rates for this pair" in (await web.get("/rates?base=GBP")).text
    delete = "/rates/2026-11-02/USD/EUR/delete"
    assert (await person.submit("/rates", delete, {})).status_code == 303
    assert "0.95" not in (await web.get("/rates")).text
    assert (await person.submit("/rates", delete, {})).status_code == 404


async def test_the_charged_amount_is_added_shown_and_cleared(web: httpx.AsyncClient) -> None:
    person = await signed_up_person(web)
    await person.submit("/account", "/account/home-currency", {"currency": "EUR"})
    new = (await web.get("/expenses/new")).text
    assert 'name="charged_currency" type="text" value="EUR"' in new
    assert 'name="currency" type="text" value="EUR"' in new
    refused = await person.add_expense(
        currency="USD", charged_amount="9.999", charged_currency="EUR"
    )
    assert refused.status_code == 422 and 'value="9.999"' in refused.text
    assert 'id="new-charged_amount-error"' in refused.text
    added = await person.add_expense(
        description="Hotel",
        amount="120.00",
        currency="USD",
        charged_amount="110,40",
        charged_currency="EUR",
    )
    assert added.status_code == 303
    listed = (await web.get("/expenses")).text
    assert "charged €110.40" in listed
    [expense] = expense_ids(listed)
    edit = (await web.get(f"/expenses/{expense}/edit")).text
    assert 'value="110.40"' in edit
    cleared = await person.submit(
        f"/expenses/{expense}/edit",
        f"/expenses/{expense}",
        {"charged_amount": "", "charged_currency": "EUR", "description": "Hotel"},
    )
    assert cleared.status_code == 303
    assert "charged" not in (await web.get(f"/expenses/{expense}/row")).text


async def test_statements_are_detected_previewed_and_imported_whole(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    token = csrf_token((await web.get("/import")).text)
    camt = (STATEMENTS / "statement.camt053.xml").read_bytes()
    preview = await web.post(
        "/import",
        data={"csrf_token": token, "format": ""},
        files={"file": ("statement.xml", camt, "application/xml")},
    )
    assert preview.status_code == 200, preview.text
    assert "Read as CAMT.053. 2 payments read: 2 will be added." in preview.text
    assert "1 credit (money coming in) will be skipped" in preview.text
    added = table_of(preview.text, "To be added")
    assert '<th scope="col" class="num">Transaction</th>' in added
    assert "Green Grocer GmbH" in added and "Mountain railway ticket" in added
    assert '<td class="num">2</td><td>money coming in</td>' in table_of(
        preview.text, "Skipped as not spending"
    )
    assert expense_ids((await web.get("/expenses")).text) == []
    done = await person.submit(
        "/import", "/import/confirm", {"packed": packed_upload(preview.text), "format": ""}
    )
    assert "Imported: 2 new expenses" in done.text
    assert len(expense_ids((await web.get("/expenses")).text)) == 2
    again = await web.post(
        "/import", data={"csrf_token": token}, files={"file": ("s.xml", camt, "text/xml")}
    )
    assert "2 will be skipped as already imported" in again.text
    # The wrong format chosen by hand is refused whole, and said.
    wrong = await web.post(
        "/import",
        data={"csrf_token": token, "format": "ofx"},
        files={"file": ("s.xml", camt, "text/xml")},
    )
    assert wrong.status_code == 422 and 'role="alert"' in wrong.text
    assert '<option value="ofx" selected>' in wrong.text


async def test_a_qif_file_needs_its_currency_and_date_order(web: httpx.AsyncClient) -> None:
    await signed_up_person(web)
    token = csrf_token((await web.get("/import")).text)
    ambiguous = (STATEMENTS / "ambiguous.qif").read_bytes()

    async def upload(**options: str) -> httpx.Response:
        return await web.post(
            "/import",
            data={"csrf_token": token, **options},
            files={"file": ("a.qif", ambiguous, "application/octet-stream")},
        )

    unsaid = await upload(currency="EUR")
    assert unsaid.status_code == 422 and 'id="import-date_order-error"' in unsaid.text
    bad_order = await upload(currency="EUR", date_order="ymd")
    assert bad_order.status_code == 422 and 'id="import-date_order-error"' in bad_order.text
    preview = await upload(currency="eur", date_order="dmy")
    assert preview.status_code == 200 and "Read as QIF. 1 payment read" in preview.text
    # The confirm form carries the options with the file.
    assert '<input type="hidden" name="date_order" value="dmy">' in preview.text
    assert '<input type="hidden" name="currency" value="eur">' in preview.text


async def test_rules_are_created_ordered_applied_with_a_preview_and_deleted(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    food = await added_category(person, "Food")
    refused = await person.submit("/rules", "/rules", {"pattern": "(", "match": "regex"})
    assert refused.status_code == 422 and 'id="new-rule-pattern-error"' in refused.text
    for pattern in ("bakery", "cafe"):
        created = await person.submit(
            "/rules", "/rules", {"pattern": pattern, "category_id": food, "tags": "daily"}
        )
        assert created.status_code == 303, created.text
    page = (await web.get("/rules")).text
    first, second = _RULE_ID.findall(page)
    assert page.index("“bakery”") < page.index("“cafe”")
    await person.submit("/rules", f"/rules/{second}/move", {"direction": "up"})
    page = (await web.get("/rules")).text
    assert _RULE_ID.findall(page) == [second, first]
    await person.add_expense(description="Village Bakery")
    await person.add_expense(description="Bookshop")
    preview = await person.submit("/rules", "/rules/apply", {})
    assert "1 uncategorised expense would be changed" in preview.text
    assert "Nothing has changed yet" in preview.text and "Village Bakery" in preview.text
    assert "Food" not in (await web.get("/expenses")).text.split("<tbody")[1]
    applied = await person.submit("/rules", "/rules/apply/confirm", {})
    assert "1 expense changed" in applied.text
    assert "Food" in (await web.get("/expenses?q=Bakery")).text.split("<tbody")[1]
    assert (await person.submit("/rules", f"/rules/{first}/delete", {})).status_code == 303
    assert _RULE_ID.findall((await web.get("/rules")).text) == [second]


async def test_a_rule_is_edited_with_its_fields_kept_on_a_refusal_and_cleared_when_emptied(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    created = await person.submit(
        "/rules",
        "/rules",
        {"pattern": "bakery", "currency": "EUR", "min_amount": "5", "tags": "daily, bread"},
    )
    assert created.status_code == 303, created.text
    [rule] = _RULE_ID.findall((await web.get("/rules")).text)
    form = (await web.get(f"/rules/{rule}/edit")).text
    assert 'value="bakery"' in form and 'value="EUR"' in form and 'value="5.00"' in form
    assert 'value="daily, bread"' in form
    edit = f"/rules/{rule}/edit"
    refused = await person.submit(edit, f"/rules/{rule}", {"pattern": "caf(", "match": "regex"})
    assert refused.status_code == 422 and 'id="rule-pattern-error"' in refused.text
    assert 'value="caf("' in refused.text
    saved = await person.submit(edit, f"/rules/{rule}", {"pattern": "cafe", "tags": "coffee"})
    assert saved.status_code == 303, saved.text
    page = (await web.get("/rules")).text
    assert "“cafe”" in page and "“bakery”" not in page
    assert "in EUR" not in page and "coffee" in page and "bread" not in page


async def test_another_users_rules_and_rates_answer_not_found(web: httpx.AsyncClient) -> None:
    alice = await signed_up_person(web)
    created = await alice.submit("/rules", "/rules", {"pattern": "alice", "tags": "mine"})
    assert created.status_code == 303, created.text
    await alice.submit(
        "/rates", "/rates", {"day": "2026-11-02", "base": "USD", "quote": "EUR", "rate": "0.9"}
    )
    [rule] = _RULE_ID.findall((await web.get("/rules")).text)
    web.cookies.clear()
    bob = await signed_up_person(web)
    for action, data in (
        (f"/rules/{rule}/delete", {}),
        (f"/rules/{rule}/move", {"direction": "down"}),
        (f"/rules/{rule}", {"pattern": "bob"}),
        ("/rates/2026-11-02/USD/EUR/delete", {}),
    ):
        response = await bob.submit("/rules", action, data)
        assert response.status_code == 404, action
    assert (await web.get(f"/rules/{rule}/edit")).status_code == 404
    # An id that is no id at all names nothing either: "not found", not "something went wrong".
    for path in ("/rules/garbage/edit", "/expenses/garbage/edit", "/budgets/garbage/edit"):
        malformed = await web.get(path)
        assert malformed.status_code == 404 and "Page not found" in malformed.text, path
    assert (await bob.submit("/rules", "/expenses/garbage/delete", {})).status_code == 404
    assert "alice" not in (await web.get("/rules")).text
    assert "No rates yet" in (await web.get("/rates")).text


async def test_reports_and_the_dashboard_in_the_home_currency_say_how(
    web: httpx.AsyncClient,
) -> None:
    person = await signed_up_person(web)
    today = date.today().isoformat()
    unset = await web.get("/reports?in=home")
    assert unset.status_code == 200 and "Set your home currency" in unset.text
    await person.submit("/account", "/account/home-currency", {"currency": "EUR"})
    await person.add_expense(description="Bread", amount="4.00", occurred_on=today)
    hotel = await person.add_expense(
        description="Hotel",
        amount="100.00",
        currency="USD",
        charged_amount="93.10",
        charged_currency="EUR",
        occurred_on=today,
    )
    assert hotel.status_code == 303, hotel.text
    await person.add_expense(description="Taxi", amount="20.00", currency="USD", occurred_on=today)
    await person.add_expense(description="Tea", amount="5.00", currency="GBP", occurred_on=today)
    await person.submit(
        "/rates", "/rates", {"day": today, "base": "USD", "quote": "EUR", "rate": "0.9"}
    )
    report = (await web.get("/reports?in=home")).text
    # 4.00 + 93.10 + 18.00; the pound has no rate: listed apart, not added.
    assert "€115.10" in report
    assert "1 already in EUR; 1 at the amount charged; 1 at an exchange rate (oldest " in report
    assert "1 without a rate, not included" in report and "£5.00" in report
    assert 'data-series="EUR"' in report and 'aria-current="page">In my home currency' in report
    dashboard = (await web.get("/?in=home")).text
    assert "€115.10" in dashboard and "without a rate" in dashboard
    assert "£5.00" in (await web.get("/")).text  # each currency apart, as before
    budget = await person.submit(
        "/budgets",
        "/budgets",
        {
            "name": "Travel",
            "amount": "100.00",
            "currency": "EUR",
            "converted": "on",
            "thresholds": "80, 100",
        },
    )
    assert budget.status_code == 303, budget.text
    budgets = (await web.get("/budgets")).text
    assert (
        "Every currency, converted to EUR" in budgets and "Without a rate (not counted)" in budgets
    )


async def test_the_expense_filter_form_shows_each_person_their_own_categories(
    web: httpx.AsyncClient,
) -> None:
    """The filter form is rendered once per distinct form and kept: a person's form follows
    their categories and filters, and never shows anyone else's."""
    alice = await signed_up_person(web)
    await added_category(alice, "Alice's <food>")
    alice_cookies = dict(web.cookies)
    web.cookies.clear()
    bob = await signed_up_person(web)
    bob_food = await added_category(bob, "Bob & food")
    bob_page = (await web.get("/expenses")).text
    assert "Alice" not in bob_page
    await added_category(bob, "Bob's travel")
    filtered = (await web.get("/expenses", params={"category_id": bob_food, "q": "<b>"})).text
    assert "Bob&#39;s travel</option>" in filtered
    assert f'<option value="{bob_food}" selected>Bob &amp; food</option>' in filtered
    assert 'value="&lt;b&gt;"' in filtered
    web.cookies.clear()
    web.cookies.update(alice_cookies)
    alice_page = (await web.get("/expenses")).text
    assert "Alice&#39;s &lt;food&gt;</option>" in alice_page and "Bob" not in alice_page


async def test_a_list_filtered_by_a_category_not_ones_own_says_there_is_no_such_category(
    web: httpx.AsyncClient,
) -> None:
    """The filter's category is not one a person had: another person's id and a made-up one are
    both "No such category." at the field, on pages the same but for the id (whether the id is
    someone else's never shows). One's own category is no problem."""
    alice = await signed_up_person(web)
    alices = await added_category(alice, "Alice's food")
    assert (await alice.add_expense(description="Lunch", category_id=alices)).status_code == 303
    web.cookies.clear()
    bob = await signed_up_person(web)
    snacks = await added_category(bob, "Snacks")
    assert (await bob.add_expense(description="Crisps")).status_code == 303
    made_up = str(uuid.uuid4())
    pages = {}
    for category in (alices, made_up):
        listed = await web.get("/expenses", params={"category_id": category})
        assert listed.status_code == 200, category
        html = listed.text
        assert 'id="filter-category_id-error">No such category.</p>' in html, category
        assert f'<option value="{category}" selected>(no such category)</option>' in html
        assert "was deleted" not in html and "Alice" not in html, category
        assert expense_ids(html) == [] and "No expenses match these filters." in html
        pages[category] = html.replace(category, "the id")
    assert pages[alices] == pages[made_up]
    own = (await web.get("/expenses", params={"category_id": snacks})).text
    assert "No such category." not in own and f'<option value="{snacks}" selected>' in own
