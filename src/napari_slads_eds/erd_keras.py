"""Training of the SLADS-Net ERD regressor (an MLP) with Keras.

Imports TensorFlow/Keras: used only inside the engine process.  The trained weights are
returned as a numpy :class:`~napari_slads_eds.erd_models.MLPERD`, which the sampler evaluates
without TensorFlow.
"""

from __future__ import annotations

import numpy as np

from .erd_models import MLPERD
from .features import N_FEATURES

__all__ = ["fit_mlp", "HIDDEN"]

#: Hidden layer sizes of the ERD MLP (small: it is evaluated at every affected pixel of
#: every step).
HIDDEN = (32, 16)


def fit_mlp(features: np.ndarray, rd: np.ndarray, c: float, seed: int = 0, *, hidden=HIDDEN,
            epochs: int = 12, batch_size: int = 512, learning_rate: float = 2e-3,
            max_rows: int = 200_000) -> MLPERD:
    """Fit ERD ≈ MLP(standardised features) to the approximate RD (mean squared error).

    Parameters
    ----------
    features : ndarray (n, 6)
    rd : ndarray (n,)
    c : float
    seed : int
    hidden : tuple of int
        Hidden layer sizes (ReLU).
    epochs, batch_size, learning_rate : training of the Adam optimiser.
    max_rows : int
        Random subsample of the database used for training.

    Returns
    -------
    MLPERD
    """
    import keras

    keras.utils.set_random_seed(int(seed))
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(rd, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    if len(f) > max_rows:
        sel = rng.choice(len(f), max_rows, replace=False)
        f, y = f[sel], y[sel]
    mean = f.mean(axis=0)
    scale = f.std(axis=0)
    scale[scale <= 0] = 1.0
    y_scale = float(y.std()) or 1.0
    x = ((f - mean) / scale).astype(np.float32)
    t = (y / y_scale).astype(np.float32)
    inp = keras.Input((N_FEATURES,))
    h = inp
    for n in hidden:
        h = keras.layers.Dense(n, activation="relu")(h)
    out = keras.layers.Dense(1)(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    model.fit(x, t, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    weights = []
    for layer in model.layers[1:]:
        W, b = layer.get_weights()
        weights += [W, b]
    return MLPERD(weights, mean, scale, y_scale, c, {"hidden": list(hidden), "epochs": epochs})
