"""Dock widget "SLADS-EDS workflow": the four steps in one dock, as tabs.

``napari -w napari-slads-eds`` opens the plugin's first widget, which is this one; the steps
are also available as separate docks (Plugins menu, or
``napari -w napari-slads-eds __all__``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from .._sample_data import GOLD_NAME, PHASES_KEY, demo_models, gold_ready_to_run, warm_demo
from .._validation import InputError
from ._common import set_status, status_label, user_action
from ._session import _real, session_for
from .micrograph import MicrographWidget
from .real_map import RealMapWidget
from .sampling import SamplingWidget
from .specimen import SpecimenWidget
from .training import TrainingWidget

if TYPE_CHECKING:
    import napari

__all__ = ["WorkflowWidget", "PRESTART_ENV", "engine_prestart_enabled"]

#: Environment variable: "0", "false", "no" or "off" keeps the engine from starting when the
#: workflow dock opens (the test suite sets it: it opens many docks); unset, empty or anything
#: else starts it.
PRESTART_ENV = "SLADS_EDS_ENGINE_PRESTART"
#: Milliseconds after the dock opens before the engine is started (the window draws first).
PRESTART_DELAY_MS = 500


def engine_prestart_enabled() -> bool:
    """Whether the workflow dock starts the engine process when it opens."""
    return os.environ.get(PRESTART_ENV, "1").strip().lower() not in ("0", "false", "no", "off")

STEPS = (("1 Phases", MicrographWidget), ("2 Object", SpecimenWidget),
         ("3 Training", TrainingWidget), ("4 Run", SamplingWidget), ("Real map", RealMapWidget))


class WorkflowWidget(QWidget):
    """Micrograph & phases, Simulated object, Training and Sampling run in tabs.

    Attributes
    ----------
    micrograph, specimen, training, sampling : the four step widgets
    real_map : the replay of SLADS on an acquired spectrum image (its own tab)
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        viewer = _real(napari_viewer)
        self.tabs = QTabWidget()
        self.tabs.setToolTip("1 micrograph & phases, 2 simulated object, 3 training, 4 sampling run")
        self.steps = []
        for title, cls in STEPS:
            w = cls(viewer)
            if getattr(w, "scrolls_itself", False):   # the Run tab: its settings scroll, its controls never
                self.tabs.addTab(w, title)
                self.steps.append(w)
                continue
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            # the steps fit the dock's width (long texts wrap, combo boxes shrink); only
            # vertical scrolling (the Run tab scrolls its settings itself, not its controls)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            scroll.setWidget(w)
            self.tabs.addTab(scroll, title)
            self.steps.append(w)
        self.micrograph, self.specimen, self.training, self.sampling, self.real_map = self.steps
        self.viewer = viewer
        self.session = session_for(viewer)
        self.demo_button = QPushButton("Run demo")
        self.demo_button.setToolTip(
            "Open the nanoporous-gold sample, build its simulated object and start SLADS at once with the "
            "small pre-trained models shipped with the plugin (retrain them in tab 3)")
        self.demo_button.clicked.connect(lambda: self.run_demo())
        self.demo_status = status_label("")
        self.demo_status.setVisible(False)
        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(QLabel("New here?"))
        top.addWidget(self.demo_button)
        top.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.demo_status)
        lay.addWidget(self.tabs)
        self._demo_running = False
        self.sampling.run_finished.connect(self._on_run_finished)
        if engine_prestart_enabled():
            QTimer.singleShot(PRESTART_DELAY_MS, self.prestart)

    def _on_run_finished(self, status: str) -> None:
        """The demo's status line once its run has ended (the Run tab's result is set)."""
        if not self._demo_running:
            return
        self._demo_running = False
        r = self.sampling.result
        if status != "done" or not r:
            self.show_status("The demo run ended without a result (see the Run tab). 'Run demo' starts it again.")
            return
        head = "Demo stopped by you" if r.get("stop_reason") == "stopped by the user" else "Demo finished"
        td = r.get("td")
        base = ", ".join(f"{n} {r[f'td_{k}']:.4f}" for k, n in (("random", "static random"), ("halton", "Halton"))
                         if isinstance(r.get(f"td_{k}"), float))
        self.show_status(
            f"{head}: TD {td:.4f} (fraction of wrong pixels) at {100 * r.get('sampling_fraction', 0):.1f} % "
            f"sampled{f'; the static scans of the same dose: {base}' if base else ''}. 'Replay the sampling "
            "order' steps through it; retrain the models in tab 3 or change the settings in tab 4 to try your own.")

    def prestart(self) -> None:
        """Start the engine process in the background (it imports TensorFlow there, 4-5 s of
        one core, ~0.5 GB), make napari's unit registry, which its first layer with units
        otherwise builds (0.7 s), and segment the demo's micrograph in a thread
        (:func:`~napari_slads_eds._sample_data.warm_demo`): so that "Run demo", training or a
        run start at once.
        Called by the dock shortly after it opens unless ``$SLADS_EDS_ENGINE_PRESTART=0``;
        the GUI process never imports TensorFlow."""
        try:
            self.session.start_engine()
        except RuntimeError:        # the dock (or the viewer) was closed before the timer fired
            return
        import threading

        import pint

        pint.get_application_registry().pixel      # the registry napari's layers use
        threading.Thread(target=warm_demo, name="slads-eds-warm-demo", daemon=True).start()

    def show_step(self, index: int) -> None:
        """Bring step 0..3 to the front."""
        self.tabs.setCurrentIndex(index)

    def show_status(self, text: str, error: bool = False) -> None:
        """The demo's status line (above the tabs; hidden while empty)."""
        set_status(self.demo_status, text, error)
        self.demo_status.setVisible(bool(text))

    def _gold_phase_layer(self):
        """The phase layer of the gold sample already open in the viewer (added by the
        sample data or an earlier demo), or None."""
        for layer in self.viewer.layers:
            md = layer.metadata
            if md.get(PHASES_KEY) and md.get("source") == GOLD_NAME and md.get("n_phases") == 2:
                return layer
        return None

    @user_action("Run demo")
    def run_demo(self, start: bool = True):
        """One click from an empty viewer to a running SLADS demo.

        Starts the engine first (it loads TensorFlow in its own process while the rest is
        prepared), opens the 2-phase nanoporous-gold sample with its phases (or reuses it
        when it is open), builds the simulated object with the Simulated object tab's
        defaults (128x128 grid, down-sampling 2, seed 0), takes the pre-trained classifier
        and ERD model shipped with the plugin (``tools/train_demo_models.py``), and starts
        the run: ground truth, ERD, reconstruction and measurement mask side by side, the
        camera on the test region, the TD curve against the static scans.

        Returns the run's worker (unstarted with ``start=False``), or None after an error
        (shown in the status lines).

        Raises
        ------
        InputError
            The engine is busy, or the shipped models are missing from the installation.
        """
        s = self.session
        if s.busy:
            raise InputError("the engine is busy: wait for it to finish or press Stop, then run the demo")
        clf_dir, erd_path, info = demo_models()         # fails before anything is changed
        s.start_engine()                               # TensorFlow loads while the GUI prepares
        self.show_status("Demo: opening the nanoporous-gold sample and building its simulated object…")
        phases = self._gold_phase_layer()
        if phases is None:
            for data, kw, kind in gold_ready_to_run():
                layer = getattr(self.viewer, f"add_{kind}")(data, **kw)
                if kind == "labels":
                    phases = layer
        sp = self.specimen
        sp.phase_combo.set_layer(phases)
        sp.phases_spin.setValue(2)
        sp.reset_defaults()
        gt = sp.create_specimen()
        if gt is None:
            raise InputError(f"the simulated object could not be built: {sp.status.text()}")
        self.training.load_classifier(clf_dir)
        self.training.load_erd(erd_path)
        names = s.classifier_phases()
        if names is not None and list(names) != list(sp.info.phase_names):
            raise InputError(f"the shipped demo classifier knows the phases {names}, the simulated object has "
                             f"{list(sp.info.phase_names)}: run tools/train_demo_models.py")
        self.sampling.set_source("simulated")          # (the Run tab may be on its Microscope source)
        self.sampling.specimen_combo.set_layer(gt)
        self.sampling.set_parameters(**DEMO_RUN)
        self.show_step(3)
        worker = self.sampling.start(start=start)
        if worker is not None:
            self._demo_running = True
            self.show_status(
                f"Demo running with the shipped models (trained by {info.get('made_by', 'the plugin')}): watch "
                "the measurement mask, the reconstruction and the ERD map fill in, and the TD curve fall below the "
                "static scans.  Retrain the models in tab 3 to try your own settings.")
        return worker


#: Run settings of the demo (the Run tab's defaults, said explicitly so a changed default
#: does not change the demo): 15 % of the 128x128 grid, one position per step.
DEMO_RUN = {"target_fraction": 0.15, "initial_fraction": 0.01, "initial_pattern": "halton", "batch": 1,
            "seed": 0}
