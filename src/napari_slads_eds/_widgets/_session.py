"""Per-viewer state shared by the dock widgets: one engine process, the trained models
and the plot docks (the simulated specimen is kept in the ground-truth layer's metadata,
:mod:`._specimen_info`).

The engine (:class:`napari_slads_eds.engine.Engine`) is a spawned process that owns
TensorFlow.  A job's messages are relayed to the GUI thread by a napari ``thread_worker``
generator: the widgets receive every message in their ``on_message`` callback (main
thread), then one :class:`JobOutcome`.  Errors inside the engine become a napari
notification (:func:`napari.utils.notifications.show_error`), never a traceback dialog.
Closing the viewer ends the engine process within a second.  Each job also has a
progress bar in napari's activity dock (:class:`~._activity.JobProgress`), closed when the
job ends; cancelling it there stops the job.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, QTimer

from .._validation import InputError
from ..engine import Engine, EngineError, JobCancelled
from ._activity import JobProgress
from ._plotdock import PLOTS_DOCK_HEIGHT, SpectrumLayerWatcher, size_plots_dock as _size_plots_dock  # noqa: F401
from ._specimen_info import SPECIMEN_KEY, SpecimenInfo, specimen_info

# SPECIMEN_KEY, SpecimenInfo and specimen_info are re-exported from _specimen_info:
# _widgets/sampling.py and the benchmarks import them from here
__all__ = ["Session", "JobOutcome", "session_for", "JOB_TITLES", "SPECIMEN_KEY", "SpecimenInfo", "specimen_info"]

log = logging.getLogger(__name__)

JOB_TITLES = {
    "train_classifier": "training the spectrum classifier",
    "train_erd": "training the ERD model",
    "run_slads": "the sampling run",
    "replay": "the replay on a real map",
}


@dataclass
class JobOutcome:
    """How an engine job ended.

    status: "done" (``result`` holds the job's return value), "cancelled" (stopped on
    request), "error" (``error`` holds the exception; the user was notified) or "closed"
    (the viewer closed during the job).
    """

    name: str
    status: str
    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


class _CloseWatcher(QObject):
    """Event filter on the viewer's main window: closes the session when the window closes."""

    def __init__(self, window, session: "Session"):
        super().__init__(window)
        self._window = weakref.ref(window)
        self._session = weakref.ref(session)

    def eventFilter(self, obj, event):  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.Close:
            s = self._session()
            if s is not None:
                if not event.spontaneous():
                    # Window.close() / viewer.close(): the close is not cancellable
                    s.close()
                else:
                    # the user's close button: napari may still ask for confirmation
                    QTimer.singleShot(0, self._after_close)
        return False

    def _after_close(self):
        s = self._session()
        window = self._window()
        try:
            visible = window is not None and window.isVisible()
        except RuntimeError:  # the window is already deleted
            visible = False
        if s is not None and not visible:
            s.close()


_SESSIONS: dict[int, "Session"] = {}


def _real(viewer):
    """The viewer itself (napari hands plugin widgets a PublicOnlyProxy)."""
    return getattr(viewer, "__wrapped__", viewer)


def session_for(viewer) -> "Session":
    """The session of ``viewer`` (created on first use)."""
    v = _real(viewer)
    s = _SESSIONS.get(id(v))
    if s is None or s.closed or s.viewer is not v:
        s = Session(v)
        _SESSIONS[id(v)] = s
    return s


@atexit.register
def _close_all_sessions() -> None:  # pragma: no cover - interpreter shutdown
    for s in list(_SESSIONS.values()):
        try:
            s.close()
        except Exception:
            pass


class Session:
    """Shared state of the SLADS-EDS widgets in one viewer.

    Attributes
    ----------
    engine : Engine or None
        Started on the first job; closed with the viewer.
    classifier_path, erd_path : Path or None
        The current classifier folder and ERD model file (trained or loaded).
    classifier_report, erd_report : dict
    workdir : Path
        Temporary folder for models trained in this session (removed at close; use Save).
    """

    models_changed = Signal()
    busy_changed = Signal(bool)

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self.engine: Engine | None = None
        self._stop_requested = False
        self.worker = None
        self.job_name: str | None = None
        self._job = None
        self._killed = False
        self._paused = False
        self.closed = False
        self.classifier_path: Path | None = None
        self.classifier_report: dict = {}
        self.erd_path: Path | None = None
        self.erd_report: dict = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="slads-eds-"))
        self._counter = 0
        self._docks: dict[str, Any] = {}
        self.progress: JobProgress | None = None   # the running job's activity-dock bar
        self._install_close_watch(viewer)

    # ------------------------------------------------------------------ viewer
    @property
    def viewer(self):
        return self._viewer()

    def _install_close_watch(self, viewer) -> None:
        # Window.close() first closes the QtViewer (slow: it tears down the canvas and the
        # layers), then the main window; watching both ends the engine as early as possible.
        window = getattr(viewer, "window", None)
        self._watchers = []
        for name in ("_qt_viewer", "_qt_window"):
            w = getattr(window, name, None)
            if w is not None:
                watcher = _CloseWatcher(w, self)
                w.installEventFilter(watcher)
                self._watchers.append(watcher)

    def new_path(self, stem: str, suffix: str = "") -> Path:
        """A fresh path in the session's work folder."""
        self._counter += 1
        return self.workdir / f"{stem}_{self._counter}{suffix}"

    # ------------------------------------------------------------------ models
    def set_classifier(self, path, report: dict) -> None:
        self.classifier_path = Path(path)
        self.classifier_report = dict(report or {})
        self.models_changed.emit()

    def set_erd(self, path, report: dict) -> None:
        self.erd_path = Path(path)
        self.erd_report = dict(report or {})
        self.models_changed.emit()

    def classifier_phases(self) -> list[str] | None:
        """Phase names the current classifier knows (None without a classifier)."""
        names = self.classifier_report.get("phase_names")
        return list(names) if names is not None else None

    # ------------------------------------------------------------------ plot docks
    def plot(self, kind: str):
        """The TD-curve ("td") or spectrum ("spectrum") plot of this viewer: tabs of one
        "Plots" dock, docked on demand (:meth:`show_plot` brings a tab to the front)."""
        dock = self.plots_dock()
        return dock.plot(kind)

    def show_plot(self, kind: str):
        """Bring the ``kind`` tab of the Plots dock to the front; returns the plot."""
        dock = self.plots_dock()
        dock.show_tab(kind)
        return dock.plot(kind)

    def plots_dock(self):
        """The "Plots" dock widget (:class:`~.plots.PlotsDock`), created on first use."""
        from .plots import PlotsDock

        w = self._docks.get("plots")
        if w is not None:
            try:
                w.isVisible()       # raises RuntimeError once Qt deleted it
                return w
            except RuntimeError:
                pass
        w = PlotsDock()
        viewer = self.viewer
        if viewer is not None and getattr(viewer, "window", None) is not None:
            dock = viewer.window.add_dock_widget(w, name="Plots", area="right")
            _size_plots_dock(viewer, dock)
            for ms in (0, 300):     # again once the new dock is laid out (the first layout ignores it)
                QTimer.singleShot(ms, lambda: _size_plots_dock(viewer, dock))
            self._docks["spectra"] = SpectrumLayerWatcher(viewer, w)   # opened spectra drawn there
        self._docks["plots"] = w
        return w

    # ------------------------------------------------------------------ engine jobs
    @property
    def busy(self) -> bool:
        return self.worker is not None

    @property
    def paused(self) -> bool:
        return self._paused

    def run_job(self, name: str, kwargs: dict, *, on_message: Callable | None = None,
                on_done: Callable | None = None, start: bool = True, prepare: Callable | None = None):
        """Run engine job ``name`` in a thread_worker; return the worker.

        ``on_message(msg)`` receives every progress/frame/baseline/log message and
        ``on_done(outcome)`` the :class:`JobOutcome`, both in the main thread.  With
        ``start=False`` the worker is returned unstarted (tests connect first).
        ``prepare()``, if given, runs in the worker thread before the job is submitted
        (file writing the job needs; no Qt); if it raises, the job is not run and the
        outcome is an error.

        Raises
        ------
        InputError
            Another job is running, or the viewer is closing.
        """
        from napari.qt.threading import create_worker

        if self.closed:
            raise InputError("the viewer is closing")
        if self.busy:
            raise InputError(f"the engine is busy with {JOB_TITLES.get(self.job_name, self.job_name)}; "
                             "wait for it to finish or press Stop")
        worker = create_worker(self._relay, name, kwargs, prepare, _start_thread=False)
        self.worker = worker
        self.job_name = name
        self._killed = False
        self._paused = False
        self._stop_requested = False
        if on_message is not None:
            worker.yielded.connect(on_message)
        worker.yielded.connect(lambda msg: self.progress is not None and self.worker is worker
                               and self.progress.on_message(msg))
        worker.returned.connect(lambda outcome: self._on_returned(worker, outcome, on_done))
        worker.finished.connect(lambda: self._release(worker))
        # cancelled from napari's task list: stop the engine job too
        worker.aborted.connect(lambda: None if self.closed else self.stop())
        self.busy_changed.emit(True)
        self._start_progress(worker, name)
        if start:
            worker.start()
        return worker

    def _start_progress(self, worker, name: str) -> None:
        # made before the worker starts: napari's activity dock processes pending Qt events
        # while it adds the bar, which must not include this job's messages or its end
        self._close_progress()
        p = JobProgress(JOB_TITLES.get(name, name),
                        on_cancel=lambda: None if self.closed or self.worker is not worker else self.stop())
        if self.worker is worker and not self.closed:
            self.progress = p
        else:
            p.close()

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def start_engine(self) -> None:
        """Start the engine process now, without waiting: it loads TensorFlow in its own
        process while the GUI goes on (the next job then starts at once)."""
        if not self.closed:
            self._ensure_engine()

    def _ensure_engine(self) -> Engine:
        if self.engine is None:
            self.engine = Engine(start=False)
        if not self.engine.is_alive():
            self.engine.start()
        return self.engine

    def _relay(self, name: str, kwargs: dict, prepare: Callable | None = None):
        """Generator run in the worker thread: yields the job's messages, returns its outcome."""
        t0 = time.perf_counter()
        try:
            if prepare is not None:
                prepare()
            if self._stop_requested:          # Stop pressed while the job was being prepared
                raise JobCancelled()
            eng = self._ensure_engine()
            if self._stop_requested:          # ... or while the engine was starting
                raise JobCancelled()
            job = eng.submit(name, **kwargs)
            self._job = job
            # Stop or Pause pressed before the job existed: apply them now (stop() and pause()
            # apply them themselves once self._job is set; doing both is harmless)
            if self._stop_requested:
                eng.request_stop()
            elif self._paused:
                eng.pause()
            for msg in job.messages(poll=0.05):
                yield msg
            return JobOutcome(name, "done", job.result, seconds=time.perf_counter() - t0)
        except JobCancelled:
            return JobOutcome(name, "cancelled", seconds=time.perf_counter() - t0)
        except Exception as exc:  # EngineError, prepare() failing, or a queue closed under us at shutdown
            if self.closed:
                status = "closed"
            elif self._killed:
                status = "cancelled"
            else:
                status = "error"
            return JobOutcome(name, status, error=exc, seconds=time.perf_counter() - t0)

    def _on_returned(self, worker, outcome, on_done) -> None:
        if not isinstance(outcome, JobOutcome):  # aborted worker, or superqt returned an exception
            outcome = JobOutcome(self.job_name or "?", "closed" if self.closed else "cancelled")
        self._release(worker)   # before on_done, so that on_done may start the next job
        if outcome.status == "error" and not self.closed:
            exc = outcome.error
            title = JOB_TITLES.get(outcome.name, outcome.name)
            if (isinstance(exc, EngineError) and exc.kind == "input") or isinstance(exc, InputError):
                msg = f"SLADS-EDS, {title}: {exc}"
            else:
                msg = f"SLADS-EDS, {title} failed: {exc}"
                if isinstance(exc, EngineError) and exc.remote_traceback:
                    log.error("engine traceback:\n%s", exc.remote_traceback)
            _notify_error(msg)
        if on_done is not None and not self.closed:
            try:
                on_done(outcome)
            except RuntimeError as exc:  # the widget was deleted meanwhile
                log.debug("on_done after the widget was deleted: %s", exc)

    def _release(self, worker) -> None:
        if self.worker is worker:
            self._close_progress()
            self.worker = None
            self.job_name = None
            self._job = None
            self._paused = False
            if not self.closed:
                self.busy_changed.emit(False)

    def pause(self) -> None:
        """Pause the running job at its next checkpoint (a job still being prepared or
        submitted starts paused)."""
        if not self.busy or self._stop_requested:
            return
        self._paused = True
        if self.engine is not None and self._job is not None:
            self.engine.pause()

    def resume(self) -> None:
        if self.engine is not None:
            self.engine.resume()
        self._paused = False

    def stop(self, hard_after: float = 1.0) -> None:
        """Stop the running job: a run returns what it measured.  A job that has not
        ended ``hard_after`` seconds later is ended by closing the engine process (a new
        one starts with the next job)."""
        if not self.busy:
            return
        self._stop_requested = True
        self._paused = False
        if self.engine is not None and self._job is not None:
            self.engine.request_stop()
        worker = self.worker
        QTimer.singleShot(int(1000 * hard_after), lambda: self._hard_stop(worker))

    def _hard_stop(self, worker) -> None:
        if self.closed or self.engine is None or not self.busy or self.worker is not worker:
            return
        job = self._job
        if job is not None and not job.done:   # (no job yet: the worker cancels before submitting)
            self._killed = True
            self.engine.close(timeout=1.0)

    def close(self) -> None:
        """End the engine process (within a second) and forget the session."""
        if self.closed:
            return
        self.closed = True
        worker = self.worker
        self._close_progress()
        if self.engine is not None:
            try:
                self.engine.close(timeout=1.0)
            except Exception as exc:  # pragma: no cover
                log.warning("closing the engine: %s", exc)
        if worker is not None:
            try:
                worker.quit()
            except RuntimeError:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)
        for k, s in list(_SESSIONS.items()):
            if s is self:
                del _SESSIONS[k]

    @property
    def engine_pid(self) -> int | None:
        return self.engine.pid if self.engine is not None else None
