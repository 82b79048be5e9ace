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

from ._validation import InputError, check_label_image, check_positions
from .features import density_radius, slads_features
from .reconstruction import BIG_D2, knn_exact, weighted_mode

__all__ = ["Sampler", "initial_positions", "random_order", "halton_order", "StepRecord"]


# --------------------------------------------------------------------------------------
# initial and static patterns

def random_order(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """All pixels of the grid in a uniformly random order, shape (H*W, 2) int64 (row, col)."""
    H, W = shape
    flat = np.random.default_rng(seed).permutation(H * W)
    return np.stack(np.divmod(flat, W), axis=1)


def halton_order(shape: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct pixels from a scrambled 2-D Halton sequence, shape (n, 2) int64.

    Points of the low-discrepancy sequence that fall on an already chosen pixel are
    skipped, so the result has no duplicates.
    """
    from scipy.stats import qmc

    H, W = shape
    n = int(min(n, H * W))
    eng = qmc.Halton(d=2, scramble=True, seed=seed)
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
            rest = np.random.default_rng(seed).permutation(rest)[: n - have]
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
    erd_model : object with ``predict(features (n, 6)) -> (n,)``, optional
        The ERD regressor (eq. 6).  Without one, the sampler still reconstructs but
        cannot select positions.
    k : int
        Neighbours of the weighted-mode reconstruction (10 in the paper).
    truth : ndarray, shape (H, W), optional
        Ground-truth phase map (labels 1..L); when given, TD (eq. 19) is kept up to date.
    full_recompute : bool
        Recompute everything at every step (reference implementation for tests).

    Attributes
    ----------
    mask : ndarray (H, W) bool
        Measurement mask.
    reconstruction : ndarray (H, W) int16
    erd_map : ndarray (H, W) float32, NaN at measured pixels
    td : float or None
        Total distortion, fraction of wrongly reconstructed pixels.
    """

    def __init__(self, shape, n_phases: int, erd_model=None, *, k: int = 10, truth=None,
                 full_recompute: bool = False):
        H, W = int(shape[0]), int(shape[1])
        if H < 1 or W < 1:
            raise InputError(f"grid shape must be positive, got {shape}")
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if int(n_phases) < 1:
            raise InputError(f"n_phases must be >= 1, got {n_phases}")
        self.shape = (H, W)
        self.P = H * W
        self.L = int(n_phases)
        self.k = int(k)
        self.erd_model = erd_model
        self.full_recompute = bool(full_recompute)
        self.r_c = density_radius(self.P)
        P = self.P
        self._measured = np.zeros(P, dtype=bool)
        self._valid = np.zeros(P, dtype=bool)        # measured with a phase label
        self._meas_label = np.full(P, -1, dtype=np.int16)
        self._order: list[np.ndarray] = []           # measured flat indices, in order
        self._n_measured = 0
        self._pts = np.zeros((max(64, P // 16), 2), dtype=np.int64)
        self._pt_label = np.zeros(max(64, P // 16), dtype=np.int16)
        self._pt_alive = np.zeros(max(64, P // 16), dtype=bool)
        self._pt_of_pixel = np.full(P, -1, dtype=np.int64)
        self._n_pts = 0
        self._nn_idx = np.full((P, self.k), -1, dtype=np.int32)
        self._nn_d2 = np.full((P, self.k), BIG_D2, dtype=np.int64)
        self._d2k = np.full(P, BIG_D2, dtype=np.int64)   # -1 at valid measured pixels
        self._recon = np.zeros(P, dtype=np.int16)
        self._erd = np.full(P, -np.inf, dtype=np.float64)
        self._row_max = np.full(H, -np.inf)
        self._row_arg = np.zeros(H, dtype=np.int64)
        self._row_d2k = np.full(H, BIG_D2, dtype=np.int64)
        self._truth = None
        self._wrong = 0
        if truth is not None:
            t = check_label_image(truth, self.L, name="truth")
            if t.shape != self.shape:
                raise InputError(f"truth: expected shape {self.shape}, got {t.shape}")
            self._truth = t.reshape(-1).copy()
        self._rows = np.arange(H)
        self._cols = np.arange(W)
        self._full_rebuild()

    # ---------------------------------------------------------------- public state
    @property
    def n_measured(self) -> int:
        return self._n_measured

    @property
    def fraction(self) -> float:
        """Sampling fraction |S| / |Ω|."""
        return self._n_measured / self.P

    @property
    def mask(self) -> np.ndarray:
        return self._measured.reshape(self.shape).copy()

    @property
    def reconstruction(self) -> np.ndarray:
        return self._recon.reshape(self.shape).copy()

    @property
    def erd_map(self) -> np.ndarray:
        e = self._erd.astype(np.float32)
        e[self._measured] = np.nan
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

    # ---------------------------------------------------------------- measuring
    def update(self, positions, labels) -> None:
        """Add measurements (in order).

        Parameters
        ----------
        positions : array_like, shape (n, 2), int (row, col)
            Unmeasured pixels.
        labels : array_like, shape (n,), int in 0..L
            Their labels (0 = ill-spectrum).

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
        if self.full_recompute:
            self._mark_measured(flat, lab)
            self._full_rebuild()
            return
        # Sequential local inserts cost about k * P / n_points pixels each; when the batch is
        # large against the points already measured, one full rebuild is cheaper (and
        # gives the same state).
        if self._n_pts < 2 * self.k or flat.size > max(64, self._n_pts // 4):
            self._mark_measured(flat, lab)
            self._full_rebuild()
            return
        for f, l in zip(flat.tolist(), lab.tolist()):
            self._mark_measured(np.array([f]), np.array([l], dtype=np.int16))
            self._local_insert(f, l)

    def select(self, batch: int = 1, mode: str = "top") -> np.ndarray:
        """Next positions to measure: the pixels of largest ERD (eq. 5).

        Parameters
        ----------
        batch : int
            Number of positions b.
        mode : {"top", "pseudo"}
            "top": the b largest ERD values of the current map.  "pseudo": pick the
            argmax, insert its reconstructed label as a pseudo-measurement, update
            locally, pick again (Zhang et al.); the pseudo-measurements are removed
            before returning, so the state is unchanged.

        Returns
        -------
        ndarray, shape (b', 2), int64 (row, col), b' = min(b, unmeasured pixels)

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
        remaining = self.P - self._n_measured
        b = min(b, remaining)
        if b == 0:
            return np.zeros((0, 2), dtype=np.int64)
        if mode == "top" or b == 1:
            if b == 1:
                flat = np.array([self._argmax()])
            else:
                cand = np.flatnonzero(~self._measured)
                e = self._erd[cand]
                part = np.argpartition(-e, b - 1)[:b]
                # deterministic order: ERD descending, then pixel index
                o = np.lexsort((cand[part], -e[part]))
                flat = cand[part][o]
        elif mode == "pseudo":
            flat = self._select_pseudo(b)
        else:
            raise InputError(f"mode must be 'top' or 'pseudo', got {mode!r}")
        return np.stack(np.divmod(flat, self.shape[1]), axis=1)

    # ---------------------------------------------------------------- internals
    def _argmax(self) -> int:
        r = int(np.argmax(self._row_max))
        return r * self.shape[1] + int(self._row_arg[r])

    def _grow_points(self, need: int) -> None:
        cap = self._pts.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)
        self._pts = np.resize(self._pts, (new, 2))
        self._pt_label = np.resize(self._pt_label, new)
        alive = np.zeros(new, dtype=bool)
        alive[:cap] = self._pt_alive
        self._pt_alive = alive

    def _mark_measured(self, flat: np.ndarray, lab: np.ndarray) -> None:
        self._order.append(np.asarray(flat, dtype=np.int64))
        self._n_measured += flat.size
        self._measured[flat] = True
        self._meas_label[flat] = lab
        self._erd[flat] = -np.inf
        v = flat[lab > 0]
        if v.size:
            self._grow_points(self._n_pts + v.size)
            ids = np.arange(self._n_pts, self._n_pts + v.size)
            self._pts[ids] = np.stack(np.divmod(v, self.shape[1]), axis=1)
            self._pt_label[ids] = lab[lab > 0]
            self._pt_alive[ids] = True
            self._pt_of_pixel[v] = ids
            self._n_pts += v.size
            self._valid[v] = True

    def _full_rebuild(self) -> None:
        """Recompute neighbours, reconstruction, features, ERD and row maxima everywhere."""
        H, W = self.shape
        alive = np.flatnonzero(self._pt_alive[: self._n_pts])
        q = np.flatnonzero(~self._valid)
        qrc = np.stack(np.divmod(q, W), axis=1)
        idx, d2 = knn_exact(self._pts[alive], qrc, self.k)
        idx = np.where(idx >= 0, alive[np.maximum(idx, 0)] if alive.size else -1, -1).astype(np.int32)
        self._nn_idx[:] = -1
        self._nn_d2[:] = BIG_D2
        self._nn_idx[q] = idx
        self._nn_d2[q] = d2
        self._d2k[:] = -1
        self._d2k[q] = d2[:, -1]
        recon = np.zeros(self.P, dtype=np.int16)
        recon[q] = self._mode_of(idx, d2)
        v = np.flatnonzero(self._valid)
        recon[v] = self._meas_label[v]
        self._recon = recon
        if self._truth is not None:
            self._wrong = int(np.count_nonzero(recon != self._truth))
        self._erd[:] = -np.inf
        u = np.flatnonzero(~self._measured)
        if self.erd_model is not None and u.size:
            self._erd[u] = self._predict(u)
        self._row_d2k = self._d2k.reshape(H, W).max(axis=1)
        e2 = self._erd.reshape(H, W)
        self._row_arg = e2.argmax(axis=1)
        self._row_max = e2[self._rows, self._row_arg]

    def _mode_of(self, idx: np.ndarray, d2: np.ndarray) -> np.ndarray:
        lab = np.where(idx >= 0, self._pt_label[np.maximum(idx, 0)], -1)
        return weighted_mode(lab, d2, self.L)

    def _predict(self, pix: np.ndarray) -> np.ndarray:
        f = slads_features(pix, self._nn_idx[pix], self._nn_d2[pix], self._pt_label, self._recon,
                           self.shape, self.r_c)
        return np.asarray(self.erd_model.predict(f), dtype=np.float64).reshape(-1)

    def features(self, pix=None) -> np.ndarray:
        """SLADS features (n, 6) of flat pixels ``pix`` (default: every unmeasured pixel)."""
        if pix is None:
            pix = np.flatnonzero(~self._measured)
        pix = np.asarray(pix, dtype=np.int64)
        return slads_features(pix, self._nn_idx[pix], self._nn_d2[pix], self._pt_label, self._recon,
                              self.shape, self.r_c)

    def _window(self, r0: int, c0: int):
        """Window (row slice, col slice) that contains every pixel p with
        |p - (r0, c0)|² < d_k(p)², from the per-row maxima of d_k²."""
        H, W = self.shape
        m = int(self._row_d2k.max())
        if m >= BIG_D2 or m < 0:
            if m < 0:
                return None
            return slice(0, H), slice(0, W)
        rad = math.isqrt(m) + 1
        for _ in range(2):   # refine with the rows the window can reach
            lo, hi = max(0, r0 - rad), min(H, r0 + rad + 1)
            m2 = int(self._row_d2k[lo:hi].max())
            if m2 < 0:
                return None
            new = math.isqrt(m2) + 1
            if new >= rad:
                break
            rad = new
        return (slice(max(0, r0 - rad), min(H, r0 + rad + 1)),
                slice(max(0, c0 - rad), min(W, c0 + rad + 1)))

    def _local_insert(self, f: int, label: int) -> None:
        """Exact local update after measuring flat pixel ``f`` with ``label``."""
        H, W = self.shape
        r0, c0 = divmod(f, W)
        if label <= 0:
            # an ill-spectrum: measured, but not a neighbour of anything
            self._refresh_rows(np.array([r0]))
            return
        j = int(self._pt_of_pixel[f])
        # s is now a phase-labelled measurement
        self._d2k[f] = -1
        win = self._window(r0, c0)
        changed = [np.array([f])]
        if win is not None:
            rs, cs = win
            dr = (self._rows[rs] - r0) ** 2
            dc = (self._cols[cs] - c0) ** 2
            dd = dr[:, None] + dc[None, :]
            d2k_w = self._d2k.reshape(H, W)[rs, cs]
            ar, ac = np.nonzero(dd < d2k_w)
            A = (ar + rs.start) * W + (ac + cs.start)
            if A.size:
                dnew = dd[ar, ac].astype(np.int64)
                cat_d2 = np.concatenate([self._nn_d2[A], dnew[:, None]], axis=1)
                cat_idx = np.concatenate([self._nn_idx[A], np.full((A.size, 1), j, np.int32)], axis=1)
                order = np.argsort(cat_d2, axis=1, kind="stable")[:, : self.k]
                nd2 = np.take_along_axis(cat_d2, order, axis=1)
                nidx = np.take_along_axis(cat_idx, order, axis=1)
                self._nn_d2[A] = nd2
                self._nn_idx[A] = nidx
                self._d2k[A] = nd2[:, -1]
                newrec = self._mode_of(nidx, nd2)
                ch = newrec != self._recon[A]
                if ch.any():
                    C = A[ch]
                    self._set_recon(C, newrec[ch])
                    changed.append(C)
        old = self._recon[f]
        if old != label:
            self._set_recon(np.array([f]), np.array([label], dtype=np.int16))
        self._refresh(changed, A if (win is not None and A.size) else None)

    def _set_recon(self, pix: np.ndarray, new: np.ndarray) -> None:
        if self._truth is not None:
            t = self._truth[pix]
            self._wrong += int(np.count_nonzero(new != t)) - int(np.count_nonzero(self._recon[pix] != t))
        self._recon[pix] = new

    def _refresh(self, changed: list, A) -> None:
        """Recompute ERD for A and the 4-neighbourhoods of changed pixels; update maxima."""
        H, W = self.shape
        C = np.concatenate(changed)
        r, c = np.divmod(C, W)
        nb = np.concatenate([C,
                             r * W + np.maximum(c - 1, 0), r * W + np.minimum(c + 1, W - 1),
                             np.maximum(r - 1, 0) * W + c, np.minimum(r + 1, H - 1) * W + c])
        U = nb if A is None else np.concatenate([A, nb])
        U = np.unique(U)
        U = U[~self._measured[U]]
        if U.size and self.erd_model is not None:
            self._erd[U] = self._predict(U)
        rows = np.unique(np.concatenate([U // W, C // W]))
        self._refresh_rows(rows)

    def _refresh_rows(self, rows: np.ndarray) -> None:
        H, W = self.shape
        e2 = self._erd.reshape(H, W)[rows]
        arg = e2.argmax(axis=1)
        self._row_arg[rows] = arg
        self._row_max[rows] = e2[np.arange(rows.size), arg]
        self._row_d2k[rows] = self._d2k.reshape(H, W)[rows].max(axis=1)

    def _select_pseudo(self, b: int) -> np.ndarray:
        """Pseudo-measurement batch: argmax, insert the reconstructed label, repeat."""
        # snapshot the arrays a local insert touches, and restore them afterwards
        saved = {name: getattr(self, name).copy() for name in
                 ("_measured", "_valid", "_meas_label", "_nn_idx", "_nn_d2", "_d2k", "_recon", "_erd",
                  "_row_max", "_row_arg", "_row_d2k", "_pt_of_pixel")}
        saved_scalars = (self._n_measured, self._n_pts, self._wrong, len(self._order))
        picks = []
        try:
            for _ in range(b):
                f = self._argmax()
                if self._measured[f]:
                    break
                picks.append(f)
                lab = int(self._recon[f])
                self._mark_measured(np.array([f]), np.array([lab], dtype=np.int16))
                self._local_insert(f, lab)
        finally:
            for name, arr in saved.items():
                setattr(self, name, arr)
            n_meas, n_pts, wrong, n_order = saved_scalars
            self._pt_alive[n_pts:self._n_pts] = False
            self._n_measured, self._n_pts, self._wrong = n_meas, n_pts, wrong
            del self._order[n_order:]
        return np.array(picks, dtype=np.int64)
