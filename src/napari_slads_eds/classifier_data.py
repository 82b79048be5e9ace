"""The classifier's numpy-only arithmetic: preprocessing, preset vector, training copies, threshold.

Owns the pieces of the two-step classifier (:mod:`napari_slads_eds.classifier`) that need
no neural network: the variance-stabilising transform of counts (:func:`stabilise`), the
preset line the detector maps good spectra onto (:func:`preset_vector`, Q entries), the
Poisson-noisy copies of reference spectra that make the training and validation sets
(:func:`_noisy_copies`), and the detection threshold ``T`` of eq. 16 chosen from
validation variances (:func:`choose_threshold`).  numpy only: importing this module never
imports TensorFlow, so it can be used outside the engine process.
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import InputError

__all__ = ["stabilise", "preset_vector", "choose_threshold", "Q"]

#: Number of NNR outputs (and neurons per hidden layer), the paper's Q.
Q = 100


def stabilise(spectra) -> np.ndarray:
    """Variance-stabilising transform ``sqrt(Z + 3/8)`` of counts (Anscombe-like).

    Parameters
    ----------
    spectra : array_like, shape (n, p) or (p,)
        Counts, non-negative.

    Returns
    -------
    ndarray, shape (n, p), float32
    """
    z = np.asarray(spectra, dtype=np.float32)
    if z.ndim == 1:
        z = z[None, :]
    return np.sqrt(z + np.float32(0.375))


def preset_vector(q: int = Q) -> np.ndarray:
    """The preset straight line ``f`` the detector maps good spectra onto (eq. 12).

    Returns
    -------
    ndarray, shape (q,), float32: ``linspace(0, 1, q)``.
    """
    return np.linspace(0.0, 1.0, int(q), dtype=np.float32)


def choose_threshold(var_good, var_ill) -> float:
    """Detection threshold ``T`` of eq. 16 from validation variances.

    If every good variance is below every ill variance, ``T`` is the geometric mean of
    the largest good and the smallest ill variance (robust placement in the gap);
    otherwise ``T`` minimises the number of errors (good ``> T`` plus ill ``<= T``), placed
    between the two neighbouring variances.

    Parameters
    ----------
    var_good, var_ill : array_like, shape (n,), float
        Variance metric ``sigma^2(Z)`` (eq. 14) of validation good and ill spectra.

    Returns
    -------
    float
    """
    g = np.sort(np.asarray(var_good, dtype=np.float64).ravel())
    b = np.sort(np.asarray(var_ill, dtype=np.float64).ravel())
    if g.size == 0 and b.size == 0:
        raise InputError("choose_threshold: no validation variances")
    if b.size == 0:
        return float(g[-1] * 2.0 + 1e-12)
    if g.size == 0:
        return float(b[0] * 0.5)

    def between(lo, hi):
        if lo > 0 and hi > 0:
            return math.sqrt(lo * hi)
        return 0.5 * (lo + hi)

    if g[-1] < b[0]:
        return float(between(g[-1], b[0]))
    cand = np.unique(np.concatenate([g, b]))
    # errors if T == cand[i]: good above T plus ill at or below T
    err = (g.size - np.searchsorted(g, cand, side="right")) + np.searchsorted(b, cand, side="right")
    i = int(np.argmin(err))
    if g.size < err[i]:  # T below every value (all ill detected, all good rejected) is better
        return float(cand[0] * 0.5)
    hi = cand[i + 1] if i + 1 < cand.size else cand[i] * 2.0 + 1e-12
    return float(between(cand[i], hi))


def _noisy_copies(refs: np.ndarray, n: int, lam: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` noisy copies of each row of ``refs`` (r, p): (r * n, p) float32 counts."""
    rep = np.repeat(np.asarray(refs, dtype=np.float32), n, axis=0)
    if lam > 0:
        rep += rng.poisson(lam, size=rep.shape).astype(np.float32)
    return rep
