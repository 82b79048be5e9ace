"""The trained classifier's networks in numpy: weight extraction and the forward pass.

Owns the numpy copy of the NNR detector and the CNN that
:class:`~napari_slads_eds.classifier.SpectrumClassifier` runs for small batches (at most
:data:`NUMPY_MAX_BATCH` spectra), where it has far less per-call overhead than
TensorFlow: Keras ``Conv1D``/``MaxPool1D`` with ``padding='same'`` in numpy, the float32
copies of the weights of models built by :mod:`napari_slads_eds.classifier_models`
(:func:`numpy_weights`) and the forward pass to (variance metric, phase probabilities)
(:func:`numpy_forward`).  numpy only: importing this module never imports TensorFlow.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["numpy_weights", "numpy_forward", "NUMPY_MAX_BATCH"]

#: Batches of at most this many spectra run through a numpy copy of the networks, which
#: has far less per-call overhead than TensorFlow (measured in the engine by
#: benchmarks/bench_forward.py, see :func:`numpy_forward`).  Kept
#: small: larger numpy matmuls go multi-threaded in OpenBLAS and then contend with
#: TensorFlow's spinning worker threads (1.3-23 ms at 8 spectra, 1.6 ms compiled).
NUMPY_MAX_BATCH = 4


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


def numpy_weights(detector, cnn, n_hidden: int) -> dict | None:
    """float32 numpy copies of the weights, for :func:`numpy_forward`.

    Returns None (TensorFlow is then used for every batch) unless both models have
    exactly the layer structure of :func:`~napari_slads_eds.classifier_models.build_detector`
    (with ``n_hidden`` hidden layers) and :func:`~napari_slads_eds.classifier_models.build_cnn`.
    The models are only read through their layers (``get_weights``, ``get_config``):
    this function imports no TensorFlow.
    """
    def arrays(layer):
        return [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]

    def act(layer):
        return layer.get_config().get("activation")

    def kinds(model):
        return [type(layer).__name__ for layer in model.layers]

    det = detector
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


def numpy_forward(w: dict, f: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The compiled TF forward pass recomputed in numpy (small batches: less overhead).

    ``w``: the weights of :func:`numpy_weights`; ``f``: the detector's preset vector (Q,);
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
    sc, off = w["rescale_detector"]
    h = xs * sc + off
    last = len(w["detector"]) - 1
    for i, (k, b) in enumerate(w["detector"]):
        h = h @ k + b
        if i < last:
            np.maximum(h, 0, out=h)
    v = np.var(np.abs(f - h), axis=1)  # eqs. 13-15
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
