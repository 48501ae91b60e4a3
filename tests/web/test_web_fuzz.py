"""Form fuzzing of the web app: every page and form route, over real HTTP against `serve --target
all` and PostgreSQL, signed in, with a valid CSRF token, sent odd values in the fields its own
pages render (and odd ids in its paths). Checks: no answer is a server error (the API's
operations have their Schemathesis fuzzing, tests/platform/test_fuzz.py).

Bounded for CI like that test: a fixed seed and EXPENSETRACKER_FUZZ_EXAMPLES (default 20)
examples per route; `make fuzz` runs this file too, with many more. No route is left out but
those that end the session the fuzzing runs in, and a test checks that list against the router.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from expensetracker.web.routes import router
from tests.helpers.database import scratch_database
from tests.helpers.fuzzing import FUZZ_SETTINGS
from tests.helpers.processes import cli, free_port, serve_env, spawn
from tests.helpers.users import PASSWORD
from tests.helpers.web import PAGES, SESSION_KEY, csrf_token, idempotency_key

pytestmark = pytest.mark.database

# Routes that end the session the fuzzing runs in (or the account): each has its own tests.
SESSION_ENDING = {
    ("POST", "/logout"),
    ("POST", "/account/logout-all"),
    ("POST", "/account/password"),
    ("POST", "/account/delete"),
}
EVERY_ROUTE = {
    (method, route.path)
    for route in router.routes
    for method in getattr(route, "methods", ())
    if method != "HEAD"
}
ROUTES = sorted(EVERY_ROUTE - SESSION_ENDING)
# Values that have broken form handling elsewhere: empty and blank, out of range and malformed
# numbers and dates, other alphabets and digits, control and bidi characters, markup, very long.
ODD_VALUES = [
    "",
    " ",
    "0",
    "-1",
    "-0",
    "0.001",
    "1e309",
    "NaN",
    "Infinity",
    "99999999999999999999999",
    "1,50",
    "\uff11\uff12",  # fullwidth digits
    "0000-00-00",
    "2025-02-30",
    "9999-12-31",
    "2025-13",
    "EUR",
    "eur",
    "XXX",
    "€",
    "ÿ",
    "\u202eabc\x00",
    "<script>alert(1)</script>",
    "'; DROP TABLE x;--",
    "%",
    "\\",
    "../../etc",
    "on",
    "x" * 5000,
]
FIELD_VALUE = st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=40))
# One thing of each kind the person makes through its page's form, so that paths get real ids.
SEEDS = {
    "/expenses/new": {
        "description": "Seed",
        "amount": "1.50",
        "currency": "EUR",
        "occurred_on": "2026-11-02",
    },
    "/categories": {"name": "Seeded"},
    "/budgets": {"name": "All", "amount": "100", "currency": "EUR"},
    "/rules": {"pattern": "seed", "tags": "seeded"},
    "/recurring": {
        "description": "Rent",
        "amount": "500",
        "currency": "EUR",
        "frequency": "monthly",
        "starts_on": "2026-11-01",
    },
}
_FIELD = re.compile(r'name="([a-z_]+)"')
_IDS = re.compile(r"/(expenses|categories|budgets|rules|recurring)/([0-9a-f-]{36})")


@dataclass
class WebTarget:
    client: httpx.Client
    fields: list[str]
    ids: dict[str, str]  # a real id of the person's, per kind of thing
    calls: int = 0


def _form(client: httpx.Client, page: str) -> dict[str, str]:
    """The CSRF token and the Idempotency-Key of the creating form on ``page``."""
    html = client.get(page).text
    return {"csrf_token": csrf_token(html), "idempotency_key": idempotency_key(html)}


@pytest.fixture(scope="module")
async def web_database(postgres_admin_url: str, migrated_template: str) -> AsyncIterator[str]:
    async with scratch_database(postgres_admin_url, migrated_template) as url:
        yield url


@pytest.fixture(scope="module")
def web_target(web_database: str) -> Iterator[WebTarget]:
    """`expensetracker serve --target all` on a database of its own, and a person signed in
    through the pages who has one thing of each kind, for paths with real ids."""
    env = serve_env(web_database, EXPENSETRACKER_WEB_SESSION_KEY=SESSION_KEY)
    command = cli("serve", "--target", "all", "--port", str(free_port()))
    with spawn(command, env) as process:
        headers = {"Sec-Fetch-Site": "same-origin"}
        with httpx.Client(base_url=process.wait_ready(), headers=headers, timeout=30) as client:
            email = f"fuzz-{uuid.uuid4().hex[:12]}@example.org"
            signup = {"email": email, "password": PASSWORD, "display_name": "Fuzz"}
            token = csrf_token(client.get("/signup").text)
            assert client.post("/signup", data={"csrf_token": token, **signup}).status_code == 303
            for page, data in SEEDS.items():
                answer = client.post(page, data={**_form(client, page), **data})
                assert answer.status_code == 303, (page, answer.text)
            fields, ids = set(), {}
            for page in PAGES:
                html = client.get(page).text
                fields |= set(_FIELD.findall(html))
                for kind, id_ in _IDS.findall(html):
                    ids.setdefault(kind, id_)
            assert set(ids) == {"expenses", "categories", "budgets", "rules", "recurring"}
            target = WebTarget(client, sorted(fields - {"csrf_token"}), ids)
            yield target
            print(f"\nweb fuzzing: {target.calls} requests")
        process.stop()
        errors = [n for n, line in enumerate(process.lines) if "unhandled_exception" in line]
        for n in errors[:3]:  # the server's account of a failure, for the CI log
            print("\n".join(process.lines[n : n + 60]))
        assert not errors


def _path(template: str, target: WebTarget, draw: st.DrawFn) -> str:
    """The route's path with each parameter a real id of the person's, another user's or no
    one's id, or something that is no id at all."""
    kind = template.split("/")[1]
    odd_ids = ["x", "0" * 40, "é", "a b", "..", "%00", str(uuid.uuid4())]
    choices = [target.ids.get(kind, str(uuid.uuid4())), *odd_ids]
    return re.sub(
        r"\{[a-z_]+\}",
        lambda _: quote(draw(st.sampled_from(choices)), safe=""),
        template,
    )


@pytest.mark.parametrize(("method", "template"), ROUTES)
@FUZZ_SETTINGS
@given(data=st.data())
def test_no_page_or_form_answers_a_server_error(
    method: str, template: str, web_target: WebTarget, data: st.DataObject
) -> None:
    client = web_target.client
    path = _path(template, web_target, data.draw)
    fields = data.draw(st.dictionaries(st.sampled_from(web_target.fields), FIELD_VALUE))
    headers = {"HX-Request": "true"} if data.draw(st.booleans()) else {}
    web_target.calls += 1
    if method == "GET":
        response = client.get(path, params=fields, headers=headers)
    else:
        form = {"csrf_token": csrf_token(client.get("/expenses/new").text), **fields}
        response = client.post(path, data=form, headers=headers)
    assert response.status_code < 500, (method, path, fields, response.text[:500])
    # Still signed in: the fuzzing did not sign itself out (it would test the sign-in page).
    assert client.get("/account").status_code == 200


def test_every_route_is_fuzzed_but_those_that_end_the_session() -> None:
    assert EVERY_ROUTE >= SESSION_ENDING
    assert set(ROUTES) == EVERY_ROUTE - SESSION_ENDING
