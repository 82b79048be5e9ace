"""Training the ERD model and choosing c (SPEC "Training the ERD model", eqs. 6-11).

:func:`train_erd` builds the training database (:mod:`napari_slads_eds.erd_database`:
the RD approximation R̃ at random masks of training images), fits a regressor
(:mod:`napari_slads_eds.erd_models`) for each candidate c, and chooses c by the smallest
area under the TD curve of a simulated SLADS run on a training image
(:func:`simulate_td_curve`).
"""

from __future__ import annotations

import time

import numpy as np

from ._validation import InputError, check_label_image
from .erd_database import C_CANDIDATES, DEFAULT_DENSITIES, build_training_database
from .erd_models import LinearERD, load_erd_model
from .features import N_FEATURES, N_RICH

__all__ = [
    "simulate_td_curve",
    "train_erd",
    "ERD_CHOICES",
    # re-exported: _widgets/sampling.py imports load_erd_model from here, and docstrings
    # elsewhere name napari_slads_eds.erd.C_CANDIDATES
    "load_erd_model",
    "C_CANDIDATES",
]

#: ERD regressors: the paper's least squares on the polynomial SLADS features ("linear"),
#: the same on the 11 rich features ("rich", issue 12) and the SLADS-Net MLP ("mlp").
ERD_CHOICES = ("linear", "rich", "mlp")


def simulate_td_curve(truth: np.ndarray, n_phases: int, erd_model, *, stop_fraction: float = 0.2,
                      initial_fraction: float = 0.01, batch: int | None = None, k: int = 10,
                      seed: int = 0, max_steps: int = 2000):
    """Simulate SLADS on a known label image (true labels as measurements).

    Returns
    -------
    fractions, td : ndarray, ndarray
        The TD curve (eq. 19) after every step.
    """
    from .sampling import Sampler
    from .scan_orders import initial_positions

    H, W = truth.shape
    s = Sampler((H, W), n_phases, erd_model, k=k, truth=truth)
    init = initial_positions((H, W), initial_fraction, "halton", seed)
    flat_truth = truth.reshape(-1)
    s.update(init, flat_truth[init[:, 0] * W + init[:, 1]])
    target = int(round(stop_fraction * H * W))
    if batch is None:
        batch = max(1, int(np.ceil((target - s.n_measured) / max_steps)))
    fr, td = [s.fraction], [s.td]
    while s.n_measured < target:
        pos = s.select(min(batch, target - s.n_measured))
        if len(pos) == 0:
            break
        s.update(pos, flat_truth[pos[:, 0] * W + pos[:, 1]])
        fr.append(s.fraction)
        td.append(s.td)
    return np.asarray(fr), np.asarray(td)


def train_erd(label_images, n_phases: int, *, c_values=C_CANDIDATES, densities=DEFAULT_DENSITIES,
              c_search_image=None, c_search_fraction: float = 0.2, k: int = 10, seed: int = 0,
              progress=None, regressor: str = "linear", mlp_fitter=None, n_features: int | None = None):
    """Train the ERD model and choose c by the area under the TD curve.

    Parameters
    ----------
    label_images : sequence of ndarray (H, W), labels 1..L
        Training images (never the test image).
    n_phases : int
    c_values : sequence of float
        Candidates for c (default 2, 4, 8, 16, 32).
    densities : sequence of float
        Mask densities of the training database.
    c_search_image : ndarray, optional
        Image on which SLADS is simulated for each c; default the first training image.
    c_search_fraction : float
        The simulated runs stop at this sampling fraction.
    progress : callable(dict), optional
        Called with {"stage": "erd-database"|"c-search", "done": i, "total": n, ...}.
    regressor : {"linear", "rich", "mlp"}
        Least squares on the polynomial SLADS features (the paper), least squares on the
        polynomial expansion of the 11 rich features (:func:`~napari_slads_eds.features.rich_features`),
        or a multilayer perceptron (SLADS-Net); the MLP needs ``mlp_fitter(features, rd, c, seed) -> MLPERD``
        (:func:`napari_slads_eds.erd_keras.fit_mlp`, engine process only).
    n_features : {6, 11}, optional
        Features of the training database (default: 11 for "rich", else 6).

    Returns
    -------
    model : LinearERD or MLPERD
        Trained with the chosen c.
    report : dict
        {"c": chosen c, "c_search": {c: area under TD}, "rows": database rows, "seconds": ...}
    """
    t0 = time.perf_counter()
    imgs = list(label_images)
    if regressor not in ERD_CHOICES:
        raise InputError(f"ERD regressor must be one of {', '.join(ERD_CHOICES)}, got {regressor!r}")
    if n_features is None:
        n_features = N_RICH if regressor == "rich" else N_FEATURES

    def db_progress(done, total):
        if progress is not None:
            progress({"stage": "erd-database", "done": done, "total": total})

    db = build_training_database(imgs, n_phases, c_values=c_values, densities=densities, k=k,
                                 seed=seed, progress=db_progress, n_features=n_features)
    search_img = check_label_image(c_search_image if c_search_image is not None else imgs[0], n_phases,
                                   name="c-search image")
    areas = {}
    models = {}
    for i, c in enumerate(db.c_values):
        meta = {"k": k, "n_phases": int(n_phases)}
        if regressor in ("linear", "rich"):
            m = LinearERD.fit(db.features, db.rd[:, i], c, meta)
        elif regressor == "mlp":
            if mlp_fitter is None:
                raise InputError("the MLP ERD model is trained in the engine process (mlp_fitter missing)")
            m = mlp_fitter(db.features, db.rd[:, i], c, seed)
            m.meta.update(meta)
        else:
            raise InputError(f"ERD regressor must be 'linear' or 'mlp', got {regressor!r}")
        fr, td = simulate_td_curve(search_img, n_phases, m, stop_fraction=c_search_fraction, k=k, seed=seed)
        areas[float(c)] = float(np.trapezoid(td, fr))
        models[float(c)] = m
        if progress is not None:
            progress({"stage": "c-search", "done": i + 1, "total": len(db.c_values), "c": float(c),
                      "area": areas[float(c)]})
    best = min(areas, key=lambda c: (areas[c], c))
    model = models[best]
    model.meta.update({"c_search": areas, "rows": int(len(db.features))})
    report = {"c": best, "c_search": areas, "rows": int(len(db.features)), "regressor": regressor,
              "seconds": time.perf_counter() - t0}
    return model, report
