"""Label uncertainty through the SLADS loop: spatial phase decisions and soft votes.

A low-count spectrum (tens of counts, as in a real EDS map) often leaves its phase
uncertain: the Poisson classifier (:mod:`napari_slads_eds.likelihood`) says so with a
posterior ``π(l | x_s)``.  Two things use it here.

Spatial phase decision (measured pixels)
    The measured label is the most probable phase of

        p(l | x_s, neighbours) ∝ π(l | x_s) · q_s(l)^γ,
        q_s(l) = (v_s(l) + α) / (1 + L α),

    where ``v_s`` is the share of the probability votes (weights 1/d², the
    reconstruction's k nearest phase-labelled measurements) that phase ``l`` gets at s:
    the reconstruction's own belief before s was measured.  A clear spectrum keeps its
    phase (its likelihood ratio beats a prior ratio of at most ((1 + α)/α)^γ); an
    ambiguous one, e.g. a mixed boundary pixel, gets the majority phase of its
    surroundings, with that probability -- not a coin flip.  An ill-spectrum stays an
    ill-spectrum (background posterior > 0.5, decided by the spectrum alone).

Soft reconstruction (non-measured pixels)
    The weighted mode of the paper (SPEC step 2) counts each neighbour's label once;
    here each neighbour votes with its phase probabilities, ``argmax_l Σ_j w_j p_j(l)``,
    so an uncertain measurement weighs less than a clear one.  With one-hot
    probabilities this is exactly the paper's weighted mode.

:class:`SoftSampler` is the :class:`~napari_slads_eds.sampling.Sampler` with both (its
local updates stay exact: a pixel's vote depends only on its k neighbours and their
probabilities, as before on their labels); :func:`decide_static` and
:func:`reconstruct_soft` do the same for a static scan (the baselines).  In the SLADS
loop a measured pixel's decision sees only the measurements made before it (γ = 1); at the
end of the run every measured pixel is decided again with all its neighbours, earlier and
later (:func:`decide_static` with γ = 4, the neighbours voting with their in-loop phase
probabilities).  A static scan's measurements are decided once, with all the others
(leave one out, γ = 4, spectrum-only votes: of the variants tried, the best for Halton).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ._validation import InputError, check_grid_shape, check_int, check_positions
from .reconstruction import knn_exact, vote_weights
from .sampling import Sampler

__all__ = ["SoftSampler", "spatial_decision", "decide_static", "reconstruct_soft", "prob_votes",
           "DEFAULT_ALPHA", "DEFAULT_GAMMA", "DEFAULT_LOOP_GAMMA"]

#: Floor of the neighbourhood prior (α) and its weight (γ) in the final decisions (and
#: those of the static scans); γ = 4 was chosen on the P45 map, seed 0 (a full raster's
#: TD: 0.099 with γ = 0, 0.044 with 1, 0.025 with 2, 0.017 with 4 and 8; docs/real_maps.md).
#: On high-count spectra the likelihood dominates anyway.
DEFAULT_ALPHA = 0.05
DEFAULT_GAMMA = 4.0
#: γ of the decisions inside the SLADS loop: weaker, so that a measurement can still
#: contradict the reconstruction it is tested against (with γ = 4 in the loop, the decisions
#: follow the reconstruction and new measurements stop changing it: P45, seeds 0-3).
DEFAULT_LOOP_GAMMA = 1.0


def _check_prob(prob, n: int | None, L: int | None, name: str) -> np.ndarray:
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2 or (n is not None and p.shape[0] != n) or (L is not None and p.shape[1] != L):
        raise InputError(f"{name}: expected shape ({n if n is not None else 'n'}, "
                         f"{L if L is not None else 'L'}), got {p.shape}")
    if not np.all(np.isfinite(p)) or (p.size and p.min() < 0):
        raise InputError(f"{name}: probabilities must be finite and >= 0")
    return p


def spatial_decision(prob, share, *, alpha: float = DEFAULT_ALPHA, gamma: float = DEFAULT_LOOP_GAMMA):
    """Phase labels of measured spectra from their posterior and the neighbours' votes.

    Parameters
    ----------
    prob : array_like, shape (n, L + 1)
        Posterior over {ill-spectrum, phase 1..L} of each spectrum (rows sum to 1).
    share : array_like, shape (n, L)
        Vote share of each phase among the neighbours (rows sum to 1, or all 0 when a
        pixel has no phase-labelled neighbour yet: uniform prior).
    alpha : float > 0
        Floor of the prior.
    gamma : float >= 0
        Weight of the prior (0: the spectrum alone).

    Returns
    -------
    labels : ndarray, shape (n,), int16, 0..L
        0 where the ill-spectrum posterior is > 0.5.
    phase_prob : ndarray, shape (n, L), float64
        ``p(l | x_s, neighbours)`` (rows sum to 1).

    Raises
    ------
    InputError
        Shapes that do not match, negative or NaN values, alpha <= 0 or gamma < 0.
    """
    p = _check_prob(prob, None, None, "posterior")
    L = p.shape[1] - 1
    if L < 1:
        raise InputError("posterior: expected L + 1 >= 2 columns (ill-spectrum, phases)")
    v = _check_prob(share, p.shape[0], L, "neighbour vote share")
    if not (alpha > 0 and gamma >= 0):
        raise InputError(f"alpha must be > 0 and gamma >= 0, got {alpha}, {gamma}")
    tot = v.sum(axis=1, keepdims=True)
    v = np.where(tot > 0, v / np.where(tot > 0, tot, 1), 1.0 / L)
    prior = (v + alpha) / (1 + L * alpha)
    pp = p[:, 1:] * prior ** gamma
    s = pp.sum(axis=1, keepdims=True)
    pp = np.where(s > 0, pp / np.where(s > 0, s, 1), 1.0 / L)
    lab = (np.argmax(pp, axis=1) + 1).astype(np.int16)
    lab[p[:, 0] > 0.5] = 0
    return lab, pp


def prob_votes(nn_prob_kn: np.ndarray, w_kn: np.ndarray) -> np.ndarray:
    """Summed probability votes (n, L) from neighbour probabilities (k, n, L) and weights (k, n)."""
    return np.einsum("kn,knl->nl", w_kn.astype(np.float64), nn_prob_kn)


def _argmax_votes(v: np.ndarray) -> np.ndarray:
    """Label 1..L of the largest vote (ties to the lowest label), 0 without votes."""
    lab = (np.argmax(v, axis=1) + 1).astype(np.int16)
    lab[~(v.sum(axis=1) > 0)] = 0
    return lab


def decide_static(shape, positions, prob, k: int = 10, *, alpha: float = DEFAULT_ALPHA,
                  gamma: float = DEFAULT_GAMMA, vote_prob=None):
    """Spatial phase decisions for a static scan (every measured pixel sees all others).

    Parameters
    ----------
    shape : (H, W)
    positions : array_like, shape (n, 2), int
    prob : array_like, shape (n, L + 1)
        Posteriors of the measured spectra.
    k : int
        Neighbours of the vote.
    vote_prob : array_like, shape (n, L), optional
        What each measurement votes with: by default its spectrum-only phase
        probabilities; a SLADS run passes the phase probabilities of its in-loop decisions,
        so that the final decisions refine the map the run explored instead of starting
        over from the spectra alone.

    Returns
    -------
    labels : ndarray (n,) int16 and phase_prob : ndarray (n, L), as :func:`spatial_decision`.
        The votes come from the other pixels (leave one out; ill-spectra do not vote).
    """
    H, W = check_grid_shape(shape)
    pos = check_positions(positions, (H, W))
    p = _check_prob(prob, pos.shape[0], None, "posterior")
    L = p.shape[1] - 1
    k = check_int(k, "k", 1)
    good = p[:, 0] <= 0.5
    pp = p[:, 1:] / np.maximum(p[:, 1:].sum(axis=1, keepdims=True), 1e-300)
    if vote_prob is not None:
        pp = _check_prob(vote_prob, pos.shape[0], L, "vote probabilities")
    share = np.zeros((pos.shape[0], L))
    gp = pos[good]
    if gp.shape[0] > 1:
        kk = min(k + 1, gp.shape[0])
        idx, d2 = knn_exact(gp, pos, kk)
        w = np.where((idx >= 0) & (d2 > 0), vote_weights(d2), 0)       # leave one out
        if kk == k + 1:   # drop the k+1-th where the pixel itself was not among them
            far = (d2 > 0).all(axis=1)
            w[far, -1] = 0
        share = prob_votes(np.transpose(pp[good][np.maximum(idx, 0)], (1, 0, 2)), w.T)
    return spatial_decision(p, share, alpha=alpha, gamma=gamma)


def reconstruct_soft(shape, positions, labels, phase_prob, k: int = 10) -> np.ndarray:
    """Reconstruction by probability votes: each non-measured pixel takes
    ``argmax_l Σ_j w_j p_j(l)`` over its k nearest phase-labelled measurements (w = 1/d²,
    the exact integer weights of :func:`~napari_slads_eds.reconstruction.reconstruct`);
    measured phase pixels keep their label.

    Parameters
    ----------
    shape : (H, W)
    positions : array_like, shape (n, 2), int
    labels : array_like, shape (n,), int 0..L (0 = ill-spectrum, does not vote)
    phase_prob : array_like, shape (n, L)
    k : int

    Returns
    -------
    ndarray (H, W) int16, labels 1..L (0 where nothing phase-labelled was measured).
        With one-hot ``phase_prob`` equal to :func:`reconstruct`'s weighted mode.

    Raises
    ------
    InputError
        Bad positions, labels or probabilities.
    """
    H, W = check_grid_shape(shape)
    pos = check_positions(positions, (H, W))
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    if lab.shape[0] != pos.shape[0]:
        raise InputError(f"got {pos.shape[0]} positions but {lab.shape[0]} labels")
    pp = _check_prob(phase_prob, pos.shape[0], None, "phase probabilities")
    k = check_int(k, "k", 1)
    flat = pos[:, 0] * W + pos[:, 1]
    out = np.zeros(H * W, dtype=np.int16)
    valid = lab > 0
    if not valid.any():
        return out.reshape(H, W)
    is_valid = np.zeros(H * W, dtype=bool)
    is_valid[flat[valid]] = True
    q = np.flatnonzero(~is_valid)
    vpos = pos[valid]
    tree = cKDTree(vpos)
    vp = pp[valid]
    for a in range(0, q.size, 1 << 16):
        qq = q[a:a + (1 << 16)]
        idx, d2 = knn_exact(vpos, np.stack(np.divmod(qq, W), axis=1), min(k, vpos.shape[0]), tree)
        w = np.where(idx >= 0, vote_weights(d2), 0)
        v = prob_votes(np.transpose(vp[np.maximum(idx, 0)], (1, 0, 2)), w.T)
        out[qq] = _argmax_votes(v)
    out[flat[valid]] = lab[valid]
    return out.reshape(H, W)


class SoftSampler(Sampler):
    """:class:`~napari_slads_eds.sampling.Sampler` whose reconstruction lets phase
    probabilities vote, and which gives the neighbourhood prior of a spatial decision.

    Parameters are those of ``Sampler``.  :meth:`update` takes the measured spectra's
    phase probabilities (n, L) beside their labels; without them (or for pseudo-
    measurements) a label votes one-hot, as in the paper.
    """

    def __init__(self, shape, n_phases: int, erd_model=None, *, uncertainty_weight: float = 0.0, **kwargs):
        self._pt_prob = np.zeros((0, int(n_phases)), dtype=np.float64)
        self._incoming: dict[int, np.ndarray] = {}
        if not float(uncertainty_weight) >= 0:
            raise InputError(f"uncertainty_weight must be >= 0, got {uncertainty_weight}")
        self.uncertainty_weight = float(uncertainty_weight)
        super().__init__(shape, n_phases, erd_model, **kwargs)

    def _predict(self, pix: np.ndarray) -> np.ndarray:
        """ERD (eq. 6), raised where the probability votes at the pixel are split:
        ``ERD · (1 + β (1 − max_l v(l)))`` for positive ERD (β = ``uncertainty_weight``).
        The votes depend only on the pixel's neighbours, so local updates stay exact."""
        e = super()._predict(pix)
        if self.uncertainty_weight > 0 and pix.size:
            v = self._votes(*self._nn(pix))
            tot = v.sum(axis=1)
            u = np.where(tot > 0, 1.0 - v.max(axis=1) / np.where(tot > 0, tot, 1), 0.0)
            e = np.where(e > 0, e * (1.0 + self.uncertainty_weight * u), e)
        return e

    # -------------------------------------------------------------- probabilities
    def _add_point(self, f: int, lab: int) -> int:
        j = super()._add_point(f, lab)
        if j >= self._pt_prob.shape[0]:
            grown = np.zeros((self._pts.shape[0], self.L), dtype=np.float64)
            grown[: self._pt_prob.shape[0]] = self._pt_prob
            self._pt_prob = grown
        p = self._incoming.pop(f, None)
        if p is None:
            p = np.zeros(self.L)
            p[lab - 1] = 1.0
        self._pt_prob[j] = p
        return j

    def _votes(self, idx: np.ndarray, d2: np.ndarray) -> np.ndarray:
        valid = idx >= 0
        if self._pt_prob.shape[0] == 0 or not valid.any():
            return np.zeros((idx.shape[1], self.L))
        w = np.where(valid, vote_weights(d2), 0)
        return prob_votes(self._pt_prob[np.maximum(idx, 0)], w)

    def _mode_of(self, idx: np.ndarray, d2: np.ndarray) -> np.ndarray:
        if idx.size == 0:
            return np.zeros(idx.shape[1] if idx.ndim == 2 else 0, dtype=np.int16)
        return _argmax_votes(self._votes(idx, d2))

    def vote_shares(self, pix) -> np.ndarray:
        """Share (n, L) of each phase in the probability votes of the k nearest
        phase-labelled measurements of flat pixels ``pix`` (the pixel's own point, if it
        is in flight, excluded); rows of 0 where there is none."""
        pix = np.asarray(pix, dtype=np.int64).reshape(-1)
        out = np.zeros((pix.size, self.L))
        if pix.size == 0:
            return out
        own = self._pt_of_pixel[pix]
        free = own < 0
        if free.any():
            out[free] = self._votes(*self._nn(pix[free]))
        if (~free).any():
            alive = np.flatnonzero(self._pt_alive[: self._n_pts])
            q = pix[~free]
            idx, d2 = knn_exact(self._pts[alive], np.stack(np.divmod(q, self.shape[1]), axis=1),
                                min(self.k + 1, alive.size))
            gi = np.where(idx >= 0, alive[np.maximum(idx, 0)], -1)
            gi = np.where(gi == own[~free][:, None], -1, gi)[:, : self.k + 1]
            d2 = np.where(gi >= 0, d2, 0)
            # keep the k nearest others
            order = np.argsort(gi < 0, axis=1, kind="stable")[:, : self.k]
            gi = np.take_along_axis(gi, order, axis=1)
            d2 = np.take_along_axis(d2, order, axis=1)
            out[~free] = self._votes(gi.T.astype(np.int64), np.where(gi >= 0, d2, 1).T)
        tot = out.sum(axis=1, keepdims=True)
        return np.where(tot > 0, out / np.where(tot > 0, tot, 1), 0.0)

    def update(self, positions, labels, probabilities=None) -> None:
        """Add measurements (as :meth:`Sampler.update`) with their phase probabilities.

        Parameters
        ----------
        positions : array_like (n, 2) int
        labels : array_like (n,) int 0..L
        probabilities : array_like (n, L), optional
            Phase probabilities of the measured spectra (their votes); one-hot by default.

        Raises
        ------
        InputError
            As :meth:`Sampler.update`, or probabilities of the wrong shape.
        """
        if probabilities is None:
            return super().update(positions, labels)
        pos = check_positions(positions, self.shape)
        p = _check_prob(probabilities, pos.shape[0], self.L, "phase probabilities")
        flat = pos[:, 0] * self.shape[1] + pos[:, 1]
        lab = np.asarray(labels).reshape(-1)
        rel = []
        for f, l, pr in zip(flat.tolist(), lab.tolist(), p):
            if l <= 0:
                continue
            pr = pr / pr.sum() if pr.sum() > 0 else np.eye(self.L)[l - 1]
            j = int(self._pt_of_pixel[f]) if self._pending[f] else -1
            if j >= 0:
                self._pt_prob[j] = pr           # an in-flight point gets its measured votes
                if int(self._pt_label[j]) == l:
                    rel.append((f, j))           # same label: the base class does not relabel
            else:
                self._incoming[f] = pr
        super().update(positions, labels)
        self._incoming.clear()
        if rel:
            if self.full_recompute:
                self._full_rebuild()
            else:
                for f, j in rel:
                    self._local_relabel(f, j)
