"""The oracle: greedy dynamic sampling with the *true* RD (issue 12).

The oracle runs the SLADS loop with the ERD replaced by the RD approximation of
eqs. 7-9 computed from the true error map [X ≠ X̂] (which a real run cannot know):

    RD(s) = Σ_r h_{s,r} [X_r ≠ X̂_r],   h_{s,r} = exp(-‖r - s‖² / (2 σ_s²)),   σ_s = d_1(s) / c,

the regression target the ERD model is trained on.  With the same initial pattern,
batch size and c, its TD curve is what a perfect ERD regressor would reach, so it shows
how far a trained ERD is from perfect.

The RD map is kept up to date locally: a measurement changes the reconstruction, and
d_1, only inside the box :meth:`Sampler.update_box` returns; RD changes only within
3 σ ≤ 3 max d_1 / c of that box, and only there is it recomputed.
``full_recompute=True`` recomputes the whole map every step (the test reference).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ._validation import InputError, check_int, check_label_image
from .erd_database import _kernel, check_c_values

__all__ = ["rd_map", "oracle_td_curve"]


def rd_map(error_image: np.ndarray, d1_sq: np.ndarray, taken: np.ndarray, c: float) -> np.ndarray:
    """The true RD (eqs. 7-9) at every pixel of a grid.

    Parameters
    ----------
    error_image : ndarray, shape (H, W), bool
        [X_r ≠ X̂_r].
    d1_sq : ndarray, shape (H, W), int
        Squared distance (pixels²) of each pixel to its nearest measurement.
    taken : ndarray, shape (H, W), bool
        Measured (or in-flight) pixels; their RD is -inf.
    c : float
        σ_s = d_1(s) / c.

    Returns
    -------
    ndarray, shape (H, W), float64
        RD(s), -inf at taken pixels; the sum runs over a ±floor(3σ_s) window, zero
        outside the image (as :func:`napari_slads_eds.erd_database.rd_approximation`).
    """
    c = float(check_c_values([c])[0])
    E = np.asarray(error_image, dtype=np.float64)
    out = np.full(E.shape, -np.inf)
    free = ~np.asarray(taken, dtype=bool)
    out[free] = 0.0
    if not E.any() or not free.any():
        return out
    d1 = np.asarray(d1_sq, dtype=np.int64)
    fr_, fc_ = np.nonzero(free)
    vals = d1[fr_, fc_]
    order = np.argsort(vals, kind="stable")
    vals, fr_, fc_ = vals[order], fr_[order], fc_[order]
    cuts = np.flatnonzero(np.diff(vals)) + 1
    for rr, cc, vv in zip(np.split(fr_, cuts), np.split(fc_, cuts), np.split(vals, cuts)):
        kern = _kernel(math.sqrt(float(vv[0])) / c)
        if kern.size == 1:
            out[rr, cc] = E[rr, cc]
            continue
        # correlate only the rows/cols the selected pixels need (zero outside the image)
        rad = kern.size // 2
        r0, r1 = max(0, rr.min() - rad), min(E.shape[0], rr.max() + rad + 1)
        c0, c1 = max(0, cc.min() - rad), min(E.shape[1], cc.max() + rad + 1)
        sub = E[r0:r1, c0:c1]
        if not sub.any():
            continue
        G = ndi.correlate1d(sub, kern, axis=0, mode="constant")
        G = ndi.correlate1d(G, kern, axis=1, mode="constant")
        out[rr, cc] = G[rr - r0, cc - c0]
    return out


def oracle_td_curve(truth, n_phases: int, *, c: float, stop_fraction: float, measured_labels=None,
                    initial_fraction: float = 0.01, initial_pattern: str = "halton", batch: int = 1,
                    k: int = 10, seed: int = 0, full_recompute: bool = False, snapshots=(), on_snapshot=None):
    """Simulate greedy sampling with the true RD (the oracle) on a known phase map.

    Parameters
    ----------
    truth : ndarray, shape (H, W), int, labels 1..L
        The true phase map X (TD is measured against it).
    n_phases : int
        L.
    c : float
        c of the RD approximation (use the c the ERD model was trained with).
    stop_fraction : float in (0, 1]
        Sampling fraction at which the run stops.
    measured_labels : ndarray, shape (H, W), int 0..L, optional
        The label a measurement returns at each pixel (e.g. the specimen's labels with
        ill-spectra as 0, i.e. a perfect classifier); default ``truth``.
    initial_fraction, initial_pattern, seed
        The initial measurements, as :func:`napari_slads_eds.scan_orders.initial_positions`.
    batch : int
        Positions per step (the b largest RD values), as the SLADS run's batch.
    k : int
        Neighbours of the reconstruction.
    full_recompute : bool
        Recompute the whole RD map every step (reference for the local updates).
    snapshots : sequence of float, optional
        Sampling fractions at which ``on_snapshot(sampler)`` is called (once each, at the
        first step reaching it), e.g. to collect ERD training rows on oracle-sampled masks.
    on_snapshot : callable(Sampler), optional

    Returns
    -------
    fractions, td : ndarray (n_steps + 1,), float64
        Sampling fraction and TD (eq. 19) after the initial pattern and after every step.

    Raises
    ------
    InputError
        Bad labels, shapes, c, fraction or batch.
    """
    from .sampling import Sampler
    from .scan_orders import initial_positions

    L = check_int(n_phases, "n_phases", 1, 255)
    t = check_label_image(truth, L, name="truth")
    H, W = t.shape
    lab = t if measured_labels is None else check_label_image(measured_labels, L, name="measured labels")
    if lab.shape != t.shape:
        raise InputError(f"measured labels: expected shape {t.shape}, got {lab.shape}")
    if not 0 < stop_fraction <= 1:
        raise InputError(f"stop fraction must be in (0, 1], got {stop_fraction}")
    b = check_int(batch, "batch", 1)
    c = float(check_c_values([c])[0])
    flat_lab = lab.reshape(-1)
    s = Sampler((H, W), L, None, k=k, truth=t)
    init = initial_positions((H, W), initial_fraction, initial_pattern, seed)
    s.update(init, flat_lab[init[:, 0] * W + init[:, 1]])
    target = int(round(stop_fraction * H * W))
    taken = np.zeros(H * W, dtype=bool)
    taken[init[:, 0] * W + init[:, 1]] = True

    def full():
        d1 = s.nearest_d2(np.arange(H * W)).reshape(H, W)
        return rd_map(s.error_image(), d1, taken.reshape(H, W), c).reshape(-1)

    snaps = sorted(float(x) for x in snapshots) if on_snapshot is not None else []
    while snaps and s.fraction >= snaps[0]:
        snaps.pop(0)
        on_snapshot(s)
    rd = full()
    rd2 = rd.reshape(H, W)
    row_arg = rd2.argmax(axis=1)            # per-row maxima: the argmax costs O(H), not O(H W)
    row_max = rd2[np.arange(H), row_arg]
    fr, td = [s.fraction], [s.td]
    while s.n_measured < target and not taken.all():
        n = min(b, target - s.n_measured, int(np.count_nonzero(~taken)))
        if n == 1:
            r = int(np.argmax(row_max))
            flat = np.array([r * W + int(row_arg[r])])
        else:
            part = np.argpartition(-rd, n - 1)[:n]
            flat = part[np.lexsort((part, -rd[part]))]
        box = None if full_recompute else s.update_box(flat)
        s.update(np.stack(np.divmod(flat, W), axis=1), flat_lab[flat])
        taken[flat] = True
        if full_recompute:
            rd = full()
            rd2 = rd.reshape(H, W)
            row_arg = rd2.argmax(axis=1)
            row_max = rd2[np.arange(H), row_arg]
        else:
            rl, rh, cl, ch = box
            # RD changes only at pixels p within 3 σ_p = 3 d_1(p) / c of the box: first bound
            # d_1 over the grid, then over the rows that bound reaches
            b0 = s.max_d1_bound()
            m = int(math.floor(3.0 * b0 / c)) + 1 if math.isfinite(b0) else max(H, W)
            b1 = s.max_d1_bound((max(0, rl - m), min(H, rh + m)))
            if math.isfinite(b1):
                m = min(m, int(math.floor(3.0 * b1 / c)) + 1)
            rl, rh, cl, ch = max(0, rl - m), min(H, rh + m), max(0, cl - m), min(W, ch + m)
            el, eh, fl, fh = max(0, rl - m), min(H, rh + m), max(0, cl - m), min(W, ch + m)
            E = s.error_image((el, eh, fl, fh))
            rows = np.arange(rl, rh)
            sub_pix = (rows[:, None] * W + np.arange(cl, ch)[None, :]).ravel()
            d1 = s.nearest_d2(sub_pix).reshape(rh - rl, ch - cl)
            # the RD of the box's pixels from the error image around it (zero outside the image)
            d1_big = np.zeros((eh - el, fh - fl), dtype=np.int64)
            tk_big = np.ones((eh - el, fh - fl), dtype=bool)
            d1_big[rl - el:rh - el, cl - fl:ch - fl] = d1
            tk_big[rl - el:rh - el, cl - fl:ch - fl] = taken.reshape(H, W)[rl:rh, cl:ch]
            sub = rd_map(E, d1_big, tk_big, c)[rl - el:rh - el, cl - fl:ch - fl]
            rd2[rl:rh, cl:ch] = sub
            a = rd2[rl:rh].argmax(axis=1)
            row_arg[rl:rh] = a
            row_max[rl:rh] = rd2[np.arange(rl, rh), a]
        fr.append(s.fraction)
        td.append(s.td)
        while snaps and s.fraction >= snaps[0]:
            snaps.pop(0)
            on_snapshot(s)
    return np.asarray(fr), np.asarray(td)
