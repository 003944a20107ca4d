"""Shared fixtures: where the reference data lives, and skipping cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (a clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def vidur_dir(shared_data: Path) -> Path:
    path = shared_data / "kernel-profiles" / "vidur"
    if not path.is_dir():
        pytest.skip(f"vidur profiles not found at {path}")
    return path
