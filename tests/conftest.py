"""Shared fixtures: paths to the real data in ../shared/data (read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real datasets; tests that need it fail loudly when it is missing."""
    assert DATA.is_dir(), f"expected the real data at {DATA}"
    return DATA
