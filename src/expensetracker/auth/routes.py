"""HTTP routes of the auth service (thin: the logic lives in service.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status

from expensetracker.auth import service
from expensetracker.auth.schemas import (
    AccountDeletionRequest,
    LoginRequest,
    PasswordChangeRequest,
    RefreshRequest,
    RegisterAccepted,
    RegisterRequest,
    TokenPair,
    UserOut,
)
from expensetracker.auth.service import AuthContext
from expensetracker.platform.deps import CurrentUser, DbConnection, DbSession, State
from expensetracker.platform.errors import problems
from expensetracker.platform.schemas import NO_CONTENT

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


async def _auth(state: State) -> AuthContext:
    return state.get(AuthContext)


async def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


Auth = Annotated[AuthContext, Depends(_auth)]
ClientAddress = Annotated[str, Depends(_client_address)]


@router.post("/register", status_code=status.HTTP_202_ACCEPTED)
async def register(body: RegisterRequest, session: DbSession, auth: Auth) -> RegisterAccepted:
    """Creates an account. The answer is the same whether or not the address was taken."""
    await service.register(
        session,
        email=body.email,
        password=body.password,
        display_name=body.display_name,
        hasher=auth.hasher,
    )
    return RegisterAccepted()


@router.post("/login", responses=problems(401, 429))
async def login(
    body: LoginRequest,
    session: DbSession,
    auth: Auth,
    client_address: ClientAddress,
) -> TokenPair:
    """Starts a session: an access token and a refresh token. A wrong password and an unknown
    address get the same 401; repeated failures are throttled (429 with ``Retry-After``)."""
    attempt = service.PasswordAttempt(password=body.password, client_address=client_address)
    return await service.login(session, email=body.email, attempt=attempt, auth=auth)


@router.post("/refresh", responses=problems(401))
async def refresh(body: RefreshRequest, session: DbSession, auth: Auth) -> TokenPair:
    """A new token pair for a refresh token, which stops working (rotation). A token used a
    second time ends its whole session: 401."""
    return await service.refresh(session, refresh_token=body.refresh_token, auth=auth)


@router.post("/logout", **NO_CONTENT)
async def logout(user: CurrentUser, session: DbSession) -> None:
    """Ends this session: its refresh token stops working."""
    await service.logout(session, principal=user)


@router.post("/logout-all", **NO_CONTENT)
async def logout_all(user: CurrentUser, session: DbSession) -> None:
    """Ends every session of the account."""
    await service.logout_all(session, principal=user)


@router.get("/me")
async def me(user: CurrentUser, session: DbSession) -> UserOut:
    """The caller's account; 401 once it is deleted."""
    return UserOut.model_validate(
        await service.get_user(session, principal=user), from_attributes=True
    )


@router.get("/session")
async def live_session(user: CurrentUser, db: DbConnection) -> UserOut:
    """The account of a session that is still live; 401 once it has ended (logout, logout-all,
    password change), even while its access token has not expired. Clients that keep a session
    of their own, such as the web app, ask this on every request."""
    return UserOut.model_validate(dict(await service.get_live_session(db, principal=user)))


@router.post("/password", **NO_CONTENT, responses=problems(403, 429))
async def change_password(
    body: PasswordChangeRequest,
    user: CurrentUser,
    session: DbSession,
    auth: Auth,
    client_address: ClientAddress,
) -> None:
    """Changes the password and ends every other session."""
    attempt = service.PasswordAttempt(password=body.current_password, client_address=client_address)
    await service.change_password(
        session, principal=user, attempt=attempt, new_password=body.new_password, auth=auth
    )


@router.delete("/me", **NO_CONTENT, responses=problems(403, 429))
async def delete_account(
    body: AccountDeletionRequest,
    user: CurrentUser,
    session: DbSession,
    auth: Auth,
    client_address: ClientAddress,
) -> None:
    """Deletes the account at once; the other services then delete its data."""
    attempt = service.PasswordAttempt(password=body.password, client_address=client_address)
    await service.delete_account(session, principal=user, attempt=attempt, auth=auth)


@router.get("/.well-known/jwks.json")
async def jwks(auth: Auth, response: Response) -> dict[str, Any]:
    """Public keys that verify access tokens (RFC 7517)."""
    response.headers["Cache-Control"] = "public, max-age=60"
    return await auth.keys.jwks()
