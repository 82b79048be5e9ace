"""Small file helpers shared by the readers and writers: safe ``.npz`` reading and
JSON conversion.  No pickle anywhere: ``np.load(..., allow_pickle=False)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._validation import InputError

__all__ = ["read_npz", "jsonable"]


def read_npz(path, required=(), what: str = ".npz file") -> dict:
    """All arrays of an ``.npz`` file, loaded without pickle.

    Parameters
    ----------
    path : path
    required : sequence of str
        Entries that must be present.
    what : str
        What the file is, for the error messages ("run file", "specimen file", ...).

    Raises
    ------
    InputError
        Missing file, a file numpy cannot read (corrupt, truncated, or holding pickled
        objects), or missing entries; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as exc:
        raise InputError(f"{p}: not a readable {what} (corrupt or truncated?): {exc}") from exc
    missing = [k for k in required if k not in d]
    if missing:
        raise InputError(f"{p}: missing entries {missing}; is this the right kind of file ({what})?")
    return d


def jsonable(o):
    """``o`` with numpy scalars/arrays, paths and energy axes turned into JSON types."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict") and callable(o.to_dict):
        return jsonable(o.to_dict())
    return o
