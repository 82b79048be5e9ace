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
(:func:`napari_slads_eds.run_folder.write_run_folder`: specimen, settings, models); the engine
appends every measured batch to its ``journal.h5``, and at the end the results are written
there too (:class:`napari_slads_eds.run_folder.RunResult`, the same result.json as the CLI's,
in a worker thread).  "Resume from
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

import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QWidget

from .._files import output_folder
from .._validation import InputError
from ..run_folder import JOURNAL_FILE as JOURNAL_NAME
from ..config import RunSettings, SamplingConfig
from ..run_folder import (CLASSIFIER_DIR, ERD_FILE, SETTINGS_FILE, read_run_folder, sampling_job_kwargs,
                          write_run_folder)
from ._common import set_progress, set_status, user_action
from ._session import JOB_TITLES, _real, session_for, specimen_info
from ._run_common import (DEFAULT_MICROSCOPE_URL, FRAME_INTERVAL, LIVE_LAYERS, RUNS_ENV, SOURCES, TIME_LEFT_AFTER,
                          _Run, _sampling_fields, new_run_folder, runs_base, time_left)
from ._run_form import RunFormMixin
from ._run_microscope import MicroscopeRun, MicroscopeSourceMixin, _acquire_command, _microscope_of_folder
from ._run_replay import ReplayMixin
from ._run_view import LiveViewMixin

if TYPE_CHECKING:
    import napari

__all__ = ["SamplingWidget", "FRAME_INTERVAL", "TIME_LEFT_AFTER", "MicroscopeRun", "LIVE_LAYERS", "RUNS_ENV", "SOURCES",
           "DEFAULT_MICROSCOPE_URL", "runs_base", "new_run_folder", "time_left"]


class SamplingWidget(RunFormMixin, LiveViewMixin, ReplayMixin, MicroscopeSourceMixin, QWidget):
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

        self._build_form()

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
        if rf.mode == "replay":
            raise InputError(f"{rf.path} is a replay of a spectrum image: continue it with 'slads-eds resume "
                             f"{rf.path}'")
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
                                     journal_settings={"settings": asdict(run.settings), **(journal_settings or {})},
                                     send_maps=True)
        kwargs["specimen"] = info.specimen
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
    def _status(self, text: str, error: bool = False) -> None:
        """The status line, with the run folder on a second line."""
        folder = f"\nrun folder: {self.run.folder}" if self.run is not None else ""
        set_status(self.status, text + folder, error)

    def show_status(self, text: str, error: bool = False) -> None:
        """The status line (errors of this widget's actions are repeated here)."""
        self._status(text, error)

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
