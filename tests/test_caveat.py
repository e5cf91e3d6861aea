"""The caveat beside an FID on fewer than 10,000 samples (issue 38, item 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catgan.metrics.caveat import FLOORS, HEADLINE_N, fid_caveat

REPO = Path(__file__).resolve().parents[1]


def test_no_caveat_at_the_headline_n():
    assert fid_caveat(HEADLINE_N) is None and fid_caveat(50_000, "selfsup") is None


def test_a_measured_floor_is_quoted_with_its_source():
    line = fid_caveat(1000)
    assert line.startswith("FID at n=1000 is not comparable to FID-10k (headline)")
    assert "the real-vs-real floor at n=1000 is 12.10" in line and "docs/log/2026-11.md" in line
    assert "3.10" in fid_caveat(200, "selfsup") and "\n" not in line


def test_an_unmeasured_n_says_so_gives_the_nearest_and_the_command():
    line = fid_caveat(200)  # the issue's `evaluate --n 200` with Inception
    assert "FID at n=200 is not comparable to FID-10k" in line and "not measured" in line
    assert "at n=100 it is 39.73" in line and "--against DATA --n 200 --features inception" in line
    assert "at n=" not in fid_caveat(500, "other-space").split("not measured")[1].split("(")[0]


@pytest.mark.parametrize("key", list(FLOORS))
def test_each_floor_is_the_number_in_its_source(key):
    """The table holds what the docs measured, not a typed-in guess: each value is found in its source."""
    value, source = FLOORS[key]
    path = REPO / source.split(",")[0]
    if path.suffix == ".json":
        extractor, n = key
        data = json.loads(path.read_text())
        assert data["meta"]["n"] == n
        assert round(data["results"]["64"][extractor]["distance"]["floor"], 2) == value
    else:
        assert f"| {value:.2f}" in path.read_text()
