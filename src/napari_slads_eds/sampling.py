"""The SLADS sampler: measurement mask, reconstruction and ERD with exact local updates.

After a new phase-labelled measurement at s, only pixels whose k-nearest-neighbour set
changes (s is closer than their current k-th neighbour) get a new reconstruction, and
only those pixels plus the 4-neighbours of pixels whose reconstruction changed (the
gradient features read them) get new features and ERD.  The affected set is star-shaped
around s, and every affected pixel p satisfies |p - s|² < d_k(p)², so a window bounded by
the largest d_k in the rows around s contains it; nothing outside it can change.  The
selection is the argmax of the ERD (eq. 5), maintained per image row, so a step costs
time proportional to the affected area, not to the grid.

``Sampler(..., full_recompute=True)`` recomputes everything from scratch at every step
with the same functions; it exists to prove (tests) that the local updates are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._validation import InputError, check_grid_shape, check_int, check_label_image, check_positions
from .features import N_FEATURES, density_radius, features_kn
from .reconstruction import BIG_D2, MAX_GRID, knn_exact, mode_kn, vote_weights
from .scan_orders import halton_order, initial_positions, random_order  # re-exported: public names

_CHUNK = 1 << 16   # pixels per chunk of a full rebuild
#: Largest k of the reconstruction (the sampler keeps k neighbours per pixel: k * H * W int32).
MAX_K = 100

__all__ = ["Sampler", "initial_positions", "random_order", "halton_order", "StepRecord"]

# --------------------------------------------------------------------------------------

@dataclass
class StepRecord:
    """What one sampler update did (for progress displays and TD curves)."""

    n_measured: int
    fraction: float
    td: float | None


class Sampler:
    """State of a SLADS run on an H x W grid, with exact local updates.

    Parameters
    ----------
    shape : (H, W)
        Grid shape.
    n_phases : int
        L, phases are labelled 1..L; label 0 is an ill-spectrum.
    erd_model : object with ``predict(features (n, m)) -> (n,)``, optional
        (m = its ``n_features`` attribute, 6 when it has none)
        The ERD regressor (eq. 6).  Without one, the sampler still reconstructs but
        cannot select positions.
    k : int
        Neighbours of the weighted-mode reconstruction (10 in the paper).
    truth : ndarray, shape (H, W), optional
        Ground-truth phase map (labels 1..L); when given, TD (eq. 19) is kept up to date.
    full_recompute : bool
        Recompute everything after every operation (reference implementation for tests).

    Notes
    -----
    Positions returned by ``select(b, mode="pseudo")`` are *in flight*: they carry their
    reconstructed label as a pseudo-measurement (Zhang et al. 2018) until
    :meth:`update` gives their measured label, so the next batch can be chosen while the
    current one is being measured.  The measurement mask and ``n_measured`` count
    finished measurements only; in-flight pixels are never selected again.

    Attributes
    ----------
    mask : ndarray (H, W) bool
        Measurement mask.
    reconstruction : ndarray (H, W) int16
    erd_map : ndarray (H, W) float32, NaN at measured and in-flight pixels
    td : float or None
        Total distortion, fraction of wrongly reconstructed pixels.
    """

    def __init__(self, shape, n_phases: int, erd_model=None, *, k: int = 10, truth=None,
                 full_recompute: bool = False):
        H, W = check_grid_shape(shape, MAX_GRID)
        k = check_int(k, "k (neighbours of the reconstruction)", 1, MAX_K)
        check_int(n_phases, "n_phases", 1, 255)
        self.shape = (H, W)
        self.P = H * W
        self.L = int(n_phases)
        self.k = int(k)
        self.erd_model = erd_model
        self._n_features = int(getattr(erd_model, "n_features", N_FEATURES))
        self.full_recompute = bool(full_recompute)
        self.r_c = density_radius(self.P)
        P = self.P
        self._taken = np.zeros(P, dtype=bool)         # measured or in flight
        self._measured = np.zeros(P, dtype=bool)      # measurement finished
        self._pending = np.zeros(P, dtype=bool)       # in flight (pseudo-measurement)
        self._valid = np.zeros(P, dtype=bool)         # hosts a point with a phase label
        self._meas_label = np.full(P, -1, dtype=np.int16)
        self._order: list[np.ndarray] = []            # measured flat indices, in order
        self._n_measured = 0
        cap = max(64, P // 16)
        self._pts = np.zeros((cap, 2), dtype=np.int64)
        self._pt_label = np.zeros(cap, dtype=np.int16)
        self._pt_alive = np.zeros(cap, dtype=bool)
        self._pt_of_pixel = np.full(P, -1, dtype=np.int64)
        self._n_pts = 0
        # neighbour lists laid out (k, P): reductions over the k neighbours of a set of
        # pixels are then vector additions over contiguous rows
        self._nn_idx = np.full((self.k, P), -1, dtype=np.int32)
        self._nn_d2 = np.full((self.k, P), BIG_D2, dtype=np.int32)
        self._d2k = np.full(P, BIG_D2, dtype=np.int32)   # -1 at pixels hosting a point
        self._recon = np.zeros(P, dtype=np.int16)
        self._erd = np.full(P, -np.inf, dtype=np.float64)
        self._row_max = np.full(H, -np.inf)
        self._row_arg = np.zeros(H, dtype=np.int64)
        self._row_d2k = np.full(H, BIG_D2, dtype=np.int32)
        self._scratch = np.zeros(P, dtype=np.int64)      # for de-duplicating pixel lists
        self._truth = None
        self._wrong = 0
        if truth is not None:
            t = check_label_image(truth, self.L, name="truth")
            if t.shape != self.shape:
                raise InputError(f"truth: expected shape {self.shape}, got {t.shape}")
            self._truth = t.reshape(-1).copy()
        self._rows = np.arange(H)
        self._cols = np.arange(W)
        self._kr = np.arange(self.k)[:, None]
        self._d2k_stale = 0
        self._changes = 0
        self._full_rebuild()

    # ---------------------------------------------------------------- public state
    @property
    def n_measured(self) -> int:
        """Finished measurements |S|."""
        return self._n_measured

    @property
    def n_pending(self) -> int:
        """Positions in flight (selected with pseudo-measurements, not yet measured)."""
        return int(np.count_nonzero(self._pending))

    @property
    def fraction(self) -> float:
        """Sampling fraction |S| / |Ω|."""
        return self._n_measured / self.P

    @property
    def mask(self) -> np.ndarray:
        """Measurement mask (H, W) bool."""
        return self._measured.reshape(self.shape).copy()

    @property
    def reconstruction(self) -> np.ndarray:
        """Reconstructed phase map (H, W) int16 (labels 1..L, 0 = nothing known yet)."""
        return self._recon.reshape(self.shape).copy()

    @property
    def erd_map(self) -> np.ndarray:
        """ERD (H, W) float32, NaN where measured or in flight."""
        e = self._erd.astype(np.float32)
        e[self._taken] = np.nan
        return e.reshape(self.shape)

    @property
    def measured_labels(self) -> np.ndarray:
        """Labels at measured pixels (H, W) int16, -1 where not measured."""
        return self._meas_label.reshape(self.shape).copy()

    @property
    def positions(self) -> np.ndarray:
        """Measured positions in measurement order, shape (n, 2) int64."""
        flat = np.concatenate(self._order) if self._order else np.zeros(0, np.int64)
        return np.stack(np.divmod(flat, self.shape[1]), axis=1)

    @property
    def td(self) -> float | None:
        """Total distortion TD = D(X, X̂) / |Ω| (eq. 19), or None without a ground truth."""
        if self._truth is None:
            return None
        return self._wrong / self.P

    def record(self) -> StepRecord:
        return StepRecord(self._n_measured, self.fraction, self.td)

    def error_image(self, box=None) -> np.ndarray:
        """[X ≠ X̂] (H, W) bool against the ground truth (needs ``truth``); with ``box``
        (row_lo, row_hi, col_lo, col_hi), half-open, only that part of the grid."""
        if self._truth is None:
            raise InputError("the sampler has no ground truth")
        if box is None:
            return (self._recon != self._truth).reshape(self.shape)
        rl, rh, cl, ch = (int(x) for x in box)
        H, W = self.shape
        if not (0 <= rl <= rh <= H and 0 <= cl <= ch <= W):
            raise InputError(f"error_image: box {box} is not inside the {H}x{W} grid")
        return self._recon.reshape(H, W)[rl:rh, cl:ch] != self._truth.reshape(H, W)[rl:rh, cl:ch]

    def nearest_d2(self, pix) -> np.ndarray:
        """Squared distance (pixels²) from flat pixels ``pix`` to their nearest
        phase-labelled measurement (int64; huge when there is none)."""
        return self._nn_d2[0, np.asarray(pix, dtype=np.int64)].copy()

    def update_box(self, flat) -> tuple[int, int, int, int]:
        """Bounding box (row_lo, row_hi, col_lo, col_hi), half-open, of every pixel whose
        neighbour list, reconstruction or features an :meth:`update` at the flat pixels
        ``flat`` can change (call it before the update).  Used by the oracle
        (:mod:`napari_slads_eds.oracle`) to refresh the true RD locally.

        Raises
        ------
        InputError
            A pixel outside the grid.
        """
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.P):
            raise InputError(f"update_box: flat pixel indices must be in 0..{self.P - 1}")
        H, W = self.shape
        if flat.size == 0:
            return 0, 0, 0, 0
        boxes = np.array([self._window(*divmod(int(f), W)) for f in flat])
        return (int(boxes[:, 0].min()), int(boxes[:, 1].max()), int(boxes[:, 2].min()), int(boxes[:, 3].max()))

    def max_d1_bound(self, rows=None) -> float:
        """An upper bound (pixels) of the distance from any pixel (of the rows
        ``rows = (lo, hi)``, half-open; default all) to its nearest phase-labelled
        measurement, from the per-row maxima of d_k; inf when fewer than k points exist."""
        lo, hi = (0, self.shape[0]) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= lo < hi <= self.shape[0]:
            raise InputError(f"max_d1_bound: rows {rows} are not inside the grid's {self.shape[0]} rows")
        m = int(self._row_d2k[lo:hi].max())
        return math.inf if m >= BIG_D2 else math.sqrt(max(m, 0))

    def unmeasured(self) -> np.ndarray:
        """Flat indices of the pixels that are neither measured nor in flight."""
        return np.flatnonzero(~self._taken)

    # ---------------------------------------------------------------- measuring
    def update(self, positions, labels) -> None:
        """Add measurements (in order), or finish in-flight ones.

        Parameters
        ----------
        positions : array_like, shape (n, 2), int (row, col)
            Unmeasured or in-flight pixels.
        labels : array_like, shape (n,), int in 0..L
            Their measured labels (0 = ill-spectrum).

        Raises
        ------
        InputError
            Positions outside the grid or already measured, labels outside 0..L.
        """
        pos = check_positions(positions, self.shape)
        lab = np.asarray(labels).reshape(-1)
        if lab.shape[0] != pos.shape[0]:
            raise InputError(f"got {pos.shape[0]} positions but {lab.shape[0]} labels")
        if lab.size == 0:
            return
        lab = check_label_image(lab[None, :], self.L, name="labels")[0]
        flat = pos[:, 0] * self.shape[1] + pos[:, 1]
        if np.unique(flat).size != flat.size or self._measured[flat].any():
            raise InputError("positions: each position must be an unmeasured pixel, listed once")
        fresh = ~self._pending[flat]
        # Sequential local inserts cost about k * P / n_points pixels each; when the batch is
        # large against the points already there, one full rebuild is cheaper (same state).
        n_fresh = int(np.count_nonzero(fresh))
        bulk = self.full_recompute or (n_fresh and (self._n_pts < 2 * self.k
                                                    or n_fresh > max(64, self._n_pts // 4)))
        self._order.append(flat.copy())
        self._n_measured += flat.size
        if not bulk and n_fresh == flat.size and n_fresh > 1:
            self._batch_insert(flat, lab)
            return
        for f, l in zip(flat.tolist(), lab.tolist()):
            self._measured[f] = True
            self._meas_label[f] = l
            if self._pending[f]:
                self._pending[f] = False
                j = int(self._pt_of_pixel[f])
                if j < 0:                  # pseudo-measured without a label (nothing known)
                    if l > 0:
                        j = self._add_point(f, l)
                        if not bulk:
                            self._local_insert(f, j)
                elif l == 0:
                    self._pt_alive[j] = False
                    self._pt_of_pixel[f] = -1
                    self._valid[f] = False
                    if not bulk:
                        self._local_remove(f, j)
                elif l != self._pt_label[j]:
                    self._pt_label[j] = l
                    if not bulk:
                        self._local_relabel(f, j)
            else:
                self._take(f)
                if l > 0:
                    j = self._add_point(f, l)
                    if not bulk:
                        self._local_insert(f, j)
                elif not bulk:
                    self._refresh_rows_around(f)
        if bulk:
            self._full_rebuild()

    def cancel(self, positions) -> None:
        """Give up in-flight positions (selected with ``mode="pseudo"``, never measured):
        their pseudo-measurements are removed and they become selectable again.

        Raises
        ------
        InputError
            A position that is not in flight.
        """
        pos = check_positions(positions, self.shape)
        flat = pos[:, 0] * self.shape[1] + pos[:, 1]
        if flat.size and not self._pending[flat].all():
            raise InputError("cancel: every position must be in flight (selected, not yet measured)")
        for f in flat.tolist():
            self._pending[f] = False
            self._taken[f] = False
            j = int(self._pt_of_pixel[f])
            if j >= 0:
                self._pt_alive[j] = False
                self._pt_of_pixel[f] = -1
                self._valid[f] = False
                if not self.full_recompute:
                    self._local_remove(f, j)
            elif not self.full_recompute:
                self._erd[f] = self._predict(np.array([f]))[0] if self.erd_model is not None else -np.inf
                self._refresh_rows_around(f)
        if self.full_recompute and flat.size:
            self._full_rebuild()

    def select(self, batch: int = 1, mode: str = "top") -> np.ndarray:
        """Next positions to measure: the pixels of largest ERD (eq. 5).

        Parameters
        ----------
        batch : int
            Number of positions b.
        mode : {"top", "pseudo"}
            "top": the b largest ERD values of the current map; the state is unchanged.
            "pseudo": pick the argmax, insert its reconstructed label as a
            pseudo-measurement, update locally, pick again (Zhang et al. 2018); the picks
            stay in flight until :meth:`update` gives their measured labels.

        Returns
        -------
        ndarray, shape (b', 2), int64 (row, col), b' = min(b, selectable pixels)

        Raises
        ------
        InputError
            No ERD model, or bad batch/mode.
        """
        if self.erd_model is None:
            raise InputError("the sampler has no ERD model: train or load one before selecting positions")
        b = int(batch)
        if b < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        if mode not in ("top", "pseudo"):
            raise InputError(f"mode must be 'top' or 'pseudo', got {mode!r}")
        b = min(b, self.P - int(np.count_nonzero(self._taken)))
        if b <= 0:
            return np.zeros((0, 2), dtype=np.int64)
        if mode == "pseudo":
            flat = np.empty(b, dtype=np.int64)
            for i in range(b):
                f = self._argmax()
                flat[i] = f
                self._take(f)
                self._pending[f] = True
                lab = int(self._recon[f])
                if lab > 0:
                    j = self._add_point(f, lab)
                    if self.full_recompute:
                        self._full_rebuild()
                    else:
                        self._local_insert(f, j)
                elif self.full_recompute:
                    self._full_rebuild()
                else:
                    self._refresh_rows_around(f)
        elif b == 1:
            flat = np.array([self._argmax()])
        else:
            # the b largest values lie in the rows whose maximum is at least the b-th
            # largest row maximum
            W = self.shape[1]
            rm = self._row_max
            t = np.partition(rm, rm.size - min(b, rm.size))[rm.size - min(b, rm.size)]
            rows = np.flatnonzero(rm >= t)
            cand = (rows[:, None] * W + self._cols[None, :]).ravel()
            cand = cand[~self._taken[cand]]
            e = self._erd[cand]
            part = np.argpartition(-e, b - 1)[:b]
            o = np.lexsort((cand[part], -e[part]))     # ERD descending, then pixel index
            flat = cand[part][o]
        return np.stack(np.divmod(flat, self.shape[1]), axis=1)

    def features(self, pix=None, n_features: int | None = None) -> np.ndarray:
        """ERD features of flat pixels ``pix`` (default: every selectable pixel): (n, 6)
        SLADS features, or (n, 11) with ``n_features=11`` (:func:`~napari_slads_eds.features.rich_features`);
        default: what the ERD model reads (6 without a model)."""
        if pix is None:
            pix = np.flatnonzero(~self._taken)
        pix = np.asarray(pix, dtype=np.int64)
        nf = self._n_features if n_features is None else int(n_features)
        return features_kn(pix, *self._nn(pix), self._pt_label, self._recon,
                           self.shape, self.r_c, nf, self.L)

    # ---------------------------------------------------------------- bookkeeping
    def _argmax(self) -> int:
        r = int(np.argmax(self._row_max))
        return r * self.shape[1] + int(self._row_arg[r])

    def _take(self, f: int) -> None:
        self._taken[f] = True
        self._erd[f] = -np.inf

    def _add_point(self, f: int, lab: int) -> int:
        j = self._n_pts
        if j >= self._pts.shape[0]:
            new = 2 * self._pts.shape[0]
            self._pts = np.resize(self._pts, (new, 2))
            self._pt_label = np.resize(self._pt_label, new)
            alive = np.zeros(new, dtype=bool)
            alive[:j] = self._pt_alive[:j]
            self._pt_alive = alive
        self._pts[j] = divmod(f, self.shape[1])
        self._pt_label[j] = lab
        self._pt_alive[j] = True
        self._pt_of_pixel[f] = j
        self._valid[f] = True
        self._n_pts += 1
        return j

    def _full_rebuild(self) -> None:
        """Recompute neighbours, reconstruction, features, ERD and row maxima everywhere."""
        H, W = self.shape
        alive = np.flatnonzero(self._pt_alive[: self._n_pts])
        q_all = np.flatnonzero(~self._valid)
        self._nn_idx[:] = -1
        self._nn_d2[:] = BIG_D2
        self._d2k[:] = -1
        recon = np.zeros(self.P, dtype=np.int16)
        tree = cKDTree(self._pts[alive]) if alive.size else None
        for a in range(0, q_all.size, _CHUNK):   # in chunks: bounded memory at 1024² and beyond
            q = q_all[a:a + _CHUNK]
            idx, d2 = knn_exact(self._pts[alive], np.stack(np.divmod(q, W), axis=1), self.k, tree)
            idx = np.where(idx >= 0, alive[np.maximum(idx, 0)] if alive.size else -1, -1).astype(np.int32)
            self._nn_idx[:, q] = idx.T
            self._nn_d2[:, q] = d2.T
            self._d2k[q] = d2[:, -1]
            recon[q] = self._mode_of(*self._nn(q))
        v = np.flatnonzero(self._valid)
        recon[v] = self._pt_label[self._pt_of_pixel[v]]
        self._changes += int(np.count_nonzero(recon != self._recon))
        self._recon = recon
        if self._truth is not None:
            self._wrong = int(np.count_nonzero(recon != self._truth))
        self._erd[:] = -np.inf
        u = np.flatnonzero(~self._taken)
        if self.erd_model is not None and alive.size == 0 and u.size:
            # nothing phase-labelled yet: every pixel has the same features
            self._erd[u] = self._predict(u[:1])[0]
        elif self.erd_model is not None:
            for a in range(0, u.size, _CHUNK):
                self._erd[u[a:a + _CHUNK]] = self._predict(u[a:a + _CHUNK])
        self._row_d2k = self._d2k.reshape(H, W).max(axis=1)
        self._d2k_stale = 0
        e2 = self._erd.reshape(H, W)
        self._row_arg = e2.argmax(axis=1)
        self._row_max = e2[self._rows, self._row_arg]

    def _dedup(self, pix: np.ndarray) -> np.ndarray:
        """The distinct values of a pixel list in O(n) (order not kept sorted)."""
        s = self._scratch
        at = np.arange(pix.size)
        s[pix] = at
        return pix[s[pix] == at]

    def _nn(self, pix):
        """Neighbour indices and squared distances of flat pixels ``pix``, each (k, n)
        C-contiguous (``np.take``; plain fancy indexing would return Fortran order)."""
        return np.take(self._nn_idx, pix, axis=1), np.take(self._nn_d2, pix, axis=1)

    def _mode_of(self, idx: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """Weighted mode of neighbour arrays (k, n)."""
        if idx.size == 0 or idx.min() >= 0:
            return mode_kn(self._pt_label[idx], vote_weights(d2), self.L)
        valid = idx >= 0
        lab = np.where(valid, self._pt_label[np.maximum(idx, 0)], -1)
        return mode_kn(lab, np.where(valid, vote_weights(d2), 0), self.L)

    def _predict(self, pix: np.ndarray) -> np.ndarray:
        f = features_kn(pix, *self._nn(pix), self._pt_label, self._recon,
                        self.shape, self.r_c, self._n_features, self.L)
        return np.asarray(self.erd_model.predict(f), dtype=np.float64).reshape(-1)

    def pop_changes(self) -> int:
        """Pixels whose reconstruction changed since the last call (the realised reduction
        in distortion, without knowing the truth); used by the stopping rule."""
        n, self._changes = self._changes, 0
        return n

    def _set_recon(self, pix: np.ndarray, new: np.ndarray) -> None:
        self._changes += int(np.count_nonzero(self._recon[pix] != new))
        if self._truth is not None:
            t = self._truth[pix]
            self._wrong += int(np.count_nonzero(new != t)) - int(np.count_nonzero(self._recon[pix] != t))
        self._recon[pix] = new

    # ---------------------------------------------------------------- local updates
    def _window(self, r0: int, c0: int):
        """Row and column bounds of a window around (r0, c0) that holds every pixel p
        with |p - (r0, c0)|² <= d_k(p)² (from the per-row maxima of d_k²), plus one pixel
        of margin for the gradient features."""
        H, W = self.shape
        m = int(self._row_d2k.max())
        if m >= BIG_D2:
            return 0, H, 0, W
        rad = math.isqrt(max(m, 0)) + 1
        for _ in range(2):   # refine with the rows the window can reach
            lo, hi = max(0, r0 - rad), min(H, r0 + rad + 1)
            new = math.isqrt(max(int(self._row_d2k[lo:hi].max()), 0)) + 1
            if new >= rad:
                break
            rad = new
        return max(0, r0 - rad), min(H, r0 + rad + 1), max(0, c0 - rad), min(W, c0 + rad + 1)

    def _insert_knn(self, f: int, j: int):
        """Insert point ``j`` (at flat pixel ``f``) into the neighbour lists of the pixels
        it is closer to than their k-th neighbour.  Returns the window and the affected
        pixels (window rows/cols ``ar, ac`` and flat ``A``)."""
        H, W = self.shape
        r0, c0 = divmod(f, W)
        self._d2k[f] = -1
        rl, rh, cl, ch = self._window(r0, c0)
        dd = ((self._rows[rl:rh] - r0) ** 2)[:, None] + ((self._cols[cl:ch] - c0) ** 2)[None, :]
        aff = dd < self._d2k.reshape(H, W)[rl:rh, cl:ch]
        ar, ac = np.nonzero(aff)
        A = (ar + rl) * W + (ac + cl)
        if ar.size:
            dnew = dd[ar, ac]
            cur_idx, cur_d2 = self._nn(A)
            # insert after the neighbours at the same distance (they have lower indices)
            pos = (cur_d2 <= dnew).sum(axis=0)
            kr = self._kr
            before, here = kr < pos, kr == pos
            nd2 = np.where(before, cur_d2, np.where(here, dnew, np.concatenate([cur_d2[:1], cur_d2[:-1]])))
            nidx = np.where(before, cur_idx, np.where(here, np.int32(j),
                                                      np.concatenate([cur_idx[:1], cur_idx[:-1]])))
            self._nn_d2[:, A] = nd2
            self._nn_idx[:, A] = nidx
            self._d2k[A] = nd2[-1]
        return (rl, rh, cl, ch), aff, ar, ac, A

    def _local_insert(self, f: int, j: int) -> None:
        """Exact local update after adding point ``j`` at flat pixel ``f``."""
        W = self.shape[1]
        (rl, rh, cl, ch), aff, ar, ac, A = self._insert_knn(f, j)
        chg = np.zeros_like(aff)
        if A.size:
            newrec = self._mode_of(*self._nn(A))
            ch_ = newrec != self._recon[A]
            if ch_.any():
                self._set_recon(A[ch_], newrec[ch_])
                chg[ar[ch_], ac[ch_]] = True
        lab = self._pt_label[j]
        if self._recon[f] != lab:
            self._set_recon(np.array([f]), np.array([lab], dtype=np.int16))
            r0, c0 = divmod(f, W)
            chg[r0 - rl, c0 - cl] = True
        self._refresh_window(rl, rh, cl, ch, aff, chg)

    def _batch_insert(self, flat: np.ndarray, lab: np.ndarray) -> None:
        """Add several fresh measurements at once: neighbour lists point by point (in
        order), then one reconstruction, feature and ERD update over the union of the
        affected pixels, and one refresh of the touched rows."""
        H, W = self.shape
        As, rows = [], []
        for f, l in zip(flat.tolist(), lab.tolist()):
            self._take(f)
            if l > 0:
                j = self._add_point(f, l)
                (rl, rh, _, _), _, _, _, A = self._insert_knn(f, j)
                As.append(A)
                rows.append(np.arange(rl, rh))
        rows.append(flat // W)
        A = self._dedup(np.concatenate(As)) if As else np.zeros(0, np.int64)
        A = A[~self._valid[A]]
        changed = []
        if A.size:
            newrec = self._mode_of(*self._nn(A))
            ch_ = newrec != self._recon[A]
            if ch_.any():
                self._set_recon(A[ch_], newrec[ch_])
                changed.append(A[ch_])
        v = flat[lab > 0]
        own = self._recon[v] != lab[lab > 0]
        if own.any():
            self._set_recon(v[own], lab[lab > 0][own].astype(np.int16))
            changed.append(v[own])
        C = np.concatenate(changed) if changed else np.zeros(0, np.int64)
        r, c = np.divmod(C, W)
        U = self._dedup(np.concatenate([A, C, r * W + np.maximum(c - 1, 0), r * W + np.minimum(c + 1, W - 1),
                                        np.maximum(r - 1, 0) * W + c, np.minimum(r + 1, H - 1) * W + c]))
        U = U[~self._taken[U]]
        if U.size and self.erd_model is not None:
            self._erd[U] = self._predict(U)
        rr = np.unique(np.concatenate(rows))
        e2 = self._erd.reshape(H, W)[rr]
        a = e2.argmax(axis=1)
        self._row_arg[rr] = a
        self._row_max[rr] = e2[np.arange(rr.size), a]
        self._d2k_stale += len(As)
        if self._d2k_stale >= 64:
            self._row_d2k = self._d2k.reshape(H, W).max(axis=1)
            self._d2k_stale = 0

    def _pixels_using(self, j: int, rl: int, rh: int, cl: int, ch: int) -> np.ndarray:
        """Window mask of the pixels that have point ``j`` among their k neighbours."""
        H, W = self.shape
        sub = self._nn_idx.reshape(self.k, H, W)[:, rl:rh, cl:ch]
        return (sub == j).any(axis=0) & ~self._valid.reshape(H, W)[rl:rh, cl:ch]

    def _local_relabel(self, f: int, j: int) -> None:
        """Point ``j`` at ``f`` changed its label (a pseudo-measurement was measured)."""
        H, W = self.shape
        r0, c0 = divmod(f, W)
        rl, rh, cl, ch = self._window(r0, c0)
        hits = self._pixels_using(j, rl, rh, cl, ch)
        chg = np.zeros_like(hits)
        hr, hc = np.nonzero(hits)
        if hr.size:
            Q = (hr + rl) * W + (hc + cl)
            newrec = self._mode_of(*self._nn(Q))
            ch_ = newrec != self._recon[Q]
            if ch_.any():
                self._set_recon(Q[ch_], newrec[ch_])
                chg[hr[ch_], hc[ch_]] = True
        self._set_recon(np.array([f]), np.array([self._pt_label[j]], dtype=np.int16))
        chg[r0 - rl, c0 - cl] = True
        self._refresh_window(rl, rh, cl, ch, hits, chg)

    def _local_remove(self, f: int, j: int) -> None:
        """Point ``j`` at ``f`` was removed (its pseudo-measurement turned out ill)."""
        H, W = self.shape
        r0, c0 = divmod(f, W)
        rl, rh, cl, ch = self._window(r0, c0)
        hits = self._pixels_using(j, rl, rh, cl, ch)
        hits[r0 - rl, c0 - cl] = True          # f itself needs neighbours now
        hr, hc = np.nonzero(hits)
        Q = (hr + rl) * W + (hc + cl)
        idx, d2 = self._knn_local(Q)
        self._nn_idx[:, Q] = idx.T
        self._nn_d2[:, Q] = d2.T
        self._d2k[Q] = d2[:, -1]
        newrec = self._mode_of(*self._nn(Q))
        chg = np.zeros_like(hits)
        ch_ = newrec != self._recon[Q]
        if ch_.any():
            self._set_recon(Q[ch_], newrec[ch_])
            chg[hr[ch_], hc[ch_]] = True
        self._refresh_window(rl, rh, cl, ch, hits, chg, d2k_grew=True)

    def _knn_local(self, Q: np.ndarray):
        """Exact k nearest alive points of pixels ``Q`` from a growing window of points."""
        H, W = self.shape
        k = self.k
        qr, qc = np.divmod(Q, W)
        idx = np.full((Q.size, k), -1, dtype=np.int32)
        d2 = np.full((Q.size, k), BIG_D2, dtype=np.int64)
        todo = np.arange(Q.size)
        pmap = self._pt_of_pixel.reshape(H, W)
        rad = max(4, math.isqrt(max(int(self._row_d2k.max()), 0)) + 2)
        while todo.size:
            rl, rh = max(0, int(qr[todo].min()) - rad), min(H, int(qr[todo].max()) + rad + 1)
            cl, ch = max(0, int(qc[todo].min()) - rad), min(W, int(qc[todo].max()) + rad + 1)
            sub = pmap[rl:rh, cl:ch]
            pr, pc = np.nonzero(sub >= 0)
            ids = sub[pr, pc]
            keep = self._pt_alive[ids]
            pr, pc, ids = pr[keep] + rl, pc[keep] + cl, ids[keep]
            whole = rl == 0 and cl == 0 and rh == H and ch == W
            if ids.size:
                dd = (qr[todo, None] - pr[None, :]) ** 2 + (qc[todo, None] - pc[None, :]) ** 2
                key = dd * (self._n_pts + 1) + ids[None, :]
                kk = min(k, ids.size)
                part = np.argpartition(key, kk - 1, axis=1)[:, :kk] if ids.size > kk else \
                    np.broadcast_to(np.arange(ids.size), (todo.size, ids.size))
                pk = np.take_along_axis(key, part, axis=1)
                o = np.argsort(pk, axis=1)
                sel = np.take_along_axis(part, o, axis=1)
                sd = np.take_along_axis(dd, sel, axis=1)
                si = ids[sel]
            else:
                kk = 0
            if whole:
                ok = np.ones(todo.size, dtype=bool)
            else:
                # points outside the window are at Chebyshev distance > margin
                margin = np.minimum.reduce([
                    np.where(rl > 0, qr[todo] - rl, H), np.where(rh < H, rh - 1 - qr[todo], H),
                    np.where(cl > 0, qc[todo] - cl, W), np.where(ch < W, ch - 1 - qc[todo], W)])
                ok = (kk == k) & (sd[:, -1] < (margin + 1) ** 2) if kk else np.zeros(todo.size, dtype=bool)
            done = todo[ok]
            if kk:
                idx[done, :kk] = si[ok]
                d2[done, :kk] = sd[ok]
            todo = todo[~ok]
            rad *= 2
        return idx, d2

    def _refresh_window(self, rl, rh, cl, ch, aff, chg, d2k_grew: bool = False) -> None:
        """New ERD for the affected pixels and the 4-neighbours of changed ones; row maxima."""
        H, W = self.shape
        U = aff | chg
        U[1:] |= chg[:-1]
        U[:-1] |= chg[1:]
        U[:, 1:] |= chg[:, :-1]
        U[:, :-1] |= chg[:, 1:]
        U &= ~self._taken.reshape(H, W)[rl:rh, cl:ch]
        ur, uc = np.nonzero(U)
        if ur.size and self.erd_model is not None:
            self._erd[(ur + rl) * W + (uc + cl)] = self._predict((ur + rl) * W + (uc + cl))
        self._refresh_rows(rl, rh, cl, ch, d2k_grew)

    def _refresh_rows_around(self, f: int) -> None:
        r0, c0 = divmod(f, self.shape[1])
        self._refresh_rows(r0, r0 + 1, c0, c0 + 1)

    def _refresh_rows(self, rl, rh, cl, ch, d2k_grew: bool = False) -> None:
        """Row maxima of the ERD and of d_k² after values changed only in the window."""
        H, W = self.shape
        e2 = self._erd.reshape(H, W)
        ew = e2[rl:rh, cl:ch]
        warg = ew.argmax(axis=1)
        rows = self._rows[rl:rh]
        wmax = ew[np.arange(rh - rl), warg]
        warg = warg + cl
        old_arg = self._row_arg[rl:rh]
        old_max = self._row_max[rl:rh]
        inside = (old_arg >= cl) & (old_arg < ch)
        # rows whose previous maximum lay outside the window: compare with the window part
        better = (wmax > old_max) | ((wmax == old_max) & (warg < old_arg))
        upd = ~inside & better
        self._row_max[rl:rh] = np.where(upd, wmax, old_max)
        self._row_arg[rl:rh] = np.where(upd, warg, old_arg)
        # rows whose previous maximum lay inside: recompute the whole row
        ri = rows[inside]
        if ri.size:
            full = e2[ri]
            a = full.argmax(axis=1)
            self._row_arg[ri] = a
            self._row_max[ri] = full[np.arange(ri.size), a]
        # The row maxima of d_k² only bound the update windows: after an insert d_k only
        # shrinks, so stale maxima stay valid bounds and are refreshed now and then; after
        # a removal d_k can grow and the rows are refreshed at once.
        if d2k_grew:
            self._row_d2k[rl:rh] = self._d2k.reshape(H, W)[rl:rh].max(axis=1)
        else:
            self._d2k_stale += 1
            if self._d2k_stale >= 64:
                self._row_d2k = self._d2k.reshape(H, W).max(axis=1)
                self._d2k_stale = 0
