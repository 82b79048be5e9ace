"""The Run tab's shared parts: run folders, the current run's record, the live layers'
names, and small helpers (time left, durations)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget

from .._validation import InputError
from ..config import RunSettings, SamplingConfig
from ._session import specimen_info

#: Names of the live layers (key -> layer name).
LIVE_LAYERS = {"mask": "measurement mask", "reconstruction": "reconstruction", "erd": "ERD"}
LIVE_KEY = "slads_eds_live"
#: Metadata key of the static-scan mask layers of a replay.
REPLAY_KEY = "slads_eds_replay"

#: Environment variable naming the folder in which every GUI run gets its own run folder
#: (default ``~/slads-eds-runs``).
RUNS_ENV = "SLADS_EDS_RUNS"

#: What a run samples (the Source box's text -> key).
SOURCES = {"Simulated object": "simulated", "Microscope": "microscope"}
#: The Microscope source's default URL (``slads-eds serve``'s default address).
DEFAULT_MICROSCOPE_URL = "http://127.0.0.1:8765"
#: Seconds the connection check waits for the microscope's ``/v1/info``.
CONNECT_TIMEOUT = 5.0
#: Name of the Labels layer showing a microscope run's ground-truth file.
MICROSCOPE_TRUTH_LAYER = "ground truth (microscope)"


def runs_base() -> Path:
    """The folder that holds the GUI's run folders: ``$SLADS_EDS_RUNS`` or ``~/slads-eds-runs``."""
    env = os.environ.get(RUNS_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / "slads-eds-runs"


def new_run_folder(base=None) -> Path:
    """Create and return a new, empty ``<base>/<YYYYmmdd-HHMMSS>`` folder (``-2``, ``-3``, …
    appended when a run of the same second exists)."""
    base = Path(base) if base is not None else runs_base()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1, 1000):
            p = base / (stamp if i == 1 else f"{stamp}-{i}")
            try:
                p.mkdir()
                return p
            except FileExistsError:
                continue
    except OSError as exc:
        raise InputError(f"cannot create a run folder in {base}: {exc}") from exc
    raise InputError(f"cannot create a run folder in {base}: too many runs named {stamp}")


@dataclass
class _Run:
    """The run folder of the current (or last) run and what its results need."""

    folder: Path
    settings: RunSettings
    source: dict
    classifier_report: dict
    erd_report: dict
    resumed: bool = False
    gui: dict = field(default_factory=dict)
    config: SamplingConfig | None = None


def _duration(seconds: float) -> str:
    """``42.0 s``, ``3.5 min`` or ``1.20 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _row(*widgets) -> QWidget:
    """Widgets side by side in one form field (a widget, so that the row can be hidden)."""
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        lay.addWidget(x, 0 if isinstance(x, QPushButton) else 1)
    return w


#: Seconds between live frames the Run tab asks for by default (each repaints the window).
FRAME_INTERVAL = 0.5


#: Seconds of measuring before the time left is estimated (the initial pattern arrives at
#: once and would give an absurd rate).
TIME_LEFT_AFTER = 3.0


def _sampling_fields(p: SamplingConfig) -> dict:
    """The :class:`RunSettings` fields of a sampling config (the experiment settings a run
    folder records)."""
    return dict(fraction=p.fraction, seed=p.seed, initial_fraction=p.initial_fraction,
                initial_pattern=p.initial_pattern, batch=p.batch, batch_mode=p.batch_mode, overlap=p.overlap,
                k=p.k, uncertainty=p.uncertainty, baseline_fractions=tuple(p.baseline_fractions))


def time_left(t0: float, n0: int, now: float, n: int, target: int, min_seconds: float = TIME_LEFT_AFTER):
    """Seconds left to the target at the rate measured since ``(t0, n0)``, or None before
    ``min_seconds`` of measuring (or without progress).

    Parameters
    ----------
    t0, now : float
        Times (s) of the first displayed frame and of this one.
    n0, n : int
        Measurements at those times.
    target : int
        Measurements of the whole run.
    """
    dt, dn = now - t0, n - n0
    if dt < min_seconds or dn <= 0:
        return None
    return max(0.0, (target - n) * dt / dn)


def _show_name(layer, on: bool = True) -> None:
    """The layer's name written in its grid cell (napari's layer-name overlay)."""
    overlay = getattr(layer, "name_overlay", None)
    if overlay is not None:
        overlay.visible = on
        overlay.box = True
        overlay.font_size = 11


def _is_specimen_layer(layer) -> bool:
    return specimen_info(layer) is not None
