"""The classifier's Keras models: their builders, training callback and files.

Owns what is Keras about the two networks of :mod:`napari_slads_eds.classifier`: the
NNR detector and the 1-D CNN (:func:`build_detector`, :func:`build_cnn`, built-in layers
only), the callback that reports each training epoch and stops on request, and the
classifier folder's format (:data:`FORMAT_VERSION`, ``classifier.json``,
``detector.keras``, ``cnn.keras``): saving a model for inference (no optimizer state),
the integrity check of a ``.keras`` archive and the reading of a folder
(:func:`_read_folder`).  Imports TensorFlow/Keras: like the classifier, only inside the
engine process (or a Dask worker).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
from keras import layers

from ._validation import InputError
from .classifier_data import Q
from .spectra import EnergyAxis

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the environment
    raise ImportError(
        f"napari_slads_eds.classifier needs the TensorFlow Keras backend, but Keras uses "
        f"{keras.backend.backend()!r} (unset KERAS_BACKEND or set it to 'tensorflow')")

__all__ = ["build_detector", "build_cnn", "DETECTOR_HIDDEN", "FORMAT_VERSION"]

#: Version of the on-disk format written by :meth:`SpectrumClassifier.save`.
FORMAT_VERSION = 1

_DETECTOR_FILE = "detector.keras"
_CNN_FILE = "cnn.keras"
_META_FILE = "classifier.json"

#: Hidden layers of the NNR detector (section 3.1.3: 5 layers of 100 neurons).
DETECTOR_HIDDEN = (100, 100, 100, 100, 100)


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


def _read_folder(d: Path) -> tuple[dict, dict]:
    """The Keras models and the settings of a classifier folder written by
    :meth:`SpectrumClassifier.save <napari_slads_eds.classifier.SpectrumClassifier.save>`
    (models loaded with Keras ``safe_mode=True``, not compiled).

    Returns
    -------
    models : dict
        File name (``detector.keras``, ``cnn.keras``) -> keras.Model.
    fields : dict
        ``axis``, ``phase_names``, ``threshold``, ``f``, ``rescale``, ``report``: the
        keyword arguments of the classifier besides its two models.

    Raises
    ------
    InputError
        A missing, truncated or corrupt file (named in the message), an unknown format
        version or invalid entries in ``classifier.json``.
    """
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
    return models, dict(axis=axis, phase_names=names, threshold=threshold, f=f, rescale=rescale,
                        report=report)
