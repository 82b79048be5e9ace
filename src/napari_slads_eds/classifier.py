"""Spectrum -> phase label: the paper's two-step EDS classifier (Zhang et al. 2018, section 2.3).

Every measured spectrum ``Z_s`` (p counts) gets a label ``X_s`` in ``0..L``:

1. **Detection** (section 2.3.1).  A dense regression network ``f_hat`` (the "NNR",
   5 hidden layers of 100 ReLU neurons, Q = 100 linear outputs) is trained on good
   spectra of the L phases to map every one of them onto a single preset vector ``f``
   (a straight line, ``linspace(0, 1, Q)``), loss ``1/2 ||f - f_hat(Z)||^2`` (eq. 12).
   For a new spectrum ``g = |f - f_hat(Z)|`` (eq. 13); its variance over the Q entries
   (eqs. 14-15) is large for spectra unlike the training spectra; variance ``> T`` means
   ill-spectrum, label 0 (eq. 16).  ``T`` is chosen on validation spectra: good ones and
   Poisson(lambda = 20) ill-spectra (section 3.1.1).
2. **Classification** (section 2.3.2).  A 1-D CNN (conv 8x10/2, max-pool 10/2,
   conv 16x10/2, max-pool 10/2, flatten to 2048 values, dense 100, 32, 8, softmax over
   L) trained with cross-entropy (eqs. 17-18) gives the phase 1..L of the good spectra.

Preprocessing: counts ``Z`` -> ``sqrt(Z + 3/8)`` (Anscombe-like variance stabilisation,
done in numpy, :func:`stabilise`), then a built-in Keras ``Rescaling`` layer inside each
model (scale and offset fitted on the training data).  The models contain only built-in
Keras layers and load with ``keras.saving.load_model(..., safe_mode=True)``; nothing is
pickled.

This module imports TensorFlow/Keras at import time (and has no other import side
effects: the engine sets TensorFlow's environment and silences its start-up banners, see
:func:`napari_slads_eds.engine._start_tensorflow`).  It must only be imported inside the
spawned engine process, never in the napari (GUI) process: TensorFlow's bundled LLVM
crashes Mesa's OpenGL there (see DESIGN.md).
"""

from __future__ import annotations

import json
import math
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from numpy.lib.stride_tricks import sliding_window_view

from ._files import write_json_atomic
from ._validation import InputError, check_spectra
from .spectra import EnergyAxis, ReferenceSpectra

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the environment
    raise ImportError(
        f"napari_slads_eds.classifier needs the TensorFlow Keras backend, but Keras uses "
        f"{keras.backend.backend()!r} (unset KERAS_BACKEND or set it to 'tensorflow')")

__all__ = [
    "SpectrumClassifier",
    "TrainingCancelled",
    "stabilise",
    "preset_vector",
    "choose_threshold",
    "build_detector",
    "build_cnn",
    "FORMAT_VERSION",
    "Q",
]

#: Version of the on-disk format written by :meth:`SpectrumClassifier.save`.
FORMAT_VERSION = 1
#: Number of NNR outputs (and neurons per hidden layer), the paper's Q.
Q = 100
#: Hidden layers of the NNR detector (section 3.1.3: 5 layers of 100 neurons).
DETECTOR_HIDDEN = (100, 100, 100, 100, 100)

_DETECTOR_FILE = "detector.keras"
_CNN_FILE = "cnn.keras"
_META_FILE = "classifier.json"

#: Spectra per call of the compiled forward pass in :meth:`SpectrumClassifier.predict`.
PREDICT_CHUNK = 2048
#: Batches of at most this many spectra run through a numpy copy of the networks, which
#: has far less per-call overhead than TensorFlow (measured in the engine by
#: benchmarks/bench_forward.py, see :meth:`SpectrumClassifier._numpy_forward`).  Kept
#: small: larger numpy matmuls go multi-threaded in OpenBLAS and then contend with
#: TensorFlow's spinning worker threads (1.3-23 ms at 8 spectra, 1.6 ms compiled).
NUMPY_MAX_BATCH = 4


class TrainingCancelled(RuntimeError):
    """Raised by :meth:`SpectrumClassifier.train` when ``should_stop()`` returned True."""


def stabilise(spectra) -> np.ndarray:
    """Variance-stabilising transform ``sqrt(Z + 3/8)`` of counts (Anscombe-like).

    Parameters
    ----------
    spectra : array_like, shape (n, p) or (p,)
        Counts, non-negative.

    Returns
    -------
    ndarray, shape (n, p), float32
    """
    z = np.asarray(spectra, dtype=np.float32)
    if z.ndim == 1:
        z = z[None, :]
    return np.sqrt(z + np.float32(0.375))


def preset_vector(q: int = Q) -> np.ndarray:
    """The preset straight line ``f`` the detector maps good spectra onto (eq. 12).

    Returns
    -------
    ndarray, shape (q,), float32: ``linspace(0, 1, q)``.
    """
    return np.linspace(0.0, 1.0, int(q), dtype=np.float32)


def _same_padding(n: int, k: int, s: int) -> tuple[int, int, int]:
    """Output length and (left, right) padding of TF/Keras ``padding='same'``."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def _np_conv1d_relu(a: np.ndarray, w: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    """Keras ``Conv1D(padding='same', activation='relu')`` in numpy: a (n, P, C) -> (n, out, F)."""
    n, P, C = a.shape
    k, _, F = w.shape
    out, left, right = _same_padding(P, k, s)
    ap = np.zeros((n, P + left + right, C), np.float32)
    ap[:, left:left + P] = a
    win = sliding_window_view(ap, k, axis=1)[:, ::s][:, :out]  # (n, out, C, k)
    if C == 1:
        y = win[:, :, 0, :] @ w[:, 0, :]
    else:
        y = win.transpose(0, 1, 3, 2).reshape(n, out, k * C) @ w.reshape(k * C, F)
    y += b
    return np.maximum(y, 0, out=y)


def _np_maxpool1d_nonneg(a: np.ndarray, k: int, s: int) -> np.ndarray:
    """Keras ``MaxPool1D(padding='same')`` in numpy for non-negative (post-ReLU) input."""
    n, P, C = a.shape
    out, left, right = _same_padding(P, k, s)
    ap = np.zeros((n, P + left + right, C), np.float32)  # zero pad == ignore pad for a >= 0
    ap[:, left:left + P] = a
    y = ap[:, 0:s * out:s].copy()
    for j in range(1, k):
        np.maximum(y, ap[:, j:j + s * out:s], out=y)
    return y


def build_detector(n_channels: int, *, scale: float = 1.0, offset: float = 0.0,
                   q: int = Q, hidden=DETECTOR_HIDDEN) -> keras.Model:
    """The NNR ill-spectrum detector ``f_hat`` (section 2.3.1).

    Input ``(batch, p)`` float32 stabilised spectra (:func:`stabilise`) -> ``Rescaling``
    -> 5 x ``Dense(100, relu)`` -> ``Dense(q)`` linear, output ``(batch, q)``.
    """
    inp = keras.Input(shape=(int(n_channels),), name="spectrum")
    x = layers.Rescaling(float(scale), float(offset), name="rescale")(inp)
    for i, units in enumerate(hidden):
        x = layers.Dense(int(units), activation="relu", name=f"hidden_{i + 1}")(x)
    out = layers.Dense(int(q), name="f_hat")(x)
    return keras.Model(inp, out, name="nnr_detector")


def build_cnn(n_channels: int, n_phases: int, *, scale: float = 1.0,
              offset: float = 0.0) -> keras.Model:
    """The paper's 1-D CNN phase classifier (section 2.3.2, Fig. 2, section 3.1.3).

    Input ``(batch, p, 1)`` float32 stabilised spectra -> ``Rescaling`` ->
    Conv1D(8, 10, stride 2, same, relu) -> MaxPool1D(10, stride 2, same) ->
    Conv1D(16, 10, stride 2, same, relu) -> MaxPool1D(10, stride 2, same) -> Flatten
    (``16 * ceil(p / 16)`` values: 2048 for p = 2040 or 2048) -> Dense 100, 32, 8 (relu)
    -> Dense(L, softmax) (eq. 17).  Output ``(batch, L)`` phase probabilities.
    """
    inp = keras.Input(shape=(int(n_channels), 1), name="spectrum")
    x = layers.Rescaling(float(scale), float(offset), name="rescale")(inp)
    x = layers.Conv1D(8, 10, strides=2, padding="same", activation="relu", name="conv_1")(x)
    x = layers.MaxPool1D(10, strides=2, padding="same", name="pool_1")(x)
    x = layers.Conv1D(16, 10, strides=2, padding="same", activation="relu", name="conv_2")(x)
    x = layers.MaxPool1D(10, strides=2, padding="same", name="pool_2")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(100, activation="relu", name="dense_100")(x)
    x = layers.Dense(32, activation="relu", name="dense_32")(x)
    x = layers.Dense(8, activation="relu", name="dense_8")(x)
    with warnings.catch_warnings():  # L = 1: Keras warns that a 1-way softmax is constant
        warnings.filterwarnings("ignore", message="You are using a softmax over axis")
        out = layers.Dense(int(n_phases), activation="softmax", name="softmax")(x)
    return keras.Model(inp, out, name="cnn_classifier")


def choose_threshold(var_good, var_ill) -> float:
    """Detection threshold ``T`` of eq. 16 from validation variances.

    If every good variance is below every ill variance, ``T`` is the geometric mean of
    the largest good and the smallest ill variance (robust placement in the gap);
    otherwise ``T`` minimises the number of errors (good ``> T`` plus ill ``<= T``), placed
    between the two neighbouring variances.

    Parameters
    ----------
    var_good, var_ill : array_like, shape (n,), float
        Variance metric ``sigma^2(Z)`` (eq. 14) of validation good and ill spectra.

    Returns
    -------
    float
    """
    g = np.sort(np.asarray(var_good, dtype=np.float64).ravel())
    b = np.sort(np.asarray(var_ill, dtype=np.float64).ravel())
    if g.size == 0 and b.size == 0:
        raise InputError("choose_threshold: no validation variances")
    if b.size == 0:
        return float(g[-1] * 2.0 + 1e-12)
    if g.size == 0:
        return float(b[0] * 0.5)

    def between(lo, hi):
        if lo > 0 and hi > 0:
            return math.sqrt(lo * hi)
        return 0.5 * (lo + hi)

    if g[-1] < b[0]:
        return float(between(g[-1], b[0]))
    cand = np.unique(np.concatenate([g, b]))
    # errors if T == cand[i]: good above T plus ill at or below T
    err = (g.size - np.searchsorted(g, cand, side="right")) + np.searchsorted(b, cand, side="right")
    i = int(np.argmin(err))
    if g.size < err[i]:  # T below every value (all ill detected, all good rejected) is better
        return float(cand[0] * 0.5)
    hi = cand[i + 1] if i + 1 < cand.size else cand[i] * 2.0 + 1e-12
    return float(between(cand[i], hi))


class _ProgressCallback(keras.callbacks.Callback):
    """Reports each epoch through ``progress(dict)`` and stops when ``should_stop()``."""

    def __init__(self, name: str, epochs: int, progress, should_stop):
        super().__init__()
        self.name = name
        self.epochs = epochs
        self.progress = progress
        self.should_stop = should_stop
        self.cancelled = False
        self.epochs_run = 0
        self.last_loss = float("nan")

    def _check(self):
        if self.should_stop is not None and not self.cancelled and self.should_stop():
            self.cancelled = True
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epochs_run = epoch + 1
        self.last_loss = float(logs.get("loss", float("nan")))
        if self.progress is not None:
            info = {"stage": "classifier", "model": self.name, "epoch": epoch + 1,
                    "epochs": self.epochs, "loss": self.last_loss}
            if "accuracy" in logs:
                info["accuracy"] = float(logs["accuracy"])
            self.progress(info)
        self._check()


def _noisy_copies(refs: np.ndarray, n: int, lam: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` noisy copies of each row of ``refs`` (r, p): (r * n, p) float32 counts."""
    rep = np.repeat(np.asarray(refs, dtype=np.float32), n, axis=0)
    if lam > 0:
        rep += rng.poisson(lam, size=rep.shape).astype(np.float32)
    return rep


def _save_for_inference(model: keras.Model, path: Path) -> None:
    """Save ``model`` to ``path`` (``.keras``) without its optimizer state: an uncompiled
    clone with the same layers and weights is written."""
    clone = type(model).from_config(model.get_config())      # not compiled: no optimizer
    clone.set_weights(model.get_weights())
    clone.save(path)


def _check_keras_archive(path: Path) -> None:
    """Raise :class:`InputError` naming ``path`` unless it is an intact ``.keras`` zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            bad = zf.testzip()  # CRC of every member
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: not a valid .keras model file (truncated or corrupt zip "
                         f"archive: {exc})") from exc
    if bad is not None:
        raise InputError(f"{path}: corrupt .keras model file (bad checksum of {bad!r})")
    missing = {"config.json", "model.weights.h5"} - names
    if missing:
        raise InputError(f"{path}: not a Keras model file (missing {', '.join(sorted(missing))})")


class SpectrumClassifier:
    """The paper's two-step spectrum -> label classifier (section 2.3, Fig. 1b).

    Labels: 0 = ill-spectrum (detected by the NNR, eqs. 12-16), 1..L = phases (CNN,
    eqs. 17-18).  Create one with :meth:`train` or :meth:`load`.

    Attributes
    ----------
    axis : EnergyAxis
        Energy axis of the p channels the classifier expects.
    phase_names : tuple of str, length L
    n_phases : int
        L.
    threshold : float
        ``T`` of eq. 16 (on the variance metric of eq. 14).
    f : ndarray, shape (Q,), float32
        Preset vector of the detector (eq. 12).
    detector, cnn : keras.Model
    report : dict
        Training report (see :meth:`train`); empty if unknown.
    """

    def __init__(self, detector: keras.Model, cnn: keras.Model, *, axis: EnergyAxis,
                 phase_names, threshold: float, f=None, rescale: dict | None = None,
                 report: dict | None = None):
        if not isinstance(axis, EnergyAxis):
            raise InputError(f"axis: expected an EnergyAxis, got {type(axis).__name__}")
        self.axis = axis
        self.phase_names = tuple(str(n) for n in phase_names)
        self.detector = detector
        self.cnn = cnn
        self.f = preset_vector() if f is None else np.asarray(f, dtype=np.float32).ravel()
        self.threshold = float(threshold)
        self.rescale = dict(rescale or {"scale": 1.0, "offset": 0.0})
        self.report = dict(report or {})
        p = self.axis.size
        if tuple(detector.input_shape[1:]) != (p,):
            raise InputError(f"detector: expects input {detector.input_shape[1:]}, "
                             f"but the energy axis has {p} channels")
        if tuple(detector.output_shape[1:]) != (self.f.size,):
            raise InputError(f"detector: {detector.output_shape[1:]} outputs for a preset "
                             f"vector f of length {self.f.size}")
        if tuple(cnn.input_shape[1:]) != (p, 1):
            raise InputError(f"cnn: expects input {cnn.input_shape[1:]}, but the energy axis "
                             f"has {p} channels")
        if tuple(cnn.output_shape[1:]) != (len(self.phase_names),):
            raise InputError(f"cnn: {cnn.output_shape[1:]} outputs for "
                             f"{len(self.phase_names)} phase names")
        if not math.isfinite(self.threshold):
            raise InputError(f"threshold must be finite, got {threshold}")
        f_const = tf.constant(self.f[None, :])
        det, net = self.detector, self.cnn

        def _forward(x):
            f_hat = det(x, training=False)
            g = tf.abs(f_const - f_hat)                       # eq. 13
            v = tf.math.reduce_variance(g, axis=1)            # eqs. 14-15
            prob = net(tf.expand_dims(x, -1), training=False)  # eq. 17
            return v, prob

        self._forward = tf.function(
            _forward, input_signature=[tf.TensorSpec([None, p], tf.float32)],
            reduce_retracing=True)
        self._np_weights = self._extract_weights()

    # -- properties -----------------------------------------------------------------------
    @property
    def n_phases(self) -> int:
        """L, the number of phases (labels 1..L)."""
        return len(self.phase_names)

    @property
    def n_channels(self) -> int:
        """p, the number of channels per spectrum."""
        return self.axis.size

    @property
    def flatten_size(self) -> int:
        """Length of the CNN's flat layer (2048 for p = 2040 or 2048, section 3.1.3)."""
        flat = [layer for layer in self.cnn.layers if isinstance(layer, layers.Flatten)]
        return int(flat[0].output.shape[-1]) if flat else -1

    def __repr__(self) -> str:
        return (f"SpectrumClassifier(L={self.n_phases}, phases={list(self.phase_names)}, "
                f"p={self.n_channels}, T={self.threshold:.4g})")

    # -- inference ------------------------------------------------------------------------
    def _extract_weights(self) -> dict | None:
        """float32 numpy copies of the weights, for :meth:`_numpy_forward`.

        Returns None (TensorFlow is then used for every batch) unless both models have
        exactly the layer structure of :func:`build_detector` and :func:`build_cnn`.
        """
        def arrays(layer):
            return [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]

        def act(layer):
            return layer.get_config().get("activation")

        def kinds(model):
            return [type(layer).__name__ for layer in model.layers]

        det, cnn = self.detector, self.cnn
        n_hidden = len(DETECTOR_HIDDEN)
        if (kinds(det) != ["InputLayer", "Rescaling"] + ["Dense"] * (n_hidden + 1)
                or kinds(cnn) != ["InputLayer", "Rescaling", "Conv1D", "MaxPooling1D", "Conv1D",
                                  "MaxPooling1D", "Flatten", "Dense", "Dense", "Dense", "Dense"]):
            return None
        d_dense = det.layers[2:]
        c_conv = [cnn.layers[2], cnn.layers[4]]
        c_pool = [cnn.layers[3], cnn.layers[5]]
        c_dense = cnn.layers[7:]
        ok = ([act(layer) for layer in d_dense] == ["relu"] * n_hidden + ["linear"]
              and [act(layer) for layer in c_dense] == ["relu"] * 3 + ["softmax"]
              and all(act(layer) == "relu" and layer.get_config().get("padding") == "same"
                      and tuple(layer.get_config().get("dilation_rate", (1,))) == (1,)
                      and layer.use_bias for layer in c_conv)
              and all(layer.get_config().get("padding") == "same" for layer in c_pool)
              and all(layer.use_bias for layer in list(d_dense) + list(c_dense)))
        if not ok:
            return None

        def rescaling(model):
            layer = model.layers[1]
            return np.float32(layer.scale), np.float32(layer.offset)

        return {
            "rescale_detector": rescaling(det),
            "rescale_cnn": rescaling(cnn),
            "detector": [arrays(layer) for layer in d_dense],
            "conv": [(*arrays(layer), int(layer.strides[0])) for layer in c_conv],
            "pool": [(int(layer.pool_size[0]), int(layer.strides[0])) for layer in c_pool],
            "cnn_dense": [arrays(layer) for layer in c_dense],
        }

    def _numpy_forward(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The compiled TF forward pass recomputed in numpy (small batches: less overhead).

        ``xs``: stabilised spectra (n, p) float32 -> (variance (n,), probabilities (n, L)),
        float32; agrees with the TF pass to float32 round-off (largest probability
        difference 6e-8).

        Kept because it is clearly faster for the batches a pointwise or small-batch run
        classifies.  Measured in the engine process (``benchmarks/bench_forward.py``,
        p = 2048, L = 3, 2 cores shared with other work, median ms per call of 200)::

            n spectra   numpy   model(x, training=False)   compiled tf.function
            1           0.24    15                         0.95
            2           0.33    16                         1.2
            4           0.54    16                         1.3
            8           1.3     16                         1.6
            16          5.9     21                         1.8

        (a run under heavier load gave the same ranking up to 4 spectra, and 23 ms for the
        numpy copy at 8), so up to :data:`NUMPY_MAX_BATCH` = 4 spectra use this copy
        (2.5-4x faster than the compiled pass, 30-60x faster than calling the Keras
        models), larger batches the compiled ``tf.function`` (``model(x, training=False)``
        is never the fastest).
        """
        w = self._np_weights
        sc, off = w["rescale_detector"]
        h = xs * sc + off
        last = len(w["detector"]) - 1
        for i, (k, b) in enumerate(w["detector"]):
            h = h @ k + b
            if i < last:
                np.maximum(h, 0, out=h)
        v = np.var(np.abs(self.f - h), axis=1)  # eqs. 13-15
        sc, off = w["rescale_cnn"]
        c = (xs * sc + off)[:, :, None]
        for (k, b, stride), (size, pstride) in zip(w["conv"], w["pool"]):
            c = _np_conv1d_relu(c, k, b, stride)
            c = _np_maxpool1d_nonneg(c, size, pstride)
        c = c.reshape(len(c), -1)
        last = len(w["cnn_dense"]) - 1
        for i, (k, b) in enumerate(w["cnn_dense"]):
            c = c @ k + b
            if i < last:
                np.maximum(c, 0, out=c)
        c = np.exp(c - c.max(axis=1, keepdims=True))  # softmax, eq. 17
        c /= c.sum(axis=1, keepdims=True)
        return v, c

    def _run(self, spectra) -> tuple[np.ndarray, np.ndarray]:
        x = check_spectra(spectra, self.axis.size, name="spectra")
        n = x.shape[0]
        if n == 0:
            return np.zeros(0, np.float64), np.zeros((0, self.n_phases), np.float32)
        if n <= NUMPY_MAX_BATCH and self._np_weights is not None:
            v, prob = self._numpy_forward(stabilise(x))
            return v.astype(np.float64), prob.astype(np.float32, copy=False)
        v_out = np.empty(n, dtype=np.float64)
        p_out = np.empty((n, self.n_phases), dtype=np.float32)
        for i in range(0, n, PREDICT_CHUNK):
            xs = stabilise(x[i:i + PREDICT_CHUNK])
            v, prob = self._forward(tf.constant(xs))
            v_out[i:i + len(xs)] = v.numpy()
            p_out[i:i + len(xs)] = prob.numpy()
        return v_out, p_out

    def ill_variance(self, spectra) -> np.ndarray:
        """Variance metric ``sigma^2(Z)`` of ``g = |f - f_hat(Z)|`` (eqs. 13-15).

        Parameters
        ----------
        spectra : array_like, shape (n, p) or (p,)
            Counts on :attr:`axis`.

        Returns
        -------
        ndarray, shape (n,), float64
            Values above :attr:`threshold` mean ill-spectrum (eq. 16).

        Raises
        ------
        InputError
            Wrong number of channels, wrong rank, NaN/inf or negative counts.
        """
        return self._run(spectra)[0]

    def predict_phase_probabilities(self, spectra) -> np.ndarray:
        """CNN softmax output ``X^2_s`` (eq. 17) for each spectrum, ignoring detection.

        Parameters
        ----------
        spectra : array_like, shape (n, p) or (p,)
            Counts on :attr:`axis`.

        Returns
        -------
        ndarray, shape (n, L), float32
            Column ``l - 1`` is the probability of phase ``l``; rows sum to 1.

        Raises
        ------
        InputError
            As :meth:`ill_variance`.
        """
        return self._run(spectra)[1]

    def predict_with_details(self, spectra) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels, variance metric and phase probabilities in one pass.

        Returns
        -------
        labels : ndarray, shape (n,), int16, values 0..L
        variance : ndarray, shape (n,), float64
        probabilities : ndarray, shape (n, L), float32
        """
        v, prob = self._run(spectra)
        return self._labels(v, prob), v, prob

    def _labels(self, v: np.ndarray, prob: np.ndarray) -> np.ndarray:
        lab = (np.argmax(prob, axis=1) + 1).astype(np.int16)
        lab[v > self.threshold] = 0  # eq. 16
        return lab

    def predict(self, spectra) -> np.ndarray:
        """Phase label of each spectrum: 0 = ill-spectrum, 1..L = phase (Fig. 1b).

        Detection first (variance metric > ``T`` -> 0, eq. 16), then the CNN's most
        probable phase (eq. 18).  Fast for one spectrum per call (up to
        ``NUMPY_MAX_BATCH`` spectra run through a numpy copy of the networks, ~0.3 ms for
        one spectrum) and for large batches (a compiled TensorFlow function over chunks of
        ``PREDICT_CHUNK`` spectra, ~0.05 ms per spectrum on 2 cores); no ``model.predict``
        overhead.

        Parameters
        ----------
        spectra : array_like, shape (n, p) or (p,)
            Counts on :attr:`axis` (p = ``axis.size`` channels).

        Returns
        -------
        ndarray, shape (n,), int16, values 0..L

        Raises
        ------
        InputError
            Wrong number of channels, wrong rank, NaN/inf or negative counts.
        """
        v, prob = self._run(spectra)
        return self._labels(v, prob)

    # -- training -------------------------------------------------------------------------
    @classmethod
    def train(cls, references: ReferenceSpectra, *, noise_lambda: float = 2.0,
              ill_lambda: float = 20.0, n_noisy: int = 24, n_noisy_val: int = 8,
              n_ill_val: int | None = None, epochs: int = 12,
              detector_epochs: int | None = None, batch_size: int = 64,
              learning_rate: float = 1e-3, seed: int = 0,
              progress: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              ) -> tuple["SpectrumClassifier", dict]:
        """Train the detector and the CNN on reference spectra (section 3.1.3).

        The M reference spectra of each phase are split in half: the first
        ``ceil(M / 2)`` train, the rest validate ("half of the spectra to train ... the
        other half to validate").  Each training reference is drawn ``n_noisy`` times with
        added Poisson(``noise_lambda``) noise per channel (data augmentation); each
        validation reference ``n_noisy_val`` times.  The detector (NNR, eq. 12) learns to
        map the training spectra onto the preset line ``f``; the CNN learns their phase
        (cross-entropy, eq. 18).  The threshold ``T`` (eq. 16) separates the validation
        good spectra from ``n_ill_val`` validation ill-spectra (independent
        Poisson(``ill_lambda``) counts per channel, section 3.1.1) with the fewest errors
        (:func:`choose_threshold`).  Training is reproducible from ``seed``.

        Parameters
        ----------
        references : ReferenceSpectra
            Spectra (L, M, p) counts with M >= 2, and their energy axis.
        noise_lambda : float
            Mean of the Poisson noise added to the reference spectra (paper: 2).
        ill_lambda : float
            Mean of the Poisson ill-spectra used for validation (paper: 20).
        n_noisy, n_noisy_val : int
            Noisy draws per training / validation reference spectrum.
        n_ill_val : int, optional
            Number of validation ill-spectra; default: as many as validation spectra of
            one phase, and at least 200.
        epochs : int
            Epochs for the CNN.
        detector_epochs : int, optional
            Epochs for the detector; default ``2 * epochs``.
        batch_size : int
        learning_rate : float
            Adam learning rate of both networks.
        seed : int
            Seeds the noise, the weight initialisation and the shuffling.
        progress : callable, optional
            Called after every epoch with ``{"stage": "classifier", "model": "detector" |
            "cnn", "epoch": i, "epochs": n, "loss": float}`` (plus ``"accuracy"`` for the
            CNN).
        should_stop : callable, optional
            Polled after every batch; when it returns True training stops and
            :class:`TrainingCancelled` is raised.

        Returns
        -------
        classifier : SpectrumClassifier
        report : dict
            Plain JSON-serialisable values: ``misclassification`` (fraction of validation
            spectra, good and ill, whose final label is wrong), ``confusion`` ((L+1) x (L+1)
            counts, rows = true label 0..L, columns = predicted), ``threshold``,
            ``n_train`` (noisy training spectra), ``n_val`` (validation spectra, good +
            ill), ``epochs`` (CNN epochs), ``detector_epochs``, ``seconds`` (wall time),
            ``flatten_size``, and diagnostics (``detector_errors``, ``cnn_errors``,
            ``var_good_max``, ``var_ill_min``, ``final_loss``).

        Raises
        ------
        InputError
            ``references`` not a :class:`ReferenceSpectra`, fewer than 2 spectra per
            phase, or bad hyperparameters.
        TrainingCancelled
            ``should_stop()`` returned True.
        """
        t0 = time.perf_counter()
        if not isinstance(references, ReferenceSpectra):
            raise InputError(f"references: expected ReferenceSpectra, got {type(references).__name__}")
        L, M, p = references.spectra.shape
        if M < 2:
            raise InputError(f"references: need at least 2 spectra per phase (half train, half "
                             f"validate), got {M}")
        for name, val, lo in (("noise_lambda", noise_lambda, 0.0), ("ill_lambda", ill_lambda, 0.0)):
            if not (math.isfinite(val) and val >= lo):
                raise InputError(f"{name} must be a finite number >= {lo}, got {val}")
        for name, val in (("n_noisy", n_noisy), ("n_noisy_val", n_noisy_val), ("epochs", epochs),
                          ("batch_size", batch_size)):
            if int(val) != val or val < 1:
                raise InputError(f"{name} must be a positive integer, got {val}")
        detector_epochs = 2 * int(epochs) if detector_epochs is None else int(detector_epochs)
        if detector_epochs < 1:
            raise InputError(f"detector_epochs must be a positive integer, got {detector_epochs}")
        if not (learning_rate > 0):
            raise InputError(f"learning_rate must be > 0, got {learning_rate}")

        def cancelled():
            return should_stop is not None and bool(should_stop())

        m_train = M - M // 2
        rng = np.random.default_rng(seed)
        ref = references.spectra.astype(np.float32)
        x_tr = _noisy_copies(ref[:, :m_train].reshape(-1, p), int(n_noisy), noise_lambda, rng)
        y_tr = np.repeat(np.arange(L), m_train * int(n_noisy)).astype(np.int32)
        x_va = _noisy_copies(ref[:, m_train:].reshape(-1, p), int(n_noisy_val), noise_lambda, rng)
        y_va = np.repeat(np.arange(1, L + 1), (M - m_train) * int(n_noisy_val)).astype(np.int16)
        if n_ill_val is None:
            n_ill_val = max(200, (M - m_train) * int(n_noisy_val))
        x_ill = rng.poisson(ill_lambda, size=(int(n_ill_val), p)).astype(np.float32)

        s_tr = stabilise(x_tr)
        mu, sd = float(s_tr.mean()), float(s_tr.std())
        sd = sd if sd > 0 else 1.0
        rescale = {"scale": 1.0 / sd, "offset": -mu / sd}
        f = preset_vector()

        keras.utils.set_random_seed(int(seed))
        if cancelled():
            raise TrainingCancelled("classifier training cancelled")

        # 1. detector (NNR), eq. 12 (MSE = 1/2 ||f - f_hat||^2 / Q up to a constant factor)
        detector = build_detector(p, **rescale)
        detector.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
        cb_det = _ProgressCallback("detector", detector_epochs, progress, should_stop)
        detector.fit(s_tr, np.broadcast_to(f, (len(s_tr), f.size)).copy(),
                     epochs=detector_epochs, batch_size=int(batch_size), shuffle=True,
                     verbose=0, callbacks=[cb_det])
        if cb_det.cancelled:
            raise TrainingCancelled("classifier training cancelled (detector)")

        # 2. CNN, eqs. 17-18
        cnn = build_cnn(p, L, **rescale)
        cnn.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        cb_cnn = _ProgressCallback("cnn", int(epochs), progress, should_stop)
        cnn.fit(s_tr[:, :, None], y_tr, epochs=int(epochs), batch_size=int(batch_size),
                shuffle=True, verbose=0, callbacks=[cb_cnn])
        if cb_cnn.cancelled:
            raise TrainingCancelled("classifier training cancelled (cnn)")

        # 3. threshold T on validation spectra (eq. 16), then the validation report
        clf = cls(detector, cnn, axis=references.axis, phase_names=references.phase_names,
                  threshold=0.0, f=f, rescale=rescale)
        v_good, p_good = clf._run(x_va)
        v_ill, p_ill = clf._run(x_ill)
        T = choose_threshold(v_good, v_ill)
        clf.threshold = T
        true = np.concatenate([y_va, np.zeros(len(x_ill), np.int16)])
        pred = np.concatenate([clf._labels(v_good, p_good), clf._labels(v_ill, p_ill)])
        conf = np.zeros((L + 1, L + 1), dtype=np.int64)
        np.add.at(conf, (true, pred), 1)
        cnn_err = int(np.sum(np.argmax(p_good, axis=1) + 1 != y_va))
        det_err = int(np.sum(v_good > T) + np.sum(v_ill <= T))
        report = {
            "misclassification": float(np.mean(true != pred)),
            "confusion": conf.tolist(),
            "threshold": float(T),
            "n_train": int(len(x_tr)),
            "n_val": int(len(true)),
            "n_val_ill": int(len(x_ill)),
            "n_train_references": int(L * m_train),
            "n_val_references": int(L * (M - m_train)),
            "epochs": int(epochs),
            "detector_epochs": int(detector_epochs),
            "batch_size": int(batch_size),
            "noise_lambda": float(noise_lambda),
            "ill_lambda": float(ill_lambda),
            "seed": int(seed),
            "detector_errors": det_err,
            "cnn_errors": cnn_err,
            "var_good_max": float(v_good.max()) if v_good.size else None,
            "var_ill_min": float(v_ill.min()) if v_ill.size else None,
            "final_loss": {"detector": cb_det.last_loss, "cnn": cb_cnn.last_loss},
            "flatten_size": clf.flatten_size,
            "seconds": None,
        }
        report["seconds"] = float(time.perf_counter() - t0)
        clf.report = report
        return clf, dict(report)

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write ``detector.keras``, ``cnn.keras`` and ``classifier.json`` to ``directory``.

        The ``.keras`` files hold the architecture and weights only, not the optimizer's
        state (Adam's two moments per weight would triple them: a folder is 1.9 MB instead of
        5.5 MB); a loaded classifier predicts and is not trained further.
        The JSON holds the format version, threshold ``T``, preset vector ``f``, rescaling,
        energy axis (:meth:`EnergyAxis.to_dict`), phase names and training report.  No
        pickle is used.  Returns the directory.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _save_for_inference(self.detector, d / _DETECTOR_FILE)
        _save_for_inference(self.cnn, d / _CNN_FILE)
        meta = {
            "format": "napari-slads-eds spectrum classifier",
            "format_version": FORMAT_VERSION,
            "threshold": float(self.threshold),
            "f": [float(v) for v in self.f],
            "rescale": {"scale": float(self.rescale["scale"]), "offset": float(self.rescale["offset"])},
            "preprocessing": "sqrt(counts + 3/8)",
            "axis": self.axis.to_dict(),
            "phase_names": list(self.phase_names),
            "report": self.report,
        }
        write_json_atomic(d / _META_FILE, meta)
        return d

    @classmethod
    def load(cls, directory) -> "SpectrumClassifier":
        """Load a classifier written by :meth:`save` (Keras ``safe_mode=True``).

        Raises
        ------
        InputError
            Missing directory, a missing, truncated or corrupt file (named in the message),
            an unknown format version or models that do not match the metadata.
        """
        d = Path(directory)
        if not d.is_dir():
            raise InputError(f"classifier folder not found: {d}")
        paths = {name: d / name for name in (_META_FILE, _DETECTOR_FILE, _CNN_FILE)}
        for path in paths.values():
            if not path.is_file():
                raise InputError(f"{path}: missing classifier file (expected {_META_FILE}, "
                                 f"{_DETECTOR_FILE} and {_CNN_FILE} in {d})")
        mpath = paths[_META_FILE]
        try:
            meta = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{mpath}: not a readable classifier description ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            got = meta.get("format_version") if isinstance(meta, dict) else None
            raise InputError(f"{mpath}: unsupported classifier format version {got!r} "
                             f"(expected {FORMAT_VERSION})")
        try:
            axis = EnergyAxis.from_dict(meta["axis"])
            names = [str(n) for n in meta["phase_names"]]
            threshold = float(meta["threshold"])
            f = np.asarray(meta["f"], dtype=np.float32)
            rescale = {"scale": float(meta["rescale"]["scale"]),
                       "offset": float(meta["rescale"]["offset"])}
            report = dict(meta.get("report") or {})
        except InputError as exc:
            raise InputError(f"{mpath}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{mpath}: missing or invalid entry ({exc!r})") from exc
        if not isinstance(meta["phase_names"], list) or not names:
            raise InputError(f"{mpath}: phase_names must be a list of one or more names, "
                             f"got {meta['phase_names']!r}")
        models = {}
        for name in (_DETECTOR_FILE, _CNN_FILE):
            path = paths[name]
            _check_keras_archive(path)
            try:
                models[name] = keras.saving.load_model(path, compile=False, safe_mode=True)
            except Exception as exc:  # zip, h5 and deserialisation errors of many kinds
                raise InputError(f"{path}: not a readable Keras model file ({type(exc).__name__}: "
                                 f"{exc})") from exc
        try:
            return cls(models[_DETECTOR_FILE], models[_CNN_FILE], axis=axis, phase_names=names,
                       threshold=threshold, f=f, rescale=rescale, report=report)
        except InputError as exc:
            raise InputError(f"{d}: the saved models do not match {_META_FILE}: {exc}") from exc
