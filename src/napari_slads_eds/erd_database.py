"""The ERD training database: the RD approximation and rows of (features, R̃) from training
label images (SPEC "Training the ERD model", eqs. 7-9).

The reduction in distortion RD(s) of measuring s (eq. 3) is approximated (eqs. 7-9) by

    R̃(s) = Σ_r h_{s,r} D(X_r, X̂_r),   h_{s,r} = exp(-‖r - s‖² / (2 σ_s²)),   σ_s = d_1(s) / c,

with the sum over a ±3σ_s square window (zero outside the image) and D = [X ≠ X̂].  One
reconstruction per training mask suffices.  The regressors fitted on the database are in
:mod:`napari_slads_eds.erd_models`; the training and the choice of c in
:mod:`napari_slads_eds.erd`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ._files import read_npz
from ._validation import InputError, check_label_image, check_seed
from .features import N_FEATURES

__all__ = [
    "rd_approximation",
    "rd_approximation_bruteforce",
    "TrainingDatabase",
    "build_training_database",
    "check_c_values",
    "C_CANDIDATES",
    "DEFAULT_DENSITIES",
]

C_CANDIDATES = (2.0, 4.0, 8.0, 16.0, 32.0)
DEFAULT_DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)


def _kernel(sigma: float) -> np.ndarray:
    rad = int(np.floor(3.0 * sigma))
    i = np.arange(-rad, rad + 1, dtype=np.float64)
    return np.exp(-(i * i) / (2.0 * sigma * sigma))


def rd_approximation(error_image: np.ndarray, pix: np.ndarray, d1_sq: np.ndarray, c: float) -> np.ndarray:
    """Approximate RD (eqs. 7-9) at pixels ``pix``.

    Parameters
    ----------
    error_image : ndarray, shape (H, W), bool or {0, 1}
        D(X_r, X̂_r) = [X_r ≠ X̂_r] for every pixel r.
    pix : ndarray, shape (n,), int
        Flat indices of the (unmeasured) pixels s.
    d1_sq : ndarray, shape (n,), int
        Squared distance from each s to its nearest measurement (> 0).
    c : float
        σ_s = d_1(s) / c.

    Returns
    -------
    ndarray, shape (n,), float64
        R̃(s), a Gaussian-weighted count of wrongly reconstructed pixels around s.
    """
    E = np.asarray(error_image, dtype=np.float64)
    out = np.zeros(len(pix), dtype=np.float64)
    if not E.any() or len(pix) == 0:
        return out
    d1_sq = np.asarray(d1_sq, dtype=np.int64)
    for v in np.unique(d1_sq):
        sel = np.flatnonzero(d1_sq == v)
        sigma = np.sqrt(float(v)) / float(c)
        kern = _kernel(sigma)
        if kern.size == 1:
            out[sel] = E.ravel()[pix[sel]]
            continue
        G = ndi.correlate1d(E, kern, axis=0, mode="constant")
        G = ndi.correlate1d(G, kern, axis=1, mode="constant")
        out[sel] = G.ravel()[pix[sel]]
    return out


def rd_approximation_bruteforce(error_image: np.ndarray, pix: np.ndarray, d1_sq: np.ndarray,
                                c: float) -> np.ndarray:
    """Direct double sum of eqs. 7-9 over the ±3σ window (slow; the test reference)."""
    E = np.asarray(error_image, dtype=np.float64)
    H, W = E.shape
    out = np.zeros(len(pix))
    for n, (p, v) in enumerate(zip(pix, d1_sq)):
        sr, sc = divmod(int(p), W)
        sigma = np.sqrt(float(v)) / c
        rad = int(np.floor(3 * sigma))
        tot = 0.0
        for r in range(max(0, sr - rad), min(H, sr + rad + 1)):
            for q in range(max(0, sc - rad), min(W, sc + rad + 1)):
                tot += np.exp(-((r - sr) ** 2 + (q - sc) ** 2) / (2 * sigma * sigma)) * E[r, q]
        out[n] = tot
    return out


@dataclass
class TrainingDatabase:
    """Rows of (features, approximate RD) from training label images.

    Attributes
    ----------
    features : ndarray, shape (n, 6) or (n, 11), float64
        SLADS (or rich) features of unmeasured pixels.
    rd : ndarray, shape (n, n_c), float64
        R̃ for each candidate c.
    c_values : ndarray, shape (n_c,)
    density : ndarray, shape (n,)
        Sampling density of the mask each row comes from.
    """

    features: np.ndarray
    rd: np.ndarray
    c_values: np.ndarray
    density: np.ndarray
    meta: dict = field(default_factory=dict)

    def save(self, path) -> None:
        """Write the database as ``.npz`` (no pickle)."""
        import json

        np.savez_compressed(path, features=self.features, rd=self.rd, c_values=self.c_values,
                            density=self.density, meta=np.array(json.dumps(self.meta)))

    @classmethod
    def load(cls, path) -> "TrainingDatabase":
        import json

        d = read_npz(path, ("features", "rd", "c_values", "density"))
        meta = json.loads(str(d["meta"])) if "meta" in d else {}
        return cls(d["features"], d["rd"], d["c_values"], d["density"], meta)


def check_c_values(c_values) -> np.ndarray:
    """The candidate c of the RD approximation (eq. 8) as a float64 array.

    Raises
    ------
    InputError
        Empty, or a value that is not a finite number > 0.
    """
    try:
        cs = np.asarray(c_values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"c values must be numbers > 0, got {c_values!r}") from exc
    if cs.size == 0 or not np.all(np.isfinite(cs)) or np.any(cs <= 0):
        raise InputError(f"c values must be one or more finite numbers > 0 (e.g. 2, 4, 8, 16, 32), got {c_values!r}")
    return cs


def build_training_database(label_images, n_phases: int, *, c_values=C_CANDIDATES,
                            densities=DEFAULT_DENSITIES, masks_per_density: int = 1,
                            max_rows_per_mask: int = 8000, k: int = 10, seed: int = 0,
                            progress=None, n_features: int = N_FEATURES) -> TrainingDatabase:
    """Features and approximate RD from training label images and random masks.

    For each image and each density, a uniformly random mask is "measured" with the true
    labels, the image is reconstructed, and features and R̃ (for every c) are computed at
    up to ``max_rows_per_mask`` random unmeasured pixels.

    Parameters
    ----------
    label_images : sequence of ndarray (H_i, W_i), labels 1..L
    n_phases : int
    c_values : sequence of float
    densities : sequence of float in (0, 1)
        Sampling densities of the masks (low and high both needed; default 1 %-80 %).
    masks_per_density : int
    max_rows_per_mask : int
    k : int
    seed : int
    progress : callable(done, total), optional
    n_features : {6, 11}
        SLADS features or the rich ones (:func:`napari_slads_eds.features.rich_features`).

    Returns
    -------
    TrainingDatabase

    Raises
    ------
    InputError
        No images, bad labels, densities outside (0, 1).
    """
    from .sampling import Sampler

    imgs = [check_label_image(im, n_phases, name=f"training image {i}", min_size=4)
            for i, im in enumerate(label_images)]
    if not imgs:
        raise InputError("need at least one training label image")
    dens = [float(x) for x in densities]
    if not dens or min(dens) <= 0 or max(dens) >= 1:
        raise InputError(f"densities must lie in (0, 1), got {densities}")
    cs = check_c_values(c_values)
    rng = np.random.default_rng(check_seed(seed))
    feats, rds, dn = [], [], []
    total = len(imgs) * len(dens) * masks_per_density
    done = 0
    for im in imgs:
        H, W = im.shape
        P = H * W
        for d in dens:
            for _ in range(masks_per_density):
                n = min(P - 1, max(1, int(round(d * P))))
                flat = rng.choice(P, n, replace=False)
                s = Sampler((H, W), n_phases, None, k=k, truth=im)
                s.update(np.stack(np.divmod(flat, W), axis=1), im.reshape(-1)[flat])
                unmeasured = s.unmeasured()
                if unmeasured.size > max_rows_per_mask:
                    unmeasured = np.sort(rng.choice(unmeasured, max_rows_per_mask, replace=False))
                f = s.features(unmeasured, n_features)
                err = s.error_image()
                d1 = s.nearest_d2(unmeasured)
                rd = np.stack([rd_approximation(err, unmeasured, d1, c) for c in cs], axis=1)
                feats.append(f)
                rds.append(rd)
                dn.append(np.full(len(unmeasured), d))
                done += 1
                if progress is not None:
                    progress(done, total)
    return TrainingDatabase(np.concatenate(feats), np.concatenate(rds), cs, np.concatenate(dn),
                            {"n_images": len(imgs), "densities": dens, "k": k, "n_phases": int(n_phases)})
