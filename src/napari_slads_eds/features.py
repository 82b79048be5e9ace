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

from .reconstruction import BIG_D2, vote_weights

__all__ = ["N_FEATURES", "density_radius", "slads_features", "poly2", "N_POLY2"]

N_FEATURES = 6
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


def features_kn(pix, idx_kn, d2_kn, point_labels, recon_flat, shape, r_c) -> np.ndarray:
    """:func:`slads_features` with the neighbour arrays laid out (k, n) (the sampler's
    layout: reductions over k are then fast vector additions).  Returns (n, 6) float64
    (a Fortran-ordered view, so each feature column is contiguous)."""
    H, W = shape
    k, n = idx_kn.shape
    out = np.empty((N_FEATURES, n), dtype=np.float64)
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
    return out.T


def poly2(features: np.ndarray) -> np.ndarray:
    """Second-order polynomial expansion [1, f_i, f_i f_j (i <= j)].

    Parameters
    ----------
    features : ndarray, shape (n, 6)

    Returns
    -------
    ndarray, shape (n, 28), float64
    """
    f = np.asarray(features, dtype=np.float64)
    n = f.shape[0]
    out = np.empty((n, N_POLY2), dtype=np.float64)
    out[:, 0] = 1.0
    out[:, 1:1 + N_FEATURES] = f
    out[:, 1 + N_FEATURES:] = f[:, _II] * f[:, _JJ]
    return out
