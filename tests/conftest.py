"""Shared fixtures. Tests that need the real CAT data use `shared_data` and skip where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    return Path(os.environ.get("CATGAN_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the project root (or $CATGAN_SHARED/data); skips the test where absent."""
    data = _shared_root() / "data"
    if not (data / "cat-faces").is_dir():
        pytest.skip(f"real CAT data not found at {data} (only present in the dev/CI checkout)")
    return data


@pytest.fixture(autouse=True)
def _small_cpu_footprint():
    """Tests use tiny models: one or two threads are faster than many and keep parallel jobs fair."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)
