"""Static scan orders and the initial pattern of a SLADS run: random, Halton, initial positions.

Owns the positions that do not depend on measurements: every pixel of a grid in a uniformly
random order (:func:`random_order`), distinct pixels of a scrambled 2-D Halton sequence
(:func:`halton_order`) -- the static scans SLADS is compared against -- and the initial
measurements of a run (:func:`initial_positions`, ``fraction`` of the grid in either
pattern).  numpy and scipy only; :mod:`napari_slads_eds.sampling` re-exports them.
"""

from __future__ import annotations

import numpy as np

from ._validation import InputError, check_int, check_seed

__all__ = ["random_order", "halton_order", "initial_positions"]


def random_order(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """All pixels of the grid in a uniformly random order, shape (H*W, 2) int64 (row, col)."""
    H, W = shape
    flat = np.random.default_rng(check_seed(seed)).permutation(H * W)
    return np.stack(np.divmod(flat, W), axis=1)


def halton_order(shape: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct pixels from a scrambled 2-D Halton sequence, shape (n, 2) int64.

    Points of the low-discrepancy sequence that fall on an already chosen pixel are
    skipped, so the result has no duplicates.

    Raises
    ------
    InputError
        ``n`` not an integer >= 0, or a bad seed.
    """
    from scipy.stats import qmc

    H, W = shape
    n = int(min(check_int(n, "n (number of positions)", 0), H * W))
    eng = qmc.Halton(d=2, scramble=True, seed=check_seed(seed))
    if n == 0:
        return np.zeros((0, 2), np.int64)
    taken = np.zeros(H * W, dtype=bool)
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        m = max(2 * (n - have), 64)
        pts = eng.random(m)
        flat = np.minimum((pts[:, 0] * H).astype(np.int64), H - 1) * W + np.minimum((pts[:, 1] * W).astype(np.int64), W - 1)
        _, first = np.unique(flat, return_index=True)
        flat = flat[np.sort(first)]
        flat = flat[~taken[flat]][: n - have]
        taken[flat] = True
        out.append(flat)
        have += flat.size
        if have < n and taken.mean() > 0.5:
            # dense request: fill the rest in random order
            rest = np.flatnonzero(~taken)
            rest = np.random.default_rng(check_seed(seed)).permutation(rest)[: n - have]
            taken[rest] = True
            out.append(rest)
            have += rest.size
    flat = np.concatenate(out)
    return np.stack(np.divmod(flat, W), axis=1)


def initial_positions(shape: tuple[int, int], fraction: float = 0.01, pattern: str = "halton",
                      seed: int = 0) -> np.ndarray:
    """Initial measurement positions: ``fraction`` of the grid (at least 1 pixel).

    Parameters
    ----------
    shape : (H, W)
    fraction : float in (0, 1]
    pattern : {"halton", "random"}
        Low-discrepancy (scrambled Halton) or uniform random.
    seed : int

    Returns
    -------
    ndarray, shape (n, 2), int64 (row, col), no duplicates
    """
    H, W = shape
    if not 0 < fraction <= 1:
        raise InputError(f"initial fraction must be in (0, 1], got {fraction}")
    n = max(1, int(round(fraction * H * W)))
    if pattern == "halton":
        return halton_order(shape, n, seed)
    if pattern == "random":
        return random_order(shape, seed)[:n]
    raise InputError(f"initial pattern must be 'halton' or 'random', got {pattern!r}")

