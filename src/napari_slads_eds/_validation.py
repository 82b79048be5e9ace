"""Input checks shared by the public functions.

Every check raises :class:`InputError` (a ``ValueError``) whose message says what was
expected and what was received, so users never see a bare traceback from deep inside
numpy or Keras.
"""

from __future__ import annotations

import numpy as np

__all__ = ["InputError", "check_label_image", "check_spectra", "check_positions", "check_int", "check_seed",
           "os_error_text"]


class InputError(ValueError):
    """Bad input at the public edge of the library (shape, dtype, values, files)."""


def check_int(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python int in ``lo..hi`` (inclusive; None: unbounded).

    Raises
    ------
    InputError
        Not an integer (floats with a fraction, strings, NaN), or out of range; the
        message names ``name`` and the allowed range.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok and isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        ok = True
    rng = (f" in {lo}..{hi}" if lo is not None and hi is not None else f" >= {lo}" if lo is not None
           else f" <= {hi}" if hi is not None else "")
    if not ok:
        raise InputError(f"{name} must be an integer{rng}, got {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InputError(f"{name} must be an integer{rng}, got {v}")
    return v


def check_grid_shape(shape, max_side: int = 32767) -> tuple[int, int]:
    """A grid shape (H, W) of two integers in 1..``max_side``.

    Raises
    ------
    InputError
        Not two integers, or out of range.
    """
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if len(dims) != 2:
        raise InputError(f"grid shape must be (H, W), got {shape!r}")
    return (check_int(dims[0], "grid height H", 1, max_side), check_int(dims[1], "grid width W", 1, max_side))


def check_seed(seed, name: str = "seed") -> int:
    """A random seed as numpy's generators accept it: an integer in 0..2**32-1.

    Raises
    ------
    InputError
        Negative, too large, or not an integer.
    """
    return check_int(seed, name, 0, 2**32 - 1)


def os_error_text(exc: OSError) -> str:
    """One line for a file-system error: its reason and the path it concerns
    ("Not a directory (out/x.npz)"), for users rather than "[Errno 20] ..."."""
    text = exc.strerror or str(exc)
    return f"{text} ({exc.filename})" if exc.filename and str(exc.filename) not in text else text


def _describe(a) -> str:
    a = np.asarray(a)
    return f"array of shape {a.shape} and dtype {a.dtype}"


def check_label_image(labels, n_phases: int | None = None, *, name: str = "labels",
                      allow_zero: bool = True, min_size: int = 1) -> np.ndarray:
    """Validate a 2-D phase-label image and return it as ``int16``.

    Parameters
    ----------
    labels : array_like, shape (H, W), integer (or float with integral values)
        Phase labels: 0 = ill-spectrum / unknown, 1..L = phases.
    n_phases : int, optional
        L.  When given, values must lie in 0..L.
    allow_zero : bool
        Whether label 0 may occur.
    min_size : int
        Minimum height and width.

    Raises
    ------
    InputError
        Not 2-D, too small, non-integral values, NaN, or values outside 0..L.
    """
    a = np.asarray(labels)
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-D label image (H, W), got {_describe(a)}")
    if a.shape[0] < min_size or a.shape[1] < min_size:
        raise InputError(f"{name}: expected at least {min_size}x{min_size} pixels, got {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.int16)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{name}: expected integer labels, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: labels contain NaN or inf")
        if not np.all(a == np.round(a)):
            raise InputError(f"{name}: expected integer labels, got non-integral float values")
    lo = 0 if allow_zero else 1
    amin, amax = int(a.min()), int(a.max())
    if amin < lo or (n_phases is not None and amax > n_phases):
        hi = "L" if n_phases is None else str(n_phases)
        raise InputError(
            f"{name}: expected labels in {lo}..{hi} (0 = ill-spectrum, 1..L = phases), "
            f"got values in {amin}..{amax}")
    if amax > 255:
        raise InputError(f"{name}: at most 255 phases are supported, got label {amax}")
    return a.astype(np.int16, copy=False)


def check_spectra(spectra, n_channels: int | None = None, *, name: str = "spectra") -> np.ndarray:
    """Validate measured spectra (counts) and return them as a 2-D ``float32`` array.

    Parameters
    ----------
    spectra : array_like, shape (n, p) or (p,)
        Counts per channel; finite and non-negative.
    n_channels : int, optional
        Expected p.

    Raises
    ------
    InputError
        Wrong rank, wrong number of channels, NaN/inf or negative counts.
    """
    a = np.asarray(spectra)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InputError(f"{name}: expected spectra of shape (n, p), got {_describe(a)}")
    if not (np.issubdtype(a.dtype, np.number)) or np.iscomplexobj(a):
        raise InputError(f"{name}: expected real counts, got dtype {a.dtype}")
    if n_channels is not None and a.shape[1] != n_channels:
        raise InputError(
            f"{name}: expected {n_channels} channels per spectrum, got {a.shape[1]} "
            "(resample the spectra onto the classifier's energy axis first)")
    if a.size and not np.all(np.isfinite(a)):
        raise InputError(f"{name}: counts contain NaN or inf")
    if a.size and a.min() < 0:
        raise InputError(f"{name}: counts must be non-negative, got minimum {a.min()}")
    return a.astype(np.float32, copy=False)


def check_positions(positions, shape: tuple[int, int], *, name: str = "positions") -> np.ndarray:
    """Validate pixel positions and return them as an ``(n, 2)`` ``int64`` array of (row, col).

    Raises
    ------
    InputError
        Not (n, 2), not integral, or outside the grid.
    """
    p = np.asarray(positions)
    if p.ndim == 1 and p.size == 2:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != 2:
        raise InputError(f"{name}: expected (n, 2) (row, col) pixel positions, got {_describe(p)}")
    if p.size and not np.issubdtype(p.dtype, np.integer):
        if not np.all(np.isfinite(p)) or not np.all(p == np.round(p)):
            raise InputError(f"{name}: expected integer pixel positions")
    p = p.astype(np.int64)
    if p.size and (p.min() < 0 or np.any(p[:, 0] >= shape[0]) or np.any(p[:, 1] >= shape[1])):
        raise InputError(f"{name}: positions outside the {shape[0]}x{shape[1]} grid")
    return p


def check_integers(value, what: str, *, lo: int | None = None, hi: int | None = None,
                   context: str = "", kind: str = "") -> np.ndarray:
    """``value`` as an int64 array of integral numbers in ``lo..hi`` (None: unbounded).

    Integral floats (a Labels layer of float data, positions read back as floats) are
    accepted; bools count as 0/1.

    Parameters
    ----------
    value : array_like
    what : str
        What the values are, for the message ("measured positions", ...).
    lo, hi : int, optional
    context : str
        Prefix of the message ("export", "save a SLADS run").
    kind : str
        What the values should be, for the message ("phase labels"; default: integers).

    Returns
    -------
    ndarray, int64, the shape of ``value``

    Raises
    ------
    InputError
        Non-numeric, complex, NaN/inf or non-integral values, or values outside ``lo..hi``.
    """
    pre = f"{context}: " if context else ""
    a = np.asarray(value)
    if a.dtype == bool:
        a = a.astype(np.int64)
    if a.size and (a.dtype == object or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a)):
        raise InputError(f"{pre}{what} must be {kind or 'integers'}, got dtype {a.dtype}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{pre}{what} " + (f"holds NaN or inf, expected {kind}" if kind else "contain NaN or inf"))
        if not np.all(a == np.round(a)):
            raise InputError(f"{pre}{what} " + (f"holds non-integer values, expected {kind}" if kind
                                                else "must be integers, got non-integral values"))
    if a.size and ((lo is not None and a.min() < lo) or (hi is not None and a.max() > hi)):
        raise InputError(f"{pre}{what} must be {kind + ' ' if kind else ''}in {lo}..{hi}, got {a.min()}..{a.max()}")
    return a.astype(np.int64)
