"""Base classes and field types of request and response bodies, shared by every service."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from expensetracker.platform import money


class StrictModel(BaseModel):
    """Unknown fields are a 422: a client can never set what the API does not name."""

    model_config = ConfigDict(extra="forbid")


def _currency(value: str) -> str:
    money.exponent(value)  # raises ValueError with the reason
    return value


Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_currency)]
Amount = Annotated[str, Field(max_length=30, examples=["12.34"])]


class PricedModel(StrictModel):
    """A body with an amount in a currency: the amount must fit the currency's decimals."""

    # `currency` before `amount`: validated first, so the amount can be checked against it.
    currency: Currency
    amount: Amount

    @field_validator("amount")
    @classmethod
    def _amount_fits_currency(cls, value: str, info: ValidationInfo) -> str:
        if "currency" in info.data:
            money.parse_amount(value, info.data["currency"])
        return value
