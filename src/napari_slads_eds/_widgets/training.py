"""Dock widget "Training": the spectrum classifier (NNR detector + 1-D CNN) and the ERD
model, trained in the engine process; saved and loaded.

* Classifier: engine job ``train_classifier`` on the specimen's 24 reference spectra per
  phase (half train, half validation).  Progress per epoch; the validation
  misclassification and the confusion matrix (rows: true label, columns: predicted;
  label 0 = ill-spectrum) are shown.  Saved as a folder (``detector.keras``,
  ``cnn.keras``, ``classifier.json``); a loaded folder is checked without TensorFlow
  (:mod:`._classifier_folder`).
* ERD model: engine job ``train_erd`` on training phase maps: the checked Labels layers,
  or by default the regions of the phase layer that do not overlap the test region.
  Progress over the database and the c search; the chosen c is shown.  Saved as ``.npz``
  (:class:`~napari_slads_eds.erd_models.LinearERD` for SLADS or
  :class:`~napari_slads_eds.erd_models.MLPERD` for SLADS-Net; both load with numpy only).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                            QHeaderView, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                            QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .._validation import InputError, check_label_image
from ..erd_models import load_erd_model
from ..likelihood import classifier_files
from ..segmentation import majority_downsample
from ._classifier_folder import read_classifier_description
from ._common import (LayerCombo, StartupIndicator, float_spin, follow_layers, int_spin, layer_data_2d, set_progress,
                      set_status, status_label, user_action)
from ._session import _real, session_for
from ._specimen_info import specimen_info

if TYPE_CHECKING:
    import napari

__all__ = ["TrainingWidget"]


def _is_specimen_layer(layer) -> bool:
    return specimen_info(layer) is not None


def _is_training_candidate(layer) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels) and specimen_info(layer) is None \
        and not layer.metadata.get("slads_eds_live")


class TrainingWidget(QWidget):
    """Train, save and load the spectrum classifier and the ERD model.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self.viewer = _real(napari_viewer)
        self.session = session_for(self.viewer)
        self._chain: list = []

        self.specimen_combo = LayerCombo(self.viewer, _is_specimen_layer, "(create a simulated object)")
        self.train_list = QListWidget()
        self.train_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.train_list.setMaximumHeight(90)
        self.train_list.setToolTip("Checked Labels layers are the ERD training phase maps.  None checked: "
                                   "the regions of the phase layer that do not overlap the test region.")
        self.train_hint = status_label("")

        # classifier
        self.epochs_spin = int_spin(0, 1000, 0, tip="CNN epochs (the detector runs twice as many); 0: default")
        self.epochs_spin.setSpecialValueText("default (12)")
        self.seed_spin = int_spin(0, 2**31 - 1, 0)
        self.clf_button = QPushButton("Train classifier")
        self.clf_progress = QProgressBar()
        self.clf_progress.setFormat("%p%")
        self.clf_label = status_label("no classifier yet")
        self.confusion = QTableWidget(0, 0)
        self.confusion.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.confusion.setFixedHeight(40)
        self.confusion.verticalHeader().setDefaultSectionSize(20)
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.clf_save = QPushButton("Save…")
        self.clf_load = QPushButton("Load…")

        # ERD
        self.csearch_spin = float_spin(0.01, 0.8, 0.15, step=0.01, decimals=2,
                                       tip="The c search simulates SLADS on a training map up to this "
                                           "sampling fraction (use about the run's target)")
        self.regressor_combo = QComboBox()
        self.regressor_combo.addItem("linear (SLADS)", "linear")
        self.regressor_combo.addItem("MLP (SLADS-Net)", "mlp")
        self.regressor_combo.setToolTip("Least squares on second-order polynomial features, or a small "
                                        "neural network (trained with Keras in the engine)")
        self.erd_button = QPushButton("Train ERD model")
        self.erd_progress = QProgressBar()
        self.erd_label = status_label("no ERD model yet")
        self.erd_save = QPushButton("Save…")
        self.erd_load = QPushButton("Load…")

        self.both_button = QPushButton("Train both")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status = status_label("")
        self.clf_busy = StartupIndicator(self.clf_progress, self.clf_label.setText)
        self.erd_busy = StartupIndicator(self.erd_progress, self.erd_label.setText)

        top = QFormLayout()
        top.addRow("Simulated object", self.specimen_combo)
        top.addRow("Training maps", self.train_list)
        top.addRow("", self.train_hint)
        top.addRow("Seed", self.seed_spin)

        gc = QGroupBox("Spectrum classifier (NNR detector + CNN)")
        fc = QFormLayout(gc)
        fc.addRow("Epochs", self.epochs_spin)
        fc.addRow(self.clf_button)
        fc.addRow(self.clf_progress)
        fc.addRow(self.clf_label)
        fc.addRow(self.confusion)
        r = QHBoxLayout()
        r.addWidget(self.clf_save)
        r.addWidget(self.clf_load)
        fc.addRow(r)

        ge = QGroupBox("ERD model (SLADS)")
        fe = QFormLayout(ge)
        fe.addRow("Regressor", self.regressor_combo)
        fe.addRow("c search up to", self.csearch_spin)
        fe.addRow(self.erd_button)
        fe.addRow(self.erd_progress)
        fe.addRow(self.erd_label)
        r = QHBoxLayout()
        r.addWidget(self.erd_save)
        r.addWidget(self.erd_load)
        fe.addRow(r)

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(gc)
        lay.addWidget(ge)
        r = QHBoxLayout()
        r.addWidget(self.both_button)
        r.addWidget(self.stop_button)
        lay.addLayout(r)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.clf_button.clicked.connect(lambda: self.train_classifier())
        self.erd_button.clicked.connect(lambda: self.train_erd())
        self.both_button.clicked.connect(lambda: self.train_both())
        self.stop_button.clicked.connect(lambda: self.stop())
        self.clf_save.clicked.connect(lambda: self.save_classifier())
        self.clf_load.clicked.connect(lambda: self.load_classifier())
        self.erd_save.clicked.connect(lambda: self.save_erd())
        self.erd_load.clicked.connect(lambda: self.load_erd())
        self.specimen_combo.currentIndexChanged.connect(self._refresh_hint)
        follow_layers(self.viewer, self._refresh_train_list)   # checks follow renamed layers
        self.session.busy_changed.connect(self._on_busy)
        self.session.models_changed.connect(self._show_models)
        self._refresh_train_list()
        self._show_models()
        self._on_busy(self.session.busy)

    # ------------------------------------------------------------------ inputs
    def _refresh_train_list(self, *_):
        try:    # checks follow the layers themselves (their ids), not their names
            checked = {self.train_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.train_list.count())
                       if self.train_list.item(i).checkState() == Qt.CheckState.Checked}
        except RuntimeError:
            return
        self.train_list.clear()
        for layer in self.viewer.layers:
            if _is_training_candidate(layer):
                it = QListWidgetItem(layer.name)
                it.setData(Qt.ItemDataRole.UserRole, id(layer))
                it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                it.setCheckState(Qt.CheckState.Checked if id(layer) in checked else Qt.CheckState.Unchecked)
                self.train_list.addItem(it)
        self._refresh_hint()

    def _refresh_hint(self, *_):
        info = specimen_info(self.specimen_combo.layer())
        if info is None:
            self.train_hint.setText("")
        elif info.train_maps:
            self.train_hint.setText(f"none checked: the {len(info.train_maps)} regions of "
                                    f"'{info.source}' outside the test region")
        else:
            self.train_hint.setText("check the training phase maps (the specimen has no training regions)")

    def set_training_layers(self, names) -> None:
        """Check exactly the Labels layers called ``names``."""
        names = set(names)
        for i in range(self.train_list.count()):
            it = self.train_list.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.text() in names else Qt.CheckState.Unchecked)

    def _info(self):
        info = specimen_info(self.specimen_combo.layer())
        if info is None:
            raise InputError("create the simulated object first (Simulated object widget)")
        return info

    def training_maps(self, info) -> list[np.ndarray]:
        """The ERD training phase maps at the grid's pixel size."""
        ids = [self.train_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.train_list.count())
               if self.train_list.item(i).checkState() == Qt.CheckState.Checked]
        by_id = {id(layer): layer for layer in self.viewer.layers}
        if any(i not in by_id for i in ids):
            self._refresh_train_list()
            raise InputError("a checked training layer is no longer in the viewer; check the training maps again")
        layers = [by_id[i] for i in ids]
        if not layers:
            if not info.train_maps:
                raise InputError("no training phase maps: check one or more Labels layers (phases 1..L) "
                                 "in 'Training maps'; the test object itself must not be used")
            return list(info.train_maps)
        gt = next(l for l in self.viewer.layers if specimen_info(l) is info)
        grid_px = float(gt.scale[-1])
        for layer in layers:
            if layer.name == info.source:
                raise InputError(f"training layer {layer.name!r} is the layer the simulated object was cut from: "
                                 f"the ERD model must not be trained on the test object (uncheck it: with none "
                                 f"checked, its regions outside the test region are used)")
        maps = []
        for layer in layers:
            name = layer.name
            lab = check_label_image(layer_data_2d(layer), info.n_phases, name=f"training layer {name!r}",
                                    allow_zero=False, min_size=8)
            f = max(1, int(round(grid_px / float(layer.scale[-1]))))
            maps.append(majority_downsample(lab, f) if f > 1 else lab)
        return maps

    # ------------------------------------------------------------------ classifier
    @user_action("Train classifier")
    def train_classifier(self, start: bool = True):
        """Train the classifier in the engine; returns the (unstarted with start=False) worker."""
        info = self._info()
        if info.train_references is None:
            raise InputError(f"'{self.specimen_combo.layer().name}' was loaded from a run folder and has no "
                             "training spectra: create the simulated object in the Simulated object widget")
        kwargs = {"references": info.train_references, "out_dir": str(self.session.new_path("classifier")),
                  "seed": self.seed_spin.value()}
        if self.epochs_spin.value() > 0:
            kwargs["epochs"] = self.epochs_spin.value()
        set_progress(self.clf_progress, 0)
        self.show_status("")
        self.clf_busy.start(self._waiting_text(), self._waiting_text(short=True))
        names = list(info.phase_names)
        return self.session.run_job("train_classifier", kwargs, on_message=self._on_clf_message,
                                    on_done=lambda outcome: self._on_clf_done(outcome, names), start=start)

    def _on_clf_message(self, msg):
        if msg.get("type") != "progress" or msg.get("stage") != "classifier":
            return
        self.clf_busy.stop()
        model = {"detector": "detector", "cnn": "CNN"}.get(msg.get("model"), msg.get("model"))
        set_progress(self.clf_progress, msg["done"], msg["total"], f"{model} epoch %v/%m")
        extra = f", accuracy {msg['accuracy']:.4f}" if "accuracy" in msg else ""
        self.clf_label.setText(f"{model}: epoch {msg['done']}/{msg['total']}, loss {msg.get('loss', float('nan')):.4g}{extra}")

    def _on_clf_done(self, outcome, phase_names):
        self.clf_busy.stop()
        if outcome.status != "done":
            self.clf_label.setText(f"classifier training {outcome.status}")
            self._report_outcome("Classifier training", outcome)
            self._chain.clear()
            return
        rep = dict(outcome.result)
        rep["phase_names"] = list(phase_names)
        self.session.set_classifier(rep["path"], rep)
        self._next_in_chain()

    @user_action("Save classifier")
    def save_classifier(self, folder=None):
        src = self.session.classifier_path
        if src is None:
            raise InputError("no classifier to save: train or load one first")
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the classifier into a folder")
            if not folder:
                return None
        dst = Path(folder)
        if dst.resolve() != src.resolve():
            dst.mkdir(parents=True, exist_ok=True)
            for name in classifier_files(src):
                shutil.copy2(src / name, dst / name)
        self.clf_label.setText(f"{self.clf_label.text()}\nsaved to {dst}")
        return dst

    @user_action("Load classifier")
    def load_classifier(self, folder=None):
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Load a classifier folder")
            if not folder:
                return None
        rep = read_classifier_description(folder)
        self.session.set_classifier(Path(folder), rep)
        return rep

    # ------------------------------------------------------------------ ERD
    @user_action("Train ERD model")
    def train_erd(self, start: bool = True):
        info = self._info()
        maps = self.training_maps(info)
        kwargs = {"label_images": maps, "n_phases": info.n_phases,
                  "out_path": str(self.session.new_path("erd_model", ".npz")), "seed": self.seed_spin.value(),
                  "c_search_fraction": self.csearch_spin.value()}
        if self.regressor_combo.currentData() != "linear":
            kwargs["regressor"] = self.regressor_combo.currentData()
        set_progress(self.erd_progress, 0)
        self._c_lines: list[str] = []
        if self.session.engine is None or not self.session.engine.is_alive():
            self.erd_busy.start(f"training on {len(maps)} phase maps: " + self._waiting_text(),
                                self._waiting_text(short=True))
        else:
            self.erd_label.setText(f"training on {len(maps)} phase maps…")
        return self.session.run_job("train_erd", kwargs, on_message=self._on_erd_message,
                                    on_done=self._on_erd_done, start=start)

    def _on_erd_message(self, msg):
        if msg.get("type") != "progress":
            return
        self.erd_busy.stop()
        stage = msg.get("stage")
        fmt = {"erd-database": "database %v/%m", "c-search": "c search %v/%m"}.get(stage, "%v/%m")
        set_progress(self.erd_progress, msg["done"], msg["total"], fmt)
        if stage == "erd-database":
            self.erd_label.setText(f"training database: mask {msg['done']} of {msg['total']}")
        elif stage == "c-search":
            self._c_lines.append(f"c = {msg['c']:g}: area under TD {msg['area']:.4g}")
            self.erd_label.setText("\n".join(self._c_lines))

    def _on_erd_done(self, outcome):
        self.erd_busy.stop()
        if outcome.status != "done":
            self.erd_label.setText(f"ERD training {outcome.status}")
            self._report_outcome("ERD training", outcome)
            self._chain.clear()
            return
        self.session.set_erd(outcome.result["path"], outcome.result)
        self._next_in_chain()

    @user_action("Save ERD model")
    def save_erd(self, path=None):
        src = self.session.erd_path
        if src is None:
            raise InputError("no ERD model to save: train or load one first")
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the ERD model", "erd_model.npz",
                                                  "ERD model (*.npz)")
            if not path:
                return None
        dst = Path(path)
        if dst.suffix != ".npz":
            dst = dst.with_suffix(".npz")
        load_erd_model(src).save(dst)
        self.erd_label.setText(f"{self.erd_label.text()}\nsaved to {dst}")
        return dst

    @user_action("Load ERD model")
    def load_erd(self, path=None):
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load an ERD model", "", "ERD model (*.npz)")
            if not path:
                return None
        model = load_erd_model(path)
        rep = {"c": model.c, "c_search": model.meta.get("c_search", {}), "rows": model.meta.get("rows"),
               "path": str(path), "n_phases": model.meta.get("n_phases"), "regressor": model.kind}
        self.session.set_erd(Path(path), rep)
        return rep

    # ------------------------------------------------------------------ both / stop
    @user_action("Train both")
    def train_both(self, start: bool = True):
        """Train the classifier, then the ERD model; returns the first worker."""
        info = self._info()
        self.training_maps(info)          # fail early on bad training maps
        self._chain = [self.train_erd]
        worker = self.train_classifier(start=start)
        if worker is None:
            self._chain.clear()
        return worker

    def _next_in_chain(self):
        if self._chain:
            self._chain.pop(0)()

    def stop(self):
        """Stop the running training (the engine is restarted if it does not stop within 1 s)."""
        self._chain.clear()
        self.session.stop()

    # ------------------------------------------------------------------ display
    def _waiting_text(self, short: bool = False) -> str:
        e = self.session.engine
        if e is None or not e.is_alive():
            return "starting the engine…" if short else \
                "starting the engine (a separate process that loads TensorFlow)…"
        return "waiting for the engine…"

    def show_status(self, text: str, error: bool = False) -> None:
        """The status line at the bottom (errors of this widget's actions are repeated here)."""
        set_status(self.status, text, error)

    def _report_outcome(self, what: str, outcome) -> None:
        if outcome.status == "error":
            self.show_status(f"{what} failed: {str(outcome.error).rstrip('.')}.", error=True)
        elif outcome.status == "cancelled":
            self.show_status(f"{what} stopped.")

    def _on_busy(self, busy: bool):
        try:
            for b in (self.clf_button, self.erd_button, self.both_button, self.clf_load, self.erd_load):
                b.setEnabled(not busy)
            self.stop_button.setEnabled(busy and self.session.job_name in ("train_classifier", "train_erd"))
        except RuntimeError:  # widget deleted
            pass

    def _show_models(self):
        try:
            s = self.session
            rep = s.classifier_report
            if s.classifier_path is not None:
                self.clf_label.setText(
                    f"misclassification (validation): {rep.get('misclassification', float('nan')):.4f}"
                    f"   threshold T = {rep.get('threshold') or float('nan'):.4g}\n"
                    f"{rep.get('n_train', '?')} training / {rep.get('n_val', '?')} validation spectra, "
                    f"phases: {', '.join(map(str, rep.get('phase_names', [])))}")
                set_progress(self.clf_progress, self.clf_progress.maximum())
                self._show_confusion(rep.get("confusion"), rep.get("phase_names", []))
            if s.erd_path is not None:
                er = s.erd_report
                areas = er.get("c_search") or {}
                kind = {"mlp": "MLP", "linear": "linear", "linear-poly2": "linear"}.get(er.get("regressor"), "")
                lines = [f"chosen c = {float(er.get('c', float('nan'))):g}"
                         + (f", {kind} model" if kind else "")
                         + (f" ({er['rows']} database rows)" if er.get("rows") else "")]
                lines += [f"  c = {float(c):g}: area under TD {float(a):.4g}" for c, a in areas.items()]
                self.erd_label.setText("\n".join(lines))
                set_progress(self.erd_progress, self.erd_progress.maximum())
            if s.classifier_path is not None and s.erd_path is not None:
                self.show_status("Both models are ready.  Next: the sampling run (step 4).")
        except RuntimeError:
            pass

    def _show_confusion(self, conf, names):
        t = self.confusion
        if conf is None:
            t.setRowCount(0)
            t.setColumnCount(0)
            return
        c = np.asarray(conf)
        heads = ["ill"] + [str(n) for n in names][: c.shape[0] - 1]
        heads += [str(i) for i in range(len(heads), c.shape[0])]
        t.setRowCount(c.shape[0])
        t.setColumnCount(c.shape[1])
        t.setHorizontalHeaderLabels([f"→ {h}" for h in heads])
        t.setVerticalHeaderLabels(heads)
        for i in range(c.shape[0]):
            for j in range(c.shape[1]):
                item = QTableWidgetItem(str(int(c[i, j])))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                t.setItem(i, j, item)
        t.setToolTip("confusion matrix on the validation spectra: rows = true label, columns = predicted")
        t.resizeRowsToContents()
        h = t.horizontalHeader().sizeHint().height() + sum(t.rowHeight(i) for i in range(t.rowCount()))
        t.setFixedHeight(h + 2 * t.frameWidth() + 2)
