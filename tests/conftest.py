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


@pytest.fixture(scope="session")
def ptbxl_100hz_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The 1,502-record PTB-XL subset prepared once per session at 100 Hz x 1000 samples."""
    from ecgscale.data.prepare import prepare
    from ecgscale.data.preprocess import PreprocessConfig

    out = tmp_path_factory.mktemp("ptbxl_100hz") / "ptbxl"
    return prepare("ptbxl", shared_data / "ptbxl_100hz", out, PreprocessConfig(fs=100, length=1000))
