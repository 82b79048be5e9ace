"""Dock widget "Sampling run": SLADS on the simulated object or a microscope, animated live.

The engine job ``run_slads`` measures, classifies, reconstructs and selects in the engine
process; this widget relays its messages (through the session's thread_worker) into

* three live layers, updated in place / by assignment in the main thread:
  ``measurement mask`` (Image, 1 = measured), ``reconstruction`` (Labels) and ``ERD``
  (Image, 0 at measured pixels);
* the TD-curve plot dock: SLADS against the static random and Halton scans
  (the "baseline" messages arrive while the run goes on);
* a status line: measured count, sampling fraction, TD, measurements per second, time left.

Start / Pause / Resume / Stop.  Every run is journaled: Start creates a run folder (by
default a new ``<YYYYmmdd-HHMMSS>`` folder under ``~/slads-eds-runs``, or ``$SLADS_EDS_RUNS``)
and writes into it what ``slads-eds run`` writes before sampling
(:func:`napari_slads_eds.pipeline.write_run_folder`: specimen, settings, models); the engine
appends every measured batch to its ``journal.h5``, and at the end the results are written
there too (:func:`napari_slads_eds.results.write_run`, in a worker thread).  "Resume from
journal…" continues a stopped, failed or killed run from its folder (also one made by
``slads-eds run``): the journal is replayed (nothing is measured twice) and the run goes on
to its target with the selections an uninterrupted run makes.  "Save run…" writes the
finished run to another folder.

Source "Microscope": the same engine job measures through an
:class:`~napari_slads_eds.microscope.HttpMicroscope` (the spot-spectrum protocol of
``docs/microscope.md``, e.g. ``slads-eds serve``) instead of the simulated object, as
``slads-eds acquire`` does: Connect (or Start) reads the microscope's ``/v1/info`` in a
thread and checks it against the classifier
(:func:`~napari_slads_eds.microscope.check_microscope_for_classifier`); the run has no
static baselines, chooses the next batch while the current one is measured (overlap, on by
default), and reports TD only when a ground-truth specimen file is given.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QFrame, QHBoxLayout, QLineEdit,
                            QProgressBar, QPushButton, QScrollArea, QVBoxLayout, QWidget)

from .._files import output_folder
from .._validation import InputError
from ..acquisition import JOURNAL_NAME
from ..config import RunSettings, SamplingConfig
from ..run_folder import (CLASSIFIER_DIR, ERD_FILE, SETTINGS_FILE, RunResult, read_run_folder,
                          sampling_job_kwargs, write_run_folder)
from ._common import (LayerCombo, StartupIndicator, float_spin, int_spin, run_in_thread, set_progress, set_status,
                      show_message, status_label, user_action, zoom_to_layers)
from ._session import JOB_TITLES, SPECIMEN_KEY, SpecimenInfo, _real, session_for, specimen_info

if TYPE_CHECKING:
    import napari

__all__ = ["SamplingWidget", "FRAME_INTERVAL", "MicroscopeRun", "LIVE_LAYERS", "RUNS_ENV", "SOURCES",
           "DEFAULT_MICROSCOPE_URL", "runs_base", "new_run_folder", "time_left"]

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


@dataclass
class MicroscopeRun:
    """What a run on a microscope samples; it stands where a simulated object's
    :class:`~._session.SpecimenInfo` stands in a simulated run.

    Attributes
    ----------
    specimen : HttpMicroscope
        The client the engine measures through (pickled into the engine process, which
        opens its own connection); ``phase_map``/``labels`` when a ground truth was given.
    truth_file : str or None
        The ground-truth specimen file (then the run reports TD).
    """

    specimen: object
    truth_file: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.specimen.shape)

    @property
    def n_phases(self) -> int:
        return int(self.specimen.n_phases)

    @property
    def has_truth(self) -> bool:
        return getattr(self.specimen, "phase_map", None) is not None


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


def _microscope_of_folder(folder) -> dict | None:
    """The ``source["microscope"]`` entry (url, dwell_s, info) of a run folder's
    ``run_settings.json``: the folder holds a run on a microscope.  None otherwise (also
    for a folder without a readable settings file)."""
    import json

    try:
        meta = json.loads((Path(folder) / SETTINGS_FILE).read_text())
        mic = (meta.get("source") or {}).get("microscope")
    except (OSError, ValueError, AttributeError):
        return None
    return mic if isinstance(mic, dict) else None


def _acquire_command(folder, mic: dict) -> str:
    """The ``slads-eds acquire … --resume`` command line that continues the microscope run
    in ``folder`` (its settings from ``run_settings.json``), quoted for a status line."""
    import json
    import shlex

    try:
        st = json.loads((Path(folder) / SETTINGS_FILE).read_text()).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        st = {}
    f = shlex.quote(str(folder))
    parts = ["slads-eds acquire", f"--microscope {mic.get('url', 'URL')}", f"--models {f}", f"--out {f}"]
    # the options whose value is not the command's default
    for key, opt, default in (("fraction", "--fraction", 0.15), ("initial_fraction", "--initial-fraction", 0.01),
                              ("initial_pattern", "--initial", "halton"), ("seed", "--seed", 0),
                              ("batch", "--batch", 1), ("batch_mode", "--batch-mode", "top")):
        if key in st and st[key] != default:
            parts.append(f"{opt} {st[key]}")
    if st.get("overlap"):
        parts.append("--overlap")
    if isinstance(mic.get("dwell_s"), (int, float)):
        parts.append(f"--dwell {mic['dwell_s']:g}")
    parts += ["[--token-file FILE]", "--resume"]
    return "'" + " ".join(parts) + "'"


def _show_name(layer, on: bool = True) -> None:
    """The layer's name written in its grid cell (napari's layer-name overlay)."""
    overlay = getattr(layer, "name_overlay", None)
    if overlay is not None:
        overlay.visible = on
        overlay.box = True
        overlay.font_size = 11


def _is_specimen_layer(layer) -> bool:
    return specimen_info(layer) is not None


class SamplingWidget(QWidget):
    """Run SLADS on the simulated object with live layers and a TD-curve plot.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    #: Share of one CPU core the live display may use.  Every display repaints the window;
    #: with software OpenGL (llvmpipe, Xvfb, remote desktops) that costs about 0.1 s of CPU,
    #: which the engine process would otherwise have.  Displays are spaced so that the GUI
    #: stays within this budget (never closer than the update interval).
    display_budget = 0.15

    #: Emitted when a run has ended and its outcome is shown (after :attr:`result` is set):
    #: the outcome's status, "done", "cancelled" or "error".
    run_finished = Signal(str)

    #: The settings scroll in their own area and the run controls stay in view: the
    #: workflow dock puts this widget in its tab as it is (no scroll area around it).
    scrolls_itself = True

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self.viewer = _real(napari_viewer)
        self.session = session_for(self.viewer)
        self.layers: dict[str, object] = {}
        self.result: dict | None = None
        self.mask: np.ndarray | None = None
        self.n_measured = 0
        self.frames = 0
        self.last_run_wall: float | None = None
        self._target = 0
        self._t_start = 0.0
        self._info = None
        self._params: SamplingConfig | None = None
        self._pending_erd = None
        self._lazy_layers: set[int] = set()
        self.displayed_frames = 0
        self._undisplayed = None
        self._next_display = 0.0
        self._display_gap = 0.0
        self._cpu_mark = None
        self.run: _Run | None = None
        self._rate_mark: tuple[float, int] | None = None
        self.hidden_by_run: list = []
        self.replay_data = None          # the RunReplay shown by the measurement slider
        self._replay_source = None       # a run folder's journal being replayed (else the last result)
        self.saved_to: Path | None = None
        self.write_worker = None
        self.connect_worker = None       # reading a microscope's /v1/info
        self.microscope_info = None      # what the last successful Connect/Start read
        self._run_truth = None           # the run's ground-truth layer (None: a microscope run without one)

        self.source_combo = QComboBox()
        self.source_combo.addItems(list(SOURCES))
        self.source_combo.setToolTip("What the run measures: the simulated object of step 2, or a microscope "
                                     "that speaks the spot-spectrum protocol (docs/microscope.md; try it "
                                     "with 'slads-eds serve')")
        self.specimen_combo = LayerCombo(self.viewer, _is_specimen_layer, "(create a simulated object)")
        self.url_edit = QLineEdit(DEFAULT_MICROSCOPE_URL)
        self.url_edit.setToolTip("Base URL of the microscope's server, e.g. http://127.0.0.1:8765 "
                                 "(slads-eds serve's default)")
        self.connect_button = QPushButton("Connect")
        self.connect_button.setToolTip("Read the microscope's grid, energy axis and dwell limits (/v1/info) and "
                                       "check them against the classifier.  Start does this too")
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("none")
        self.token_edit.setToolTip("Bearer token of the server (slads-eds serve --token-file); never written "
                                   "to the run folder")
        self.mic_dwell_spin = float_spin(0.0, 3600.0, 0.0, step=0.01, decimals=3, suffix=" s",
                                         tip="Dwell time per spot, s; 0: the microscope's default")
        self.mic_dwell_spin.setSpecialValueText("default")
        self.truth_edit = QLineEdit()
        self.truth_edit.setPlaceholderText("optional, for TD")
        self.truth_edit.setToolTip("The specimen the server serves (specimen.npz, or a run folder of "
                                   "slads-eds run/demo), when it is known: the run then reports TD.  "
                                   "A real specimen has none: TD is n/a")
        self.truth_button = QPushButton("…")
        self.truth_button.setToolTip("Choose the ground-truth specimen file")
        self.truth_button.setMaximumWidth(32)
        self.overlap_check = QCheckBox("choose during measuring")
        self.overlap_check.setChecked(True)
        self.overlap_check.setToolTip("Choose the next batch (with pseudo-measurements) while the microscope "
                                      "measures the current one, so that the beam does not wait for the "
                                      "computation")
        self.models_label = status_label("")
        self.initial_spin = float_spin(0.01, 50.0, 1.0, step=0.5, decimals=2, suffix=" %",
                                       tip="Initial measurements before SLADS chooses (the paper: 1 %)")
        self.pattern_combo = QComboBox()
        self.pattern_combo.addItems(["halton", "random"])
        self.pattern_combo.setToolTip("Initial pattern: low-discrepancy Halton points or uniform random")
        self.batch_spin = int_spin(1, 4096, 1, tip="Positions chosen per step (1 = pointwise SLADS)")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["top", "pseudo"])
        self.mode_combo.setToolTip("Batch mode: the top-b ERD pixels of one map, or b picks with "
                                   "pseudo-measurements (the reconstruction's label) in between")
        self.target_spin = float_spin(0.01, 100.0, 15.0, step=1.0, decimals=2, suffix=" %",
                                      tip="Stop when this sampling fraction is measured")
        self.interval_spin = float_spin(0.02, 10.0, FRAME_INTERVAL, step=0.05, decimals=2,
                                        suffix=" s",
                                        tip="The layers and plot are updated at most this often.  Every "
                                            "update repaints the window, which takes CPU time from the run "
                                            "(about 0.1 s per update with software OpenGL)")
        self.dwell_spin = float_spin(0.001, 3600.0, 10.0, step=1.0, decimals=3, suffix=" s",
                                     tip="Dwell time per spectrum, for the beam-time estimate")
        self.seed_spin = int_spin(0, 2**31 - 1, 0)
        self.baselines_check = QCheckBox("static random, Halton")
        self.baselines_check.setChecked(True)
        self.baselines_check.setToolTip("Before the run, measure static scans at the same budget and plot "
                                        "their TD for comparison (takes a few seconds on large grids)")
        self.focus_check = QCheckBox("grid of the run's layers")
        self.focus_check.setChecked(True)
        self.focus_check.setToolTip("On Start: only the ground truth and the live layers visible (the others "
                                    "are hidden, not deleted), side by side in grid view, zoomed to fill the "
                                    "canvas")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText(f"new folder in {runs_base()}")
        self.folder_edit.setToolTip(
            "Where the run is journaled (specimen, settings, models, journal.h5 with every measured "
            "spectrum) and its results are written.  Empty: a new date-time folder in "
            f"{runs_base()} (set ${RUNS_ENV} to change it).  A folder that already holds a run is "
            "not overwritten: continue that run with 'Resume from journal…'.")
        self.folder_button = QPushButton("…")
        self.folder_button.setToolTip("Choose the run folder")
        self.folder_button.setMaximumWidth(32)
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume from journal…")
        self.resume_button.setToolTip("Continue a stopped, failed or killed run from its run folder "
                                      "(journal.h5): nothing measured is measured again")
        self.replay_button = QPushButton("Replay the sampling order")
        self.replay_button.setToolTip(
            "After a run: a 'measurement' slider under the canvas steps through the run.  At step k the "
            "mask, reconstruction and ERD layers show the state after the first k measurements, beside the "
            "static Halton and random scans of the same budget")
        self.replay_folder_button = QPushButton("Replay folder…")
        self.replay_folder_button.setToolTip("Step through a run folder's measurements (journal.h5), finished or not")
        self.movie_button = QPushButton("Export movie…")
        self.movie_button.setToolTip("Write the replay (step 0 to the end) as an MP4 or GIF of the canvas "
                                     "(needs napari-animation: pip install 'napari-slads-eds[movie]')")
        self.save_button = QPushButton("Save run…")
        self.save_button.setToolTip("Write the finished run into another folder (it is already in its run folder)")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m measured")
        self.status = status_label("")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Source", self.source_combo)
        form.addRow("Simulated object", self.specimen_combo)
        url_row = _row(self.url_edit, self.connect_button)
        truth_row = _row(self.truth_edit, self.truth_button)
        form.addRow("Microscope URL", url_row)
        form.addRow("Token", self.token_edit)
        form.addRow("Dwell per spot", self.mic_dwell_spin)
        form.addRow("Ground truth", truth_row)
        form.addRow("Overlap", self.overlap_check)
        form.addRow("Models", self.models_label)
        form.addRow("Initial fraction", self.initial_spin)
        form.addRow("Initial pattern", self.pattern_combo)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Batch mode", self.mode_combo)
        form.addRow("Target fraction", self.target_spin)
        form.addRow("Update interval", self.interval_spin)
        form.addRow("Dwell time", self.dwell_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Compare with", self.baselines_check)
        form.addRow("View", self.focus_check)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit)
        folder_row.addWidget(self.folder_button)
        form.addRow("Run folder", folder_row)
        # rows shown for one source only: (label, field)
        self._source_rows = {
            "simulated": [(form.labelForField(w), w) for w in (self.specimen_combo, self.dwell_spin,
                                                                self.baselines_check)],
            "microscope": [(form.labelForField(w), w) for w in (url_row, self.token_edit, self.mic_dwell_spin,
                                                                 truth_row, self.overlap_check)]}
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        files = QHBoxLayout()
        files.addWidget(self.resume_button)
        files.addWidget(self.save_button)
        # the settings scroll inside their own area; the run controls below them never scroll
        # away, however short the dock gets (e.g. when the plot dock opens under it)
        settings = QWidget()
        settings_lay = QVBoxLayout(settings)
        settings_lay.setContentsMargins(0, 0, 0, 0)
        settings_lay.addLayout(form)
        settings_lay.addStretch(1)
        self.settings_area = QScrollArea()
        self.settings_area.setWidgetResizable(True)
        self.settings_area.setFrameShape(QFrame.Shape.NoFrame)
        self.settings_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.settings_area.setWidget(settings)
        self.settings_area.setMinimumHeight(60)
        self.controls = QWidget()
        controls = QVBoxLayout(self.controls)
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addLayout(buttons)
        controls.addWidget(self.progress)
        controls.addWidget(self.status)
        files.insertWidget(1, self.replay_folder_button)
        controls.addLayout(files)
        replay_row = QHBoxLayout()
        replay_row.addWidget(self.replay_button)
        replay_row.addWidget(self.movie_button)
        controls.addLayout(replay_row)
        lay = QVBoxLayout(self)
        lay.addWidget(self.settings_area, 1)
        lay.addWidget(self.controls, 0)
        self.busy_indicator = StartupIndicator(self.progress, self._status)

        self.start_button.clicked.connect(lambda: self.start())
        self.pause_button.clicked.connect(self._toggle_pause)
        self.stop_button.clicked.connect(lambda: self.stop())
        self.save_button.clicked.connect(lambda: self.save())
        self.resume_button.clicked.connect(lambda: self.resume_run())
        self.replay_button.clicked.connect(lambda: self.replay())
        self.movie_button.clicked.connect(lambda: self.export_movie())
        self.replay_folder_button.clicked.connect(lambda: self.replay_folder())
        self.folder_button.clicked.connect(self._choose_folder)
        self.connect_button.clicked.connect(lambda: self.connect_microscope())
        self.truth_button.clicked.connect(self._choose_truth)
        self.source_combo.currentIndexChanged.connect(self._on_source)
        self.session.models_changed.connect(self._show_models)
        self.session.models_changed.connect(self._update_start)
        self.session.busy_changed.connect(self._on_busy)
        self.specimen_combo.currentIndexChanged.connect(self._update_start)
        self._show_models()
        self._on_source()
        self._on_busy(self.session.busy)

    # ------------------------------------------------------------------ settings
    def parameters(self) -> SamplingConfig:
        """The form as the run's :class:`~napari_slads_eds.config.SamplingConfig`.

        Raises
        ------
        InputError
            A combination the config refuses."""
        microscope = self.source() == "microscope"
        return SamplingConfig(fraction=self.target_spin.value() / 100.0,
                              initial_fraction=self.initial_spin.value() / 100.0,
                              initial_pattern=self.pattern_combo.currentText(), batch=self.batch_spin.value(),
                              batch_mode=self.mode_combo.currentText(), seed=self.seed_spin.value(),
                              overlap=microscope and self.overlap_check.isChecked(),
                              frame_interval=self.interval_spin.value(),
                              # static scans need a ground truth to score, and on a microscope they
                              # would cost beam time: none for a microscope run
                              baselines=("random", "halton") if self.baselines_check.isChecked()
                              and not microscope else ()).check()

    def source(self) -> str:
        """What Start measures: ``"simulated"`` (the simulated object) or ``"microscope"``."""
        return SOURCES[self.source_combo.currentText()]

    def set_source(self, source: str) -> None:
        """Choose the source: ``"simulated"`` or ``"microscope"``."""
        names = {v: k for k, v in SOURCES.items()}
        if source not in names:
            raise InputError(f"source must be one of {', '.join(map(repr, names))}, got {source!r}")
        self.source_combo.setCurrentText(names[source])

    def _on_source(self, *_) -> None:
        """Show the rows of the chosen source only."""
        src = self.source()
        for key, rows in self._source_rows.items():
            for label, field in rows:
                for w in (label, field):
                    if w is not None:
                        w.setVisible(key == src)
        self._update_start()

    def set_parameters(self, **kw) -> None:
        """Set the form from :class:`SamplingConfig` field names (fractions as 0-1;
        ``target_fraction`` is accepted for ``fraction``, ``dwell_time`` sets the dwell)."""
        for k, v in kw.items():
            if k in ("fraction", "target_fraction"):
                self.target_spin.setValue(100.0 * v)
            elif k == "initial_fraction":
                self.initial_spin.setValue(100.0 * v)
            elif k == "initial_pattern":
                self.pattern_combo.setCurrentText(v)
            elif k == "batch":
                self.batch_spin.setValue(int(v))
            elif k == "batch_mode":
                self.mode_combo.setCurrentText(v)
            elif k == "seed":
                self.seed_spin.setValue(int(v))
            elif k == "frame_interval":
                self.interval_spin.setValue(float(v))
            elif k == "baselines":
                self.baselines_check.setChecked(bool(v))
            elif k == "dwell_time":
                self.dwell_spin.setValue(float(v))
            elif k == "overlap":
                self.overlap_check.setChecked(bool(v))
            else:
                raise InputError(f"unknown run parameter {k!r}")

    # ------------------------------------------------------------------ run control
    @user_action("Sampling run")
    def start(self, start: bool = True):
        """Start the run in the engine; returns the worker (unstarted with start=False).

        With the Microscope source the worker returned reads the microscope's ``/v1/info``
        (:meth:`connect_microscope`); when the check passes it starts the run itself
        (:meth:`start_microscope_run`), whose engine worker is then ``session.worker``."""
        if self.source() == "microscope":
            self._require_models()
            self._require_idle()
            return self._connect(then_start=True, start=start)
        gt = self.specimen_combo.layer()
        info = specimen_info(gt)
        if info is None:
            raise InputError("create the simulated object first (Simulated object widget)")
        s = self.session
        self._require_models()
        names = s.classifier_phases()
        if names is not None and len(names) != info.n_phases:
            raise InputError(f"the classifier knows {len(names)} phases but the simulated object has "
                             f"{info.n_phases}: train a classifier for this object")
        self._warn_erd_phases(info.n_phases, "the simulated object", "this object's")
        self._require_idle()
        p = self.parameters()
        self._warn_initial(p)
        H, W = info.shape
        settings = RunSettings(size=int(max(H, W)), downsample=int(info.factor), **_sampling_fields(p),
                               ill_fraction=float(info.specimen.ill_fraction),
                               counts_per_spectrum=float(info.settings.get("counts_per_spectrum", 7500.0)),
                               noise_lambda=float(info.specimen.noise_lambda),
                               ill_lambda=float(info.specimen.ill_lambda),
                               erd="mlp" if s.erd_report.get("regressor") == "mlp" else "linear").check()
        source = {"gui": True, "phase_layer": info.source, "grid": [H, W], "downsample": info.factor,
                  "test_region": info.test_region, "train_regions": info.train_regions,
                  "layer_scale": list(gt.scale), "layer_translate": list(gt.translate),
                  "specimen": info.settings, "classifier": str(s.classifier_path), "erd_model": str(s.erd_path)}
        run, write_folder = self._new_run(info.specimen, settings, source, info.n_phases)
        return self._launch(gt, info, p, run, start, prepare=write_folder)

    def _require_models(self) -> None:
        s = self.session
        if s.classifier_path is None:
            raise InputError("no spectrum classifier: train or load one in the Training widget")
        if s.erd_path is None:
            raise InputError("no ERD model: train or load one in the Training widget")

    def _require_idle(self) -> None:
        s = self.session
        if s.busy:
            raise InputError(f"the engine is busy with {JOB_TITLES.get(s.job_name, s.job_name)}; "
                             "wait for it to finish or press Stop")

    def _warn_erd_phases(self, L: int, what: str, whose: str) -> None:
        erd_L = (self.session.erd_report or {}).get("n_phases")
        if isinstance(erd_L, int) and erd_L != L:
            warnings.warn(f"the ERD model was trained on {erd_L}-phase maps, {what} has {L} phases: sampling "
                          f"works, but an ERD model trained on maps like {whose} chooses better", UserWarning,
                          stacklevel=3)

    @staticmethod
    def _warn_initial(p: SamplingConfig) -> None:
        if p.initial_fraction > p.fraction:
            warnings.warn(f"the initial fraction ({100 * p.initial_fraction:g} %) is above the target "
                          f"({100 * p.fraction:g} %): the run measures only the initial pattern, cut to "
                          f"the target, and no position is chosen by SLADS", UserWarning, stacklevel=3)

    def _new_run(self, specimen, settings: RunSettings, source: dict, n_phases: int):
        """The run folder of a new run and the function that writes it (specimen, or none
        for a microscope; settings; copies of the session's models), run in the job's worker
        thread before the engine starts sampling (a large specimen takes a moment to
        compress).  Returns ``(_Run, write_folder)``."""
        s = self.session
        folder = self._folder_for_new_run()
        ours = not self.folder_edit.text().strip()
        clf_dir, erd_path, clf_report, erd_report = s.classifier_path, s.erd_path, dict(s.classifier_report), \
            dict(s.erd_report)

        def write_folder():
            try:
                write_run_folder(folder, specimen, settings, clf_report, erd_report, clf_dir=clf_dir,
                                 erd_path=erd_path, source=source, n_phases=n_phases,
                                 mode="run" if specimen is not None else "microscope")
            except Exception:
                if ours:          # a new folder of ours: leave nothing half-written behind
                    shutil.rmtree(folder, ignore_errors=True)
                raise

        run = _Run(folder, settings, source, {**clf_report, "path": str(folder / CLASSIFIER_DIR)},
                   {**erd_report, "path": str(folder / ERD_FILE)})
        return run, write_folder

    # ------------------------------------------------------------------ microscope
    @user_action("Microscope")
    def connect_microscope(self, start: bool = True):
        """Read the microscope's ``/v1/info`` in a thread and check it against the classifier
        (if one is loaded); the status line shows its grid, energy axis and dwell time, or
        why it cannot be used.  Returns the worker (unstarted with start=False)."""
        return self._connect(then_start=False, start=start)

    def _connect(self, then_start: bool, start: bool = True):
        from ..microscope import check_microscope_for_classifier, check_url, read_microscope_info

        if self.connect_worker is not None:
            raise InputError("still reading the microscope's /v1/info: wait a moment")
        url = check_url(self.url_edit.text(), "microscope URL")
        token = self.token_edit.text().strip() or None
        dwell = self.mic_dwell_spin.value() or None
        truth_path = self.truth_edit.text().strip() or None
        s = self.session
        clf = s.classifier_path          # its classifier.json: energy axis and phases

        def work():        # in a thread: httpx and file reading only
            info = read_microscope_info(url, token=token, timeout=CONNECT_TIMEOUT)
            truth = None
            if truth_path:
                from ..server import load_served_specimen

                try:
                    truth = load_served_specimen(Path(truth_path).expanduser())
                except InputError as exc:
                    raise InputError(f"ground truth: {str(exc).replace('--specimen ', '')}") from None
            return info, truth, check_microscope_for_classifier(info, clf, dwell_s=dwell, truth=truth)

        def done(out):
            self.connect_worker = None
            info, truth, dwell_s = out
            self.microscope_info = info
            self._update_start()
            if then_start:
                self.start_microscope_run(url, token, info, dwell_s, truth, truth_path)
                return
            text = f"microscope at {url}: {info.describe(dwell_s)}."
            if clf is None:
                text += "  Load or train a classifier (step 3) to check its energy axis, then Start."
            elif s.erd_path is None:
                text += "  Its energy axis fits the classifier; load or train an ERD model (step 3), then Start."
            else:
                text += "  Its energy axis fits the classifier: Start runs SLADS on it."
            self._status(text)

        def failed(exc):
            self.connect_worker = None
            self.microscope_info = None
            self._status(f"Microscope: {exc}", error=True)
            self._update_start()

        self._status(f"reading {url}/v1/info…")
        self.connect_worker = run_in_thread(work, on_done=done, on_error=failed, title="Microscope", start=start)
        self._update_start()
        return self.connect_worker

    @user_action("Sampling run")
    def start_microscope_run(self, url: str, token, info, dwell_s: float, truth=None, truth_file=None):
        """Start ``run_slads`` on the microscope at ``url`` whose ``/v1/info`` was read
        (``info``, checked against the classifier; :meth:`connect_microscope`), as
        ``slads-eds acquire`` runs it: the session's classifier and ERD model (copied into
        the run folder), the journal in the run folder, no static baselines, the overlap of
        the Overlap box.  ``truth`` (a specimen of the microscope's grid), when given, makes
        the run report TD.  Returns the engine worker (started)."""
        from ..microscope import HttpMicroscope

        s = self.session
        self._require_models()
        self._require_idle()
        names = s.classifier_phases()
        if not names:
            raise InputError("the classifier's description names no phases: load the classifier again")
        L = len(names)
        mic = HttpMicroscope(url, n_phases=L, token=token, dwell_s=dwell_s, info=info,
                             phase_map=None if truth is None else truth.phase_map,
                             labels=None if truth is None else truth.labels)
        self._warn_erd_phases(L, "the classifier", "the specimen's")
        p = self.parameters()
        self._warn_initial(p)
        H, W = mic.shape
        settings = RunSettings(size=int(max(H, W, 8)), downsample=1, **_sampling_fields(p),
                               erd="mlp" if s.erd_report.get("regressor") == "mlp" else "linear").check()
        source = {"gui": True, "microscope": {"url": mic.url, "dwell_s": mic.dwell_s, "info": info.to_dict()},
                  "grid": [H, W], "ground_truth_file": truth_file, "classifier": str(s.classifier_path),
                  "erd_model": str(s.erd_path)}
        run, write_folder = self._new_run(None, settings, source, L)
        gt = self._show_microscope_truth(truth) if truth is not None else None
        return self._launch(gt, MicroscopeRun(mic, truth_file), p, run, True, prepare=write_folder,
                            journal_settings={"microscope": mic.url, "dwell_s": mic.dwell_s})

    def _show_microscope_truth(self, truth):
        """The Labels layer :data:`MICROSCOPE_TRUTH_LAYER` showing a microscope run's ground
        truth (label 0 at ill-spectrum pixels); not a simulated object of step 2."""
        layer = next((l for l in self.viewer.layers if l.name == MICROSCOPE_TRUTH_LAYER), None)
        if layer is None:
            layer = self.viewer.add_labels(truth.labels.copy(), name=MICROSCOPE_TRUTH_LAYER)
        else:
            layer.data = truth.labels.copy()
            layer.scale, layer.translate = (1.0, 1.0), (0.0, 0.0)
        return layer

    def _choose_truth(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Ground truth: the specimen the microscope serves",
                                              str(runs_base()), "Specimen (*.npz)")
        if path:
            self.truth_edit.setText(path)

    @user_action("Resume from journal")
    def resume_run(self, folder=None, start: bool = True):
        """Continue the run in ``folder`` (a run folder with ``journal.h5``, from this widget or
        ``slads-eds run``): show its ground truth, replay the journal and run on to its target.
        Returns the worker (unstarted with start=False), or None after a message."""
        s = self.session
        if s.busy:
            raise InputError(f"the engine is busy with {JOB_TITLES.get(s.job_name, s.job_name)}; "
                             "wait for it to finish or press Stop")
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Resume a run: choose its run folder (with journal.h5)",
                                                      str(runs_base()))
            if not folder:
                return None
        mic = _microscope_of_folder(folder)
        if mic is not None:
            raise InputError(f"{folder} is a run on the microscope at {mic.get('url')}: continue it with "
                             f"{_acquire_command(folder, mic)}")
        rf = read_run_folder(folder)
        names = rf.classifier_report.get("phase_names")
        if names is not None and len(names) != rf.specimen.n_phases:
            raise InputError(f"{rf.path}: the classifier knows {len(names)} phases but the specimen has "
                             f"{rf.specimen.n_phases}")
        st = rf.settings
        try:
            gt, info = self._show_run_specimen(rf)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{rf.path / SETTINGS_FILE}: its 'source' entry (where the run's object lies "
                             f"on the micrograph) is invalid ({type(exc).__name__}: {exc})") from exc
        # the form shows the resumed run's settings only once the run folder has proved readable
        self.set_parameters(target_fraction=st.fraction, initial_fraction=st.initial_fraction,
                            initial_pattern=st.initial_pattern, batch=st.batch, batch_mode=st.batch_mode,
                            seed=st.seed)
        self.specimen_combo.set_layer(gt)
        run = _Run(rf.path, st, rf.source, rf.classifier_report, rf.erd_report, resumed=True)
        return self._launch(gt, info, self.parameters(), run, start)

    def _launch(self, gt, info, p: SamplingConfig, run: _Run, start: bool, prepare=None,
                journal_settings: dict | None = None):
        """Prepare the layers and the plot and start ``run_slads`` for ``run`` (new or resumed).

        ``info`` is the simulated object's :class:`SpecimenInfo` or a :class:`MicroscopeRun`;
        ``gt`` the run's ground-truth layer (None: a microscope run without one).
        ``journal_settings`` are added to the journal's settings."""
        s = self.session
        H, W = info.shape
        self._target = max(1, int(round(run.settings.fraction * H * W)))
        self._info, self._params = info, p
        self._run_truth = gt
        microscope = isinstance(info, MicroscopeRun)
        run.gui = {"frame_interval": p.frame_interval, "baselines": list(p.baselines),
                   "dwell_time_s": info.specimen.dwell_s if microscope else self.dwell_spin.value()}
        self.run = run
        self._end_replay()
        self._replay_source = None
        self._prepare_layers(gt, info)
        self.result = None
        self.saved_to = None
        self.n_measured = 0
        self.frames = self.displayed_frames = 0
        self._undisplayed = None
        self._next_display, self._display_gap, self._cpu_mark = 0.0, p.frame_interval, None
        self.last_run_wall = None
        set_progress(self.progress, 0, self._target)
        self._rate_mark = None
        td = s.plot("td")          # first: a new Plots dock changes the canvas size
        td.clear(target_fraction=run.settings.fraction)     # the earlier runs stay, greyed
        if microscope and not info.has_truth:
            td.ax.text(0.5, 0.5, "TD n/a: this microscope run has no ground truth\n(give the served specimen "
                       "as Ground truth to see it)", transform=td.ax.transAxes, ha="center", va="center",
                       fontsize=8, color=td.colours["fg"])
            td.redraw(now=True)
        s.show_plot("td")
        if self.focus_check.isChecked():
            shown = self.show_run(gt)
            # once more when a new dock has taken its place
            QTimer.singleShot(400, lambda: self._refit(shown))
        verb = "resuming" if run.resumed else "starting"
        if microscope:
            verb += f" on the microscope at {info.specimen.url}"
        e = s.engine
        cold = e is None or not e.is_alive()
        self.busy_indicator.start(f"{verb}: writing the run folder and starting the engine (a separate process "
                                  "that loads TensorFlow)…" if cold else f"{verb}: writing the run folder…",
                                  "starting the engine…" if cold else "writing the run folder…")
        # the run's sampling as its settings say (a resumed run: as it started), with this
        # display's frame interval and static scans
        run.config = run.settings.sampling.replace(frame_interval=p.frame_interval, baselines=tuple(p.baselines))
        kwargs = sampling_job_kwargs(run.folder, run.config, run.erd_report, resume=run.resumed,
                                     stop_td=run.settings.stop_td,
                                     journal_settings={"settings": asdict(run.settings), **(journal_settings or {})})
        kwargs.update(specimen=info.specimen, send_maps=True)
        self._t_start = time.perf_counter()
        return s.run_job("run_slads", kwargs, on_message=self._on_message, on_done=self._on_done, start=start,
                         prepare=prepare)

    def _folder_for_new_run(self) -> Path:
        """The run folder of a new run: the one given (which must not hold a run yet), or a
        new date-time folder in :func:`runs_base`."""
        text = self.folder_edit.text().strip()
        if not text:
            return new_run_folder()
        folder = Path(text).expanduser()
        for name in (JOURNAL_NAME, SETTINGS_FILE):
            if (folder / name).exists():
                raise InputError(f"{folder} already holds a run ({name}); continue it with 'Resume from "
                                 "journal…', or choose another run folder (empty: a new one)")
        output_folder(folder, what="run folder")     # created, or a clear error (a file, not writable)
        return folder

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder (journal and results)", str(runs_base()))
        if folder:
            self.folder_edit.setText(folder)

    def _show_run_specimen(self, rf):
        """Add (or update) the Labels layer ``ground truth (<folder>)`` holding a resumed run's
        specimen, placed over its region of the micrograph as far as the run folder says."""
        from .specimen import GROUND_TRUTH_LAYER, spectrum_picker

        src, st = rf.source or {}, rf.settings
        spec = rf.specimen
        region = src.get("test_region")
        if src.get("layer_scale") and src.get("layer_translate"):        # a GUI run
            kw = {"scale": tuple(src["layer_scale"]), "translate": tuple(src["layer_translate"])}
            factor = int(src.get("downsample", st.downsample))
        else:                                                            # slads-eds run
            d, u = float(st.downsample), float(max(1, st.upsample))
            r0, c0 = (region[:2] if region else (0, 0))
            kw = {"scale": (d / u, d / u), "translate": ((r0 + d / 2) / u - 0.5, (c0 + d / 2) / u - 0.5)}
            factor = int(st.downsample)
        info = SpecimenInfo(specimen=spec, train_references=None, train_maps=[], factor=factor,
                            test_region=tuple(region) if region else None,
                            train_regions=[tuple(r) for r in src.get("train_regions") or []],
                            source=str(src.get("phase_layer") or src.get("image") or rf.path),
                            settings=dict(src.get("specimen") or {
                                "ill_fraction": st.ill_fraction, "counts_per_spectrum": st.counts_per_spectrum,
                                "seed": spec.seed, "grid": list(spec.shape), "downsample": factor}))
        name = f"{GROUND_TRUTH_LAYER} ({rf.path.name})"
        layer = next((l for l in self.viewer.layers if l.name == name and specimen_info(l) is not None), None)
        if layer is None:
            layer = self.viewer.add_labels(spec.labels.copy(), name=name, metadata={SPECIMEN_KEY: info}, **kw)
        else:
            layer.data = spec.labels.copy()
            layer.scale, layer.translate = kw["scale"], kw["translate"]
            layer.metadata = {**layer.metadata, SPECIMEN_KEY: info}
        if spectrum_picker not in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.append(spectrum_picker)
        return layer, info

    def pause(self) -> None:
        if self.session.busy and self.session.job_name == "run_slads":
            self.session.pause()
            if self._undisplayed is not None:      # show where the run stands
                self._display(self._undisplayed)
            self.pause_button.setText("Resume")
            self._status(f"paused at {self.n_measured} measurements")

    def resume(self) -> None:
        self.session.resume()
        self._rate_mark = None            # the time-left estimate restarts after a pause
        self.pause_button.setText("Pause")

    def _toggle_pause(self) -> None:
        if self.session.paused:
            self.resume()
        else:
            self.pause()

    def stop(self) -> None:
        """Stop the run: it returns what it measured (or the engine is ended within 1 s)."""
        if self.session.busy and self.session.job_name == "run_slads":
            self._status("stopping…")
            grace = 1.0
            if isinstance(self._info, MicroscopeRun) and self._params is not None:
                # the batch under the beam is finished and journaled before the run returns
                grace += 2.0 * self._params.batch * float(self._info.specimen.dwell_s)
            self.session.stop(hard_after=grace)
        self.pause_button.setText("Pause")

    # ------------------------------------------------------------------ live layers
    def _prepare_layers(self, gt, info) -> None:
        """The live layers (made, or reset to zeros) on the run's grid ``info.shape``, placed
        over the ground-truth layer ``gt`` (None: at the origin, one pixel per grid point)."""
        H, W = info.shape
        kw = ({"scale": tuple(gt.scale), "translate": tuple(gt.translate)} if gt is not None
              else {"scale": (1.0, 1.0), "translate": (0.0, 0.0)})
        self.mask = np.zeros((H, W), dtype=np.uint8)
        fresh = {"mask": self.mask, "reconstruction": np.zeros((H, W), dtype=np.int16),
                 "erd": np.zeros((H, W), dtype=np.float32)}
        for key, name in LIVE_LAYERS.items():
            layer = next((l for l in self.viewer.layers if l.metadata.get(LIVE_KEY) == key), None)
            if layer is not None and tuple(layer.data.shape[-2:]) != (H, W):
                self.viewer.layers.remove(layer)
                layer = None
            if layer is None:
                meta = {LIVE_KEY: key}
                if key == "mask":
                    layer = self.viewer.add_image(fresh[key], name=name, colormap="gray", contrast_limits=(0, 1),
                                                  blending="additive", metadata=meta, **kw)
                elif key == "reconstruction":
                    layer = self.viewer.add_labels(fresh[key], name=name, metadata=meta, opacity=0.8, **kw)
                else:
                    layer = self.viewer.add_image(fresh[key], name=name, colormap="magma", contrast_limits=(0, 1),
                                                  metadata=meta, visible=False, **kw)
            else:
                layer.data = fresh[key]
                layer.scale, layer.translate = kw["scale"], kw["translate"]
            self.layers[key] = layer
        # measured points on top, then the reconstruction, the ERD map below
        order = [self.layers["erd"], self.layers["reconstruction"], self.layers["mask"]]
        for layer in order:
            idx = self.viewer.layers.index(layer)
            self.viewer.layers.move(idx, len(self.viewer.layers))

    def show_run(self, gt=None) -> list:
        """Show the run: the ground truth and the live layers visible (every other layer is
        hidden, not deleted; :meth:`show_all_layers` shows them again), side by side in grid
        view (ground truth, ERD / reconstruction, mask), zoomed to fill the canvas.
        Returns the visible layers."""
        v = self.viewer
        if gt is None:
            gt = self._run_truth if isinstance(self._info, MicroscopeRun) else self.specimen_combo.layer()
        live = [self.layers[k] for k in ("erd", "reconstruction", "mask", "static Halton", "static random")
                if k in self.layers]
        shown = ([gt] if gt is not None else []) + live
        for layer in v.layers:
            if layer.visible and not any(layer is l for l in shown):
                layer.visible = False
                self.hidden_by_run.append(layer)
        for layer in shown:
            layer.visible = True
        # bottom to top: ground truth, ERD, reconstruction, mask (the overlay order when the
        # grid is off); the grid, reversed, puts the ground truth top left
        for layer in shown:
            v.layers.move(v.layers.index(layer), len(v.layers))
            _show_name(layer)
        grid = v.canvas.grid        # stride 1: the lowest visible layer top left
        grid.stride, grid.shape, grid.enabled = 1, (-1, -1), True
        zoom_to_layers(v, shown)
        return shown

    def _refit(self, layers) -> None:
        try:
            zoom_to_layers(self.viewer, [l for l in layers if l in self.viewer.layers])
        except RuntimeError:      # the viewer closed meanwhile
            pass

    def show_all_layers(self) -> None:
        """Show the layers :meth:`show_run` hid, and leave the grid view."""
        for layer in self.layers.values():
            _show_name(layer, False)
        for layer in self.hidden_by_run:
            if layer in self.viewer.layers:
                layer.visible = True
        self.hidden_by_run = []
        self.viewer.canvas.grid.enabled = False
        self.viewer.fit_to_view()

    # ------------------------------------------------------------------ replay
    @user_action("Replay")
    def replay(self):
        """Step through the finished run: the mask, reconstruction and ERD layers become
        stacks over the measurement index (lazy: a step is computed when shown), with a
        napari dims slider "measurement"; the static Halton and random scans of the same
        budget are added beside them.  Returns the :class:`~.replay_view.RunReplay`."""
        from ..erd import load_erd_model
        from .replay_view import RunReplay

        r = self._replay_source if self._replay_source is not None else self.result
        if r is None or not len(r.get("positions", ())):
            raise InputError("no finished run to replay: run SLADS first (Start), or 'Replay folder…'")
        if self.session.busy:
            raise InputError("wait for the engine to finish before replaying")
        model_path = Path(self.run.erd_report.get("path", "")) if self.run is not None else None
        if model_path is None or not model_path.is_file():
            model_path = self.session.erd_path
        model = load_erd_model(model_path) if model_path is not None and Path(model_path).is_file() else None
        seed = int(self.run.settings.seed) if self.run is not None else 0
        rep = RunReplay(r["grid"], r["positions"], r["labels"], int(r["phases"]), model, seed=seed)
        self._end_replay()
        self.replay_data = rep
        if isinstance(self._info, MicroscopeRun):
            gt = self._run_truth if self._run_truth is not None and self._run_truth in self.viewer.layers else None
        else:
            gt = next((l for l in self.viewer.layers if specimen_info(l) is self._info), None)
        present = [l for l in self.viewer.layers]
        if any(not any(self.layers.get(k) is l for l in present) for k in LIVE_LAYERS):
            if gt is None and not isinstance(self._info, MicroscopeRun):
                # the live layers were deleted: they can be made again over the ground truth
                raise InputError("the run's ground truth is no longer in the viewer: use 'Replay folder…' "
                                 "with its run folder")
            self._prepare_layers(gt, self._info)
        kw = {"scale": tuple(self.layers["mask"].scale[-2:]), "translate": tuple(self.layers["mask"].translate[-2:])}
        self.layers["mask"].data = rep.lazy("mask")
        self.layers["reconstruction"].data = rep.lazy("reconstruction")
        erd = self.layers["erd"]
        erd.data = rep.lazy("erd", scaled=True)      # the ERD shrinks as the run goes on: scaled per step
        erd.contrast_limits = (0.0, 1.0)
        self._pending_erd = None
        for name in rep.static_rank:
            layer = self.viewer.add_image(rep.lazy("mask", name), name=f"{name} (same budget)", colormap="gray",
                                          contrast_limits=(0, 1), metadata={REPLAY_KEY: name}, **kw)
            self.layers[f"static {name}"] = layer
        dims = self.viewer.dims
        labels = list(dims.axis_labels)
        labels[0] = "measurement"
        dims.axis_labels = labels
        dims.set_point(0, rep.n)
        dims.events.point.connect(self._on_replay_step)
        if self.focus_check.isChecked():
            self.show_run(gt)
        self._on_replay_step()
        self.movie_button.setEnabled(True)
        return rep

    @user_action("Export movie")
    def export_movie(self, path=None, frames: int = 48, fps: int = 8, scale_factor: float | None = None):
        """Write the replay, step 0 to the last measurement in ``frames`` frames, as a movie
        of the canvas (``.mp4``, ``.gif``, …; napari-animation).  Returns the path."""
        if self.replay_data is None:
            raise InputError("replay a run first ('Replay the sampling order')")
        try:
            from napari_animation import Animation
        except ImportError as exc:
            raise InputError("exporting a movie needs napari-animation: pip install 'napari-slads-eds[movie]'") from exc
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the replay as a movie", "slads_replay.mp4",
                                                  "Movies (*.mp4 *.gif *.mov)")
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() not in (".mp4", ".gif", ".mov", ".avi", ".mkv"):
            raise InputError(f"movie file: expected .mp4, .gif, .mov, .avi or .mkv, got {path.name!r}")
        frames = max(2, int(frames))
        rep, dims = self.replay_data, self.viewer.dims
        anim = Animation(self.viewer)
        dims.set_point(0, 0)
        anim.capture_keyframe(steps=1)
        dims.set_point(0, rep.n)
        anim.capture_keyframe(steps=frames - 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        anim.animate(str(path), fps=int(fps), canvas_only=True, scale_factor=scale_factor)
        self._status(f"replay written to {path} ({frames} frames)")
        return path

    @user_action("Replay a run folder")
    def replay_folder(self, folder=None):
        """Replay the run in ``folder`` (a run folder of this widget or ``slads-eds run``,
        finished or not): its ground truth is shown as ``ground truth (<folder>)`` and its
        journal's measurements can be stepped through as after a run.  Returns the
        :class:`~.replay_view.RunReplay`."""
        from ..acquisition import read_journal

        if self.session.busy:
            raise InputError("wait for the engine to finish before replaying")
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Replay a run: choose its run folder (with journal.h5)",
                                                      str(runs_base()))
            if not folder:
                return None
        if _microscope_of_folder(folder) is not None:
            raise InputError(f"{folder} is a run on a microscope, which 'Replay folder…' cannot replay yet: "
                             "'Replay the sampling order' replays it right after the run")
        rf = read_run_folder(folder)
        j = read_journal(rf.path / JOURNAL_NAME)
        if not len(j["label"]):
            raise InputError(f"{rf.path / JOURNAL_NAME}: no measurement in the journal, nothing to replay")
        gt, info = self._show_run_specimen(rf)
        self._end_replay()
        self._info = info
        self.run = _Run(rf.path, rf.settings, rf.source, rf.classifier_report, rf.erd_report, resumed=True)
        self.specimen_combo.set_layer(gt)
        self._prepare_layers(gt, info)
        self._replay_source = {"grid": list(info.shape), "positions": j["position"], "labels": j["label"],
                               "phases": info.n_phases}
        self.result = None
        return self.replay()

    def replay_step(self) -> int:
        """The measurement index the slider shows (k: the first k measurements)."""
        return int(round(self.viewer.dims.point[0])) if self.viewer.dims.ndim > 2 else 0

    def _on_replay_step(self, event=None) -> None:
        rep = self.replay_data
        if rep is None:
            return
        k = min(max(self.replay_step(), 0), rep.n)
        H, W = rep.shape
        self.session.plot("td").mark_fraction(k / (H * W))
        self._status(f"replay: the first {k} of {rep.n} measurements ({100 * k / (H * W):.2f} %); drag the "
                     f"'measurement' slider under the canvas")

    def _end_replay(self) -> None:
        """Leave the replay: the static scan layers go, the live layers become 2-D again."""
        if self.replay_data is None:
            return
        self.replay_data = None
        try:
            self.viewer.dims.events.point.disconnect(self._on_replay_step)
        except (TypeError, ValueError, RuntimeError):
            pass
        for key in [k for k in self.layers if k.startswith("static ")]:
            layer = self.layers.pop(key)
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.session.plot("td").mark_fraction(None)

    def _on_message(self, msg: dict) -> None:
        if self.busy_indicator.active:
            self.busy_indicator.stop()
        t = msg.get("type")
        if t == "frame":
            self._apply_frame(msg)
        elif t == "baseline":      # computed beside the run: arrives after the first frames
            self.session.plot("td").set_baseline(msg["name"], msg["curve"])
        elif t == "log" and isinstance(self._info, MicroscopeRun):
            # the microscope's outages: "not answering …; the run is paused", "is back after …"
            self._status(str(msg.get("text", "")), error="not answering" in str(msg.get("text", "")))

    def _apply_frame(self, msg: dict) -> None:
        """Take one frame: the measured positions always go into the mask array; the layers,
        plot and status line are redrawn at most every ``_display_gap`` seconds (see
        :attr:`display_budget`), always for the final frame."""
        self.frames += 1
        pos = np.asarray(msg["positions"], dtype=np.int64).reshape(-1, 2)
        if pos.size:
            self.mask[pos[:, 0], pos[:, 1]] = 1
        self.n_measured = int(msg["n_measured"])
        self.session.plot("td").append(msg["fraction"], msg.get("td"))   # redraws at most 1/s
        now = time.perf_counter()
        if not msg.get("final") and now < self._next_display:
            self._undisplayed = msg
            return
        self._display(msg)
        # the GUI's CPU time (this process: Qt, OpenGL, this thread and the relay) since the
        # previous display, mostly that display's repaint, sets the gap to the next one
        cpu = time.process_time()
        if self._cpu_mark is not None:
            used = cpu - self._cpu_mark
            self._display_gap = min(5.0, max(self._params.frame_interval, used / self.display_budget))
        self._cpu_mark = cpu
        self._next_display = now + self._display_gap

    def _display(self, msg: dict) -> None:
        self.displayed_frames += 1
        self._undisplayed = None
        self.layers["mask"].refresh()
        if "reconstruction" in msg:
            self.layers["reconstruction"].data = msg["reconstruction"]
        if "erd" in msg:
            self._show_erd(msg["erd"])
        set_progress(self.progress, min(self.n_measured, self._target))
        rate = float(msg.get("rate") or 0.0)
        now = time.perf_counter()
        if self._rate_mark is None:
            self._rate_mark = (now, self.n_measured)
        left = time_left(*self._rate_mark, now, self.n_measured, self._target)
        td = msg.get("td")
        self._status(
            f"measured {self.n_measured} of {self._target} ({100 * msg['fraction']:.2f} %)"
            + (f" · TD {td:.4f}" if td is not None else " · TD n/a")
            + f" · {rate:.0f} measurements/s"
            + (f" · about {left:.0f} s left" if left is not None and not msg.get("final") else ""))

    def _show_erd(self, erd) -> None:
        """Show an ERD map (NaN at measured pixels -> 0).  While the layer is hidden the map
        is only kept, and shown when the layer is made visible (no repaint for a hidden layer)."""
        layer = self.layers["erd"]
        self._pending_erd = erd
        if not layer.visible:
            if id(layer) not in self._lazy_layers:
                layer.events.visible.connect(self._on_erd_visible)
                self._lazy_layers.add(id(layer))
            return
        e = np.nan_to_num(np.asarray(erd, dtype=np.float32), nan=0.0)
        np.maximum(e, 0, out=e)
        pos = e[e > 0]
        hi = float(np.percentile(pos, 99.5)) if pos.size else 1.0
        layer.data = e
        layer.contrast_limits = (0.0, max(hi, 1e-9))
        self._pending_erd = None

    def _on_erd_visible(self, event=None) -> None:
        layer = self.layers.get("erd")
        if layer is not None and layer.visible and self._pending_erd is not None:
            self._show_erd(self._pending_erd)

    def _on_done(self, outcome) -> None:
        self.busy_indicator.stop()
        self.pause_button.setText("Pause")
        self.last_run_wall = time.perf_counter() - self._t_start
        if outcome.status == "done":
            r = outcome.result
            self.mask[...] = np.asarray(r["mask"], dtype=np.uint8)
            self.layers["mask"].refresh()
            self.layers["reconstruction"].data = np.asarray(r["reconstruction"])
            self._show_erd(r["erd"])
            self.n_measured = int(r["n_measured"])
            set_progress(self.progress, min(self.n_measured, self.progress.maximum()))
            td = self.session.plot("td")
            if r.get("td") is not None:        # (a microscope run without ground truth has no TD)
                td.set_curve(r["td_curve"])
            for name in ("random", "halton"):
                if f"td_curve_{name}" in r:
                    td.set_baseline(name, r[f"td_curve_{name}"])
            self.result = self._full_result(r)
            summary = self._summary(self.result)
            if r.get("n_replayed"):
                summary = f"resumed ({r['n_replayed']} measurements replayed from the journal); " + summary
            if r.get("stop_reason") == "stopped by the user":
                if isinstance(self._info, MicroscopeRun):
                    mic = (self.run.source or {}).get("microscope") or {}
                    summary += f"  {_acquire_command(self.run.folder, mic)} continues it to the target."
                else:
                    summary += "  'Resume from journal…' continues it to the target."
            self._status(summary + "  Writing the results into the run folder…")
            self._write_results(self.result, summary)
            self._on_busy(self.session.busy)
        elif outcome.status == "cancelled":
            self._status(f"stopped at {self.n_measured} measurements (no result)." + self._resume_hint(outcome))
        elif outcome.status == "error":
            self._status(f"the run failed: {str(outcome.error).rstrip('.')}." + self._resume_hint(outcome),
                         error=True)
        self.run_finished.emit(str(outcome.status))

    def _resume_hint(self, outcome) -> str:
        """After a run ended without a result: how to continue it (unless its folder has no
        journal, or the engine refused the input, e.g. a corrupt journal)."""
        if self.run is None or not (self.run.folder / JOURNAL_NAME).is_file():
            return ""
        if isinstance(self._info, MicroscopeRun):
            # (also after the microscope's errors, e.g. an outage longer than its timeout)
            mic = (self.run.source or {}).get("microscope") or {}
            return (f"  Every measured spectrum is in the journal: {_acquire_command(self.run.folder, mic)} "
                    "continues the run.")
        if getattr(outcome.error, "kind", None) == "input" or isinstance(outcome.error, InputError):
            return ""
        return "  Every measured spectrum is in the journal: 'Resume from journal…' continues the run."

    def _status(self, text: str, error: bool = False) -> None:
        """The status line, with the run folder on a second line."""
        folder = f"\nrun folder: {self.run.folder}" if self.run is not None else ""
        set_status(self.status, text + folder, error)

    def show_status(self, text: str, error: bool = False) -> None:
        """The status line (errors of this widget's actions are repeated here)."""
        self._status(text, error)

    def _write_results(self, result: dict, summary: str) -> None:
        """Write the finished run into its run folder (in a worker thread: the TD plot and the
        compressed files take a moment on large grids)."""
        from ..results import write_run

        run = self.run
        folder = run.folder

        def done(files):
            if self.run is run:       # not replaced by a newer run meanwhile
                self.saved_to = folder
                self._status(f"{summary}  Results written into the run folder.")

        self.write_worker = run_in_thread(lambda: write_run(result, folder), on_done=done,
                                          title="Writing the run's results")

    def _full_result(self, r: dict) -> dict:
        """The job's result as every run writes it (:meth:`RunResult.from_job`: models,
        settings with this display's, ground truth, microscope)."""
        info, run = self._info, self.run
        microscope = None
        if isinstance(info, MicroscopeRun):
            mic = info.specimen
            microscope = {"url": mic.url, "dwell_s": mic.dwell_s, "info": mic.info.to_dict(),
                          "ground_truth_file": info.truth_file}
        # a microscope run has a ground truth only when a specimen file was given
        return RunResult.from_job(
            r, mode="microscope" if microscope else "run", config=run.config or run.settings.sampling,
            settings={**asdict(run.settings), **run.gui}, source=run.source,
            classifier_report=run.classifier_report, erd_report=run.erd_report, seconds=r.get("seconds", 0.0),
            ground_truth=getattr(info.specimen, "phase_map", None),
            specimen_labels=getattr(info.specimen, "labels", None), microscope=microscope,
            run_folder=run.folder, resumed=run.resumed, wall_seconds=self.last_run_wall).to_dict()

    def _summary(self, r: dict) -> str:
        H, W = r["grid"]
        dwell = float((self.run.gui if self.run is not None else {}).get("dwell_time_s", self.dwell_spin.value()))
        used, full = r["n_measured"] * dwell, H * W * dwell
        static = [f"{name} {r[key]:.4f}" for name, key in (("static random", "td_random"), ("Halton", "td_halton"))
                  if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
        beam = (f"{_duration(used)} instead of {_duration(full)} for the full map" if r["n_measured"] < H * W
                else f"{_duration(used)}, as for the full map")
        td = r.get("td")
        td_text = (f"TD {td:.4f}" if isinstance(td, (int, float)) and np.isfinite(td)
                   else "TD n/a (no ground truth)")
        return (f"{r.get('stop_reason', 'done')}: {r['n_measured']} measured "
                f"({100 * r['sampling_fraction']:.2f} %), {td_text}"
                + (f" ({', '.join(static)})" if static else "") + "; "
                f"{r.get('measurements_per_second', 0):.0f} measurements/s, {r.get('seconds', 0):.1f} s.  "
                f"Beam time at {dwell:g} s per spectrum: {beam}.")

    @user_action("Save run")
    def save(self, folder=None):
        """Write the finished run (result.json, reconstruction, mask, TD curve, run.npz)."""
        from ..results import write_run

        if self.result is None:
            raise InputError("no finished run to save")
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the run into a folder")
            if not folder:
                return None
        files = write_run(self.result, Path(folder))
        show_message("info", f"run saved to {folder} ({', '.join(files)})")
        return files

    # ------------------------------------------------------------------ display
    def start_blocked_reason(self) -> str | None:
        """Why Start cannot run now (shown as the Start button's tooltip), or None."""
        s = self.session
        if s.busy:
            return (f"The engine is busy with {JOB_TITLES.get(s.job_name, s.job_name)}: wait for it to finish "
                    "or press Stop")
        if self.connect_worker is not None:
            return "Reading the microscope's /v1/info…"
        if self.source() == "simulated" and specimen_info(self.specimen_combo.layer()) is None:
            return "No simulated object yet: create one in step 2 (Simulated object)"
        missing = [what for what, path in (("spectrum classifier", s.classifier_path), ("ERD model", s.erd_path))
                   if path is None]
        if missing:
            return f"No {' and no '.join(missing)} yet: train or load {'them' if len(missing) > 1 else 'it'} " \
                   "in step 3 (Training)"
        return None

    def _update_start(self, *_) -> None:
        try:
            reason = self.start_blocked_reason()
            self.start_button.setEnabled(reason is None)
            what = ("the simulated object" if self.source() == "simulated"
                    else f"on the microscope at {self.url_edit.text().strip()} (its /v1/info is read first)")
            self.start_button.setToolTip(reason or f"Start the run: SLADS measures {what} up to the target "
                                                   "fraction, journaled into the run folder")
            self.connect_button.setEnabled(self.connect_worker is None)
        except RuntimeError:  # widget deleted
            pass

    def _on_busy(self, busy: bool) -> None:
        try:
            running = busy and self.session.job_name == "run_slads"
            self._update_start()
            self.resume_button.setEnabled(not busy)
            self.pause_button.setEnabled(running)
            self.stop_button.setEnabled(running)
            self.save_button.setEnabled(not busy and self.result is not None)
            self.replay_button.setEnabled(not busy and self.result is not None and self.result.get("n_measured", 0) > 0)
            self.movie_button.setEnabled(not busy and self.replay_data is not None)
            self.replay_folder_button.setEnabled(not busy)
        except RuntimeError:  # widget deleted
            pass

    def _show_models(self) -> None:
        try:
            s = self.session
            parts = []
            if s.classifier_path is None:
                parts.append("classifier: none")
            else:
                m = s.classifier_report.get("misclassification")
                names = s.classifier_phases() or []
                parts.append(f"classifier: {len(names)} phases"
                             + (f", misclassification {m:.4f}" if m is not None else ""))
            parts.append("ERD: none" if s.erd_path is None else f"ERD: c = {float(s.erd_report.get('c', float('nan'))):g}")
            text = " · ".join(parts)
            if s.classifier_path is None or s.erd_path is None:
                text += "\n(train or load them in the Training widget)"
            self.models_label.setText(text)
        except RuntimeError:
            pass
