"""Request and response bodies of the expenses service."""

from __future__ import annotations

import uuid
from datetime import datetime

from expensetracker.platform.schemas import StrictModel


class CategoryOut(StrictModel):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None
    created_at: datetime
