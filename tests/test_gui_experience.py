"""GUI tests of the teaching/inspection experience (issue 16): correct state when samples
change, feedback (Start gating, errors in the status lines, TD plot of earlier runs, time
left), a layout that holds (one Plots dock, run controls never scrolled away) and the
camera on the test region.  No engine: the models are numpy-made stand-ins (a classifier
folder is only read for its classifier.json in the GUI process).

Runs in a real napari window (1600 x 1000 under Xvfb) where the layout is tested.
"""

import json
import sys

import numpy as np
import pytest
from _gui_helpers import _n_notes, _notes

pytestmark = pytest.mark.gui

PLUGIN = "napari-slads-eds"


def _no_tensorflow():
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


@pytest.fixture
def window(make_napari_viewer, qtbot):
    """A shown viewer of 1600 x 1000 with the workflow dock."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    _, wf = viewer.window.add_plugin_dock_widget(PLUGIN)
    qtbot.wait(50)
    return viewer, wf


@pytest.fixture
def stand_in_models(tmp_path):
    """A 2-phase classifier folder (classifier.json; the Keras files are placeholders, never
    loaded here) and a linear ERD model made with numpy."""
    from napari_slads_eds.erd_models import LinearERD

    clf = tmp_path / "classifier"
    clf.mkdir()
    for name in ("detector.keras", "cnn.keras"):
        (clf / name).write_bytes(b"placeholder")
    (clf / "classifier.json").write_text(json.dumps({
        "phase_names": ["Si", "Fe"], "axis": {"offset_keV": 0.0, "scale_keV": 0.01, "size": 2048},
        "threshold": 0.1, "report": {"misclassification": 0.0}}))
    rng = np.random.default_rng(0)
    erd = tmp_path / "erd.npz"
    LinearERD(rng.normal(size=28), np.zeros(6), np.ones(6), c=4.0, meta={"n_phases": 2}).save(erd)
    return clf, erd


def _create(wf, size=32, factor=4):
    sw = wf.specimen
    sw.size_spin.setValue(size)
    sw.factor_spin.setValue(factor)
    return sw.create_specimen()


# ----------------------------------------------------------------------------- correct state

def test_reference_spectra_reset_to_the_defaults_when_the_phase_count_changes(window):
    from napari_slads_eds.spectra import default_standards_for

    viewer, wf = window
    sw = wf.specimen
    viewer.open_sample(PLUGIN, "gold_ready")
    assert [c.currentText() for c in sw.ref_combos] == list(default_standards_for(2))
    sw.set_reference(1, "Fe")                          # a user's pick, kept while L stays 2
    sw.factor_spin.setValue(4)
    assert [c.currentText() for c in sw.ref_combos][0] == "Fe"

    viewer.open_sample(PLUGIN, "glass_ready")          # 3 phases: the 3-phase defaults
    sw.phase_combo.set_layer(viewer.layers[-1])
    assert sw.phases_spin.value() == 3
    expected = list(default_standards_for(3))
    assert [c.currentText() for c in sw.ref_combos] == expected
    assert len(set(expected)) == 3
    gt = _create(wf, size=64, factor=4)
    assert gt is not None                               # was "phases 2 and 3 have the same reference spectrum"
    from napari_slads_eds._widgets._specimen_info import specimen_info

    assert list(specimen_info(gt).phase_names) == expected
    sw.phases_spin.setValue(2)                          # and back
    assert [c.currentText() for c in sw.ref_combos] == list(default_standards_for(2))
    _no_tensorflow()


def test_segment_on_a_ready_sample_updates_its_phase_layer(window, qtbot):
    viewer, wf = window
    viewer.open_sample(PLUGIN, "gold_ready")
    mw = wf.micrograph
    ready = viewer.layers["phases"]
    assert mw.phases_layer_of(mw.image_combo.layer()) is ready
    worker = mw.update_preview(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    assert "already holds this micrograph's phases" in mw.status.text()
    before = ready.data.copy()
    mw.smooth_spin.setValue(0)                          # a different segmentation...
    worker = mw.segment(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    labels = [l for l in viewer.layers if type(l).__name__ == "Labels"]
    assert labels == [ready]                            # ... replaces the sample's layer, no "phases [1]"
    assert mw.phases_layer is ready and not np.array_equal(ready.data, before)
    tl = wf.training
    assert [tl.train_list.item(i).text() for i in range(tl.train_list.count())] == ["phases"]
    _no_tensorflow()


# ----------------------------------------------------------------------------- feedback

def test_start_is_disabled_until_object_and_models_exist_with_the_reason_as_tooltip(window, stand_in_models):
    viewer, wf = window
    rw, tw = wf.sampling, wf.training
    assert not rw.start_button.isEnabled()
    assert "simulated object" in rw.start_button.toolTip()
    viewer.open_sample(PLUGIN, "gold_ready")
    assert _create(wf) is not None
    assert not rw.start_button.isEnabled()
    tip = rw.start_button.toolTip()
    assert "spectrum classifier" in tip and "ERD model" in tip and "Training" in tip
    assert tw.load_classifier(stand_in_models[0]) is not None
    assert not rw.start_button.isEnabled()
    assert "spectrum classifier" not in rw.start_button.toolTip() and "ERD model" in rw.start_button.toolTip()
    assert tw.load_erd(stand_in_models[1]) is not None
    assert rw.start_button.isEnabled() and "Start the run" in rw.start_button.toolTip()
    assert "Next: the sampling run" in tw.status.text()
    viewer.layers.remove(viewer.layers["ground truth"])   # the object gone: disabled again
    assert not rw.start_button.isEnabled() and "simulated object" in rw.start_button.toolTip()
    _no_tensorflow()


def test_every_error_is_repeated_in_the_tabs_status_line(window, stand_in_models):
    viewer, wf = window
    mw, sw, tw, rw, _ = wf.steps
    n0 = _n_notes()
    assert mw.segment() is None
    assert tw.train_classifier() is None
    assert rw.start() is None
    assert rw.save() is None
    viewer.open_sample(PLUGIN, "gold_ready")
    sw.size_spin.setValue(512)
    assert sw.create_specimen() is None
    notes = _notes(n0)
    assert len(notes) == 5, notes
    # each notification's text, in the status line of the widget whose action failed
    assert mw.status.text() == f"Error: {notes[0]}"
    assert tw.status.text() == f"Error: {notes[1]}"
    assert rw.status.text() == f"Error: {notes[3]}"        # the later of the two
    assert sw.status.text() == f"Error: {notes[4]}" and "fewer than two" in notes[4]
    assert "color" in sw.status.styleSheet()
    sw.size_spin.setValue(32)
    sw.factor_spin.setValue(4)
    assert sw.create_specimen() is not None                 # success: a normal status again
    assert not sw.status.text().startswith("Error") and sw.status.styleSheet() == ""
    assert "Next: train the models" in sw.status.text()
    _no_tensorflow()


def test_td_plot_keeps_earlier_runs_greyed(qtbot):
    from napari_slads_eds._widgets.plots import EARLIER_RUNS, TDCurvePlot

    td = TDCurvePlot()
    qtbot.addWidget(td)
    td.clear(target_fraction=0.1)
    assert td.earlier == [] and td.earlier_lines == []
    runs = []
    for r in range(EARLIER_RUNS + 2):
        x = np.linspace(0.01, 0.1 + 0.01 * r, 20)
        y = 0.2 * np.exp(-30 * x) + 0.001 * r
        for a, b in zip(x, y):
            td.append(a, b)
        runs.append((100 * x, y))
        td.clear(target_fraction=0.1)
        n = min(r + 1, EARLIER_RUNS)
        assert len(td.earlier_lines) == n and td.slads_points == 0
        xd, yd = td.earlier_lines[-1].get_data()
        np.testing.assert_allclose(xd, runs[-1][0])          # the run just finished, in grey
        np.testing.assert_allclose(yd, runs[-1][1])
        assert td.earlier_lines[-1].get_color() == "#9a9a9a"
        assert td.earlier_lines[-1].get_label() == "earlier runs"
    np.testing.assert_allclose(td.earlier_lines[0].get_data()[0], runs[-EARLIER_RUNS][0])  # the oldest dropped
    assert td.ax.get_xlim()[1] >= runs[-1][0].max()          # an earlier, longer run stays in view
    td.clear(target_fraction=0.1)                            # a run without points adds nothing
    assert len(td.earlier_lines) == EARLIER_RUNS


def test_time_left_only_after_a_few_seconds_of_rate():
    from napari_slads_eds._widgets.sampling import TIME_LEFT_AFTER, time_left

    # the initial 1 % arrives at once: no estimate from it
    assert time_left(0.0, 0, 0.1, 160, 2458) is None
    assert time_left(0.0, 160, TIME_LEFT_AFTER - 0.01, 500, 2458) is None
    assert time_left(0.0, 160, TIME_LEFT_AFTER + 1, 160, 2458) is None         # no progress
    left = time_left(0.0, 160, 4.0, 560, 2460)                                # 100 / s
    assert left == pytest.approx(19.0)
    assert time_left(0.0, 0, 10.0, 3000, 2458) == 0.0


# ----------------------------------------------------------------------------- layout and view

def _fully_visible(w) -> bool:
    """Shown, and its whole rectangle inside every ancestor's (no scroll area or dock cuts it)."""
    from qtpy.QtCore import QPoint, QRect

    if not w.isVisible() or w.width() == 0 or w.height() == 0:
        return False
    p = w.parentWidget()
    while p is not None:
        top_left = w.mapTo(p, QPoint(0, 0))
        if not p.rect().contains(QRect(top_left, w.size())):
            return False
        p = p.parentWidget()
    return True


def test_plots_are_tabs_of_one_dock_and_the_run_controls_stay_in_view(window, qtbot):
    from napari_slads_eds._widgets._session import session_for
    from napari_slads_eds._widgets.specimen import show_spectrum_at_world

    viewer, wf = window
    viewer.open_sample(PLUGIN, "gold_ready")
    gt = _create(wf)
    wf.show_step(3)
    rw = wf.sampling
    qtbot.wait(100)
    s = session_for(viewer)
    # a click on a pixel opens the Plots dock on its Spectrum tab
    plot = show_spectrum_at_world(viewer, s, tuple(gt.data_to_world((5, 7))))
    qtbot.wait(600)                        # the dock is sized once it is laid out
    dock = s.plots_dock()
    assert plot is dock.spectrum and dock.tabs.currentWidget() is dock.spectrum
    assert s.plot("td") is dock.td and dock.tabs.count() == 2
    assert [dock.tabs.tabText(i) for i in range(2)] == ["TD curve", "Spectrum"]
    docks = [d for d in viewer.window._qt_window.findChildren(type(dock.parent()))
             if d.widget() is not None and d.isVisible()]
    assert len([d for d in docks if d.widget() is dock or dock in d.findChildren(type(dock))]) == 1
    assert dock.spectrum.canvas.height() >= 200 and dock.td.canvas.minimumHeight() >= 200
    # the run controls and the status line are fully visible, not scrolled away
    assert dock.parent().height() <= 320 and wf.height() > 500     # the workflow keeps most of the column
    controls = (rw.start_button, rw.pause_button, rw.stop_button, rw.progress, rw.status, rw.resume_button,
                rw.save_button, rw.replay_button, rw.replay_folder_button, rw.movie_button)
    for w in controls:
        assert _fully_visible(w), w
    rw.show_status("a long status line " * 20, error=True)     # five lines: the settings give way
    qtbot.wait(100)
    for w in controls:
        assert _fully_visible(w), w
    s.show_plot("td")
    assert dock.tabs.currentWidget() is dock.td
    # no step is wider than its tab: nothing cut off at the right, no horizontal scrolling
    for i in range(wf.tabs.count()):
        wf.show_step(i)
        qtbot.wait(300)
        area = wf.tabs.widget(i)
        if area is rw:      # no scroll area around the Run tab: its settings area scrolls
            area = rw.settings_area
        assert area.widget().width() <= area.viewport().width(), wf.tabs.tabText(i)
    _no_tensorflow()


def _visible_world_rect(viewer):
    """(row0, col0, row1, col1) of the world area one canvas viewbox shows."""
    cam = viewer.scene.camera
    h, w = viewer.canvas.size
    cy, cx = cam.center[-2:]
    return cy - h / (2 * cam.zoom), cx - w / (2 * cam.zoom), cy + h / (2 * cam.zoom), cx + w / (2 * cam.zoom)


def test_create_puts_the_camera_on_the_test_region(window, qtbot):
    viewer, wf = window
    viewer.open_sample(PLUGIN, "gold_ready")
    viewer.reset_view()
    qtbot.wait(50)
    gt = _create(wf, size=32, factor=4)            # a 128 x 128 px corner of a 1024-wide micrograph
    qtbot.wait(50)
    (r0, c0), (r1, c1) = gt.extent.world[:, -2:]
    v0, u0, v1, u1 = _visible_world_rect(viewer)
    assert v0 <= r0 and u0 <= c0 and v1 >= r1 and u1 >= c1          # all of it in view
    # and it fills the canvas (not a small corner of the whole micrograph)
    assert max((r1 - r0) / (v1 - v0), (c1 - c0) / (u1 - u0)) > 0.85
    _no_tensorflow()


# ----------------------------------------------------------------------------- one-click demo

def test_demo_models_are_shipped_and_a_missing_file_is_named(tmp_path):
    import shutil

    from napari_slads_eds._sample_data import demo_models
    from napari_slads_eds._validation import InputError
    from napari_slads_eds._widgets._classifier_folder import read_classifier_description
    from napari_slads_eds.erd_models import load_erd_model
    from napari_slads_eds.spectra import default_standards_for

    clf, erd, info = demo_models()
    # small enough for git and the wheel: the paper's two networks hold ~460 000 float32
    # weights (1.9 MB) and no optimizer state is saved (that would make it 5.5 MB)
    size = sum(p.stat().st_size for p in clf.parent.rglob("*") if p.is_file())
    assert size < 2_500_000, size
    rep = read_classifier_description(clf)
    assert rep["phase_names"] == list(default_standards_for(2)) == info["phase_names"]
    assert info["classifier"]["misclassification"] <= 0.005
    assert load_erd_model(erd).meta.get("n_phases") == 2
    broken = tmp_path / "demo"
    shutil.copytree(clf.parent, broken)
    (broken / "classifier" / "cnn.keras").unlink()
    with pytest.raises(InputError, match="cnn.keras"):
        demo_models(broken)


def test_run_demo_from_the_sample_menu_reaches_live_frames(window, qtbot, tmp_path, monkeypatch):
    from napari_slads_eds._sample_data import DEMO_MODELS

    monkeypatch.setenv("SLADS_EDS_RUNS", str(tmp_path / "runs"))
    viewer, wf = window
    viewer.open_sample(PLUGIN, "demo")            # File > Open Sample > Run the SLADS demo
    rw = wf.sampling
    qtbot.waitUntil(lambda: rw.frames >= 1, timeout=90000)
    s = wf.session
    assert s.classifier_path == DEMO_MODELS / "classifier" and s.erd_path == DEMO_MODELS / "erd_model.npz"
    info = wf.specimen.info
    assert info.shape == (128, 128) and list(info.phase_names) == s.classifier_phases()
    assert wf.tabs.currentIndex() == 3 and "Demo running" in wf.demo_status.text()
    # ground truth, ERD, reconstruction and mask side by side, only they visible
    assert viewer.canvas.grid.enabled
    visible = {l.name for l in viewer.layers if l.visible}
    live = {rw.layers[k].name for k in ("erd", "reconstruction", "mask")}
    assert live <= visible and len(visible) == 4, visible
    assert int(rw.mask.sum()) >= 1 and rw.n_measured >= 1
    # one sample-menu click again while running: refused with a reason, nothing doubled
    n_layers = len(viewer.layers)
    assert wf.run_demo() is None and "busy" in wf.demo_status.text()
    assert len(viewer.layers) == n_layers
    rw.stop()
    qtbot.waitUntil(lambda: not s.busy, timeout=30000)
    # the demo's status line follows the run to its end
    qtbot.waitUntil(lambda: "Demo running" not in wf.demo_status.text(), timeout=5000)
    assert wf.demo_status.text().startswith("Demo stopped by you: TD 0."), wf.demo_status.text()
    assert "static random" in wf.demo_status.text()
    _no_tensorflow()


def test_the_dock_starts_the_engine_and_prepares_the_demo_when_it_opens(make_napari_viewer, qtbot, monkeypatch):
    from napari_slads_eds import _sample_data

    monkeypatch.setenv("SLADS_EDS_ENGINE_PRESTART", "1")
    _sample_data._segmented.cache_clear()
    viewer = make_napari_viewer()
    _, wf = viewer.window.add_plugin_dock_widget(PLUGIN)
    assert wf.session.engine is None                 # not while the window is being drawn
    qtbot.waitUntil(lambda: wf.session.engine is not None and wf.session.engine.is_alive(), timeout=10000)
    # the demo's micrograph is segmented ahead, and "Run demo" gets a copy of the cached labels
    qtbot.waitUntil(lambda: _sample_data._segmented.cache_info().currsize == 1, timeout=20000)
    a = _sample_data.gold_ready_to_run()[1][0]
    a[:] = 0                                         # as painting a Labels layer would
    assert _sample_data.gold_ready_to_run()[1][0].min() == 1
    assert _sample_data._segmented.cache_info().hits >= 2
    _no_tensorflow()


def test_no_engine_is_started_when_prestart_is_off(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setenv("SLADS_EDS_ENGINE_PRESTART", "0")
    viewer = make_napari_viewer()
    _, wf = viewer.window.add_plugin_dock_widget(PLUGIN)
    qtbot.wait(800)                                  # past the prestart delay
    assert wf.session.engine is None


@pytest.mark.parametrize("value, on", [("0", False), (" off ", False), ("False", False), ("no", False),
                                       ("1", True), ("", True), ("yes", True)])
def test_prestart_switch_reads_the_usual_words(monkeypatch, value, on):
    from napari_slads_eds._widgets.workflow import engine_prestart_enabled

    monkeypatch.setenv("SLADS_EDS_ENGINE_PRESTART", value)
    assert engine_prestart_enabled() is on
