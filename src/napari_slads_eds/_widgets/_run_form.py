"""The Run tab's form: the source (simulated object or microscope), the sampling settings
(:class:`~napari_slads_eds.config.SamplingConfig`), the run folder and the buttons, and the
accessors that read and set it.  A mixin of
:class:`~napari_slads_eds._widgets.sampling.SamplingWidget`."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QFrame, QHBoxLayout, QLineEdit, QProgressBar,
                            QPushButton, QScrollArea, QVBoxLayout, QWidget)

from .._validation import InputError
from ..config import SamplingConfig
from ._common import LayerCombo, StartupIndicator, float_spin, int_spin, status_label
from ._run_common import (DEFAULT_MICROSCOPE_URL, FRAME_INTERVAL, RUNS_ENV, SOURCES, _is_specimen_layer, _row,
                          runs_base)


class RunFormMixin:
    """The Run tab's form (methods of the Run tab)."""

    def _build_form(self) -> None:
        """Create the form's widgets and lay out the tab (called once by ``__init__``)."""
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
                              and not microscope else ())

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
