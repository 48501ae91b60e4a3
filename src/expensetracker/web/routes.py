"""The web app's pages. Thin: each gathers the form or query, calls ``service``, and renders.

Every page works without JavaScript (plain links and form posts, answered with a redirect);
htmx, when present, asks for the part of the page that changes (``HX-Request``)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import date
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.datastructures import FormData, QueryParams, UploadFile
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Match

from expensetracker.platform.config import Environment
from expensetracker.platform.idempotency import KEY_PATTERN
from expensetracker.platform.state import app_state
from expensetracker.web import service, views
from expensetracker.web.client import (
    BUDGETS,
    CATEGORIES,
    EXPENSES,
    RATES,
    RECURRING,
    RULES,
    TAGS,
    ApiClient,
    ApiError,
    ServiceUnavailable,
    Things,
    Unauthorized,
)
from expensetracker.web.schemas import RULE_FIELDS, RULE_MATCHES, Expense, HomeCurrency, Page
from expensetracker.web.service import Account, Credentials, WebState
from expensetracker.web.session import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    clear_session_cookie,
    cross_site,
    set_csrf_cookie,
    set_session_cookie,
)

log = structlog.get_logger(__name__)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequired(Exception):
    pass


class Forbidden(Exception):
    pass


def _sign_in_url(request: Request) -> str:
    target = _comeback(request)
    return "/login" if target == "/" else f"/login?next={quote(target, safe='')}"


def error_page(request: Request, status: int, detail: str | None) -> Response:
    """The platform's refusals as pages; a file too large (413) links back to its form's page,
    to choose a smaller one."""
    upload_page = _comeback(request) if status == 413 else None
    return views.error_page(request, status, detail, upload_page=upload_page)


def _comeback(request: Request) -> str:
    """Where signing in leads back to: the page asked for; for htmx, the page it asked from
    (what it asks for is a part: a row, the next rows); for a form sent, the nearest page at or
    above its action, which is often no page (``/expenses/{id}``, ``/account/password``):
    followed after signing in, it would answer 405."""
    shown = urlsplit(request.headers.get("hx-current-url", ""))
    if _htmx(request) and shown.path:
        return _safe_next(shown.path + (f"?{shown.query}" if shown.query else ""))
    if request.method in _SAFE_METHODS:
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    path = request.url.path.rstrip("/")
    while path:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
        if any(
            route.matches(scope)[0] is Match.FULL
            for route in iter_route_contexts(request.app.router.routes)
        ):
            return path
        path = path.rpartition("/")[0]
    return "/"


class WebRoute(APIRoute):
    """Applies the cookies a request earned (a renewed session, a CSRF secret), and turns the
    API's answers into what a person should see: the sign-in page, a not-found page, or a
    friendly error with the request id. A page answers HEAD as GET (uptime checks send it), as
    Starlette's own routes do and FastAPI's do not; uvicorn leaves the body out."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods and "GET" in self.methods:
            self.methods.add("HEAD")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except (SignInRequired, Unauthorized):
                response = _redirect(request, _sign_in_url(request))
                clear_session_cookie(response, request)
                return response
            except Forbidden:
                return views.error_page(
                    request,
                    403,
                    "The form was sent from another site, or "
                    "it is too old: reload the page and try again.",
                )
            except ApiError as exc:
                if exc.status == 404:
                    return views.error_page(request, 404, "There is nothing here.")
                return _whole_page(request, views.error_page(request, exc.status, exc.detail))
            except ServiceUnavailable as exc:
                log.warning("service_unavailable", service=exc.service, error=str(exc))
                return views.error_page(request, 503, None)
            for apply in getattr(request.state, "web_cookies", ()):
                apply(response)
            return response

        return handle


def _web(request: Request) -> WebState:
    return app_state(request.app).get(WebState)


async def _state(request: Request) -> WebState:
    """Async, as every dependency here: FastAPI runs a plain function in a thread."""
    return _web(request)


def _later(request: Request, apply: Callable[[Response], None]) -> None:
    if not hasattr(request.state, "web_cookies"):
        request.state.web_cookies = []
    request.state.web_cookies.append(apply)


def _csrf_secret(request: Request) -> str:
    secret = request.cookies.get(CSRF_COOKIE)
    if not secret or len(secret) > 64:
        secret = secrets.token_urlsafe(24)
        max_age = _web(request).refresh_ttl_seconds
        _later(
            request,
            lambda response: set_csrf_cookie(response, request, secret, max_age=max_age),
        )
    return secret


async def _csrf_guard(request: Request) -> None:
    if request.method in _SAFE_METHODS:
        return
    if cross_site(request):
        raise Forbidden
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        token = str((await request.form()).get(CSRF_FIELD, ""))
    if not _web(request).codec.csrf_valid(request.cookies.get(CSRF_COOKIE), token):
        raise Forbidden


router = APIRouter(
    route_class=WebRoute, include_in_schema=False, dependencies=[Depends(_csrf_guard)]
)


async def _account(request: Request) -> Account:
    state = _web(request)
    account = await service.open_session(state=state, cookie=request.cookies.get(SESSION_COOKIE))
    return _signed_in(request, state, account)


def _signed_in(request: Request, state: WebState, account: Account | None) -> Account:
    """The request's account once auth has checked its session; its renewed cookie is set."""
    if account is None:
        raise SignInRequired
    if account.renewed is not None:
        renewed = account.renewed
        _later(
            request,
            lambda response: set_session_cookie(
                response, request, renewed, max_age=state.refresh_ttl_seconds
            ),
        )
    structlog.contextvars.bind_contextvars(user_id=account.user["id"])
    return account


async def _credentials(request: Request) -> Credentials:
    credentials = await service.session_credentials(
        state=_web(request), cookie=request.cookies.get(SESSION_COOKIE)
    )
    if credentials is None:
        raise SignInRequired
    return credentials


async def _checked_reads(
    request: Request, state: WebState, credentials: Credentials, *reads: Awaitable[Any]
) -> tuple[Account, list[Any]]:
    """A page's reads, sent while auth checks the session; answered only when it lives."""
    account, answers = await service.checked_reads(state=state, of=credentials, reads=reads)
    return _signed_in(request, state, account), answers


SignedIn = Annotated[Account, Depends(_account)]
# The session's tokens before auth has checked the session: only for a page that reads, and
# shows nothing before _checked_reads has the account.
Unchecked = Annotated[Credentials, Depends(_credentials)]
State = Annotated[WebState, Depends(_state)]


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _redirect(request: Request, url: str) -> Response:
    """After a form post: a 303 for browsers, HX-Redirect for htmx (which would follow a 303
    and swap the whole page into its target)."""
    if _htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _whole_page(request: Request, page: Response) -> Response:
    """A whole page answering a form that htmx posted in place (a delete's confirm, the
    quick-add): it replaces the page, not the form, which would hold a second page."""
    if _htmx(request):
        page.headers.update({"HX-Retarget": "body", "HX-Reswap": "innerHTML"})
    return page


def _page(
    request: Request,
    template: str,
    account: Account | None,
    *,
    status: int | None = None,
    **context: Any,
) -> Response:
    """The page; its status, unless given, is 422 where it shows the API's problems (``errors``)
    and 200 otherwise."""
    if status is None:
        status = 422 if context.get("errors") else 200
    return views.render(
        request,
        template,
        {
            "account": account,
            "csrf_token": _web(request).codec.csrf_token(_csrf_secret(request)),
            "htmx": _htmx(request),
            "path": request.url.path,
            # A form page shows what was typed and the API's problems; none at first.
            "form": {},
            "errors": {},
            "error": None,
            **context,
        },
        status=status,
    )


def _text(form: FormData) -> dict[str, str]:
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


# A creating form saved before, sent again changed (from the browser's history): its key is
# refused with the other values. The page renders it with a new key, which adds them.
_SAVED_BEFORE = (
    "This form was saved before, with other values; these were not saved. "
    "Send it again to save them as a new one."
)


def _saved_before(exc: ApiError) -> bool:
    return "Idempotency-Key" in exc.field_errors


async def _submitted(
    request: Request,
    call: Awaitable[object],
    *,
    invalid: Callable[..., Awaitable[Response]],
    then: str,
    refusals: tuple[int, ...] = (422,),
) -> Response:
    """A form's API call: on success a redirect to ``then``; refused with one of ``refusals``,
    the form's page again (``invalid``) with the API's problem next to its fields."""
    try:
        await call
    except ApiError as exc:
        if exc.status not in refusals:
            raise
        error = _SAVED_BEFORE if _saved_before(exc) else exc.detail
        page = await invalid(status=exc.status, errors=exc.field_errors, error=error)
        return _whole_page(request, page)
    return _redirect(request, then)


def _more(path: str, filters: Mapping[str, str], cursor: str | None) -> str | None:
    """The link to the next page of the list at ``path``, filtered alike; None after the last."""
    return f"{path}?" + urlencode({**filters, "cursor": cursor}) if cursor else None


def _form_key(form: dict[str, str]) -> str:
    """The Idempotency-Key a creating form was rendered with: submitted twice, it creates once.
    A key the API would refuse (only a hand-made form sends one) gives way to a new one."""
    key = form.get("idempotency_key", "")
    return key if re.fullmatch(KEY_PATTERN, key) else service.new_form_key()


# What a list or edit page shows besides its form: the things listed, the form's choices.
PageContext = Callable[[Request, Account, WebState], Awaitable[dict[str, Any]]]
# How a form becomes the keyword arguments of its ApiClient call (``body``, mostly).
FormArguments = Callable[[FormData], dict[str, Any]]


class ListPage:
    """A page at ``path`` that lists the account's things of one kind (categories, recurring
    expenses, budgets, rules), rendered from the template named after it. Its methods add the
    routes of what it offers: a form that creates one, a button that deletes one, a page that
    edits one, each with ApiClient's call on ``things``. ``item`` names a thing's id in those
    routes' paths; ``arguments`` makes the API call's arguments of the creating and the editing
    form."""

    def __init__(
        self,
        path: str,
        things: Things[Any],
        *,
        item: str,
        context: PageContext,
        arguments: FormArguments,
        blank_form: Callable[[], dict[str, str]] = dict,  # a function: some values are today's
    ) -> None:
        self.path, self.things, self.item, self.context = path, things, item, context
        self.arguments, self.blank_form = arguments, blank_form
        self.deleted: str | None = None  # what the page says after a deletion, if it offers one

        async def listed(request: Request, account: SignedIn, state: State) -> Response:
            return await self.show(request, account, state)

        router.add_api_route(path, listed, methods=["GET"])

    async def show(
        self,
        request: Request,
        account: Account,
        state: WebState,
        *,
        status: int = 200,
        **extra: Any,
    ) -> Response:
        """The page; with ``extra``, the form as typed and the API's problems with it."""
        context = await self.context(request, account, state)
        extra.setdefault("form", self.blank_form())
        if request.query_params.get("deleted") and self.deleted:
            extra.setdefault("done", self.deleted)
        return _page(
            request,
            f"{self.path.strip('/')}.html",
            account,
            status=status,
            idempotency_key=service.new_form_key(),
            **extra,
            **context,
        )

    def creates(self, *, refusals: tuple[int, ...] = (422,)) -> None:
        """POST ``path``: creates one with the form's arguments, under the key the form was
        rendered with; refused, the page again with the problems."""

        async def created(request: Request, account: SignedIn, state: State) -> Response:
            raw = await request.form()
            form = _text(raw)
            key = _form_key(form)
            return await _submitted(
                request,
                state.api.create(
                    self.things, token=account.token, idempotency_key=key, **self.arguments(raw)
                ),
                invalid=partial(self.show, request, account, state, form=form),
                then=self.path,
                refusals=refusals,
            )

        router.add_api_route(self.path, created, methods=["POST"])

    def deletes(
        self, *, done: str, params: Callable[[FormData], dict[str, str]] | None = None
    ) -> None:
        """POST ``path/{item}/delete``: deletes that one, with the query ``params`` of its form
        (none by default), then the page, saying ``done``; refused, the page with the problem,
        and that one's question (``deleting``) open as answered (``typed``), the problem at its
        field."""
        self.deleted = done

        async def deleted(request: Request, account: SignedIn, state: State) -> Response:
            form, item_id = await request.form(), self._item_id(request)
            call = state.api.delete(
                self.things,
                token=account.token,
                id=item_id,
                params=params(form) if params else None,
            )
            return await _submitted(
                request,
                call,
                invalid=partial(
                    self.show, request, account, state, deleting=item_id, typed=_text(form)
                ),
                then=f"{self.path}?deleted=1",
            )

        router.add_api_route(f"{self.path}/{{{self.item}}}/delete", deleted, methods=["POST"])

    def edits(self, *, filled: Callable[[Any], dict[str, Any]], context: PageContext) -> None:
        """GET ``path/{item}/edit``: the form of that one, ``filled`` from it, in the template
        named after the thing (which extends _edit_page.html); POST ``path/{item}``: changes it
        with the form's arguments, then the list page (refused, the form again with the
        problems)."""
        name = self.item.removesuffix("_id")

        async def show(
            request: Request, account: Account, state: WebState, *, status: int = 200, **extra: Any
        ) -> Response:
            thing, choices = await asyncio.gather(
                state.api.one(self.things, token=account.token, id=self._item_id(request)),
                context(request, account, state),
            )
            # Filled from the thing, unless ``extra`` holds the form as typed.
            extra["form"] = extra.get("form") or filled(thing)
            return _page(
                request,
                f"{name}_edit.html",
                account,
                status=status,
                action=f"{self.path}/{thing['id']}",
                back=self.path,
                field_template=f"_{name}_fields.html",
                prefix=f"{name}-",
                **{name: thing},
                **extra,
                **choices,
            )

        async def edit(request: Request, account: SignedIn, state: State) -> Response:
            return await show(request, account, state)

        async def updated(request: Request, account: SignedIn, state: State) -> Response:
            raw = await request.form()
            return await _submitted(
                request,
                state.api.change(
                    self.things,
                    token=account.token,
                    id=self._item_id(request),
                    **self.arguments(raw),
                ),
                invalid=partial(show, request, account, state, form=_text(raw)),
                then=self.path,
            )

        item_path = f"{self.path}/{{{self.item}}}"
        router.add_api_route(f"{item_path}/edit", edit, methods=["GET"])
        router.add_api_route(item_path, updated, methods=["POST"])

    def _item_id(self, request: Request) -> str:
        return str(request.path_params[self.item])


class FormPage:
    """A page at ``path`` that ``show`` renders, whose forms each make one ApiClient call. Its
    ``posts`` adds the route of such a form: refused, the page again with the form as typed and
    the API's problems next to its fields; accepted, a redirect."""

    def __init__(self, path: str, show: Callable[..., Awaitable[Response]]) -> None:
        self.show = show

        async def shown(request: Request, account: SignedIn, state: State) -> Response:
            return await show(request, account, state)

        router.add_api_route(path, shown, methods=["GET"])

    def posts(
        self,
        path: str,
        call: Callable[..., Awaitable[object]],
        *,
        arguments: Callable[[dict[str, str]], dict[str, Any]],
        then: str,
        form_as: str = "form",
    ) -> None:
        """POST ``path``: ``call`` (an ApiClient method) with the form's ``arguments``, then
        ``then``; refused, the page with the form as typed as its ``form_as``."""

        async def posted(request: Request, account: SignedIn, state: State) -> Response:
            form = _text(await request.form())
            return await _submitted(
                request,
                call(state.api, token=account.token, **arguments(form)),
                invalid=partial(self.show, request, account, state, **{form_as: form}),
                then=then,
            )

        router.add_api_route(path, posted, methods=["POST"])


# Static files


@router.get("/static/{name}")
async def static(name: str, request: Request) -> Response:
    asset = views.assets().get(name)
    if asset is None:
        return views.error_page(request, 404, None)
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable",
        "ETag": f'"{name}"',
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.content, media_type=asset.media_type, headers=headers)


# Signing in and out


def _demo(request: Request) -> tuple[str, str] | None:
    settings = app_state(request.app).settings
    return settings.demo_credentials if settings.env is Environment.development else None


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _page(request, "login.html", None, next=_safe_next(next), demo=_demo(request))


@router.post("/login")
async def login(request: Request, state: State) -> Response:
    form = _text(await request.form())
    target = _safe_next(form.get("next"))
    try:
        cookie = await service.sign_in(
            state=state,
            email=form.get("email", ""),
            password=form.get("password", ""),
            client=_client(request),
        )
    except ApiError as exc:
        error = (
            "Too many attempts. Wait a few minutes, then try again."
            if exc.status == 429
            else "The email address or the password is wrong."
        )
        form.pop("password", None)
        return _page(
            request,
            "login.html",
            None,
            status=exc.status if exc.status == 429 else 401,
            next=target,
            form=form,
            error=error,
        )
    response = _redirect(request, target)
    set_session_cookie(response, request, cookie, max_age=state.refresh_ttl_seconds)
    return response


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    return _page(request, "signup.html", None)


@router.post("/signup")
async def signup(request: Request, state: State) -> Response:
    form = _text(await request.form())
    display_name = form.get("display_name", "").strip()
    try:
        cookie = await service.sign_up(
            state=state,
            email=form.get("email", ""),
            password=form.get("password", ""),
            display_name=display_name,
            client=_client(request),
        )
    except ApiError as exc:
        form.pop("password", None)
        return _page(
            request,
            "signup.html",
            None,
            status=422,
            form=form,
            errors=service.sign_up_errors(exc.field_errors, display_name=display_name),
            error=exc.detail,
        )
    if cookie is None:
        # Said the same way whether or not the address was registered before.
        return _page(
            request,
            "login.html",
            None,
            next="/",
            form={"email": form.get("email", "")},
            notice="If this address was not registered yet, its account "
            "now exists. Sign in to continue.",
        )
    response = _redirect(request, "/")
    set_session_cookie(response, request, cookie, max_age=state.refresh_ttl_seconds)
    return response


@router.post("/logout")
async def logout(request: Request, state: State) -> Response:
    account = await service.open_session(state=state, cookie=request.cookies.get(SESSION_COOKIE))
    if account is not None:
        await state.api.logout(token=account.token)
    response = _redirect(request, "/login")
    clear_session_cookie(response, request)
    return response


# Dashboard


def _in_home(request: Request) -> bool:
    return request.query_params.get("in") == "home"


_NO_HOME_CURRENCY = "Set your home currency on the Account page to see totals converted to it."


@router.get("/")
async def dashboard(request: Request, account: SignedIn, state: State) -> Response:
    # htmx asks for the latest expenses only, again after an add in the dialog.
    if _htmx(request) and request.query_params.get("latest"):
        latest = await service.latest_expenses(api=state.api, token=account.token)
        return _page(request, "_latest_expenses.html", account, **latest)
    home, notice = _in_home(request), None
    try:
        data = await service.dashboard(
            api=state.api, token=account.token, today=date.today(), home=home
        )
    except ApiError as exc:
        if exc.status != 422 or not home:
            raise
        home, notice = False, _NO_HOME_CURRENCY
        data = await service.dashboard(
            api=state.api, token=account.token, today=date.today(), home=False
        )
    return _page(request, "dashboard.html", account, home=home, notice=notice, **data)


# Expenses


async def _expense_form_context(
    state: WebState, account: Credentials, *, charged: bool = False
) -> dict[str, Any]:
    """The categories; with ``charged`` (an expense form), the home currency too: the currency
    its charged amount is prefilled with. The list pages go without that call."""
    home: HomeCurrency | None = None
    if charged:
        categories, home = await asyncio.gather(
            state.api.every(CATEGORIES, token=account.token),
            state.api.home_currency(token=account.token),
        )
    else:
        categories = await state.api.every(CATEGORIES, token=account.token)
    return {
        "categories": service.category_tree(categories),
        "category_names": service.category_names(categories),
        "home_currency": home["currency"] if home else None,
    }


async def _expense_list(
    state: WebState, account: Credentials, *, filters: dict[str, str], cursor: str | None
) -> tuple[Page[Expense], dict[str, str]]:
    """A page of the list, or none and the filters' problems (the API's 422)."""
    try:
        page = await service.expense_page(
            api=state.api, token=account.token, filters=filters, cursor=cursor
        )
    except ApiError as exc:
        if exc.status != 422:
            raise
        return {"items": [], "next_cursor": None}, exc.field_errors
    return page, {}


@router.get("/expenses")
async def expenses(
    request: Request, credentials: Unchecked, state: State, cursor: str | None = None
) -> Response:
    filters = service.expense_filters(request.query_params)
    account, ((page, errors), context) = await _checked_reads(
        request,
        state,
        credentials,
        _expense_list(state, credentials, filters=filters, cursor=cursor),
        _expense_form_context(state, credentials),
    )
    more = _more("/expenses", filters, page["next_cursor"])
    # htmx asks for rows only: the next page while scrolling, or the list again after an add.
    rows_only = _htmx(request) and (cursor or request.query_params.get("rows"))
    template = "_expense_page.html" if rows_only else "expenses.html"
    return _page(
        request,
        template,
        account,
        page=page,
        filters=filters,
        errors=errors,
        more=more,
        cursor=cursor,
        added=request.query_params.get("added"),
        done=_DONE.get(request.query_params.get("done", "")),
        list_query=service.list_query(request.query_params),
        **context,
    )


# What the list says on coming back from a save or a delete made without scripts.
_DONE = {"saved": "Expense saved.", "deleted": "Expense deleted."}


def _back_to_list(form: Mapping[str, str], done: str) -> Response:
    """The list where the form was opened (its ``back``: filters and cursor), saying ``done``."""
    place = service.list_query(QueryParams(form.get("back", "")))
    return RedirectResponse(f"/expenses?{place}{'&' if place else ''}done={done}", 303)


def _refused(exc: ApiError, form: dict[str, str]) -> dict[str, Any]:
    """What an expense form shows again when the API refused it: the form as typed, and the API's
    problems next to its fields."""
    return {"status": 422, "form": form, "errors": exc.field_errors, "error": exc.detail}


async def _new_expense_page(
    request: Request, account: Account, state: WebState, *, key: str, **extra: Any
) -> Response:
    """The form of a new expense (in the page, or alone for htmx's dialog), under ``key``."""
    context = await _expense_form_context(state, account, charged=True)
    template = "_expense_form.html" if _htmx(request) else "expense_new.html"
    today, home = date.today().isoformat(), context["home_currency"] or ""
    # The home currency, where there is one, is the likeliest for both.
    extra.setdefault("form", {"occurred_on": today, "currency": home, "charged_currency": home})
    return _page(request, template, account, idempotency_key=key, **extra, **context)


@router.get("/expenses/new")
async def new_expense(request: Request, account: SignedIn, state: State) -> Response:
    return await _new_expense_page(request, account, state, key=service.new_form_key())


@router.post("/expenses/new")
async def create_expense(request: Request, account: SignedIn, state: State) -> Response:
    form = _text(await request.form())
    key = _form_key(form)
    try:
        expense = await state.api.create(
            EXPENSES, token=account.token, body=service.expense_body(form), idempotency_key=key
        )
    except ApiError as exc:
        if exc.status != 422:
            raise
        refused = _refused(exc, form)
        if _saved_before(exc):
            key = service.new_form_key()
            refused["error"] = _SAVED_BEFORE
        return await _new_expense_page(request, account, state, key=key, **refused)
    if not _htmx(request):
        return RedirectResponse("/expenses?added=1", status_code=303)
    response = _page(request, "_expense_added.html", account, expense=expense)
    response.headers["HX-Trigger"] = "expense-added"
    return response


async def _edit_expense_page(
    request: Request, account: Account, state: WebState, expense_id: str, **extra: Any
) -> Response:
    """The form of an expense (in the page, or as its row for htmx), filled from the expense
    unless ``extra`` holds the form as typed."""
    expense = await state.api.one(EXPENSES, token=account.token, id=expense_id)
    context = await _expense_form_context(state, account, charged=True)
    template = "_expense_edit_row.html" if _htmx(request) else "expense_edit.html"
    charged = expense["charged_currency"] or context["home_currency"] or ""
    tags = ", ".join(expense["tags"])
    extra.setdefault("form", {**expense, "tags": tags, "charged_currency": charged})
    extra.setdefault("list_query", service.list_query(request.query_params))
    return _page(request, template, account, expense=expense, **extra, **context)


@router.get("/expenses/{expense_id}/edit")
async def edit_expense(
    request: Request, expense_id: str, account: SignedIn, state: State
) -> Response:
    return await _edit_expense_page(request, account, state, expense_id)


@router.get("/expenses/{expense_id}/row")
async def expense_row(
    request: Request, expense_id: str, account: SignedIn, state: State
) -> Response:
    expense = await state.api.one(EXPENSES, token=account.token, id=expense_id)
    context = await _expense_form_context(state, account)
    return _page(request, "_expense_rows.html", account, expenses=[expense], **context)


@router.post("/expenses/{expense_id}")
async def update_expense(
    request: Request, expense_id: str, account: SignedIn, state: State
) -> Response:
    form = _text(await request.form())
    try:
        expense = await state.api.change(
            EXPENSES,
            token=account.token,
            id=expense_id,
            body=service.expense_body(form, partial=True),
        )
    except ApiError as exc:
        if exc.status != 422:
            raise
        refused = _refused(exc, form)
        return await _edit_expense_page(
            request, account, state, expense_id, list_query=form.get("back", ""), **refused
        )
    if not _htmx(request):
        return _back_to_list(form, "saved")
    context = await _expense_form_context(state, account)
    response = _page(
        request, "_expense_rows.html", account, expenses=[expense], updated=True, **context
    )
    response.headers["HX-Trigger"] = json.dumps({"announce": "Expense saved."})
    return response


@router.post("/expenses/{expense_id}/delete")
async def delete_expense(
    request: Request, expense_id: str, account: SignedIn, state: State
) -> Response:
    await state.api.delete(EXPENSES, token=account.token, id=expense_id)
    if _htmx(request):
        # An empty answer replaces the row; the live region says what happened. Once the row is
        # gone, the script reloads a list left without rows, which then says it is empty.
        return Response(
            headers={
                "HX-Trigger": json.dumps({"announce": "Expense deleted."}),
                "HX-Trigger-After-Swap": "expense-deleted",
            }
        )
    return _back_to_list(_text(await request.form()), "deleted")


# Categories, tags and recurring expenses


async def _categories_context(
    request: Request, account: Account, state: WebState
) -> dict[str, Any]:
    categories, tags = await asyncio.gather(
        state.api.every(CATEGORIES, token=account.token), state.api.every(TAGS, token=account.token)
    )
    return {"tree": service.category_tree(categories), "tags": tags}


def _category_arguments(form: FormData) -> dict[str, Any]:
    text = _text(form)
    return {"body": {"name": text.get("name", ""), "parent_id": text.get("parent_id") or None}}


_categories = ListPage(
    "/categories",
    CATEGORIES,
    item="category_id",
    context=_categories_context,
    arguments=_category_arguments,
)
_categories.creates(refusals=(409, 422))
_categories.deletes(
    done="Category deleted.",
    # Where its expenses, recurring expenses and rules go: none chosen, they keep no category.
    params=lambda form: {"move_to": move_to} if (move_to := _text(form).get("move_to")) else {},
)


@router.post("/categories/{category_id}")
async def update_category(
    request: Request, category_id: str, account: SignedIn, state: State
) -> Response:
    """Renames or moves one; refused, the page with that category's form open, as typed, and
    the problems next to its fields (not the new category's)."""
    raw = await request.form()
    return await _submitted(
        request,
        state.api.change(
            CATEGORIES, token=account.token, id=category_id, **_category_arguments(raw)
        ),
        invalid=partial(
            _categories.show, request, account, state, editing=category_id, typed=_text(raw)
        ),
        then="/categories",
        refusals=(409, 422),
    )


async def _recurring_context(request: Request, account: Account, state: WebState) -> dict[str, Any]:
    rules = await state.api.every(RECURRING, token=account.token)
    return {"rules": rules, **await _expense_form_context(state, account)}


def _recurring_arguments(form: FormData) -> dict[str, Any]:
    text = _text(form)
    body = service.expense_body(text)
    body.pop("occurred_on", None)
    body.update(
        frequency=text.get("frequency", ""),
        starts_on=text.get("starts_on", ""),
        **({"ends_on": text["ends_on"]} if text.get("ends_on") else {}),
    )
    return {"body": body}


_recurring = ListPage(
    "/recurring",
    RECURRING,
    item="rule_id",
    context=_recurring_context,
    arguments=_recurring_arguments,
    blank_form=lambda: {"starts_on": date.today().isoformat(), "frequency": "monthly"},
)
_recurring.creates()
_recurring.deletes(done="Recurring expense stopped; the expenses it created stay.")


# Budgets


async def _budgets_context(request: Request, account: Account, state: WebState) -> dict[str, Any]:
    month = typed = request.query_params.get("month") or date.today().strftime("%Y-%m")
    month_errors: dict[str, str] = {}
    try:
        report = await state.api.budget_report(token=account.token, month=month)
    except ApiError as exc:
        if exc.status != 422:
            raise
        # This month's instead, with the reason next to the month as typed.
        month_errors = {"month": f"{exc.field_errors.get('month', exc.detail)}; this month shown."}
        month = date.today().strftime("%Y-%m")
        report = await state.api.budget_report(token=account.token, month=month)
    budgets = {
        budget["id"]: budget for budget in await state.api.every(BUDGETS, token=account.token)
    }
    context = await _expense_form_context(state, account)
    return {
        "month": month,
        "month_field": {"month": typed},
        "month_errors": month_errors,
        "report": report,
        "budgets": budgets,
        **context,
    }


def _thresholds(form: FormData) -> list[str] | None:
    """The thresholds typed, split at the commas, each without the percent sign its field's
    label invites ("80%"); None from a form without the field."""
    values = [str(value) for value in form.getlist("thresholds")]
    if not values:
        return None
    return [part.strip().removesuffix("%").strip() for value in values for part in value.split(",")]


def _budget_arguments(form: FormData) -> dict[str, Any]:
    return {"body": service.budget_body(_text(form), thresholds=_thresholds(form))}


async def _budget_choices(request: Request, account: Account, state: WebState) -> dict[str, Any]:
    return await _expense_form_context(state, account)


_budgets = ListPage(
    "/budgets",
    BUDGETS,
    item="budget_id",
    context=_budgets_context,
    arguments=_budget_arguments,
    blank_form=lambda: {"thresholds": "80, 100"},
)
_budgets.creates()
_budgets.deletes(done="Budget deleted.")
_budgets.edits(filled=service.budget_form, context=_budget_choices)


# Exchange rates and categorisation rules


async def _rates_page(
    request: Request,
    account: Account,
    state: WebState,
    *,
    status: int = 200,
    query: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    query = request.query_params if query is None else query
    filters = service.rate_filters(query)
    try:
        page, home = await asyncio.gather(
            state.api.page(
                RATES,
                token=account.token,
                filters=filters,
                cursor=query.get("cursor"),
                limit=service.RATES_PAGE_SIZE,
            ),
            state.api.home_currency(token=account.token),
        )
    except ApiError as exc:
        if exc.status != 422 or not query:
            raise
        # A filter (or cursor) the API refused: its problem next to it, as typed, and every rate.
        return await _rates_page(
            request,
            account,
            state,
            status=422,
            query={},
            filter_errors=exc.field_errors,
            typed_filters=filters,
        )
    more = _more("/rates", filters, page["next_cursor"])
    extra.setdefault("form", {"day": date.today().isoformat(), "quote": home["currency"] or ""})
    return _page(
        request,
        "rates.html",
        account,
        status=status,
        rates=page["items"],
        filters=filters,
        more=more,
        home_currency=home["currency"],
        **extra,
    )


_rates = FormPage("/rates", _rates_page)
_rates.posts("/rates", ApiClient.put_rate, arguments=service.own_rate, then="/rates")


@router.post("/rates/{day}/{base}/{quote}/delete")
async def delete_rate(
    request: Request, day: str, base: str, quote: str, account: SignedIn, state: State
) -> Response:
    await state.api.delete_rate(token=account.token, day=day, base=base, quote=quote)
    return _redirect(request, "/rates")


async def _rule_choices(request: Request, account: Account, state: WebState) -> dict[str, Any]:
    context = await _expense_form_context(state, account)
    return {"fields": RULE_FIELDS, "matches": RULE_MATCHES, **context}


async def _rules_context(request: Request, account: Account, state: WebState) -> dict[str, Any]:
    rules, choices = await asyncio.gather(
        state.api.every(RULES, token=account.token), _rule_choices(request, account, state)
    )
    return {"rules": rules, **choices}


def _rule_arguments(form: FormData) -> dict[str, Any]:
    return {"body": service.rule_body(_text(form))}


_rules = ListPage(
    "/rules",
    RULES,
    item="rule_id",
    context=_rules_context,
    arguments=_rule_arguments,
    blank_form=lambda: {"field": "any", "match": "contains"},
)
_rules.creates(refusals=(409, 422))
_rules.deletes(done="Rule deleted.")


@router.post("/rules/apply")
async def preview_rules(request: Request, account: SignedIn, state: State) -> Response:
    """What the rules would change in the uncategorised expenses: nothing changes yet."""
    preview = await state.api.apply_rules(token=account.token, dry_run=True)
    return await _rules.show(request, account, state, preview=preview)


@router.post("/rules/apply/confirm")
async def apply_rules(request: Request, account: SignedIn, state: State) -> Response:
    applied = await state.api.apply_rules(token=account.token, dry_run=False)
    return await _rules.show(request, account, state, applied=applied)


_rules.edits(filled=service.rule_form, context=_rule_choices)


@router.post("/rules/{rule_id}/move")
async def move_rule(request: Request, rule_id: str, account: SignedIn, state: State) -> Response:
    direction = "up" if (await request.form()).get("direction") == "up" else "down"
    await service.move_rule(
        api=state.api, token=account.token, rule_id=rule_id, direction=direction
    )
    return _redirect(request, "/rules")


# Reports


def _report_range(request: Request) -> tuple[date, date, dict[str, str]]:
    today = date.today()
    errors: dict[str, str] = {}
    start, end = date(today.year, 1, 1), service.month_bounds(today)[1]
    for name in ("from", "to"):
        value = request.query_params.get(name, "").strip()
        if not value:
            continue
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            errors[name] = "Enter a date as YYYY-MM-DD."
            continue
        if name == "from":
            start = parsed
        else:
            end = parsed
    # One end given outside this year: the other, left empty, is that year's, not this one's,
    # which would put the range backwards ("To" last year, "From" this January).
    given = {name for name in ("from", "to") if request.query_params.get(name, "").strip()}
    if given == {"to"} and end < start:
        start = date(end.year, 1, 1)
    elif given == {"from"} and start > end:
        end = date(start.year, 12, 31)
    return start, end, errors


@router.get("/reports")
async def reports(request: Request, account: SignedIn, state: State) -> Response:
    start, end, errors = _report_range(request)
    home, notice = _in_home(request), None
    report = partial(service.reports, api=state.api, token=account.token)
    try:
        data = await report(start=start, end=end, home=home)
    except ApiError as exc:
        if exc.status != 422:
            raise
        if home and "in" in exc.field_errors:
            home, notice = False, _NO_HOME_CURRENCY
        else:
            form_errors = dict(exc.field_errors)
            if "months" in form_errors:  # the trends' six months end at "To"
                form_errors["to"] = f"The trends' months up to here {form_errors.pop('months')}."
            errors = {**errors, **form_errors} or {"from": exc.detail}
            start, end = date(date.today().year, 1, 1), service.month_bounds(date.today())[1]
        data = await report(start=start, end=end, home=home)
    return _page(
        request,
        "reports.html",
        account,
        start=start,
        end=end,
        errors=errors,
        # A refused range stays in its fields as typed, next to its problem.
        typed_range={name: request.query_params.get(name, "") for name in ("from", "to")},
        home=home,
        notice=notice,
        **data,
    )


# Import and export


def _import_page(
    request: Request, account: Account, *, status: int = 200, **context: Any
) -> Response:
    context.setdefault("preview", None)
    context.setdefault("problem", None)
    context.setdefault("packed", None)
    return _page(
        request, "import.html", account, status=status, **service.import_choices(), **context
    )


@router.get("/import")
async def import_page(request: Request, account: SignedIn) -> Response:
    return _import_page(request, account)


async def _upload(request: Request) -> tuple[bytes | None, dict[str, str]]:
    """The file (uploaded, or carried by the confirm form) and the form's other fields."""
    raw = await request.form()
    form = _text(raw)
    upload = raw.get("file")
    if isinstance(upload, UploadFile) and upload.filename:  # a browser sends no name for none
        return await upload.read(), form
    if "packed" in form:
        limit = app_state(request.app).settings.max_import_body_bytes
        return service.unpack_upload(form["packed"], limit=limit), form
    return None, form


def _import_refused(
    request: Request, account: Account, exc: ApiError, form: dict[str, str]
) -> Response:
    """The API's refusal: every bad row with its position and field, or the option to fix."""
    return _import_page(
        request,
        account,
        status=422,
        form=form,
        problem=exc.problem,
        errors=service.option_errors(exc.problem),
    )


async def _import(
    request: Request, account: Account, state: WebState, *, dry_run: bool
) -> Response:
    """The import form's two steps: a dry run shows what the file would do (and the page carries
    the file on), then the confirmed import."""
    content, form = await _upload(request)
    form.pop("packed", None)
    key = None if dry_run else _form_key(form)
    if not content:
        if not dry_run:
            detail = "The file was lost on the way; upload it again."
        else:
            detail = "Choose a file to import." if content is None else "The file is empty."
        return _import_page(
            request, account, status=422, form=form, problem={"detail": detail, "errors": []}
        )
    options = service.import_options(form)
    try:
        result = await state.api.import_file(
            token=account.token,
            content=content,
            dry_run=dry_run,
            options=options,
            idempotency_key=key,
        )
    except ApiError as exc:
        if exc.status == 409 and not dry_run:  # a second click while the first one imports
            detail = "This file is being imported already; its expenses appear once it is done."
            return _import_page(
                request, account, status=409, problem={"detail": detail, "errors": []}
            )
        if exc.status not in (413, 415, 422):
            raise
        return _import_refused(request, account, exc, form)
    if dry_run:
        # The confirm form's key: confirmed twice (a double click, a reload), it imports once.
        return _import_page(
            request,
            account,
            form=form,
            preview=result,
            packed=service.pack_upload(content),
            idempotency_key=service.new_form_key(),
        )
    return _import_page(request, account, imported=result)


@router.post("/import")
async def import_preview(request: Request, account: SignedIn, state: State) -> Response:
    return await _import(request, account, state, dry_run=True)


@router.post("/import/confirm")
async def import_confirm(request: Request, account: SignedIn, state: State) -> Response:
    return await _import(request, account, state, dry_run=False)


@router.get("/export")
async def export(
    request: Request, account: SignedIn, state: State, format: Literal["csv", "json"] = "csv"
) -> Response:
    # Entered here, so that a refusal becomes a page; left when the last byte is sent.
    stream = state.api.export(token=account.token, fmt=format)
    upstream = await stream.__aenter__()

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.chunks:
                yield chunk
        finally:
            await stream.__aexit__(None, None, None)

    headers = {**upstream.headers, "Cache-Control": "no-store"}
    return StreamingResponse(body(), headers=headers)


# Account


async def _account_page(
    request: Request, account: Account, state: WebState, *, status: int = 200, **extra: Any
) -> Response:
    try:
        home: str | None = (await state.api.home_currency(token=account.token))["currency"]
    except ServiceUnavailable:
        # The password, the sessions and deleting the account are auth's: they still work.
        home, extra["home_unavailable"] = None, True
    extra.setdefault("home_form", {"currency": home or ""})
    extra.setdefault("confirmed", False)  # the deletion's box, ticked when it was
    return _page(
        request,
        "account.html",
        account,
        status=status,
        home_currency=home,
        changed=request.query_params.get("changed"),
        **extra,
    )


_account_settings = FormPage("/account", _account_page)
_account_settings.posts(
    "/account/home-currency",
    ApiClient.set_home_currency,
    arguments=service.home_currency,
    then="/account?home=1",
    form_as="home_form",
)


@router.post("/account/password")
async def change_password(request: Request, account: SignedIn, state: State) -> Response:
    form = _text(await request.form())
    try:
        await state.api.change_password(
            token=account.token,
            current=form.get("current_password", ""),
            new=form.get("new_password", ""),
            client=_client(request),
        )
    except ApiError as exc:
        if exc.status not in (401, 403, 422, 429):
            raise
        errors = exc.field_errors or {"current_password": exc.detail}
        return await _account_page(
            request, account, state, status=422, errors=errors, error=exc.detail
        )
    return _redirect(request, "/account?changed=1")


@router.post("/account/logout-all")
async def logout_everywhere(request: Request, account: SignedIn, state: State) -> Response:
    await state.api.logout(token=account.token, everywhere=True)
    response = _redirect(request, "/login")
    clear_session_cookie(response, request)
    return response


@router.post("/account/delete")
async def delete_account(request: Request, account: SignedIn, state: State) -> Response:
    form = _text(await request.form())
    if form.get("confirm") != "yes":
        return await _account_page(
            request, account, state, status=422, errors={"confirm": "Tick the box to confirm."}
        )
    try:
        await state.api.delete_account(
            token=account.token, password=form.get("password", ""), client=_client(request)
        )
    except ApiError as exc:
        if exc.status not in (401, 403, 422, 429):
            raise
        # Throttled, even the right password is refused: the API says how long to wait.
        said = exc.detail if exc.status == 429 else "The password is wrong."
        return await _account_page(
            request, account, state, status=422, errors={"password": said}, confirmed=True
        )
    response = _redirect(request, "/login?deleted=1")
    clear_session_cookie(response, request)
    return response
