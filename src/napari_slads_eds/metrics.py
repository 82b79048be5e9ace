"""Quality measures: total distortion (eq. 19) and the confusion matrix."""

from __future__ import annotations

import numpy as np

from ._validation import InputError

__all__ = ["total_distortion", "confusion_matrix", "misclassification_rate"]


def total_distortion(truth, reconstruction) -> float:
    """TD = D(X, X̂) / |Ω| = fraction of pixels whose label differs (eqs. 1, 2, 19).

    Parameters
    ----------
    truth, reconstruction : array_like, same shape, integer labels

    Raises
    ------
    InputError
        Shapes differ or the images are empty.
    """
    a, b = np.asarray(truth), np.asarray(reconstruction)
    if a.shape != b.shape:
        raise InputError(f"TD: truth {a.shape} and reconstruction {b.shape} differ in shape")
    if a.size == 0:
        raise InputError("TD: empty images")
    return float(np.count_nonzero(a != b) / a.size)


def confusion_matrix(true_labels, predicted, n_labels: int) -> np.ndarray:
    """Counts (n_labels, n_labels) int64: rows = true label 0..n-1, columns = predicted."""
    t = np.asarray(true_labels, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise InputError(f"confusion matrix: {t.size} true labels but {p.size} predictions")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_labels):
        raise InputError(f"confusion matrix: labels must lie in 0..{n_labels - 1}")
    return np.bincount(t * n_labels + p, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def misclassification_rate(true_labels, predicted) -> float:
    """Fraction of spectra whose predicted label differs from the true one."""
    t, p = np.asarray(true_labels).ravel(), np.asarray(predicted).ravel()
    if t.shape != p.shape or t.size == 0:
        raise InputError("misclassification: need equally many (>0) true and predicted labels")
    return float(np.mean(t != p))
