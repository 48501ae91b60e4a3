"""HTTP routes of the expenses service (thin: the logic lives in service.py)."""

from fastapi import APIRouter

router = APIRouter(tags=["expenses"])
