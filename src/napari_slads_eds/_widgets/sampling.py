"""Dock widget "Sampling run": SLADS on the simulated object, animated live.

The engine job ``run_slads`` measures, classifies, reconstructs and selects in the engine
process; this widget relays its messages (through the session's thread_worker) into

* three live layers, updated in place / by assignment in the main thread:
  ``measurement mask`` (Image, 1 = measured), ``reconstruction`` (Labels) and ``ERD``
  (Image, 0 at measured pixels);
* the TD-curve plot dock: SLADS against the static random and Halton scans
  (the "baseline" messages arrive before the run starts);
* a status line: measured count, sampling fraction, TD, measurements per second, time left.

Start / Pause / Resume / Stop; at the end, Save writes the run with
:func:`napari_slads_eds.results.write_run`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QProgressBar, QPushButton,
                            QVBoxLayout, QWidget)

from .._validation import InputError
from ._common import LayerCombo, float_spin, int_spin, set_progress, show_message, status_label, user_action
from ._session import _real, session_for, specimen_info

if TYPE_CHECKING:
    import napari

__all__ = ["SamplingWidget", "RunParameters", "LIVE_LAYERS"]

#: Names of the live layers (key -> layer name).
LIVE_LAYERS = {"mask": "measurement mask", "reconstruction": "reconstruction", "erd": "ERD"}
LIVE_KEY = "slads_eds_live"


@dataclass
class RunParameters:
    """The run settings as passed to the engine job ``run_slads``."""

    target_fraction: float = 0.15
    initial_fraction: float = 0.01
    initial_pattern: str = "halton"
    batch: int = 1
    batch_mode: str = "top"
    seed: int = 0
    frame_interval: float = 0.5
    baselines: tuple = ("random", "halton")


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
        self._params: RunParameters | None = None
        self._pending_erd = None
        self._lazy_layers: set[int] = set()
        self.displayed_frames = 0
        self._undisplayed = None
        self._next_display = 0.0
        self._display_gap = 0.0
        self._cpu_mark = None

        self.specimen_combo = LayerCombo(self.viewer, _is_specimen_layer, "(create a simulated object)")
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
        self.interval_spin = float_spin(0.02, 10.0, RunParameters.frame_interval, step=0.05, decimals=2,
                                        suffix=" s",
                                        tip="The layers and plot are updated at most this often.  Every "
                                            "update repaints the window, which takes CPU time from the run "
                                            "(about 0.1 s per update with software OpenGL)")
        self.dwell_spin = float_spin(0.001, 3600.0, 10.0, step=1.0, decimals=3, suffix=" s",
                                     tip="Dwell time per spectrum, for the beam-time estimate")
        self.seed_spin = int_spin(0, 2**31 - 1, 0)
        self.baselines_check = QCheckBox("static random and Halton scans")
        self.baselines_check.setChecked(True)
        self.baselines_check.setToolTip("Before the run, measure static scans at the same budget and plot "
                                        "their TD for comparison (takes a few seconds on large grids)")
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.save_button = QPushButton("Save run…")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m measured")
        self.status = status_label("")

        form = QFormLayout()
        form.addRow("Simulated object", self.specimen_combo)
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
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.save_button)
        lay.addStretch(1)

        self.start_button.clicked.connect(lambda: self.start())
        self.pause_button.clicked.connect(self._toggle_pause)
        self.stop_button.clicked.connect(lambda: self.stop())
        self.save_button.clicked.connect(lambda: self.save())
        self.session.models_changed.connect(self._show_models)
        self.session.busy_changed.connect(self._on_busy)
        self._show_models()
        self._on_busy(self.session.busy)

    # ------------------------------------------------------------------ settings
    def parameters(self) -> RunParameters:
        p = RunParameters(target_fraction=self.target_spin.value() / 100.0,
                          initial_fraction=self.initial_spin.value() / 100.0,
                          initial_pattern=self.pattern_combo.currentText(), batch=self.batch_spin.value(),
                          batch_mode=self.mode_combo.currentText(), seed=self.seed_spin.value(),
                          frame_interval=self.interval_spin.value(),
                          baselines=("random", "halton") if self.baselines_check.isChecked() else ())
        return p

    def set_parameters(self, **kw) -> None:
        """Set the form from RunParameters field names (fractions as 0-1)."""
        for k, v in kw.items():
            if k == "target_fraction":
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
            else:
                raise InputError(f"unknown run parameter {k!r}")

    # ------------------------------------------------------------------ run control
    @user_action("Sampling run")
    def start(self, start: bool = True):
        """Start the run in the engine; returns the worker (unstarted with start=False)."""
        gt = self.specimen_combo.layer()
        info = specimen_info(gt)
        if info is None:
            raise InputError("create the simulated object first (Simulated object widget)")
        s = self.session
        if s.classifier_path is None:
            raise InputError("no spectrum classifier: train or load one in the Training widget")
        if s.erd_path is None:
            raise InputError("no ERD model: train or load one in the Training widget")
        names = s.classifier_phases()
        if names is not None and len(names) != info.n_phases:
            raise InputError(f"the classifier knows {len(names)} phases but the simulated object has "
                             f"{info.n_phases}: train a classifier for this object")
        p = self.parameters()
        H, W = info.shape
        self._target = max(1, int(round(p.target_fraction * H * W)))
        self._info, self._params = info, p
        self._prepare_layers(gt, info)
        self.result = None
        self.n_measured = 0
        self.frames = self.displayed_frames = 0
        self._undisplayed = None
        self._next_display, self._display_gap, self._cpu_mark = 0.0, p.frame_interval, None
        self.last_run_wall = None
        set_progress(self.progress, 0, self._target)
        td = s.plot("td")
        td.clear(target_fraction=p.target_fraction)
        self.status.setText("starting: computing the static random and Halton scans for comparison…"
                            if p.baselines else "starting…")
        kwargs = dict(specimen=info.specimen, classifier=str(s.classifier_path), erd_model=str(s.erd_path),
                      send_maps=True, **asdict(p))
        self._t_start = time.perf_counter()
        return s.run_job("run_slads", kwargs, on_message=self._on_message, on_done=self._on_done, start=start)

    def pause(self) -> None:
        if self.session.busy and self.session.job_name == "run_slads":
            self.session.pause()
            if self._undisplayed is not None:      # show where the run stands
                self._display(self._undisplayed)
            self.pause_button.setText("Resume")
            self.status.setText(f"paused at {self.n_measured} measurements")

    def resume(self) -> None:
        self.session.resume()
        self.pause_button.setText("Pause")

    def _toggle_pause(self) -> None:
        if self.session.paused:
            self.resume()
        else:
            self.pause()

    def stop(self) -> None:
        """Stop the run: it returns what it measured (or the engine is ended within 1 s)."""
        if self.session.busy and self.session.job_name == "run_slads":
            self.status.setText("stopping…")
            self.session.stop()
        self.pause_button.setText("Pause")

    # ------------------------------------------------------------------ live layers
    def _prepare_layers(self, gt, info) -> None:
        H, W = info.shape
        kw = {"scale": tuple(gt.scale), "translate": tuple(gt.translate)}
        self.mask = np.zeros((H, W), dtype=np.uint8)
        fresh = {"mask": self.mask, "reconstruction": np.zeros((H, W), dtype=np.int16),
                 "erd": np.zeros((H, W), dtype=np.float32)}
        for key, name in LIVE_LAYERS.items():
            layer = next((l for l in self.viewer.layers if l.metadata.get(LIVE_KEY) == key), None)
            if layer is not None and layer.data.shape != (H, W):
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

    def _on_message(self, msg: dict) -> None:
        t = msg.get("type")
        if t == "frame":
            self._apply_frame(msg)
        elif t == "baseline":
            self.session.plot("td").set_baseline(msg["name"], msg["curve"])
        elif t == "progress" and msg.get("stage") == "baseline":
            name = {"random": "random", "halton": "Halton"}.get(msg.get("baseline"), msg.get("baseline"))
            if msg["done"] < msg["total"]:
                self.status.setText(f"static {name} scan for comparison ({msg['done'] + 1} of {msg['total']})…")

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
        left = (self._target - self.n_measured) / rate if rate > 0 else float("nan")
        td = msg.get("td")
        self.status.setText(
            f"measured {self.n_measured} of {self._target} ({100 * msg['fraction']:.2f} %)"
            + (f" · TD {td:.4f}" if td is not None else "")
            + f" · {rate:.0f} measurements/s"
            + (f" · about {left:.0f} s left" if np.isfinite(left) and not msg.get("final") else ""))

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
            td.set_curve(r["td_curve"])
            for name in ("random", "halton"):
                if f"td_curve_{name}" in r:
                    td.set_baseline(name, r[f"td_curve_{name}"])
            self.result = self._full_result(r)
            self.status.setText(self._summary(self.result))
            self._on_busy(self.session.busy)
        elif outcome.status == "cancelled":
            self.status.setText(f"stopped at {self.n_measured} measurements (no result)")
        elif outcome.status == "error":
            self.status.setText(f"the run failed: {outcome.error}")

    def _full_result(self, r: dict) -> dict:
        """The job's result plus what result.json of the CLI holds (models, settings, truth)."""
        s, info = self.session, self._info
        out = dict(r)
        crep, erep = s.classifier_report, s.erd_report
        out["misclassification"] = crep.get("misclassification", float("nan"))
        out["classifier"] = {k: crep[k] for k in ("misclassification", "confusion", "threshold", "n_train",
                                                  "n_val", "seconds", "path") if k in crep}
        out["erd_model"] = {k: erep[k] for k in ("c", "c_search", "rows", "seconds", "regressor", "path")
                            if k in erep}   # "erd" is the ERD map
        out["c"] = erep.get("c", r.get("c"))
        out["settings"] = {**asdict(self._params), **info.settings, "dwell_time_s": self.dwell_spin.value()}
        out["source"] = {"phase_layer": info.source, "test_region": info.test_region,
                         "train_regions": info.train_regions, "downsample": info.factor, "gui": True}
        out["ground_truth"] = info.specimen.phase_map
        out["specimen_labels"] = info.specimen.labels
        out["wall_seconds"] = self.last_run_wall
        return out

    def _summary(self, r: dict) -> str:
        H, W = r["grid"]
        dwell = self.dwell_spin.value()
        hours = r["n_measured"] * dwell / 3600.0
        full = H * W * dwell / 3600.0
        return (f"{r.get('stop_reason', 'done')}: {r['n_measured']} measured "
                f"({100 * r['sampling_fraction']:.2f} %), TD {r['td']:.4f} "
                f"(static random {r.get('td_random', float('nan')):.4f}, "
                f"Halton {r.get('td_halton', float('nan')):.4f}); "
                f"{r.get('measurements_per_second', 0):.0f} measurements/s, {r.get('seconds', 0):.1f} s.  "
                f"Beam time at {dwell:g} s per spectrum: {hours:.2f} h instead of {full:.1f} h for the full map.")

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
    def _on_busy(self, busy: bool) -> None:
        try:
            running = busy and self.session.job_name == "run_slads"
            self.start_button.setEnabled(not busy)
            self.pause_button.setEnabled(running)
            self.stop_button.setEnabled(running)
            self.save_button.setEnabled(not busy and self.result is not None)
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
