"""Dashboard (placeholder router until written)."""

from fastapi import APIRouter

router = APIRouter()
