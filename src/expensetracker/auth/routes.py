"""HTTP routes of the auth service (thin: the logic lives in service.py)."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
