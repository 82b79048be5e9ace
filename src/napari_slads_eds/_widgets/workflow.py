"""Dock widget "SLADS-EDS workflow": the four steps in one dock, as tabs.

``napari -w napari-slads-eds`` opens the plugin's first widget, which is this one; the steps
are also available as separate docks (Plugins menu, or
``napari -w napari-slads-eds __all__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ._session import _real
from .micrograph import MicrographWidget
from .real_map import RealMapWidget
from .sampling import SamplingWidget
from .specimen import SpecimenWidget
from .training import TrainingWidget

if TYPE_CHECKING:
    import napari

__all__ = ["WorkflowWidget"]

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
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tabs)

    def show_step(self, index: int) -> None:
        """Bring step 0..3 to the front."""
        self.tabs.setCurrentIndex(index)
