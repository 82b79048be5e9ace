"""Dock widget "Simulated object": a phase Labels layer -> the simulated EDS specimen
(paper section 3.1) and its ground-truth layer.

The test region (N x N grid pixels, majority-vote down-sampled) is cut as the CLI does
(:func:`~napari_slads_eds.segmentation.split_regions`); the other regions, which never
overlap it, are the default training phase maps.  Each phase gets reference spectra
(a bundled NIST standard or an EMSA/MSA file): 24 noisy realisations per phase for the
classifier, 12 different ones for the specimen.  Clicking a pixel of the ground-truth layer
shows its spectrum on an energy axis in keV (``specimen.measure``, numpy only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QPushButton, QVBoxLayout,
                            QWidget)

from .._validation import InputError, check_label_image
from ..segmentation import Regions, majority_downsample, split_regions
from ..spectra import bundled_standards, default_standards_for, make_reference_spectra, read_spectrum
from ..specimen import SimulatedSpecimen
from ._common import LayerCombo, float_spin, int_spin, layer_data_2d, set_status, status_label, user_action, zoom_to_layers
from ._session import _real, session_for
from ._specimen_info import SPECIMEN_KEY, SpecimenInfo, specimen_info

if TYPE_CHECKING:
    import napari

__all__ = ["SpecimenWidget", "GROUND_TRUTH_LAYER"]

GROUND_TRUTH_LAYER = "ground truth"
REGIONS_LAYER = "regions"
_FILE_ITEM = "Spectrum file…"
#: Reference spectra per phase: 24 for the classifier (train/validation), 12 for the specimen
#: (as in the paper and :func:`napari_slads_eds.pipeline._references`).
N_REFERENCES, N_CLASSIFIER = 36, 24
_REGION_MODES = ("test tile (others train)", "whole layer")


def _is_phase_layer(layer) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels) and specimen_info(layer) is None \
        and not layer.metadata.get("slads_eds_live")


def _ranges(values: list[int]) -> str:
    """[2, 3, 4, 7] -> "2..4, 7"."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(out)


class SpecimenWidget(QWidget):
    """Build the simulated specimen from a phase Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self.viewer = _real(napari_viewer)
        self.session = session_for(self.viewer)
        self.info: SpecimenInfo | None = None

        self.phase_combo = LayerCombo(self.viewer, _is_phase_layer, "(segment a micrograph first)")
        self.phases_spin = int_spin(1, 12, 2, tip="Number of phases L")
        self.region_combo = QComboBox()
        self.region_combo.addItems(_REGION_MODES)
        self.region_combo.setToolTip("Test tile: an N x N region; the other tiles (never overlapping it) "
                                     "train the ERD model.  Whole layer: the layer itself is the test object.")
        self.size_spin = int_spin(8, 2048, 128, suffix=" px", tip="N of the N x N sampling grid")
        self.factor_spin = int_spin(1, 64, 2, tip="Phase-layer pixels per grid pixel (majority vote)")
        self.tile_spin = int_spin(0, 10_000, 0, tip="Which tile (row-major) is the test region")
        self.ill_spin = float_spin(0.0, 0.5, 0.01, step=0.005, decimals=3,
                                   tip="Fraction of pixels that give an ill-spectrum (label 0)")
        self.counts_spin = float_spin(100.0, 1e7, 7500.0, step=500.0, decimals=0,
                                      tip="Expected counts of a reference spectrum (paper: about 7.5k)")
        self.seed_spin = int_spin(0, 2**31 - 1, 0)
        self.refs_box = QGroupBox("Reference spectra per phase")
        self.refs_form = QFormLayout(self.refs_box)
        self.ref_combos: list[QComboBox] = []
        self.create_button = QPushButton("Create simulated object")
        self.status = status_label("")

        form = QFormLayout()
        form.addRow("Phase map", self.phase_combo)
        form.addRow("Phases", self.phases_spin)
        form.addRow("Region", self.region_combo)
        form.addRow("Grid N", self.size_spin)
        form.addRow("Down-sampling", self.factor_spin)
        form.addRow("Test tile", self.tile_spin)
        form.addRow("Ill-spectrum fraction", self.ill_spin)
        form.addRow("Counts per spectrum", self.counts_spin)
        form.addRow("Seed", self.seed_spin)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.refs_box)
        lay.addWidget(self.create_button)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.phase_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.phases_spin.valueChanged.connect(self._rebuild_reference_rows)
        self.region_combo.currentIndexChanged.connect(self._on_region_mode)
        self.create_button.clicked.connect(lambda: self.create_specimen())
        self._on_layer_changed()
        self._rebuild_reference_rows()
        self._on_region_mode()

    # ------------------------------------------------------------------ inputs
    def _on_layer_changed(self, *_):
        layer = self.phase_combo.layer()
        if layer is None:
            return
        n = layer.metadata.get("n_phases")
        if not isinstance(n, (int, np.integer)):
            data = layer_data_2d(layer)
            n = int(data.max()) if data.size and data.ndim == 2 else None
        if n is not None and 1 <= n <= self.phases_spin.maximum():
            self.phases_spin.setValue(int(n))

    def _on_region_mode(self, *_):
        tiles = self.region_combo.currentIndex() == 0
        self.size_spin.setEnabled(tiles)
        self.tile_spin.setEnabled(tiles)

    def _rebuild_reference_rows(self, *_):
        L = self.phases_spin.value()
        try:
            defaults = default_standards_for(L)
        except InputError:
            defaults = [None] * L
        # runs when the phase count changes: every row starts from the documented default
        # (keeping the old picks gave Si, Fe, Fe for 3 phases after a 2-phase sample)
        while self.refs_form.rowCount():
            self.refs_form.removeRow(0)
        self.ref_combos = []
        names = list(bundled_standards())
        for l in range(1, L + 1):
            c = QComboBox()
            if defaults[l - 1] is None:
                c.addItem("(choose)")
            c.addItems(names)
            c.addItem(_FILE_ITEM)
            pick = defaults[l - 1]
            if pick is not None:
                if c.findText(pick) < 0:
                    c.insertItem(c.count() - 1, pick)
                c.setCurrentText(pick)
            c.textActivated.connect(lambda text, combo=c: self._maybe_choose_file(combo, text))
            self.ref_combos.append(c)
            self.refs_form.addRow(f"phase {l}", c)

    def reset_defaults(self) -> None:
        """Every setting back to its documented default (test tile 0 of a 128x128 grid at
        down-sampling 2, 1 % ill-spectra, 7500 counts, seed 0) and the reference spectra to
        ``default_standards_for(L)``; the phase layer and L stay."""
        self.region_combo.setCurrentIndex(0)
        for spin, value in ((self.size_spin, 128), (self.factor_spin, 2), (self.tile_spin, 0),
                            (self.ill_spin, 0.01), (self.counts_spin, 7500.0), (self.seed_spin, 0)):
            spin.setValue(value)
        self._rebuild_reference_rows()

    def _maybe_choose_file(self, combo, text):
        if text != _FILE_ITEM:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Reference spectrum (EMSA/MSA)", "",
                                              "EMSA/MSA spectra (*.msa *.emsa *.txt)")
        if path:
            self.set_reference(self.ref_combos.index(combo) + 1, path)
        else:
            combo.setCurrentIndex(0)

    def set_reference(self, phase: int, spectrum) -> None:
        """Use ``spectrum`` (a bundled standard's name or an .msa path) for phase 1..L."""
        c = self.ref_combos[phase - 1]
        text = str(spectrum)
        if c.findText(text) < 0:
            c.insertItem(c.count() - 1, text)
        c.setCurrentText(text)

    def _reference_files(self) -> tuple[list[Path], list[str]]:
        bundled = bundled_standards()
        paths, names = [], []
        for l, c in enumerate(self.ref_combos, start=1):
            t = c.currentText()
            if t in bundled:
                paths.append(bundled[t])
                names.append(t)
            elif t in ("(choose)", _FILE_ITEM, ""):
                raise InputError(f"choose a reference spectrum for phase {l} (a bundled standard or an "
                                 ".msa file)")
            else:
                paths.append(Path(t))
                names.append(Path(t).stem)
        return paths, names

    # ------------------------------------------------------------------ actions
    @user_action("Simulated object")
    def create_specimen(self):
        """Build the specimen, add the ground-truth layer; returns the layer."""
        layer = self.phase_combo.layer()
        if layer is None:
            raise InputError("choose a phase map (a Labels layer with phases 1..L) first")
        L = self.phases_spin.value()
        labels = check_label_image(layer_data_2d(layer), L, name=f"phase layer {layer.name!r}",
                                   allow_zero=False)
        absent = sorted(set(range(1, L + 1)) - set(np.unique(labels).tolist()))
        if absent:
            raise InputError(f"phase layer {layer.name!r}: labels {_ranges(absent)} do not occur; the phases must "
                             f"be labelled 1..{L} without gaps (relabel the layer, or set Phases to the number "
                             f"of phases it holds)")
        factor = self.factor_spin.value()
        if self.region_combo.currentIndex() == 0:
            N = self.size_spin.value()
            side = N * factor
            nr, nc = labels.shape[0] // side, labels.shape[1] // side
            if nr * nc < 2:
                raise InputError(
                    f"the phase layer ({labels.shape[0]}x{labels.shape[1]}) holds fewer than two "
                    f"{side}x{side} tiles (grid N = {N} at down-sampling {factor}); the test region and "
                    "the training regions must not overlap: lower N or the down-sampling, or choose "
                    "'whole layer' and pick training label layers in the Training widget")
            if self.tile_spin.value() >= nr * nc:
                raise InputError(f"test tile must be in 0..{nr * nc - 1} for this layer, "
                                 f"got {self.tile_spin.value()}")
            reg = split_regions(labels.shape, N, factor=factor, test_index=self.tile_spin.value())
            test_map = majority_downsample(Regions.cut(labels, reg.test), factor)
            train_maps = [majority_downsample(Regions.cut(labels, r), factor) for r in reg.train]
            test_region, train_regions = reg.test, list(reg.train)
        else:
            if factor > min(labels.shape):
                raise InputError(f"down-sampling {factor} is larger than the layer ({labels.shape})")
            test_map = majority_downsample(labels, factor)
            train_maps, test_region, train_regions = [], None, []
        if min(test_map.shape) < 8:
            raise InputError(f"the sampling grid must be at least 8x8 pixels, got {test_map.shape}")
        paths, names = self._reference_files()
        seed = self.seed_spin.value()
        stds = [read_spectrum(p) for p in paths]
        refs = make_reference_spectra(stds, n_per_phase=N_REFERENCES,
                                      counts_per_spectrum=self.counts_spin.value(), seed=seed,
                                      phase_names=names)
        train_refs, test_refs = refs.split(N_CLASSIFIER)
        specimen = SimulatedSpecimen(test_map, test_refs, ill_fraction=self.ill_spin.value(), seed=seed)
        info = SpecimenInfo(
            specimen=specimen, train_references=train_refs, train_maps=train_maps, factor=factor,
            test_region=test_region, train_regions=train_regions, source=layer.name,
            settings={"ill_fraction": self.ill_spin.value(), "counts_per_spectrum": self.counts_spin.value(),
                      "seed": seed, "spectra": [str(p) for p in paths], "phase_names": names,
                      "grid": list(test_map.shape), "downsample": factor})
        gt = self._add_ground_truth(layer, info)
        self._show_regions(layer, info)
        self.info = info
        missing = sorted(set(range(1, L + 1)) - set(np.unique(test_map).tolist()))
        msg = (f"{test_map.shape[0]}x{test_map.shape[1]} grid, {L} phases "
               f"({', '.join(names)}), {int((specimen.labels == 0).sum())} ill-spectrum pixels, "
               f"{len(train_maps)} training regions.  Click a pixel of '{gt.name}' to see its spectrum.")
        if missing:
            msg += f"  Note: phase(s) {missing} do not occur in the test region."
        self.show_status(msg + "  Next: train the models (step 3).")
        self.zoom_to_test_region(gt)
        self._install_spectrum_picker()
        return gt

    def show_status(self, text: str, error: bool = False) -> None:
        """The status line (errors of this widget's actions are repeated here)."""
        set_status(self.status, text, error)

    def zoom_to_test_region(self, gt=None) -> None:
        """Centre the camera on the ground-truth layer (the test region) and fit it to the canvas."""
        gt = gt if gt is not None else next((l for l in self.viewer.layers if specimen_info(l) is not None), None)
        if gt is not None:
            zoom_to_layers(self.viewer, [gt])

    def _add_ground_truth(self, phase_layer, info: SpecimenInfo):
        f = info.factor
        scale = np.asarray(phase_layer.scale[-2:], dtype=float)
        r0, c0 = (info.test_region[:2] if info.test_region else (0, 0))
        translate = np.asarray(phase_layer.translate[-2:], dtype=float) + scale * (
            np.array([r0, c0]) + (f - 1) / 2.0)
        kw = {"scale": tuple(scale * f), "translate": tuple(translate)}
        data = info.specimen.labels.copy()
        existing = next((l for l in self.viewer.layers if specimen_info(l) is not None
                         and l.name == GROUND_TRUTH_LAYER), None)
        if existing is not None:
            existing.data = data
            existing.scale, existing.translate = kw["scale"], kw["translate"]
            existing.metadata = {**existing.metadata, SPECIMEN_KEY: info}
            return existing
        return self.viewer.add_labels(data, name=GROUND_TRUTH_LAYER, metadata={SPECIMEN_KEY: info}, **kw)

    def _show_regions(self, phase_layer, info: SpecimenInfo):
        if info.test_region is None:
            return
        scale = np.asarray(phase_layer.scale[-2:], dtype=float)
        off = np.asarray(phase_layer.translate[-2:], dtype=float) - 0.5 * scale

        def rect(r, c, s):
            p = off + scale * np.array([[r, c], [r, c + s], [r + s, c + s], [r + s, c]], dtype=float)
            return p

        regions = [info.test_region, *info.train_regions]
        shapes = [rect(*r) for r in regions]
        colours = ["#ff4040"] + ["#40c0ff"] * len(info.train_regions)
        existing = next((l for l in self.viewer.layers if l.name == REGIONS_LAYER
                         and type(l).__name__ == "Shapes"), None)
        if existing is not None:
            self.viewer.layers.remove(existing)
        self.viewer.add_shapes(shapes, shape_type="rectangle", edge_color=colours, face_color="transparent",
                               edge_width=max(2.0, float(scale[0]) * 3), name=REGIONS_LAYER, opacity=0.8)

    # ------------------------------------------------------------------ spectrum picker
    def _install_spectrum_picker(self):
        if spectrum_picker not in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.append(spectrum_picker)

    def show_spectrum(self, row: int, col: int):
        """Plot the spectrum of grid pixel (row, col) of the current specimen."""
        layer = next((l for l in self.viewer.layers if specimen_info(l) is not None), None)
        if layer is None:
            raise InputError("create the simulated object first")
        return plot_pixel_spectrum(self.session, specimen_info(layer), row, col)


def spectrum_picker(viewer, event):
    """Viewer mouse callback: a click (press and release without dragging) on a pixel of a
    ground-truth layer plots that pixel's spectrum.  Module-level and closure-free, so the
    viewer holds no reference cycle through it."""
    start = np.asarray(event.position, dtype=float)
    yield
    moved = False
    while event.type == "mouse_move":
        moved = moved or np.abs(np.asarray(event.position, dtype=float) - start).max() > 2
        yield
    if not moved:
        show_spectrum_at_world(viewer, session_for(viewer), event.position)


def show_spectrum_at_world(viewer, session, position):
    """Plot the spectrum under a world position, if it falls on a ground-truth layer."""
    for layer in reversed(list(viewer.layers)):
        info = specimen_info(layer)
        if info is None or not layer.visible:
            continue
        rc = np.round(np.asarray(layer.world_to_data(position), dtype=float)[-2:]).astype(int)
        H, W = info.shape
        if 0 <= rc[0] < H and 0 <= rc[1] < W:
            return plot_pixel_spectrum(session, info, int(rc[0]), int(rc[1]))
    return None


def plot_pixel_spectrum(session, info: SpecimenInfo, row: int, col: int):
    """Measure one pixel of the simulated specimen and plot it (counts vs keV)."""
    spec = info.specimen
    counts = spec.measure([[row, col]])[0]
    lab = int(spec.labels[row, col])
    e = spec.axis.energies
    refs = spec.references.spectra
    nonzero = np.flatnonzero(refs.mean(axis=(0, 1)) > 0)
    xmax = float(e[nonzero[-1]]) + 0.5 if nonzero.size else None
    if lab == 0:
        title, ref = f"pixel ({row}, {col}): ill-spectrum (label 0)", None
    else:
        name = info.phase_names[lab - 1]
        title, ref = f"pixel ({row}, {col}): phase {lab} ({name})", refs[lab - 1].mean(axis=0)
    plot = session.show_plot("spectrum")
    plot.show_spectrum(e, counts, title, reference=ref, xmax_keV=xmax)
    return plot
