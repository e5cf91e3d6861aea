"""The line printed beside an FID measured on fewer than the headline's 10,000 samples.

FID is biased upward at small n (the covariance estimate is noisy), so a number at n=200 cannot be set
beside the headline FID-10k. The fair comparison is the real-vs-real floor measured at the same n: two
samples of real faces, which a perfect generator would match. FLOORS holds the floors measured so far,
each with its source; elsewhere the line says the floor is not measured there and names the command.
"""

from __future__ import annotations

HEADLINE_N = 10_000  # the n of the headline FID (README, docs/benchmarks.md)

# (extractor, n) -> (FID of real vs real at that n, where it was measured). 64 px faces of
# cats_bigger_than_64x64 (`catgan prepare`), disjoint random halves, seed 0.
FLOORS: dict[tuple[str, int], tuple[float, str]] = {
    ("inception", 1000): (12.10, "docs/log/2026-11.md, benchmarks/fid_floor.py --n 1000"),
    ("inception", 100): (39.73, "docs/runs/2026-12-02-selfsup/validation-both-spaces-n100.json, n_ref 200"),
    ("selfsup", 200): (3.10, "docs/runs/2026-12-02-selfsup/validation-selfsup-n200.json, n_ref 400"),
}


def fid_caveat(n: int, extractor: str = "inception") -> str | None:
    """The caveat for an FID over `n` generated images in `extractor`'s space, or None at n >= 10,000."""
    if n >= HEADLINE_N:
        return None
    line = f"FID at n={n} is not comparable to FID-10k (headline)"
    known = FLOORS.get((extractor, n))
    if known is not None:
        return f"{line}; the real-vs-real floor at n={n} is {known[0]:.2f} ({known[1]})"
    measured = sorted(m for e, m in FLOORS if e == extractor)
    nearest = min(measured, key=lambda m: abs(m - n), default=None)
    at = f"; at n={nearest} it is {FLOORS[(extractor, nearest)][0]:.2f}" if nearest is not None else ""
    return (
        f"{line}; the real-vs-real floor at n={n} is not measured{at} "
        f"(measure it: catgan evaluate --data DATA --against DATA --n {n} --features {extractor})"
    )
