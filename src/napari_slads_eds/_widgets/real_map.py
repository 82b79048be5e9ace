"""Dock widget "Replay a real map": SLADS replayed on an acquired spectrum image, live.

Open a map with the plugin's reader (Bruker ``.bcf``, ``.hspy``, this project's ``.npz``,
...): its total-counts layer carries the spectra.  This widget replays SLADS on it as
``slads-eds replay`` does (:mod:`napari_slads_eds.replay`: ground truth by clustering the
full-dwell spectra, count splitting, the Poisson classifier with spatial decisions, the
ERD trained on the map's own electron image) and shows the run live -- measurement mask,
reconstruction and ERD -- over the map's electron (BSE) image.  The whole replay is one
engine job (``replay``); the GUI process never imports TensorFlow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (QCheckBox, QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                            QVBoxLayout, QWidget)

from .._reader import RUN_KEY
from .._validation import InputError
from ._common import LayerCombo, float_spin, int_spin, set_progress, set_status, status_label, user_action
from ._session import _real, session_for

if TYPE_CHECKING:
    import napari

__all__ = ["RealMapWidget", "is_spectrum_image_layer"]

#: Names of the live layers of a replay.
LIVE = ("replay mask", "replay reconstruction", "replay ERD")


def is_spectrum_image_layer(layer) -> bool:
    """A total-counts layer of this plugin's reader (its metadata carries the spectra)."""
    md = getattr(layer, "metadata", None)
    return isinstance(md, dict) and "spectra" in md and "energy_axis" in md


class RealMapWidget(QWidget):
    """Replay SLADS on an opened spectrum image, with the run shown live over its electron image.

    Attributes
    ----------
    map_combo : LayerCombo of spectrum-image layers
    phases, fraction, dwell, seed : the replay's settings
    last_result : dict or None
        The finished replay (as ``slads-eds replay``'s ``result.json``, plus arrays).
    out_dir : Path or None
        Where the last replay was written.
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self.viewer = _real(napari_viewer)
        self.session = session_for(self.viewer)
        self.last_result = None
        self.out_dir = None
        self._mask = None
        self._t0 = 0.0

        self.map_combo = LayerCombo(self.viewer, is_spectrum_image_layer,
                                    "(open a spectrum image: File ▸ Open, .bcf/.hspy/.npz)")
        self.phases = int_spin(1, 12, 2, tip="number of phases L of the map")
        self.fraction = float_spin(0.01, 1.0, 0.2, step=0.05, decimals=2,
                                   tip="sampling fraction at which the replay stops")
        self.dwell = float_spin(0.05, 0.8, 0.8, step=0.05, decimals=2,
                                tip="dwell per position as a fraction of the acquired one (20 % of the counts "
                                    "train the classifier, so at most 0.8); shorter dwells are emulated by "
                                    "binomial thinning")
        self.seed = int_spin(0, 2**31 - 1, 0, tip="random seed of the count split, clustering and training")
        self.show_erd = QCheckBox("show the ERD map")
        form = QFormLayout()
        form.addRow("spectrum image", self.map_combo)
        form.addRow("phases L", self.phases)
        form.addRow("sampled", self.fraction)
        form.addRow("dwell (× acquired)", self.dwell)
        form.addRow("seed", self.seed)
        form.addRow("", self.show_erd)

        self.start_button = QPushButton("Replay SLADS")
        self.start_button.setToolTip("ground truth by clustering the full map, classifier on 20 % of the counts, "
                                     "then SLADS and the static scans on the rest")
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(lambda: self.session.stop())
        self.stop_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.status = status_label("Open a map, choose L and press Replay SLADS.")
        lay = QVBoxLayout(self)
        intro = QLabel("Replay SLADS on an acquired spectrum image: how much dose would it have saved?")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addStretch(1)
        self.session.busy_changed.connect(self._on_busy)
        self.show_erd.toggled.connect(self._on_show_erd)

    # ------------------------------------------------------------------ actions
    def show_status(self, text: str, error: bool = False) -> None:
        set_status(self.status, text, error)

    def electron_layer(self, layer=None):
        """The electron-image layer that came with the map (BSE preferred), or None."""
        layer = layer or self.map_combo.layer()
        if layer is None:
            return None
        base = str(layer.metadata.get("name") or layer.name.replace(" (total counts)", ""))
        for key in ("BSE", "bse", "SE", "se"):
            for l in self.viewer.layers:
                if l.name == f"{base} {key}":
                    return l
        return None

    @user_action("Replay")
    def start(self, start: bool = True):
        """Prepare the replay (in the worker thread) and run it in the engine.

        Raises (shown as a notification)
        ------
        InputError
            No spectrum-image layer, the engine busy, bad settings.
        """
        from ..eds_io import spectrum_image_from_layer
        from ..replay import ReplaySettings, prepare_replay

        layer = self.map_combo.layer()
        if layer is None:
            raise InputError("no spectrum image: open a map (.bcf, .hspy, .npz ...) with the napari-slads-eds "
                             "reader first")
        si = spectrum_image_from_layer(layer.metadata, layer.name)
        settings = ReplaySettings(fraction=float(self.fraction.value()), seed=int(self.seed.value()),
                                  dwell=float(self.dwell.value())).check()
        L = int(self.phases.value())
        out = self.session.new_path("replay")
        kwargs = {"out_dir": str(out), "export": False}

        def prepare():
            kwargs["experiment"] = prepare_replay(si, L, settings)   # numpy clustering and count split

        self.out_dir = out
        self.last_result = None
        self._prepare_layers(layer, si.shape)
        self._t0 = time.perf_counter()
        self.show_status(f"Replay of {layer.name}: clustering the full map for the ground truth, "
                         f"training on 20 % of the counts …")
        set_progress(self.progress, 0, 1, "preparing …")
        return self.session.run_job("replay", kwargs, on_message=self._on_message, on_done=self._on_done,
                                    start=start, prepare=prepare)

    # ------------------------------------------------------------------ layers
    def _prepare_layers(self, layer, shape) -> None:
        """Live layers over the map's electron image (shown, under them), camera on the map."""
        H, W = shape
        scale = tuple(layer.scale[-2:])
        units = tuple(str(u) for u in layer.units[-2:])    # the map's (µm): no mixed-units warning
        el = self.electron_layer(layer)
        if el is not None:
            el.visible = True
            el.opacity = 1.0
        layer.visible = False
        self._mask = np.zeros((H, W), dtype=np.uint8)
        # the mask as bright dots and the reconstruction as phase outlines, so that the electron
        # image stays readable under them
        # metadata[RUN_KEY]: the layers' roles, for the writer (File > Save Selected Layers)
        spec = {"replay mask": (self._mask, dict(colormap="magenta", blending="additive", opacity=1.0,
                                                 contrast_limits=(0, 1), metadata={RUN_KEY: "mask"})),
                "replay reconstruction": (np.zeros((H, W), np.int16),
                                          dict(opacity=1.0, metadata={RUN_KEY: "reconstruction"})),
                "replay ERD": (np.zeros((H, W), np.float32), dict(colormap="inferno", opacity=0.6,
                                                                   visible=self.show_erd.isChecked(),
                                                                   metadata={RUN_KEY: "erd"}))}
        for name in ("replay reconstruction", "replay ERD", "replay mask"):
            data, kw = spec[name]
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            if name == "replay reconstruction":
                lab = self.viewer.add_labels(data, name=name, scale=scale, units=units, **kw)
                lab.contour = 1
            else:
                self.viewer.add_image(data, name=name, scale=scale, units=units, **kw)
        self.viewer.reset_view()

    def _on_show_erd(self, on: bool) -> None:
        if "replay ERD" in self.viewer.layers:
            self.viewer.layers["replay ERD"].visible = bool(on)

    # ------------------------------------------------------------------ messages
    def _on_message(self, msg: dict) -> None:
        t = msg.get("type")
        if t == "progress":
            stage = msg.get("stage", "")
            set_progress(self.progress, msg.get("done", 0), msg.get("total") or 1, f"{stage} %v/%m")
        elif t == "frame":
            self._apply_frame(msg)

    def _apply_frame(self, msg: dict) -> None:
        pos = np.asarray(msg.get("positions", np.zeros((0, 2))), dtype=np.int64).reshape(-1, 2)
        if self._mask is not None and pos.size:
            self._mask[pos[:, 0], pos[:, 1]] = 1
            if "replay mask" in self.viewer.layers:
                self.viewer.layers["replay mask"].data = self._mask
        if msg.get("reconstruction") is not None and "replay reconstruction" in self.viewer.layers:
            self.viewer.layers["replay reconstruction"].data = np.asarray(msg["reconstruction"])
        if msg.get("erd") is not None and "replay ERD" in self.viewer.layers:
            e = np.nan_to_num(np.asarray(msg["erd"], np.float32), nan=0.0)
            lay = self.viewer.layers["replay ERD"]
            lay.data = e
            if e.max() > e.min():
                lay.contrast_limits = (float(e.min()), float(e.max()))
        n, target = int(msg.get("n_measured", 0)), int(msg.get("target", 1) or 1)
        td = msg.get("td")
        set_progress(self.progress, n, target, "SLADS %v/%m spectra")
        self.show_status(f"{100 * msg.get('fraction', 0):.1f} % sampled, TD (in the loop) "
                         f"{'n/a' if td is None else f'{td:.4f}'}")

    def _on_done(self, outcome) -> None:
        if outcome.status != "done":
            if outcome.status == "error":
                self.show_status(f"Replay failed: {outcome.error}", error=True)
            else:
                self.show_status("Replay stopped; nothing was written." if outcome.status == "cancelled"
                                 else "Replay ended with the viewer.")
            return
        r = outcome.result
        self.last_result = r
        if "replay reconstruction" in self.viewer.layers:
            self.viewer.layers["replay reconstruction"].data = np.asarray(r["reconstruction"])
        if "replay mask" in self.viewer.layers:
            self._mask = np.asarray(r["mask"], np.uint8)
            self.viewer.layers["replay mask"].data = self._mask
        if "ground truth" not in [l.name for l in self.viewer.layers] and r.get("ground_truth") is not None:
            self.viewer.add_labels(np.asarray(r["ground_truth"]), name="replay ground truth",
                                   scale=self.viewer.layers["replay mask"].scale, visible=False)
        d = r.get("dose") or {}
        set_progress(self.progress, 1, 1, "done")
        self.show_status(
            f"TD SLADS {r['td']:.4f} at {100 * r['sampling_fraction']:.0f} % sampled, against random "
            f"{r.get('td_random', float('nan')):.4f} and Halton {r.get('td_halton', float('nan')):.4f} "
            f"(same dose); dose {100 * d.get('fraction_of_full_raster', float('nan')):.1f} % of a full raster; "
            f"in-run misclassification {r.get('misclassification_run') or float('nan'):.3f} "
            f"(validation {r.get('misclassification', float('nan')):.3f}). Files in {Path(str(self.out_dir))}.")

    def _on_busy(self, busy: bool) -> None:
        try:
            self.start_button.setEnabled(not busy)
            self.stop_button.setEnabled(busy and self.session.job_name == "replay")
        except RuntimeError:
            pass
