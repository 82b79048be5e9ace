"""Reconstruction of a phase map from sparsely measured labels (SLADS step 2).

Each non-measured pixel takes the **weighted mode** of the labels of its k (= 10) nearest
measured pixels, with weights proportional to 1/d² (SPEC "SLADS" step 2; Zhang et al.
2018 use the same 'DWM' reconstruction for EDS).  Measured pixels keep their label.

Ill-spectra (label 0) are *measured* but carry no phase information, so they never vote:
neighbour sets are drawn from measured pixels with a phase label (1..L) only, and a
measured ill-spectrum pixel is itself reconstructed from its phase-labelled neighbours.
The reconstruction is therefore a phase map (labels 1..L); 0 appears only where no
phase-labelled measurement exists yet.  (The 2018 code lets label 0 vote, which spreads
noise spots into the map.)

Neighbour order and ties are exact and deterministic: distances are integer squared pixel
distances, neighbours are ordered by (d², measurement order), vote weights are exact
integers ``2**40 // d²``, and equal votes go to the lowest label.  The local-update
sampler and a full recomputation therefore agree bit for bit.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ._validation import InputError, check_grid_shape, check_int, check_label_image, check_positions

__all__ = ["knn_exact", "weighted_mode", "reconstruct", "BIG_D2", "WEIGHT_ONE"]

#: Squared distance used for a missing neighbour (fewer than k measured pixels); real
#: squared distances stay below it on grids up to 32767 x 32767, so they fit in int32.
BIG_D2 = np.int64(2**31 - 1)
MAX_GRID = 32767
#: Integer vote weight numerator: w = WEIGHT_ONE // d².
WEIGHT_ONE = np.int64(1) << 40
_CHUNK = 1 << 16
_LUT = WEIGHT_ONE // np.maximum(np.arange(1 << 16, dtype=np.int64), 1)


def knn_exact(points: np.ndarray, query: np.ndarray, k: int, tree: cKDTree | None = None):
    """The k nearest points of each query pixel, ordered by (squared distance, point index).

    Parameters
    ----------
    points : ndarray, shape (M, 2), integer (row, col)
        Measured positions with a phase label; the row index is the point index.
    query : ndarray, shape (n, 2), integer (row, col)
    k : int
    tree : cKDTree, optional
        A tree already built on ``points``.

    Returns
    -------
    idx : ndarray, shape (n, k), int32
        Point indices, -1 where fewer than k points exist.
    d2 : ndarray, shape (n, k), int64
        Squared distances in pixels², :data:`BIG_D2` for missing neighbours.
    """
    points = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    query = np.asarray(query, dtype=np.int64).reshape(-1, 2)
    n, m = len(query), len(points)
    idx = np.full((n, k), -1, dtype=np.int32)
    d2 = np.full((n, k), BIG_D2, dtype=np.int64)
    if m == 0 or n == 0 or k < 1:
        return idx, d2
    kk = min(k, m)
    if tree is None:
        tree = cKDTree(points)
    if n > _CHUNK:
        # bounded memory: the query temporaries are about 100 bytes per neighbour
        for a in range(0, n, _CHUNK):
            idx[a:a + _CHUNK], d2[a:a + _CHUNK] = knn_exact(points, query[a:a + _CHUNK], k, tree)
        return idx, d2
    rows = np.arange(n)
    kq = min(m, k + 6)
    while rows.size:
        ind = _query(tree, query[rows], kq)
        diff = points[ind] - query[rows][:, None, :]
        dd = diff[..., 0] ** 2 + diff[..., 1] ** 2
        order = np.lexsort((ind, dd), axis=-1)
        ind = np.take_along_axis(ind, order, axis=1)
        dd = np.take_along_axis(dd, order, axis=1)
        if kq < m:
            # a row whose k-th distance ties with the last returned one may miss tied
            # points of lower index: query those rows again with more neighbours
            tie = dd[:, kk - 1] == dd[:, kq - 1]
        else:
            tie = np.zeros(rows.size, dtype=bool)
        done = rows[~tie]
        idx[done, :kk] = ind[~tie, :kk]
        d2[done, :kk] = dd[~tie, :kk]
        rows = rows[tie]
        kq = min(m, 2 * kq)
    return idx, d2


def _query(tree: cKDTree, q: np.ndarray, kq: int) -> np.ndarray:
    _, ind = tree.query(q, k=kq, workers=-1)
    return np.asarray(ind, dtype=np.int64).reshape(len(q), kq)


def vote_weights(nn_d2: np.ndarray) -> np.ndarray:
    """Exact integer vote weights ``WEIGHT_ONE // d²`` (0 for missing neighbours), any shape."""
    d2 = np.asarray(nn_d2)
    if d2.size and d2.max() < _LUT.size:
        return _LUT[d2]
    return np.where(d2 < BIG_D2, WEIGHT_ONE // np.maximum(d2, 1), 0)


def mode_kn(labels_kn: np.ndarray, w_kn: np.ndarray, n_labels: int) -> np.ndarray:
    """Weighted mode with neighbour arrays laid out (k, n) (the sampler's layout).

    Parameters
    ----------
    labels_kn : ndarray (k, n), int; labels of the neighbours (< 1 for missing ones)
    w_kn : ndarray (k, n), int64; vote weights (0 for missing ones), see :func:`vote_weights`
    n_labels : int

    Returns
    -------
    ndarray (n,), int16: label of the largest summed weight, ties to the lowest label,
    0 without neighbours.
    """
    n = labels_kn.shape[1]
    out = np.zeros(n, dtype=np.int16)
    if n == 0:
        return out
    total = w_kn.sum(axis=0)
    best = np.zeros(n, dtype=np.int64)
    rest = total.copy()
    for lab in range(1, int(n_labels) + 1):
        # the last label's votes are what the others leave (weights are exact integers)
        v = rest if lab == n_labels else (w_kn * (labels_kn == lab)).sum(axis=0)
        if lab != n_labels:
            rest -= v
        better = v > best
        out[better] = lab
        best[better] = v[better]
    return out


def weighted_mode(nn_labels: np.ndarray, nn_d2: np.ndarray, n_labels: int) -> np.ndarray:
    """Weighted mode of neighbour labels with weights 1/d² (exact integer weights).

    Parameters
    ----------
    nn_labels : ndarray, shape (n, k), integer
        Labels of the neighbours, -1 (or any value < 1) for missing neighbours.
    nn_d2 : ndarray, shape (n, k), int64
        Squared distances (> 0), :data:`BIG_D2` for missing neighbours.
    n_labels : int
        L: labels run 1..L.

    Returns
    -------
    ndarray, shape (n,), int16
        The label with the largest summed weight; ties go to the lowest label; 0 when a
        pixel has no neighbour.
    """
    lab = np.ascontiguousarray(np.asarray(nn_labels).T)
    w = vote_weights(np.ascontiguousarray(np.asarray(nn_d2).T))
    w = np.where(lab >= 1, w, 0)
    return mode_kn(lab, w, n_labels)


def reconstruct(shape, positions, labels, n_phases: int | None = None, k: int = 10) -> np.ndarray:
    """Reconstruct a full phase map from measured labels (weighted mode of the k nearest).

    Parameters
    ----------
    shape : (H, W)
        Grid shape.
    positions : array_like, shape (n, 2), int
        Measured (row, col) positions, in measurement order (the order breaks distance ties).
    labels : array_like, shape (n,), int
        Measured labels 0..L (0 = ill-spectrum, which does not vote).
    n_phases : int, optional
        L; default: the largest measured label.
    k : int
        Number of neighbours (>= 1).  With fewer than k phase-labelled measurements, all of
        them are used.

    Returns
    -------
    ndarray, shape (H, W), int16
        Measured phase pixels keep their label; every other pixel gets the weighted mode of
        its neighbours; 0 where nothing with a phase label was measured.

    Raises
    ------
    InputError
        Bad positions or labels, a repeated position, k not an integer >= 1.
    """
    H, W = check_grid_shape(shape, MAX_GRID)
    pos = check_positions(positions, (H, W))
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != pos.shape[0]:
        raise InputError(f"got {pos.shape[0]} positions but {lab.shape[0]} labels")
    k = check_int(k, "k", 1)
    lab = check_label_image(lab[None, :], n_phases, name="measured labels")[0] if lab.size else lab.astype(np.int16)
    flat = pos[:, 0] * W + pos[:, 1]
    if np.unique(flat).size != flat.size:
        raise InputError("positions: a pixel is listed more than once")
    L = int(n_phases) if n_phases is not None else int(lab.max(initial=0))
    out = np.zeros(H * W, dtype=np.int16)
    valid = lab > 0
    vpos, vlab = pos[valid], lab[valid]
    is_valid = np.zeros(H * W, dtype=bool)
    is_valid[flat[valid]] = True
    q = np.flatnonzero(~is_valid)
    qrc = np.stack(np.divmod(q, W), axis=1)
    idx, d2 = knn_exact(vpos, qrc, min(k, max(1, vpos.shape[0])))  # k > measured: all of them vote
    nl = np.where(idx >= 0, vlab[np.maximum(idx, 0)] if vlab.size else -1, -1)
    out[q] = weighted_mode(nl, d2, L)
    out[flat[valid]] = vlab
    return out.reshape(H, W)
