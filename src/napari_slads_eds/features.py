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

from .reconstruction import WEIGHT_ONE

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
    H, W = shape
    n, k = nn_idx.shape
    out = np.empty((n, N_FEATURES), dtype=np.float64)
    if n == 0:
        return out
    valid = nn_idx >= 0
    kk = valid.sum(axis=1)
    lab = np.where(valid, point_labels[np.maximum(nn_idx, 0)] if point_labels.size else -1, -1)
    xhat = recon_flat[pix]
    neq = valid & (lab != xhat[:, None])
    w = np.where(valid, WEIGHT_ONE // np.maximum(nn_d2, 1), 0)
    wsum = w.sum(axis=1)
    out[:, 0] = np.where(wsum > 0, np.where(neq, w, 0).sum(axis=1) / np.maximum(wsum, 1), 0.0)
    out[:, 1] = np.sqrt(neq.sum(axis=1) / np.maximum(kk, 1))
    d1 = nn_d2[:, 0]
    out[:, 2] = np.sqrt(np.where(d1 < (np.int64(1) << 62), d1, H * H + W * W))
    out[:, 3] = (1.0 + math.pi * r_c * r_c) / (1.0 + (valid & (nn_d2 <= r_c * r_c)).sum(axis=1))
    r, c = np.divmod(pix, W)
    left = recon_flat[r * W + np.maximum(c - 1, 0)]
    right = recon_flat[r * W + np.minimum(c + 1, W - 1)]
    up = recon_flat[np.maximum(r - 1, 0) * W + c]
    down = recon_flat[np.minimum(r + 1, H - 1) * W + c]
    out[:, 4] = left != right
    out[:, 5] = up != down
    return out


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
