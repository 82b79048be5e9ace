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

This module owns :class:`SpectrumClassifier` (inference, training, files).  Its parts:
:mod:`~napari_slads_eds.classifier_data` (numpy only: preprocessing, preset vector, noisy
training copies, threshold), :mod:`~napari_slads_eds.classifier_numpy` (numpy only: the
forward pass of small batches) and :mod:`~napari_slads_eds.classifier_models` (the Keras
models, their training callback and the files of a classifier folder).  The public names of the parts are
re-exported here.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from ._files import write_json_atomic
from ._validation import InputError, check_spectra
from .classifier_data import Q, _noisy_copies, choose_threshold, preset_vector, stabilise
from .classifier_models import (_CNN_FILE, _DETECTOR_FILE, _META_FILE, DETECTOR_HIDDEN, FORMAT_VERSION,
                                _ProgressCallback, _read_folder, _save_for_inference, build_cnn, build_detector)
from .classifier_numpy import NUMPY_MAX_BATCH, numpy_forward, numpy_weights
from .spectra import EnergyAxis, ReferenceSpectra

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

#: Spectra per call of the compiled forward pass in :meth:`SpectrumClassifier.predict`.
PREDICT_CHUNK = 2048


class TrainingCancelled(RuntimeError):
    """Raised by :meth:`SpectrumClassifier.train` when ``should_stop()`` returned True."""


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
        """float32 numpy copies of the weights, for :meth:`_numpy_forward`, or None
        (see :func:`~napari_slads_eds.classifier_numpy.numpy_weights`)."""
        return numpy_weights(self.detector, self.cnn, len(DETECTOR_HIDDEN))

    def _numpy_forward(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The compiled TF forward pass recomputed in numpy, for batches of at most
        :data:`NUMPY_MAX_BATCH` spectra (see :func:`~napari_slads_eds.classifier_numpy.numpy_forward`):
        stabilised spectra (n, p) float32 -> (variance (n,), probabilities (n, L))."""
        return numpy_forward(self._np_weights, self.f, xs)

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
        models, fields = _read_folder(d)
        try:
            return cls(models[_DETECTOR_FILE], models[_CNN_FILE], **fields)
        except InputError as exc:
            raise InputError(f"{d}: the saved models do not match {_META_FILE}: {exc}") from exc
