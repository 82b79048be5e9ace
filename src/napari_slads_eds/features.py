"""SLADS feature vectors for label images (SPEC "SLADS" step 3).

For an unmeasured pixel s with neighbour labels y_i, squared distances d_i² and weights
w_i ∝ 1/d_i² (i = 1..k, the reconstruction's neighbours) and reconstruction x̂:

====  =====================================================================
f0    weighted deviation  Σ w_i [y_i ≠ x̂_s] / Σ w_i
f1    RMS deviation       sqrt((1/k) Σ [y_i ≠ x̂_s])
f2    distance to the nearest measurement d_1 (pixels)
f4    |∂x̂/∂col| ≠ 0  (central differences, one-sided at the borders, as np.gradient)
f5    |∂x̂/∂row| ≠ 0
f3    inverse measurement density (1 + π r_c²) / (1 + #{i : d_i ≤ r_c}),
      r_c = ceil(sqrt(0.0025 · |Ω| / π))
====  =====================================================================

(Godaliyadda et al. 2018 and Zhang et al. 2018; the order in the array is f0..f5 as in
the table rows f0, f1, f2, f3, f4, f5.)  The linear ERD model (eq. 6) uses the
second-order polynomial expansion of these six features (:func:`poly2`).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import InputError
from .reconstruction import BIG_D2, vote_weights

__all__ = ["N_FEATURES", "N_RICH", "density_radius", "slads_features", "rich_features", "poly2", "N_POLY2"]

N_FEATURES = 6
#: Number of rich features (:func:`rich_features`): the six SLADS ones and five more.
N_RICH = 11
_II, _JJ = np.triu_indices(N_FEATURES)
#: Number of second-order polynomial terms of 6 features: 1 + 6 + 21.
N_POLY2 = 1 + N_FEATURES + len(_II)


def density_radius(n_pixels: int) -> float:
    """r_c of feature f3: ceil(sqrt(0.0025 · |Ω| / π)) pixels."""
    return float(math.ceil(math.sqrt(0.0025 * n_pixels / math.pi)))


def slads_features(pix: np.ndarray, nn_idx: np.ndarray, nn_d2: np.ndarray, point_labels: np.ndarray,
                   recon_flat: np.ndarray, shape: tuple[int, int], r_c: float) -> np.ndarray:
    """Feature vectors of pixels ``pix``.

    Parameters
    ----------
    pix : ndarray, shape (n,), int
        Flat pixel indices (row * W + col).
    nn_idx, nn_d2 : ndarray, shape (n, k)
        Neighbour point indices (-1 = missing) and squared distances of those pixels
        (see :func:`napari_slads_eds.reconstruction.knn_exact`).
    point_labels : ndarray, shape (M,), int
        Label of each measured point.
    recon_flat : ndarray, shape (H*W,), int
        Current reconstruction.
    shape : (H, W)
    r_c : float
        Density radius in pixels (:func:`density_radius`).

    Returns
    -------
    ndarray, shape (n, 6), float64
    """
    return features_kn(np.asarray(pix), np.ascontiguousarray(np.asarray(nn_idx).T),
                       np.ascontiguousarray(np.asarray(nn_d2).T), point_labels, recon_flat, shape, r_c)


def features_kn(pix, idx_kn, d2_kn, point_labels, recon_flat, shape, r_c, n_features: int = N_FEATURES,
                n_phases: int | None = None) -> np.ndarray:
    """:func:`slads_features` with the neighbour arrays laid out (k, n) (the sampler's
    layout: reductions over k are then fast vector additions).  Returns (n, 6) float64
    (a Fortran-ordered view, so each feature column is contiguous); with
    ``n_features=N_RICH`` (n, 11): the six SLADS features and the five of
    :func:`rich_features` (``n_phases`` needed)."""
    H, W = shape
    k, n = idx_kn.shape
    if n_features not in (N_FEATURES, N_RICH):
        raise InputError(f"n_features must be {N_FEATURES} (SLADS) or {N_RICH} (rich), got {n_features}")
    out = np.empty((n_features, n), dtype=np.float64)
    if n == 0:
        return out.T
    complete = bool(idx_kn.min() >= 0) if n else True
    if complete:
        lab = point_labels[idx_kn]
        w = vote_weights(d2_kn)
        kk = k
    else:
        valid = idx_kn >= 0
        lab = np.where(valid, point_labels[np.maximum(idx_kn, 0)] if point_labels.size else -1, -1)
        w = np.where(valid, vote_weights(d2_kn), 0)
        kk = np.maximum(valid.sum(axis=0), 1)
    xhat = recon_flat[pix]
    neq = lab != xhat
    if not complete:
        neq &= valid
    wsum = w.sum(axis=0)
    dev = (w * neq).sum(axis=0)
    out[0] = np.where(wsum > 0, dev / np.maximum(wsum, 1), 0.0)
    out[1] = np.sqrt(neq.sum(axis=0) / kk)
    d1 = d2_kn[0]
    out[2] = np.sqrt(np.where(d1 < BIG_D2, d1, H * H + W * W))
    near = d2_kn <= r_c * r_c
    if not complete:
        near &= valid
    out[3] = (1.0 + math.pi * r_c * r_c) / (1.0 + near.sum(axis=0))
    r, c = np.divmod(pix, W)
    row = r * W
    out[4] = recon_flat[row + np.maximum(c - 1, 0)] != recon_flat[row + np.minimum(c + 1, W - 1)]
    out[5] = recon_flat[np.maximum(r - 1, 0) * W + c] != recon_flat[np.minimum(r + 1, H - 1) * W + c]
    if n_features == N_RICH:
        _rich_rows(out, lab, w, neq, d2_kn, wsum, complete, idx_kn, n_phases)
    return out.T


def _rich_rows(out, lab, w, neq, d2_kn, wsum, complete, idx_kn, n_phases) -> None:
    """Rows 6..10 of the rich feature array (see :func:`rich_features`)."""
    if n_phases is None:
        raise InputError("rich ERD features need n_phases")
    valid = np.ones(lab.shape, dtype=bool) if complete else idx_kn >= 0
    dk = np.where(valid, d2_kn, 0).max(axis=0)
    out[6] = np.sqrt(np.where(dk < BIG_D2, dk, 0))
    nv = np.maximum(valid.sum(axis=0), 1)
    out[7] = np.where(valid, np.sqrt(np.minimum(d2_kn, BIG_D2 - 1).astype(np.float64)), 0).sum(axis=0) / nv
    ent = np.zeros(lab.shape[1])
    nph = np.zeros(lab.shape[1])
    ws = np.maximum(wsum, 1e-300)
    for lv in range(1, int(n_phases) + 1):
        hit = lab == lv
        p = (w * hit).sum(axis=0) / ws
        ent -= np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        nph += hit.any(axis=0)
    out[8] = ent
    out[9] = nph
    # distance to the nearest neighbour whose label differs from the reconstruction
    # (neighbours are sorted by distance); none among the k: 2 x the k-th distance
    first = np.argmax(neq, axis=0)
    anyd = neq.any(axis=0)
    d_first = np.take_along_axis(d2_kn, first[None, :], axis=0)[0]
    out[10] = np.where(anyd, np.sqrt(np.minimum(d_first, BIG_D2 - 1).astype(np.float64)), 2.0 * out[6])


def rich_features(pix, nn_idx, nn_d2, point_labels, recon_flat, shape, r_c, n_phases: int) -> np.ndarray:
    """The six SLADS features plus five richer ones (issue 12), shape (n, 11) float64.

    ====  ===================================================================
    f6    distance to the k-th nearest measurement d_k (pixels; multi-scale)
    f7    mean distance to the k nearest measurements (pixels)
    f8    entropy -Σ_l p_l ln p_l of the neighbours' weighted label shares
          p_l = Σ_i w_i [y_i = l] / Σ_i w_i (nats; 0 when all agree)
    f9    number of phases among the k neighbours
    f10   distance to the nearest neighbour whose label differs from x̂_s (a
          local distance to the reconstructed phase boundary; 2 d_k if none)
    ====  ===================================================================

    All five depend only on the pixel's k-neighbour list and its reconstruction, so the
    sampler's exact local updates stay exact.  Arguments as :func:`slads_features`,
    plus ``n_phases`` (L).
    """
    return features_kn(np.asarray(pix), np.ascontiguousarray(np.asarray(nn_idx).T),
                       np.ascontiguousarray(np.asarray(nn_d2).T), point_labels, recon_flat, shape, r_c,
                       n_features=N_RICH, n_phases=n_phases)


def poly2(features: np.ndarray) -> np.ndarray:
    """Second-order polynomial expansion [1, f_i, f_i f_j (i <= j)].

    Parameters
    ----------
    features : ndarray, shape (n, m) (m = 6: SLADS; 11: rich)

    Returns
    -------
    ndarray, shape (n, 1 + m + m (m + 1) / 2), float64 (28 for m = 6, 78 for m = 11)
    """
    f = np.asarray(features, dtype=np.float64)
    n, m = f.shape
    ii, jj = (_II, _JJ) if m == N_FEATURES else np.triu_indices(m)
    out = np.empty((n, 1 + m + len(ii)), dtype=np.float64)
    out[:, 0] = 1.0
    out[:, 1:1 + m] = f
    out[:, 1 + m:] = f[:, ii] * f[:, jj]
    return out
