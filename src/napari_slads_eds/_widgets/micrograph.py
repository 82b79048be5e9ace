"""Dock widget "Micrograph & phases": an SEM micrograph (Image layer or file) -> a phase
Labels layer (labels 1..L, dark to bright) by multi-Otsu thresholds, with a live histogram
preview of the thresholds.

Core calls: :func:`~napari_slads_eds.segmentation.read_micrograph`,
:func:`~napari_slads_eds.segmentation.to_grey`,
:func:`~napari_slads_eds.segmentation.crop_data_bar`,
:func:`~napari_slads_eds.segmentation.multiotsu_thresholds`,
:func:`~napari_slads_eds.segmentation.segment_phases`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QFileDialog, QFormLayout, QHBoxLayout, QPushButton, QVBoxLayout,
                            QWidget)
from scipy import ndimage as ndi

from .._validation import InputError
from ..segmentation import crop_data_bar, multiotsu_thresholds, read_micrograph, segment_phases, to_grey
from .._sample_data import PHASES_KEY
from .._reader import RUN_KEY
from ._common import LayerCombo, int_spin, layer_data_2d, run_in_thread, set_status, status_label, user_action
from ._run_common import LIVE_KEY, REPLAY_KEY
from ._session import _real
from .plots import HistogramPlot

if TYPE_CHECKING:
    import napari

__all__ = ["MicrographWidget"]

PHASES_LAYER = "phases"
_MAX_PHASES = 6


#: Metadata keys of the plugin's own result layers (a run's mask, ERD, live layers, replay
#: masks): images, but not micrographs to segment.
_RESULT_LAYER_KEYS = (RUN_KEY, LIVE_KEY, REPLAY_KEY)


def _is_micrograph(layer) -> bool:
    """A 2-D grey or RGB Image layer that is not one of the plugin's result layers (and not
    a spectrum image's 3-D energy cube)."""
    from napari.layers import Image

    if not isinstance(layer, Image):
        return False
    md = layer.metadata if isinstance(layer.metadata, dict) else {}
    if any(k in md for k in _RESULT_LAYER_KEYS) or md.get("kind") == "eds_spectrum_cube":
        return False
    return layer.ndim == 2


def _denoise(grey: np.ndarray, size: int) -> np.ndarray:
    return ndi.median_filter(grey, size=int(size), mode="reflect") if size and size > 1 else grey


class MicrographWidget(QWidget):
    """Segment a micrograph into phases.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self.viewer = _real(napari_viewer)
        self._preview_worker = None
        self._preview_again = False
        self._rgb_warned: set[int] = set()
        self.last_thresholds: np.ndarray | None = None
        self.phases_layer = None

        self.image_combo = LayerCombo(self.viewer, _is_micrograph, "(open a micrograph)")
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Read an SEM micrograph (PNG, TIFF, JPEG) as a grey Image layer")
        row = QHBoxLayout()
        row.addWidget(self.image_combo, 1)
        row.addWidget(self.open_button)
        self.crop_spin = int_spin(0, 8192, 0, suffix=" rows",
                                  tip="Rows of the instrument data bar to remove at the bottom")
        self.denoise_spin = int_spin(0, 31, 5, suffix=" px", tip="Median filter before thresholding (0: off)")
        self.smooth_spin = int_spin(0, 15, 3, suffix=" px",
                                    tip="Majority filter on the phase labels (0: off)")
        self.phases_spin = int_spin(1, _MAX_PHASES, 2, tip="Number of phases L (labels 1..L, dark to bright)")
        self.histogram = HistogramPlot()
        self.segment_button = QPushButton("Segment into phases")
        self.status = status_label("")

        form = QFormLayout()
        form.addRow("Micrograph", row)
        form.addRow("Data bar", self.crop_spin)
        form.addRow("Denoise (median)", self.denoise_spin)
        form.addRow("Label smoothing", self.smooth_spin)
        form.addRow("Phases", self.phases_spin)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.histogram)
        lay.addWidget(self.segment_button)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self.update_preview)

        self.open_button.clicked.connect(lambda: self.open_micrograph())
        self.segment_button.clicked.connect(lambda: self.segment())
        self.image_combo.currentIndexChanged.connect(self._on_layer_changed)
        for w in (self.crop_spin, self.denoise_spin, self.phases_spin):
            w.valueChanged.connect(lambda *_: self._debounce.start())
        self._on_layer_changed()

    # ------------------------------------------------------------------ inputs
    def phases_layer_of(self, image_layer):
        """The phase Labels layer already made from ``image_layer`` (by this widget or by the
        "ready to run" sample data), or None."""
        if image_layer is None:
            return None
        return next((l for l in self.viewer.layers if type(l).__name__ == "Labels"
                     and l.metadata.get(PHASES_KEY) and l.metadata.get("source") == image_layer.name), None)

    def _phases_hint(self) -> str:
        existing = self.phases_layer_of(self.image_combo.layer())
        if existing is None:
            return ""
        return (f"\n'{existing.name}' already holds this micrograph's phases: continue with the simulated "
                f"object (step 2).  Segment replaces it.")

    def show_status(self, text: str, error: bool = False) -> None:
        """The status line (errors of this widget's actions are repeated here)."""
        set_status(self.status, text, error)

    def _on_layer_changed(self, *_):
        layer = self.image_combo.layer()
        if layer is not None:
            n = layer.metadata.get("n_phases")
            if isinstance(n, (int, np.integer)) and 1 <= n <= _MAX_PHASES:
                self.phases_spin.setValue(int(n))
        self._debounce.start()

    def _grey(self) -> tuple[np.ndarray, object]:
        """The chosen layer as a grey image with the data bar removed (main thread)."""
        layer = self.image_combo.layer()
        if layer is None:
            raise InputError("choose a micrograph (an Image layer) first, or open a file")
        data = layer_data_2d(layer)
        if data.ndim == 3 and data.shape[-1] in (3, 4) and id(layer) not in self._rgb_warned:
            self._rgb_warned.add(id(layer))   # to_grey warns once per layer
            grey = to_grey(data, name=f"layer {layer.name!r}")
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                grey = to_grey(data, name=f"layer {layer.name!r}")
        return crop_data_bar(grey, self.crop_spin.value()), layer

    # ------------------------------------------------------------------ actions
    @user_action("Open micrograph")
    def open_micrograph(self, path=None):
        """Read a micrograph file into a grey Image layer; returns the layer."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open SEM micrograph", "",
                                                  "Images (*.png *.tif *.tiff *.jpg *.jpeg *.bmp)")
            if not path:
                return None
        img = read_micrograph(path)
        layer = self.viewer.add_image(img, name=Path(path).stem, colormap="gray",
                                      metadata={"source": str(path)})
        self.image_combo.set_layer(layer)
        return layer

    def update_preview(self, start: bool = True):
        """Recompute the histogram and thresholds in a thread (errors go to the status line)."""
        if self._preview_worker is not None:
            self._preview_again = True
            return None
        try:
            grey, layer = self._grey()
        except InputError as exc:
            self.show_status(str(exc))
            return None
        L, size = self.phases_spin.value(), self.denoise_spin.value()

        def compute():
            d = _denoise(grey, size)
            sub = d[:: max(1, d.shape[0] // 256), :: max(1, d.shape[1] // 256)]
            try:
                return sub, multiotsu_thresholds(d, L), None
            except InputError as exc:
                return sub, np.zeros(0), str(exc)

        def done(out):
            sub, th, err = out
            self.histogram.show_histogram(sub, th, f"{layer.name}: {L} phases")
            self.last_thresholds = th
            self.show_status(err or "thresholds: " + ", ".join(f"{t:.4g}" for t in th) + self._phases_hint(),
                             error=bool(err))

        worker = run_in_thread(compute, on_done=done, title="Histogram preview", start=False)
        worker.finished.connect(self._preview_finished)
        self._preview_worker = worker
        if start:
            worker.start()
        return worker

    def _preview_finished(self):
        self._preview_worker = None
        if self._preview_again:
            self._preview_again = False
            self.update_preview()

    @user_action("Segment into phases")
    def segment(self, start: bool = True):
        """Segment the micrograph into the phase Labels layer (in a thread); returns the worker."""
        grey, layer = self._grey()
        L = self.phases_spin.value()
        size, smooth, crop = self.denoise_spin.value(), self.smooth_spin.value(), self.crop_spin.value()
        if min(grey.shape) < 2:
            raise InputError(f"micrograph: expected at least 2x2 pixels, got {grey.shape}")
        self.segment_button.setEnabled(False)
        self.show_status(f"segmenting {layer.name!r} into {L} phases…")

        def compute():
            d = _denoise(grey, size)
            th = multiotsu_thresholds(d, L)
            return th, segment_phases(d, L, denoise_size=0, label_smoothing=smooth, thresholds=th)

        def done(out):
            th, labels = out
            self._add_phases(labels, layer, L, th, crop, size)
            self.show_status(f"{L} phases in '{self.phases_layer.name}', thresholds "
                             + ", ".join(f"{t:.4g}" for t in th) + ".  Next: the simulated object (step 2).")

        worker = run_in_thread(compute, on_done=done, title="Segment into phases", start=False,
                               on_error=lambda exc: self.show_status(f"segmentation failed: {exc}", error=True))
        worker.finished.connect(lambda: self.segment_button.setEnabled(True))
        if start:
            worker.start()
        return worker

    def _add_phases(self, labels, image_layer, L, th, crop, denoise):
        """Add the phase Labels layer, or update the one made earlier from the same image."""
        meta = {"n_phases": int(L), "thresholds": [float(t) for t in th], "source": image_layer.name,
                "crop_bottom": int(crop), "denoise": int(denoise), PHASES_KEY: True}
        kw = {"scale": tuple(image_layer.scale)[-2:], "translate": tuple(image_layer.translate)[-2:]}
        existing = self.phases_layer_of(image_layer)
        if existing is not None:
            existing.data = labels
            existing.metadata = {**existing.metadata, **meta}
            existing.scale, existing.translate = kw["scale"], kw["translate"]
            self.phases_layer = existing
        else:
            self.phases_layer = self.viewer.add_labels(labels, name=PHASES_LAYER, opacity=0.5, metadata=meta, **kw)
        return self.phases_layer
