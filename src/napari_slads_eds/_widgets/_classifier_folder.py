"""A saved classifier folder as the GUI checks it: :func:`read_classifier_description`.

Numpy/JSON only (the Keras files themselves are loaded by the engine at the start of a
run), so the napari process reads and validates a folder without TensorFlow.  Used by the
Training widget's "Load…" (:mod:`.training`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._validation import InputError
from ..likelihood import check_classifier_folder, classifier_kind
from ..spectra import EnergyAxis

__all__ = ["read_classifier_description"]


def read_classifier_description(folder) -> dict:
    """Check a saved classifier folder and return its ``classifier.json`` (numpy/JSON only;
    the Keras files themselves are loaded by the engine at the start of a run).

    Raises
    ------
    InputError
        Not a folder, a missing file, or an unreadable description.
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"classifier folder not found: {d}")
    check_classifier_folder(d)
    kind = classifier_kind(d)
    f = d / "classifier.json"
    try:
        meta = json.loads(f.read_text())
        raw_names = meta["phase_names"]
        axis = meta["axis"]
        EnergyAxis.from_dict(axis)
        threshold = float(meta["threshold"])
        report = dict(meta.get("report") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{f}: not a readable classifier description ({exc})") from exc
    if not isinstance(raw_names, list) or not raw_names or not all(isinstance(n, str) for n in raw_names):
        raise InputError(f"{f}: phase_names must be a list of one or more names, got {raw_names!r}")
    if kind == "cnn" and not np.isfinite(threshold):
        raise InputError(f"{f}: the ill-spectrum threshold must be a finite number, got {meta['threshold']!r}")
    m = report.get("misclassification")
    if m is not None and not (isinstance(m, (int, float)) and not isinstance(m, bool) and 0 <= m <= 1):
        raise InputError(f"{f}: report.misclassification must be a number in 0..1, got {m!r}")
    conf = report.get("confusion")
    if conf is not None:
        try:
            ok = np.asarray(conf, dtype=float).ndim == 2
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"{f}: report.confusion must be a matrix of numbers")
    report.update({"phase_names": list(raw_names), "axis": axis, "threshold": threshold, "path": str(d),
                   "kind": kind})
    return report
