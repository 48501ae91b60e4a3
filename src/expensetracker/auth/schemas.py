"""Request and response bodies of the auth service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, EmailStr, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from expensetracker.auth.passwords import MAX_LENGTH, policy_violation
from expensetracker.platform.schemas import TEXT, StrictModel

# Lower case as a whole: `Ann@Example.org` and `ann@example.org` are one account.
Email = Annotated[EmailStr, Field(max_length=254), TEXT, AfterValidator(str.lower)]
# Length is checked after normalisation by the policy; this bound only stops huge bodies early.
Password = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH * 4), TEXT]


class RegisterRequest(StrictModel):
    email: Email
    password: Password
    display_name: Annotated[str, Field(min_length=1, max_length=100), TEXT] | None = Field(
        default=None, description="Default: the part of the email address before the @."
    )

    @field_validator("password")
    @classmethod
    def _allowed(cls, value: str, info: ValidationInfo) -> str:
        # With the other fields' checks, so that a refused email and a refused password are
        # said at once; the email is missing here when it was refused itself.
        if reason := policy_violation(value, email=info.data.get("email", "")):
            raise PydanticCustomError("password_policy", reason)
        return value


class RegisterAccepted(StrictModel):
    status: Literal["accepted"] = "accepted"
    detail: str = (
        "If this email address was not registered yet, its account now exists: log in to continue."
    )


class LoginRequest(StrictModel):
    email: Email
    password: Password


class RefreshRequest(StrictModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200), TEXT]


class TokenPair(StrictModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name
    expires_in: int = Field(description="Lifetime of the access token in seconds.")


class PasswordChangeRequest(StrictModel):
    current_password: Password
    new_password: Password

    @field_validator("new_password")
    @classmethod
    def _changed(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("current_password"):
            raise ValueError("must differ from the current password")
        return value


class AccountDeletionRequest(StrictModel):
    password: Password


class UserOut(StrictModel):
    id: uuid.UUID
    email: str
    display_name: str
    created_at: datetime
