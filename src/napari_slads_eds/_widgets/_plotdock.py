"""The Plots dock in the viewer: its height, and spectra of opened files drawn in it.

:class:`SpectrumLayerWatcher` watches a viewer's layers once the session has made its
Plots dock (:meth:`~._session.Session.plots_dock`): a spectrum layer of the plugin's
reader (``metadata["kind"] == "eds_spectrum"``: an EMSA/MSA, ``.spx`` or 1-D ``.hspy``
file) is drawn on the dock's Spectrum tab -- energy (keV) against counts -- when it is
added and whenever it becomes the selected layer.  A spectrum layer added while the dock
is open stays in the layer list as the spectrum's handle, emptied and hidden on the canvas
(its path, channels x scaled counts, would stretch the view of the maps and mix pixel units
with their µm); without the dock the path layer is what shows the spectrum.
"""

from __future__ import annotations

import logging
import weakref

import numpy as np

__all__ = ["SpectrumLayerWatcher", "is_spectrum_layer", "size_plots_dock", "PLOTS_DOCK_HEIGHT"]

log = logging.getLogger(__name__)

#: Height (px) the Plots dock gets when it opens under the workflow dock.
PLOTS_DOCK_HEIGHT = 300


def size_plots_dock(viewer, dock) -> None:
    """Give the Plots dock :data:`PLOTS_DOCK_HEIGHT` px of its column and the rest to the
    docks above it (Qt would otherwise split the column by the docks' size hints, which
    left the workflow dock about 100 px)."""
    try:
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QDockWidget

        window = viewer.window._qt_window
        area = window.dockWidgetArea(dock)
        column = [d for d in window.findChildren(QDockWidget)
                  if d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == area
                  and abs(d.x() - dock.x()) < 5]
        others = [d for d in column if d is not dock]
        total = sum(d.height() for d in column)
        h = min(PLOTS_DOCK_HEIGHT, max(dock.minimumSizeHint().height(), total // 2))
        if others:
            rest = max(0, total - h)
            window.resizeDocks(others + [dock], [rest // len(others)] * len(others) + [h], Qt.Orientation.Vertical)
        else:
            window.resizeDocks([dock], [h], Qt.Orientation.Vertical)
    except (AttributeError, RuntimeError) as exc:   # napari internals changed, or the window is gone
        log.debug("could not size the plot dock: %s", exc)


def is_spectrum_layer(layer) -> bool:
    """A single-spectrum layer of the plugin's reader (counts and energy axis in metadata)."""
    md = getattr(layer, "metadata", None)
    return (isinstance(md, dict) and md.get("kind") == "eds_spectrum" and "counts" in md
            and "energy_axis" in md)


def spectrum_of(layer) -> tuple[np.ndarray, np.ndarray]:
    """Energies (p,) float64 keV and counts (p,) float64 of a spectrum layer.

    Raises
    ------
    InputError
        Not a spectrum layer, or counts that do not match the energy axis.
    """
    from .._validation import InputError
    from ..spectra import EnergyAxis

    if not is_spectrum_layer(layer):
        raise InputError(f"{getattr(layer, 'name', layer)!r} is not a spectrum layer of the SLADS-EDS reader")
    md = layer.metadata
    axis = EnergyAxis.from_dict(md["energy_axis"])
    counts = np.asarray(md["counts"], dtype=np.float64).reshape(-1)
    if counts.size != axis.size:
        raise InputError(f"{layer.name!r}: {counts.size} counts for {axis.size} energy channels")
    return axis.energies, counts


class SpectrumLayerWatcher:
    """Draws a viewer's spectrum layers on a Plots dock's Spectrum tab.

    Parameters
    ----------
    viewer : napari.Viewer
    dock : PlotsDock
        Its ``spectrum`` plot (:class:`~.plots.SpectrumPlot`) is drawn on.

    Attributes
    ----------
    shown : str or None
        Name of the layer last drawn.
    """

    def __init__(self, viewer, dock):
        self._viewer = weakref.ref(viewer)
        self._dock = weakref.ref(dock)
        self.shown: str | None = None
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.selection.events.active.connect(self._on_active)
        dock.destroyed.connect(self.disconnect)
        # spectra opened before the dock: the selected one, else the newest
        active = viewer.layers.selection.active
        layer = active if is_spectrum_layer(active) else \
            next((l for l in reversed(viewer.layers) if is_spectrum_layer(l)), None)
        if layer is not None:
            self.show(layer)

    def disconnect(self, *_):
        v = self._viewer()
        if v is not None:
            for ev, cb in ((v.layers.events.inserted, self._on_inserted),
                           (v.layers.selection.events.active, self._on_active)):
                try:
                    ev.disconnect(cb)
                except (TypeError, ValueError, RuntimeError):
                    pass

    def _on_inserted(self, event) -> None:
        layer = event.value
        if is_spectrum_layer(layer) and self.show(layer):
            self._as_handle(layer)

    def _as_handle(self, layer) -> None:
        """Empty and hide a drawn spectrum layer: it stays in the layer list as the
        spectrum's handle (select it to draw it again), without stretching the view (its
        path spans channels x 256 rows) or mixing its pixel units with calibrated maps."""
        try:
            layer.visible = False
            layer.data = []
            v = self._viewer()
            other = next((l for l in (v.layers if v is not None else []) if l is not layer and l.ndim >= 2
                          and str(l.units[-1]) != "pixel"), None)
            if other is not None:
                layer.units = tuple(other.units[-2:])
        except Exception as exc:   # napari API change: the layer just stays as it is
            log.debug("spectrum layer %r not emptied: %s", layer.name, exc)

    def _on_active(self, event) -> None:
        if is_spectrum_layer(event.value):
            self.show(event.value)

    def show(self, layer) -> bool:
        """Draw ``layer``'s spectrum and bring the Spectrum tab to the front; False when the
        dock is gone or the layer's metadata is not a spectrum (logged, not raised: this
        runs from layer events)."""
        dock = self._dock()
        if dock is None:
            return False
        try:
            e, c = spectrum_of(layer)
            md = layer.metadata
            beam = md.get("beam_energy_keV")
            dock.spectrum.show_spectrum(e, c, title=str(layer.name).replace(" (spectrum)", ""),
                                        xmax_keV=float(beam) if beam and float(beam) < e[-1] else None)
            dock.show_tab("spectrum")
        except Exception as exc:   # InputError, or a deleted Qt widget
            log.debug("spectrum layer %r not drawn: %s", getattr(layer, "name", "?"), exc)
            return False
        self.shown = str(layer.name)
        return True
