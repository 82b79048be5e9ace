"""Helpers of the napari GUI tests (notifications, docks, the no-TensorFlow check)."""

import sys

PLUGIN = "napari-slads-eds"


def _notes(since=0):
    """Texts of napari's notifications since record ``since``."""
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[since:]]


def _n_notes():
    """How many notifications napari has recorded so far."""
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def _dock(viewer, name):
    """Add the plugin's dock widget ``name``; return the widget."""
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return w


def _no_tensorflow():
    """TensorFlow (and Keras) stay out of the GUI process."""
    assert "tensorflow" not in sys.modules
    assert "keras" not in sys.modules
