"""HTTP routes of the reports service (thin: the logic lives in service.py)."""

from fastapi import APIRouter

router = APIRouter(tags=["reports"])
