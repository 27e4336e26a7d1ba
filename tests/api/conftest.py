"""Fixtures shared by the api tests (re-exported from tests/api/server.py)."""

from __future__ import annotations

from tests.api.server import pipeline_db

__all__ = ["pipeline_db"]
