"""Expected reduction in distortion (ERD): training database, RD approximation, models,
and the choice of c (SPEC "Training the ERD model", eqs. 6-11).

The reduction in distortion RD(s) of measuring s (eq. 3) is approximated (eqs. 7-9) by

    R̃(s) = Σ_r h_{s,r} D(X_r, X̂_r),   h_{s,r} = exp(-‖r - s‖² / (2 σ_s²)),   σ_s = d_1(s) / c,

with the sum over a ±3σ_s square window (zero outside the image) and D = [X ≠ X̂].  One
reconstruction per training mask suffices.  The linear model fits θ̂ = argmin ‖R - Vθ‖²
(eq. 11) on the second-order polynomial expansion of the standardised SLADS features, and
ERD(s) = θ̂ · V_s (eq. 6).  c is chosen from a candidate list by the smallest area under
the TD curve of a simulated SLADS run on a training image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ._files import read_npz
from ._validation import InputError, check_label_image, check_seed
from .features import N_FEATURES, N_RICH, poly2

__all__ = [
    "rd_approximation",
    "rd_approximation_bruteforce",
    "TrainingDatabase",
    "build_training_database",
    "LinearERD",
    "MLPERD",
    "load_erd_model",
    "simulate_td_curve",
    "train_erd",
    "C_CANDIDATES",
    "ERD_CHOICES",
    "DEFAULT_DENSITIES",
]

C_CANDIDATES = (2.0, 4.0, 8.0, 16.0, 32.0)
#: ERD regressors: the paper's least squares on the polynomial SLADS features ("linear"),
#: the same on the 11 rich features ("rich", issue 12) and the SLADS-Net MLP ("mlp").
ERD_CHOICES = ("linear", "rich", "mlp")
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


def _feature_rows(features, m: int = N_FEATURES) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != m:
        raise InputError(f"ERD features: expected shape (n, {m}), got {f.shape}")
    return f


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


class LinearERD:
    """Linear ERD regressor on second-order polynomial features (eqs. 6 and 11).

    ERD(s) = θ · poly2((V_s - mean) / scale), on the six SLADS features (kind
    "linear-poly2", 28 coefficients) or the 11 rich features (kind "linear-poly2-rich",
    78 coefficients; :func:`~napari_slads_eds.features.rich_features`).

    Parameters
    ----------
    theta : ndarray, shape (28,) or (78,)
    mean, scale : ndarray, shape (6,) or (11,)
        Feature standardisation fitted on the training database.
    c : float
        The c the RD targets were computed with.
    """

    kind = "linear-poly2"
    #: kind of the model on the 11 rich features
    kind_rich = "linear-poly2-rich"

    def __init__(self, theta, mean, scale, c: float, meta: dict | None = None):
        self.theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        m = self.mean.size
        if m not in (N_FEATURES, N_RICH) or self.scale.size != m:
            raise InputError(f"ERD model: expected {N_FEATURES} or {N_RICH} feature means and scales, "
                             f"got {self.mean.size} and {self.scale.size}")
        self.n_features = m
        self.kind = LinearERD.kind if m == N_FEATURES else LinearERD.kind_rich
        self._ij = np.triu_indices(m)
        self.c = float(c)
        self.meta = dict(meta or {})
        if self.theta.size != 1 + m + m * (m + 1) // 2:
            raise InputError(f"ERD model: expected {1 + m + m * (m + 1) // 2} coefficients, got {self.theta.size}")
        if not (np.all(np.isfinite(self.theta)) and np.all(np.isfinite(self.mean))
                and np.all(self.scale > 0)):
            raise InputError("ERD model: coefficients must be finite and scales positive")

    @classmethod
    def fit(cls, features: np.ndarray, rd: np.ndarray, c: float, meta: dict | None = None) -> "LinearERD":
        """Least-squares fit (eq. 11) of R̃ on the polynomial features.

        Parameters
        ----------
        features : ndarray, shape (n, 6)
        rd : ndarray, shape (n,)
        c : float
        """
        f = np.asarray(features, dtype=np.float64)
        y = np.asarray(rd, dtype=np.float64).reshape(-1)
        m = f.shape[1] if f.ndim == 2 else -1
        nt = 1 + m + m * (m + 1) // 2
        if m not in (N_FEATURES, N_RICH) or f.shape[0] != y.shape[0] or f.shape[0] < nt:
            raise InputError(f"ERD fit: expected features (n >= {nt}, 6 or 11) and rd (n,), "
                             f"got {f.shape} and {y.shape}")
        mean = f.mean(axis=0)
        scale = f.std(axis=0)
        scale[scale <= 0] = 1.0
        V = poly2((f - mean) / scale)
        theta, *_ = np.linalg.lstsq(V, y, rcond=None)
        return cls(theta, mean, scale, c, meta)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """ERD of feature rows, shape (n,) float64.

        Evaluated term by term with element-wise operations (not a BLAS product), so a
        pixel's ERD is bit-identical however many pixels are evaluated together; the
        local-update sampler relies on that to break ERD ties exactly as a full recompute.

        Raises
        ------
        InputError
            ``features`` not of shape (n, 6).
        """
        m = self.n_features
        z = (_feature_rows(features, m) - self.mean) / self.scale
        t = self.theta
        out = np.full(z.shape[0], t[0])
        for i in range(m):
            out += t[1 + i] * z[:, i]
        for n, (i, j) in enumerate(zip(*self._ij)):
            out += t[1 + m + n] * (z[:, i] * z[:, j])
        return out

    def save(self, path) -> None:
        """Write ``.npz`` (theta, mean, scale, c, kind, meta as JSON); no pickle."""
        import json

        np.savez(path, theta=self.theta, mean=self.mean, scale=self.scale, c=np.float64(self.c),
                 kind=np.array(self.kind), meta=np.array(json.dumps(self.meta)))

    @classmethod
    def load(cls, path) -> "LinearERD":
        """Read a model written by :meth:`save`.

        Raises
        ------
        InputError
            Missing, corrupt or truncated file, or not an ERD model.
        """
        import json

        d = read_npz(path, ("theta", "mean", "scale", "c", "kind"))
        if str(d["kind"]) not in (cls.kind, cls.kind_rich):
            raise InputError(f"{path}: ERD model kind {str(d['kind'])!r} is not {cls.kind!r}")
        try:
            meta = json.loads(str(d["meta"])) if "meta" in d else {}
            return cls(d["theta"], d["mean"], d["scale"], float(d["c"]), meta)
        except (ValueError, InputError) as exc:
            raise InputError(f"{path}: invalid ERD model ({exc})") from exc


class MLPERD:
    """SLADS-Net ERD regressor: a small multilayer perceptron on the standardised features.

    ERD(s) = MLP((V_s - mean) / scale) * y_scale, ReLU hidden layers, linear output.  The
    network is trained with Keras inside the engine process (:mod:`napari_slads_eds.erd_keras`);
    this class only evaluates it, in numpy, input unit by input unit, so a pixel's ERD is
    bit-identical however many pixels are evaluated together (as for :class:`LinearERD`).

    Parameters
    ----------
    weights : list of ndarray
        [W1 (6, h1), b1 (h1,), W2 (h1, h2), b2 (h2,), ..., Wout (h_last, 1), bout (1,)].
    mean, scale : ndarray (6,)
    y_scale : float
        The RD targets were divided by this before training.
    c : float
    """

    kind = "mlp"

    def __init__(self, weights, mean, scale, y_scale: float, c: float, meta: dict | None = None):
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        self.mean = np.asarray(mean, dtype=np.float64).reshape(N_FEATURES)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(N_FEATURES)
        self.y_scale = float(y_scale)
        self.c = float(c)
        self.meta = dict(meta or {})
        if len(self.weights) < 2 or len(self.weights) % 2:
            raise InputError("MLP ERD model: expected pairs of weight matrices and biases")
        n_in = N_FEATURES
        for W, b in zip(self.weights[::2], self.weights[1::2]):
            if W.ndim != 2 or W.shape[0] != n_in or b.shape != (W.shape[1],):
                raise InputError(f"MLP ERD model: layer shapes do not chain ({W.shape}, {b.shape})")
            n_in = W.shape[1]
        if n_in != 1:
            raise InputError("MLP ERD model: the last layer must have one output")
        if not all(np.all(np.isfinite(w)) for w in self.weights) or not np.all(self.scale > 0):
            raise InputError("MLP ERD model: weights must be finite and scales positive")

    def predict(self, features: np.ndarray) -> np.ndarray:
        """ERD of feature rows (n, 6), shape (n,) float64.

        Raises
        ------
        InputError
            ``features`` not of shape (n, 6).
        """
        h = (_feature_rows(features) - self.mean) / self.scale
        layers = list(zip(self.weights[::2], self.weights[1::2]))
        for li, (W, b) in enumerate(layers):
            out = np.empty((W.shape[1], h.shape[0]))
            out[:] = b[:, None]
            for i in range(W.shape[0]):      # fixed summation order per output unit
                out += W[i][:, None] * h[:, i]
            if li < len(layers) - 1:
                np.maximum(out, 0.0, out=out)
            h = out.T
        return h[:, 0] * self.y_scale

    def save(self, path) -> None:
        """Write ``.npz`` (layers, standardisation, c, kind, meta as JSON); no pickle."""
        import json

        arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
        np.savez(path, mean=self.mean, scale=self.scale, y_scale=np.float64(self.y_scale),
                 c=np.float64(self.c), kind=np.array(self.kind), n_arrays=np.int64(len(self.weights)),
                 meta=np.array(json.dumps(self.meta)), **arrays)

    @classmethod
    def load(cls, path) -> "MLPERD":
        import json

        d = read_npz(path, ("mean", "scale", "y_scale", "c", "kind", "n_arrays"))
        if str(d["kind"]) != cls.kind:
            raise InputError(f"{path}: ERD model kind {str(d['kind'])!r} is not {cls.kind!r}")
        try:
            ws = [d[f"w{i}"] for i in range(int(d["n_arrays"]))]
            meta = json.loads(str(d["meta"])) if "meta" in d else {}
            return cls(ws, d["mean"], d["scale"], float(d["y_scale"]), float(d["c"]), meta)
        except (KeyError, ValueError, InputError) as exc:
            raise InputError(f"{path}: invalid MLP ERD model ({exc})") from exc


def load_erd_model(path):
    """Read an ERD model file of either kind (:class:`LinearERD` or :class:`MLPERD`).

    Raises
    ------
    InputError
        Missing, corrupt or truncated file, or an unknown kind.
    """
    d = read_npz(path, ("kind",))
    kind = str(d["kind"])
    if kind == LinearERD.kind_rich:
        return LinearERD.load(path)
    for cls in (LinearERD, MLPERD):
        if kind == cls.kind:
            return cls.load(path)
    raise InputError(f"{path}: unknown ERD model kind {kind!r} (expected 'linear-poly2' or 'mlp')")


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
