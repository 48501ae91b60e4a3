"""Base classes of every request and response body."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are a 422: a client can never set what the API does not name."""

    model_config = ConfigDict(extra="forbid")
