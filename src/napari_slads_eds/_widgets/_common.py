"""Small helpers shared by the dock widgets: layer combo boxes, error reporting, spin boxes."""

from __future__ import annotations

import functools
import logging
import warnings
import weakref
from typing import Callable

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QLabel, QSpinBox

from .._validation import InputError, os_error_text

__all__ = ["LayerCombo", "run_in_thread", "set_progress", "user_action", "int_spin", "float_spin", "layer_data_2d", "show_message",
           "status_label", "set_status", "report_to_status", "StartupIndicator"]

log = logging.getLogger(__name__)


def show_message(kind: str, text: str) -> None:
    """A napari notification (kind: "error", "warning" or "info")."""
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[kind](text)


#: Colour of an error in a status line (readable on napari's dark and light themes).
ERROR_COLOUR = "#ff6b6b"


def set_status(label: QLabel, text: str, error: bool = False) -> None:
    """Show ``text`` in a status line; an error in the error colour, prefixed "Error: "."""
    try:
        label.setStyleSheet(f"color: {ERROR_COLOUR};" if error else "")
        label.setText(f"Error: {text}" if error else text)
    except RuntimeError:  # the widget was deleted
        pass


def report_to_status(widget, text: str, error: bool = True) -> None:
    """Repeat a notification in the widget's status line (its ``show_status``, if it has one)."""
    show = getattr(widget, "show_status", None)
    if show is not None:
        try:
            show(text, error=error)
        except RuntimeError:  # the widget was deleted
            pass


def user_action(title: str) -> Callable:
    """Decorate a widget action so that bad input or a failure becomes a napari
    notification with a clear message (never a traceback dialog), repeated in the widget's
    status line (``widget.show_status(text, error=True)``): a notification disappears, the
    status line stays until the next action.

    ``InputError``/``ValueError`` messages are shown as they are; warnings raised during
    the action (e.g. "RGB image converted to grey") are shown as napari warnings.
    The action's return value is passed through (None after an error).
    """

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            error = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                try:
                    out = fn(self, *args, **kwargs)
                except (InputError, ValueError) as exc:
                    error = f"{title}: {exc}"
                    out = None
                except OSError as exc:  # a file or folder that cannot be read or written
                    error = f"{title}: {os_error_text(exc)}"
                    out = None
                except Exception as exc:  # a bug: log it, tell the user in one line
                    log.exception("%s failed", title)
                    error = f"{title} failed: {type(exc).__name__}: {exc}"
                    out = None
            if error is not None:
                show_message("error", error)
                report_to_status(self, error)
            for w in caught:
                if issubclass(w.category, UserWarning):
                    show_message("warning", f"{title}: {w.message}")
            return out

        return wrapper

    return deco


def _spin(w, lo, hi, value, step, suffix: str, tip: str):
    w.setRange(lo, hi)
    w.setSingleStep(step)
    w.setValue(value)
    if suffix:
        w.setSuffix(suffix)
    if tip:
        w.setToolTip(tip)
    return w


def int_spin(lo: int, hi: int, value: int, *, step: int = 1, suffix: str = "", tip: str = "") -> QSpinBox:
    return _spin(QSpinBox(), lo, hi, value, step, suffix, tip)


def float_spin(lo: float, hi: float, value: float, *, step: float = 0.01, decimals: int = 3,
               suffix: str = "", tip: str = "") -> QDoubleSpinBox:
    w = QDoubleSpinBox()
    w.setDecimals(decimals)          # before the range and value, which it rounds
    return _spin(w, lo, hi, value, step, suffix, tip)


def set_progress(bar, value: int, maximum: int | None = None, fmt: str | None = None) -> None:
    """Set a QProgressBar without its synchronous repaint.

    ``QProgressBar.setValue`` repaints at once; in a window holding napari's OpenGL canvas that
    recomposes the whole window (about 0.1 s under Xvfb/llvmpipe) on every call.  With updates
    disabled during the change the repaint is deferred and merged with the next paint.
    """
    bar.setUpdatesEnabled(False)
    try:
        if maximum is not None:
            bar.setMaximum(max(1, int(maximum)))
        if fmt is not None:
            bar.setFormat(fmt)
        bar.setValue(int(value))
    finally:
        bar.setUpdatesEnabled(True)   # schedules an ordinary (asynchronous) update


def status_label(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


def layer_data_2d(layer) -> np.ndarray:
    """The layer's data as a numpy array (level 0 of a multiscale layer)."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return np.asarray(data)


def follow_layers(viewer, refresh: Callable) -> None:
    """Call ``refresh()`` (a widget's bound method) whenever the viewer's layer list changes:
    a layer added, removed, moved or renamed (layers added later are followed too).  Only a
    weak reference to the widget is kept, as napari keeps for bound methods."""
    ref = weakref.WeakMethod(refresh)

    def inserted(event=None):
        method = ref()
        if method is None:              # the widget is gone
            return
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(method)
        method()

    ev = viewer.layers.events
    ev.inserted.connect(inserted)
    ev.removed.connect(refresh)
    ev.moved.connect(refresh)
    for layer in viewer.layers:
        layer.events.name.connect(refresh)


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers that pass ``accept(layer)``; follows the layer list.

    Parameters
    ----------
    viewer : napari.Viewer
    accept : callable(layer) -> bool
    placeholder : str
        Shown when no layer qualifies.
    """

    def __init__(self, viewer, accept: Callable, placeholder: str = "(no layer)", parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self._accept = accept
        self._placeholder = placeholder
        self._layers: list = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)    # narrow docks: long names are elided, full in the tooltip
        self.currentIndexChanged.connect(lambda *_: self.setToolTip(self.currentText()))
        follow_layers(viewer, self.refresh)
        self.refresh()

    def refresh(self, event=None) -> None:
        try:
            current = self.layer()
        except RuntimeError:  # deleted widget
            return
        layers = [l for l in reversed(list(self.viewer.layers)) if self._accept(l)]
        self.blockSignals(True)
        self.clear()
        self._layers = layers
        if layers:
            for i, l in enumerate(layers):
                self.addItem(l.name)
                self.setItemData(i, l.name, Qt.ItemDataRole.ToolTipRole)
            idx = next((i for i, l in enumerate(layers) if l is current), 0)
            self.setCurrentIndex(idx)
        else:
            self.addItem(self._placeholder)
        self.blockSignals(False)
        self.setToolTip(self.currentText())
        if (layers[self.currentIndex()] if layers else None) is not current:
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self):
        """The chosen layer, or None."""
        i = self.currentIndex()
        if not self._layers or i < 0 or i >= len(self._layers):
            return None
        return self._layers[i]

    def set_layer(self, layer) -> None:
        self.refresh()
        for i, l in enumerate(self._layers):
            if l is layer:
                self.setCurrentIndex(i)


def run_in_thread(fn: Callable, *, on_done: Callable, title: str, start: bool = True,
                  on_error: Callable | None = None):
    """Run ``fn()`` (numpy work, no Qt) in a napari thread_worker; ``on_done(value)`` runs in
    the main thread.  A failure becomes a notification ("<title>: <message>"), not a
    traceback, and ``on_error(exc)`` (e.g. to reset a status line) runs in the main thread.
    Returns the worker (unstarted with ``start=False``)."""
    from napari.qt.threading import create_worker

    def guarded():
        try:
            return True, fn()
        except Exception as exc:  # reported in the main thread
            return False, exc

    def done(out):
        ok, value = out
        if ok:
            try:
                on_done(value)
            except RuntimeError as exc:   # the widget was closed while the thread ran
                if "deleted" not in str(exc):
                    raise
                log.debug("%s finished after its widget was closed", title)
        else:
            if isinstance(value, ValueError):
                show_message("error", f"{title}: {value}")
            else:
                log.error("%s failed", title, exc_info=value)
                show_message("error", f"{title} failed: {type(value).__name__}: {value}")
            if on_error is not None:
                try:
                    on_error(value)
                except RuntimeError:      # the widget was closed meanwhile
                    pass

    worker = create_worker(guarded, _start_thread=False)
    worker.returned.connect(done)
    if start:
        worker.start()
    return worker


class StartupIndicator:
    """A busy indicator for the seconds before an engine job reports anything (the engine
    process starting: it imports TensorFlow, about 5-10 s on 2 cores).

    The progress bar shows ``text`` and the elapsed seconds, with a turning mark, updated
    once a second (an animated "busy" QProgressBar repaints the whole window many times a
    second, which with software OpenGL takes CPU from the engine that is starting);
    ``show(text)`` (e.g. a status line setter) gets the same text.  :meth:`stop` (call it
    on the job's first message and when it ends) restores the bar's format.

    Parameters
    ----------
    bar : QProgressBar
    show : callable(str) or None
    """

    _MARKS = "◐◓◑◒"

    def __init__(self, bar, show: Callable | None = None):
        from qtpy.QtCore import QTimer

        self.bar = bar
        self._show = show
        self._timer = QTimer(bar)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)
        self._t0 = 0.0
        self._text = ""
        self._format = bar.format()
        self.ticks = 0

    @property
    def active(self) -> bool:
        try:
            return self._timer.isActive()
        except RuntimeError:
            return False

    def start(self, text: str, bar_text: str = "starting the engine…") -> None:
        """Show ``text`` (through ``show``) and the short ``bar_text`` in the bar, with the
        seconds elapsed, until :meth:`stop`."""
        import time

        if not self.active:
            self._format = self.bar.format()
        self._t0 = time.perf_counter()
        self._text = text
        self._bar_text = bar_text
        self.ticks = 0
        self._timer.start()
        self._tick()

    def _tick(self) -> None:
        import time

        try:
            s = int(time.perf_counter() - self._t0)
            mark = self._MARKS[self.ticks % len(self._MARKS)]
            self.ticks += 1
            set_progress(self.bar, 0, fmt=f"{mark} {self._bar_text} {s} s")
            if self._show is not None:
                self._show(f"{mark} {self._text} {s} s")
        except RuntimeError:  # the widget was deleted
            self._timer.stop()

    def stop(self) -> None:
        try:
            if self._timer.isActive():
                self._timer.stop()
                set_progress(self.bar, self.bar.value(), fmt=self._format)
        except RuntimeError:
            pass


def zoom_to_layers(viewer, layers, margin: float = 0.05) -> None:
    """Centre the camera on ``layers`` and zoom so that they fill the canvas (in grid mode
    every viewbox of the grid, which share one camera)."""
    layers = [l for l in layers if l is not None]
    if layers:
        viewer.fit_to_view(layers=layers, margin=margin)   # in grid mode: fits one viewbox
