"""The ERD regressors: :class:`LinearERD` (SLADS, eqs. 6 and 11) and :class:`MLPERD`
(SLADS-Net), evaluated in numpy, saved and loaded as ``.npz`` (no pickle).

The linear model fits θ̂ = argmin ‖R - Vθ‖² (eq. 11) on the second-order polynomial
expansion of the standardised SLADS features, and ERD(s) = θ̂ · V_s (eq. 6).  The MLP is
trained with Keras in the engine (:mod:`napari_slads_eds.erd_keras`) and only evaluated
here.  Nothing here imports TensorFlow or Qt.
"""

from __future__ import annotations

import numpy as np

from ._files import read_npz
from ._validation import InputError
from .features import N_FEATURES, N_RICH, poly2

__all__ = ["LinearERD", "MLPERD", "load_erd_model"]


def _feature_rows(features, m: int = N_FEATURES) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != m:
        raise InputError(f"ERD features: expected shape (n, {m}), got {f.shape}")
    return f


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
