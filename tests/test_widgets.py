"""GUI tests of the four dock widgets (napari viewer under Xvfb, pytest-qt).

TensorFlow never enters this process: training and sampling run in the engine process,
and every test checks ``"tensorflow" not in sys.modules``.  Workers are started inside
``qtbot.waitSignal(...)`` (starting them first is a race).
"""

import json
import os
import sys
import time
import warnings

import numpy as np
import pytest
from qtpy.QtCore import Qt
from _gui_helpers import _dock, _n_notes, _no_tensorflow, _notes

pytestmark = pytest.mark.gui

PLUGIN = "napari-slads-eds"
WIDGETS = ("Micrograph & phases", "Simulated object", "Training", "Sampling run", "Replay on a real map")


# ----------------------------------------------------------------------------- helpers

def _pid_gone(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    return False


def _gold_specimen(viewer, size=32, factor=4):
    """Open the ready-to-run gold sample and build a size x size specimen through the widget."""
    viewer.open_sample(PLUGIN, "gold_ready")
    sw = _dock(viewer, "Simulated object")
    sw.size_spin.setValue(size)
    sw.factor_spin.setValue(factor)
    gt = sw.create_specimen()
    assert gt is not None
    return sw, gt


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """A 2-phase classifier (2 epochs) for the gold specimen's spectra (Si, Fe; seed 0) and an
    ERD model, trained once in a bare engine and shared by the tests of this module."""
    from skimage.data import binary_blobs

    from napari_slads_eds import Engine
    from napari_slads_eds._widgets.specimen import N_CLASSIFIER, N_REFERENCES
    from napari_slads_eds.spectra import bundled_standards, make_reference_spectra, read_spectrum

    d = tmp_path_factory.mktemp("models")
    std = bundled_standards()
    refs = make_reference_spectra([read_spectrum(std["Si"]), read_spectrum(std["Fe"])],
                                  n_per_phase=N_REFERENCES, counts_per_spectrum=7500.0, seed=0,
                                  phase_names=["Si", "Fe"])
    train_refs, _ = refs.split(N_CLASSIFIER)
    maps = [binary_blobs(48, blob_size_fraction=0.25, volume_fraction=0.4, rng=i).astype(np.int16) + 1
            for i in range(2)]
    with Engine() as eng:
        eng.run("train_classifier", references=train_refs, out_dir=str(d / "classifier"), seed=0, epochs=2)
        eng.run("train_erd", label_images=maps, n_phases=2, out_path=str(d / "erd.npz"), seed=0,
                c_search_fraction=0.1)
    _no_tensorflow()
    return d / "classifier", d / "erd.npz"


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    """Every GUI run is journaled into a run folder: keep them in the test's tmp_path, not in
    ~/slads-eds-runs."""
    monkeypatch.setenv("SLADS_EDS_RUNS", str(tmp_path / "runs"))


def _load_models(viewer, models):
    tw = _dock(viewer, "Training")
    assert tw.load_classifier(models[0]) is not None
    assert tw.load_erd(models[1]) is not None
    return tw


# ----------------------------------------------------------------------------- tests

def test_every_widget_builds_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    from napari_slads_eds._widgets.micrograph import MicrographWidget
    from napari_slads_eds._widgets.sampling import SamplingWidget
    from napari_slads_eds._widgets.specimen import SpecimenWidget
    from napari_slads_eds._widgets.training import TrainingWidget

    from napari_slads_eds._widgets.workflow import WorkflowWidget

    from napari_slads_eds._widgets.real_map import RealMapWidget

    classes = (MicrographWidget, SpecimenWidget, TrainingWidget, SamplingWidget, RealMapWidget)
    for name, cls in zip(WIDGETS, classes):
        assert isinstance(_dock(viewer, name), cls)
    # `napari -w napari-slads-eds` opens the first widget: the four steps and the real-map replay as tabs
    _, wf = viewer.window.add_plugin_dock_widget(PLUGIN)
    assert isinstance(wf, WorkflowWidget)
    assert [type(w) for w in wf.steps] == list(classes) and wf.tabs.count() == 5
    # all widgets of one viewer share one session (one engine process, not started yet)
    from napari_slads_eds._widgets._session import session_for

    s = session_for(viewer)
    assert s.engine is None and not s.busy
    _no_tensorflow()


def test_micrograph_widget_segments_and_rejects_bad_input(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    mw = _dock(viewer, "Micrograph & phases")

    n0 = _n_notes()
    assert mw.segment() is None                        # no layer chosen
    assert any("choose a micrograph" in m for m in _notes(n0))

    viewer.open_sample(PLUGIN, "glass")
    assert mw.phases_spin.value() == 3                 # from the sample's metadata
    mw.denoise_spin.setValue(3)
    worker = mw.update_preview(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    assert len(mw.histogram.thresholds) == 2
    worker = mw.segment(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    phases = mw.phases_layer
    assert phases.name == "phases" and phases.metadata["n_phases"] == 3
    assert set(np.unique(phases.data)) == {1, 2, 3}
    assert phases.data.shape == viewer.layers[0].data.shape

    # constant image: a clear message, no traceback
    viewer.add_image(np.full((40, 40), 7.0), name="flat")
    mw.image_combo.set_layer(viewer.layers["flat"])
    n0 = _n_notes()
    worker = mw.segment(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    assert any("constant" in m for m in _notes(n0)), _notes(n0)
    qtbot.waitUntil(lambda: "segmentation failed" in mw.status.text(), timeout=5000)   # no stale "segmenting…"

    # too many phases for the grey levels
    viewer.add_image(np.repeat(np.arange(3.0), 300).reshape(30, 30), name="three levels")
    mw.image_combo.set_layer(viewer.layers["three levels"])
    mw.phases_spin.setValue(5)
    mw.denoise_spin.setValue(0)
    n0 = _n_notes()
    worker = mw.segment(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    assert any("3 grey levels" in m for m in _notes(n0)), _notes(n0)

    # RGB image: converted to grey with a warning
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, 20:] = 200
    viewer.add_image(rgb, name="rgb", rgb=True)
    mw.image_combo.set_layer(viewer.layers["rgb"])
    mw.phases_spin.setValue(2)
    n0 = _n_notes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        worker = mw.segment(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    assert any("RGB image converted to grey" in m for m in _notes(n0)), _notes(n0)
    assert mw.phases_layer is not phases and mw.phases_layer.metadata["source"] == "rgb"
    assert set(np.unique(mw.phases_layer.data)) == {1, 2}

    # opening a file
    from napari_slads_eds.spectra import sample_data_dir

    layer = mw.open_micrograph(sample_data_dir() / "sem_nanoporous_gold_inlens.png")
    assert layer.name == "sem_nanoporous_gold_inlens" and layer.data.ndim == 2
    n0 = _n_notes()
    assert mw.open_micrograph("/no/such/file.png") is None
    assert any("not found" in m for m in _notes(n0))
    _no_tensorflow()


def test_simulated_object_and_spectrum_on_click(make_napari_viewer):
    viewer = make_napari_viewer()
    sw, gt = _gold_specimen(viewer, size=32, factor=4)
    from napari_slads_eds._widgets._session import session_for
    from napari_slads_eds._widgets._specimen_info import specimen_info
    from napari_slads_eds._widgets.specimen import show_spectrum_at_world

    info = specimen_info(gt)
    assert gt.data.shape == (32, 32) == info.shape
    assert info.n_phases == 2 and info.phase_names == ("Si", "Fe")
    assert len(info.train_maps) == 4 and all(m.shape == (32, 32) for m in info.train_maps)
    assert info.train_references.spectra.shape == (2, 24, 2048)
    assert info.specimen.references.spectra.shape == (2, 12, 2048)
    # the ground truth sits over its test region of the micrograph: grid pixel (0, 0) covers
    # micrograph pixels 0..3
    np.testing.assert_allclose(gt.scale, (4, 4))
    np.testing.assert_allclose(gt.translate, (1.5, 1.5))
    assert "regions" in viewer.layers

    # a click on a pixel of the ground truth shows its spectrum on an energy axis in keV
    plot = show_spectrum_at_world(viewer, session_for(viewer), (4 * 5 + 1.5, 4 * 7 + 1.5))
    assert plot is session_for(viewer).plot("spectrum")
    assert plot.title.startswith("pixel (5, 7): ")
    assert plot.ax.get_xlabel() == "energy (keV)"
    (measured,) = [ln for ln in plot.ax.lines if ln.get_label() == "measured spectrum"]
    x, y = measured.get_data()
    assert len(x) == 2048 and 0 <= x[0] < 0.1 and x[-1] > 15
    np.testing.assert_array_equal(y, info.specimen.measure([[5, 7]])[0])
    assert show_spectrum_at_world(viewer, session_for(viewer), (-50.0, -50.0)) is None   # outside

    # ill-spectrum pixels are titled as such
    r, c = map(int, np.argwhere(info.specimen.labels == 0)[0])
    assert "ill-spectrum" in sw.show_spectrum(r, c).title

    # bad input: grid too large for a test and a training region
    sw.size_spin.setValue(512)
    n0 = _n_notes()
    assert sw.create_specimen() is None
    assert any("fewer than two" in m for m in _notes(n0))
    # more phases than the layer holds
    sw.size_spin.setValue(32)
    sw.phases_spin.setValue(7)
    n0 = _n_notes()
    assert sw.create_specimen() is None
    assert any("labels 3..7 do not occur" in m for m in _notes(n0)), _notes(n0)
    _no_tensorflow()


@pytest.mark.engine
def test_full_flow_segment_simulate_train_run(make_napari_viewer, qtbot, tmp_path):
    """micrograph -> phases -> simulated object -> classifier + ERD model -> live run -> save."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "gold")
    mw = _dock(viewer, "Micrograph & phases")
    worker = mw.segment(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
    sw = _dock(viewer, "Simulated object")
    assert sw.phase_combo.layer() is viewer.layers["phases"]
    sw.size_spin.setValue(32)
    sw.factor_spin.setValue(4)
    gt = sw.create_specimen()
    assert gt is not None

    tw = _dock(viewer, "Training")
    tw.epochs_spin.setValue(2)
    tw.csearch_spin.setValue(0.1)
    epochs = []
    worker = tw.train_classifier(start=False)
    # a busy indicator while the engine starts (no engine yet), until the first epoch
    assert tw.clf_busy.active and "starting the engine" in tw.clf_label.text()
    worker.yielded.connect(lambda m: epochs.append((m.get("model"), m.get("done"))))
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert not tw.clf_busy.active and tw.clf_busy.ticks >= 2        # it ticked while TF loaded
    s = tw.session
    assert s.classifier_path is not None and (s.classifier_path / "cnn.keras").is_file()
    assert ("detector", 4) in epochs and ("cnn", 2) in epochs        # progress per epoch
    assert tw.confusion.rowCount() == 3 and tw.confusion.columnCount() == 3
    assert "misclassification (validation)" in tw.clf_label.text()
    stages = []
    worker = tw.train_erd(start=False)
    worker.yielded.connect(lambda m: stages.append(m.get("stage")))
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert {"erd-database", "c-search"} <= set(stages)
    assert s.erd_path is not None and s.erd_path.is_file()
    assert "chosen c = " in tw.erd_label.text()

    rw = _dock(viewer, "Sampling run")
    rw.set_parameters(target_fraction=0.15, frame_interval=0.05)
    frames = []
    worker = rw.start(start=False)
    worker.yielded.connect(lambda m: frames.append(m["type"]))
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    r = rw.result
    assert r is not None and r["stop_reason"] == "target fraction reached"
    assert frames.count("baseline") == 2 and "frame" in frames
    target = round(0.15 * 32 * 32)
    assert rw.n_measured == r["n_measured"] == target
    # live layers: updated in place, same layer objects during the run
    mask, rec, erd = rw.layers["mask"], rw.layers["reconstruction"], rw.layers["erd"]
    assert mask.data.sum() == target and mask.data.shape == (32, 32)
    assert set(np.unique(rec.data)) <= {0, 1, 2} and rec.data.max() > 0
    np.testing.assert_array_equal(rec.data, r["reconstruction"])
    assert erd.visible and erd.data.max() > 0 and np.isfinite(erd.data).all()   # in the run's grid
    assert np.all(erd.data[mask.data == 1] == 0)
    # the run in view: the ground truth and the live layers in a grid, every other layer hidden
    visible = [l for l in viewer.layers if l.visible]
    assert visible == [gt, erd, rec, mask] and viewer.canvas.grid.enabled
    assert {"phases", "regions"} <= {l.name for l in viewer.layers}          # hidden, not deleted
    assert rw.hidden_by_run and not any(l.visible for l in rw.hidden_by_run)
    td = s.plot("td")
    assert set(td.baselines) == {"random", "halton"}
    assert td.slads_points == len(r["td_curve"]) > 10
    assert "target fraction reached" in rw.status.text() and "TD" in rw.status.text()
    assert rw.save_button.isEnabled()

    # a second run reuses the layers; without the run view a hidden ERD layer is not updated
    before = [id(rw.layers[k]) for k in ("mask", "reconstruction", "erd")]
    rw.focus_check.setChecked(False)
    erd.visible = False
    worker = rw.start(start=False)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert [id(rw.layers[k]) for k in ("mask", "reconstruction", "erd")] == before
    assert len([l for l in viewer.layers if l.name == "reconstruction"]) == 1
    assert not erd.visible and erd.data.max() == 0        # hidden: not updated during the run
    erd.visible = True                                      # shown: the last ERD map appears
    assert erd.data.max() > 0 and np.all(erd.data[mask.data == 1] == 0)
    assert len(td.earlier_lines) == 1                       # the first run, greyed on the TD plot
    rw.show_all_layers()
    assert all(l.visible for l in viewer.layers) and not viewer.canvas.grid.enabled

    files = rw.save(tmp_path / "run")
    assert files is not None
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    from napari_slads_eds.run_folder import RunResult

    assert sorted(res) == list(RunResult.json_keys())      # the keys slads-eds run and replay write
    assert res["grid"] == [32, 32] and res["phases"] == 2
    assert abs(res["sampling_fraction"] - target / 1024) < 1e-9
    assert {"td", "td_random", "td_halton", "misclassification", "c", "td_curve"} <= set(res)
    assert (tmp_path / "run" / "td_curve.png").is_file()
    from napari_slads_eds.results import load_run

    saved = load_run(tmp_path / "run")
    np.testing.assert_array_equal(saved["reconstruction"], r["reconstruction"])
    assert saved["erd"].shape == (32, 32) and saved["erd_model"]["c"] == s.erd_report["c"]

    # models can be saved and loaded back
    assert tw.save_classifier(tmp_path / "clf") is not None
    assert tw.save_erd(tmp_path / "erd.npz") is not None
    assert tw.load_classifier(tmp_path / "clf")["phase_names"] == ["Si", "Fe"]
    assert tw.load_erd(tmp_path / "erd.npz")["c"] == s.erd_report["c"]
    _no_tensorflow()


@pytest.mark.engine
def test_pause_resume_and_stop(make_napari_viewer, qtbot, trained_models):
    viewer = make_napari_viewer()
    _gold_specimen(viewer, size=64, factor=2)
    tw = _load_models(viewer, trained_models)
    rw = _dock(viewer, "Sampling run")
    rw.set_parameters(target_fraction=0.9, frame_interval=0.05, baselines=False)
    worker = rw.start(start=False)
    with qtbot.waitSignal(worker.started, timeout=10000):
        worker.start()
    qtbot.waitUntil(lambda: rw.frames >= 2, timeout=60000)
    assert rw.stop_button.isEnabled() and not rw.start_button.isEnabled()

    rw.pause()
    assert rw.pause_button.text() == "Resume"
    qtbot.wait(400)                          # let frames in flight arrive
    n_paused = rw.n_measured
    qtbot.wait(600)
    assert rw.n_measured == n_paused         # nothing measured while paused

    rw.resume()
    qtbot.waitUntil(lambda: rw.n_measured > n_paused, timeout=10000)

    with qtbot.waitSignal(worker.finished, timeout=10000):
        rw.stop()
    r = rw.result
    assert r["stop_reason"] == "stopped by the user"
    assert n_paused < r["n_measured"] < round(0.9 * 64 * 64)
    assert rw.layers["mask"].data.sum() == r["n_measured"]
    assert rw.start_button.isEnabled() and not rw.stop_button.isEnabled()
    assert rw.session.engine.is_alive()      # a graceful stop keeps the engine

    # stopping a training: cancelled within a second, the loaded classifier stays
    clf_path = tw.session.classifier_path
    tw.epochs_spin.setValue(500)
    worker = tw.train_classifier(start=False)
    with qtbot.waitSignal(worker.started, timeout=10000):
        worker.start()
    qtbot.waitUntil(lambda: tw.clf_progress.value() >= 1, timeout=60000)
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=5000):
        tw.stop()
    assert time.perf_counter() - t0 < 1.5
    assert "cancelled" in tw.clf_label.text()
    assert tw.session.classifier_path == clf_path and not tw.session.busy
    _no_tensorflow()


@pytest.mark.engine
def test_stop_and_pause_right_after_start_are_honoured(make_napari_viewer, qtbot, trained_models):
    """Stop or Pause pressed while the run folder is written or the engine starts is not lost."""
    viewer = make_napari_viewer()
    _gold_specimen(viewer, size=64, factor=2)
    _load_models(viewer, trained_models)
    rw = _dock(viewer, "Sampling run")
    target = round(0.5 * 64 * 64)
    rw.set_parameters(target_fraction=0.5, frame_interval=0.05, baselines=False)

    worker = rw.start(start=False)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start()
        rw.stop()                            # before the job reached the engine
    assert rw.n_measured < target and rw.start_button.isEnabled() and not rw.session.busy

    worker = rw.start(start=False)
    with qtbot.waitSignal(worker.started, timeout=10000):
        worker.start()
    rw.pause()                               # before the job reached the engine
    assert rw.session.paused and rw.pause_button.text() == "Resume"
    qtbot.wait(3000)
    assert rw.n_measured < target            # paused: the run does not go on to the target
    n = rw.n_measured
    qtbot.wait(600)
    assert rw.n_measured == n
    with qtbot.waitSignal(worker.finished, timeout=10000):
        rw.stop()
    assert rw.n_measured < target and not rw.session.busy
    _no_tensorflow()


@pytest.mark.engine
def test_closing_the_viewer_during_a_run_ends_the_engine(make_napari_viewer, qtbot, trained_models):
    viewer = make_napari_viewer(show=True)
    _gold_specimen(viewer, size=64, factor=2)
    _load_models(viewer, trained_models)
    rw = _dock(viewer, "Sampling run")
    rw.set_parameters(target_fraction=0.9, frame_interval=0.05, baselines=False)
    session = rw.session
    worker = rw.start(start=False)
    with qtbot.waitSignal(worker.started, timeout=10000):
        worker.start()
    qtbot.waitUntil(lambda: rw.frames >= 1, timeout=60000)
    pid = session.engine_pid
    assert pid is not None and not _pid_gone(pid)

    # what File > Close Window, Ctrl+W and the window's close button do
    t0 = time.perf_counter()
    viewer.window._qt_window.close()
    qtbot.waitUntil(lambda: _pid_gone(pid), timeout=1000)
    assert time.perf_counter() - t0 < 1.0
    assert session.closed and not session.workdir.exists()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    # napari's Window.close() ends with `del self._qt_window`; the window was closed the way
    # a user closes it, so do that bookkeeping for the fixture's teardown (viewer.close())
    del viewer.window._qt_window
    _no_tensorflow()


@pytest.mark.engine
def test_engine_error_reaches_the_user_as_a_notification(make_napari_viewer, qtbot, trained_models,
                                                          tmp_path):
    import shutil

    viewer = make_napari_viewer()
    _gold_specimen(viewer, size=32, factor=4)
    broken = tmp_path / "broken_classifier"
    shutil.copytree(trained_models[0], broken)
    (broken / "cnn.keras").write_bytes(b"not a keras archive")
    tw = _dock(viewer, "Training")
    assert tw.load_classifier(broken) is not None        # the JSON is fine
    assert tw.load_erd(trained_models[1]) is not None
    rw = _dock(viewer, "Sampling run")
    n0 = _n_notes()
    worker = rw.start(start=False)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        worker.start()
    notes = _notes(n0)
    assert any("the sampling run" in m and "cnn.keras" in m for m in notes), notes
    assert rw.result is None and "failed" in rw.status.text()
    assert not rw.session.busy and rw.start_button.isEnabled()
    _no_tensorflow()


@pytest.mark.engine
def test_bad_input_gives_messages_not_tracebacks(make_napari_viewer, tmp_path, trained_models):
    viewer = make_napari_viewer()
    tw = _dock(viewer, "Training")
    rw = _dock(viewer, "Sampling run")
    n0 = _n_notes()
    assert tw.train_classifier() is None and tw.train_erd() is None
    assert rw.start() is None
    assert rw.save(tmp_path) is None
    notes = _notes(n0)
    assert sum("create the simulated object first" in m for m in notes) == 3
    assert any("no finished run to save" in m for m in notes)

    _gold_specimen(viewer, size=32, factor=4)
    n0 = _n_notes()
    assert rw.start() is None
    assert any("no spectrum classifier" in m for m in _notes(n0))
    n0 = _n_notes()
    assert tw.load_classifier(tmp_path) is None
    assert tw.load_erd(tmp_path / "missing.npz") is None
    notes = _notes(n0)
    assert any("missing classifier.json" in m for m in notes), notes
    assert any("not found" in m or "missing" in m for m in notes[1:]), notes
    # a training layer with the wrong labels
    viewer.add_labels(np.zeros((64, 64), np.int16), name="empty labels")
    tw.set_training_layers(["empty labels"])
    n0 = _n_notes()
    assert tw.train_erd() is None
    assert any("expected labels in 1..2" in m for m in _notes(n0)), _notes(n0)
    assert not tw.session.busy and tw.session.engine is None
    # a phase layer whose labels have gaps
    sw = _dock(viewer, "Simulated object")
    gappy = np.ones((64, 64), np.int16)
    gappy[:, 32:] = 9
    sw.phase_combo.set_layer(viewer.add_labels(gappy, name="gappy"))
    sw.phases_spin.setValue(9)
    n0 = _n_notes()
    assert sw.create_specimen() is None
    assert any("labels 2..8 do not occur" in m for m in _notes(n0)), _notes(n0)
    # a checked layer keeps its check when renamed (no KeyError), and is still validated
    viewer.layers["empty labels"].name = "renamed labels"
    assert [tw.train_list.item(i).text() for i in range(tw.train_list.count())
            if tw.train_list.item(i).checkState() == Qt.CheckState.Checked] == ["renamed labels"]
    n0 = _n_notes()
    assert tw.train_erd() is None
    assert any("training layer 'renamed labels'" in m for m in _notes(n0)), _notes(n0)
    # the layer the test object was cut from is refused as a training map
    tw.set_training_layers([_specimen_source(viewer)])
    n0 = _n_notes()
    assert tw.train_erd() is None
    assert any("must not be trained on the test object" in m for m in _notes(n0)), _notes(n0)
    # a classifier description with wrong types, and saving to a path that is a file
    import json
    import shutil

    clf = tmp_path / "clf"
    shutil.copytree(trained_models[0], clf)
    meta = json.loads((clf / "classifier.json").read_text())
    for key, value, message in (("report", {"misclassification": "high"}, "report.misclassification"),
                                ("phase_names", "Si", "phase_names must be a list")):
        bad = dict(meta, **{key: value})
        (clf / "classifier.json").write_text(json.dumps(bad))
        n0 = _n_notes()
        assert tw.load_classifier(clf) is None
        assert any(message in m for m in _notes(n0)), _notes(n0)
    assert tw.session.classifier_path is None          # nothing half-loaded
    (tmp_path / "afile").write_text("x")
    assert tw.load_erd(trained_models[1]) is not None
    n0 = _n_notes()
    assert tw.save_erd(tmp_path / "afile" / "erd.npz") is None
    notes = _notes(n0)
    assert notes and "Traceback" not in notes[-1] and "failed" not in notes[-1], notes
    _no_tensorflow()


def _specimen_source(viewer):
    from napari_slads_eds._widgets._specimen_info import specimen_info

    return next(specimen_info(l).source for l in viewer.layers if specimen_info(l) is not None)


# ----------------------------------------------------------------------------- run folders, resume

def _run_to_end(qtbot, worker, on_message=None, timeout=120000):
    if on_message is not None:
        worker.yielded.connect(on_message)
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        worker.start()


def _journal(folder):
    from napari_slads_eds.journal import JOURNAL_NAME, read_journal

    return read_journal(folder / JOURNAL_NAME)


@pytest.mark.engine
def test_gui_runs_are_journaled_and_resume_after_stop_and_sigkill(make_napari_viewer, qtbot, trained_models,
                                                                  tmp_path):
    """Every GUI run writes a resumable run folder.  A run stopped, and a run whose engine is
    killed with SIGKILL, continue with "Resume from journal…" to the uninterrupted run's
    final mask and positions, with every measured spectrum in the journal."""
    import shutil
    import signal

    from napari_slads_eds.run_folder import read_run_folder
    from napari_slads_eds.results import load_run

    viewer = make_napari_viewer()
    _, gt = _gold_specimen(viewer, size=40, factor=4)
    _load_models(viewer, trained_models)
    rw = _dock(viewer, "Sampling run")
    rw.set_parameters(target_fraction=0.3, frame_interval=0.02, baselines=False, seed=3)
    target = round(0.3 * 40 * 40)
    specimen = rw.specimen_combo.layer().metadata["slads_eds_specimen"].specimen

    # 1. uninterrupted: a new date-time folder in $SLADS_EDS_RUNS with everything slads-eds run writes
    _run_to_end(qtbot, rw.start(start=False))
    ref = rw.result
    a = rw.run.folder
    assert ref["stop_reason"] == "target fraction reached" and ref["n_measured"] == target
    assert a.parent == tmp_path / "runs" and str(a) in rw.status.text()
    for f in ("specimen.npz", "run_settings.json", "models/training.json", "models/erd_model.npz",
              "models/classifier/cnn.keras", "models/classifier/detector.keras",
              "models/classifier/classifier.json", "journal.h5"):
        assert (a / f).is_file(), f
    qtbot.waitUntil(lambda: rw.saved_to == a, timeout=30000)
    assert "Results written" in rw.status.text() and str(a) in rw.status.text()
    saved = load_run(a)
    np.testing.assert_array_equal(saved["mask"], ref["mask"])
    assert saved["run_folder"] == str(a) and saved["settings"]["seed"] == 3
    j = _journal(a)
    assert len(j["label"]) == ref["n_measured"]
    np.testing.assert_array_equal(j["position"], ref["positions"])
    rf = read_run_folder(a)         # the folder reads back as the CLI's resume reads it
    assert (rf.settings.fraction, rf.settings.seed, rf.settings.size) == (0.3, 3, 40)
    assert rf.erd_report["path"] == str(a / "models" / "erd_model.npz")
    np.testing.assert_array_equal(rf.specimen.labels, specimen.labels)

    # a folder that already holds a run is never overwritten
    rw.folder_edit.setText(str(a))
    n0 = _n_notes()
    assert rw.start() is None
    assert any("already holds a run" in m for m in _notes(n0)), _notes(n0)

    # 2. stopped by the user (into a folder of the user's choice), then resumed
    b = tmp_path / "my run"
    rw.folder_edit.setText(str(b))
    state = {"stopped": False}

    def stop_early(m):
        if m.get("type") == "frame" and m["n_measured"] >= 100 and not state["stopped"]:
            state["stopped"] = True
            rw.stop()

    _run_to_end(qtbot, rw.start(start=False), stop_early)
    rb = rw.result
    assert rb["stop_reason"] == "stopped by the user" and 100 <= rb["n_measured"] < target
    assert rw.run.folder == b and len(_journal(b)["label"]) == rb["n_measured"]
    qtbot.waitUntil(lambda: rw.saved_to == b, timeout=30000)
    rw.folder_edit.setText("")
    _run_to_end(qtbot, rw.resume_run(b, start=False))
    r = rw.result
    assert r["n_replayed"] == rb["n_measured"] and r["stop_reason"] == "target fraction reached"
    np.testing.assert_array_equal(r["positions"], ref["positions"])
    np.testing.assert_array_equal(r["mask"], ref["mask"])
    np.testing.assert_array_equal(rw.layers["mask"].data, ref["mask"])
    assert len(_journal(b)["label"]) == r["n_measured"] == target
    assert f"ground truth ({b.name})" in viewer.layers and "resumed" in rw.status.text()

    # 3. the engine killed with SIGKILL mid-run, then resumed in a new engine
    seen = {"n": 0, "pid": None}

    def kill(m):
        if m.get("type") == "frame" and seen["pid"] is None:
            seen["n"] = m["n_measured"]
            if m["n_measured"] >= 100:
                seen["pid"] = rw.session.engine_pid
                os.kill(seen["pid"], signal.SIGKILL)

    rw.specimen_combo.set_layer(gt)
    n0 = _n_notes()
    _run_to_end(qtbot, rw.start(start=False), kill)
    c = rw.run.folder
    assert seen["pid"] is not None and _pid_gone(seen["pid"])
    assert any("ended unexpectedly" in m for m in _notes(n0)), _notes(n0)
    assert rw.result is None and "Resume from journal" in rw.status.text()
    jc = _journal(c)
    n_journal = len(jc["label"])
    assert seen["n"] <= n_journal < target          # everything reported measured is on disk
    np.testing.assert_array_equal(jc["spectrum"], specimen.measure(jc["position"]))
    _run_to_end(qtbot, rw.resume_run(c, start=False))
    assert rw.session.engine_pid != seen["pid"]
    r = rw.result
    assert r["n_replayed"] == n_journal
    np.testing.assert_array_equal(r["positions"], ref["positions"])
    np.testing.assert_array_equal(r["mask"], ref["mask"])
    assert r["td"] == ref["td"]
    j2 = _journal(c)
    assert len(j2["label"]) == r["n_measured"] == target        # 0 journaled spectra lost
    np.testing.assert_array_equal(j2["position"], r["positions"])
    np.testing.assert_array_equal(j2["position"][:n_journal], jc["position"])
    qtbot.waitUntil(lambda: rw.saved_to == c, timeout=30000)
    np.testing.assert_array_equal(load_run(c)["mask"], ref["mask"])

    # 4. a corrupt journal: the engine's message as a notification, the widget stays usable
    bad = tmp_path / "corrupt"
    shutil.copytree(a, bad)
    (bad / "journal.h5").write_bytes((a / "journal.h5").read_bytes()[:300])
    n0 = _n_notes()
    _run_to_end(qtbot, rw.resume_run(bad, start=False))
    assert any("journal.h5" in m and "truncated" in m for m in _notes(n0)), _notes(n0)
    assert rw.result is None and not rw.session.busy and rw.resume_button.isEnabled()
    _no_tensorflow()


@pytest.mark.engine
@pytest.mark.slow
def test_a_run_of_slads_eds_run_resumes_in_the_gui(make_napari_viewer, qtbot, sample_dir, tmp_path):
    """A run folder of the command line (pipeline.run_experiment, stopped early) resumes in
    the sampling widget to the same selections as `slads-eds resume` makes from it."""
    import shutil

    from napari_slads_eds import Engine
    from napari_slads_eds.pipeline import RunSettings, prepare_experiment, resume_experiment, run_experiment

    exp = prepare_experiment(sample_dir / "sem_nanoporous_gold_inlens.png", 2,
                             RunSettings(size=40, downsample=4, fraction=0.2, seed=1, epochs=1))
    cli = tmp_path / "cli"
    with Engine() as eng:
        stopped = run_experiment(exp, cli, engine=eng, on_message=lambda m: eng.request_stop()
                                 if m.get("type") == "frame" and m["n_measured"] >= 60 else None)
        assert stopped["stop_reason"] == "stopped by the user"
        shutil.copytree(cli, tmp_path / "cli copy")
        ref = resume_experiment(tmp_path / "cli copy", engine=eng)
    n_stopped = len(_journal(cli)["label"])
    assert n_stopped == stopped["n_measured"] < ref["n_measured"] == round(0.2 * 1600)

    viewer = make_napari_viewer()
    rw = _dock(viewer, "Sampling run")
    rw.set_parameters(baselines=False, frame_interval=0.05)
    _run_to_end(qtbot, rw.resume_run(cli, start=False))
    r = rw.result
    assert r["n_replayed"] == n_stopped and r["stop_reason"] == "target fraction reached"
    np.testing.assert_array_equal(r["positions"], ref["positions"])
    np.testing.assert_array_equal(r["mask"], ref["mask"])
    assert len(_journal(cli)["label"]) == r["n_measured"]
    gt = viewer.layers["ground truth (cli)"]
    np.testing.assert_array_equal(gt.data, exp.specimen.labels)
    np.testing.assert_allclose(gt.scale, (4, 4))        # grid pixels over the micrograph's test region
    np.testing.assert_allclose(gt.translate, np.array(exp.source["test_region"][:2]) + 1.5)
    assert rw.target_spin.value() == pytest.approx(20.0) and rw.seed_spin.value() == 1
    _no_tensorflow()


def test_resume_from_a_folder_that_is_no_run_gives_a_notification(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    rw = _dock(viewer, "Sampling run")
    n0 = _n_notes()
    assert rw.resume_run(tmp_path) is None
    assert rw.resume_run(tmp_path / "missing") is None
    (tmp_path / "run_settings.json").write_text("{not json")
    for name in ("specimen.npz", "models/training.json", "models/erd_model.npz", "models/classifier/cnn.keras",
                 "models/classifier/detector.keras", "models/classifier/classifier.json", "journal.h5"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert rw.resume_run(tmp_path) is None
    notes = _notes(n0)
    assert len(notes) == 3, notes
    assert notes[0].startswith("Resume from journal: ") and "run_settings.json is missing" in notes[0]
    assert "not a folder" in notes[1]
    assert "run_settings.json: not readable JSON" in notes[2]
    assert not rw.session.busy and rw.session.engine is None and rw.run is None
    _no_tensorflow()


def test_a_run_folder_that_cannot_be_written_gives_a_notification(make_napari_viewer, qtbot, trained_models,
                                                                   tmp_path):
    """The run folder is written in the job's worker thread; a failure there (here: a
    classifier file deleted after loading) is a notification, and no half-written folder
    and no engine are left behind."""
    import shutil

    viewer = make_napari_viewer()
    _gold_specimen(viewer, size=32, factor=4)
    clf = tmp_path / "clf"
    shutil.copytree(trained_models[0], clf)
    tw = _dock(viewer, "Training")
    assert tw.load_classifier(clf) is not None and tw.load_erd(trained_models[1]) is not None
    (clf / "cnn.keras").unlink()
    rw = _dock(viewer, "Sampling run")
    n0 = _n_notes()
    _run_to_end(qtbot, rw.start(start=False))
    notes = _notes(n0)
    assert any(m.startswith("SLADS-EDS, the sampling run: ") and "missing cnn.keras" in m for m in notes), notes
    assert rw.result is None and "the run failed" in rw.status.text()
    assert not rw.run.folder.exists() and list((tmp_path / "runs").iterdir()) == []
    assert rw.session.engine is None and rw.start_button.isEnabled()
    _no_tensorflow()


def test_result_plots_leave_the_matplotlib_backend_alone(tmp_path, monkeypatch):
    import imageio.v3 as iio
    import matplotlib

    from napari_slads_eds.reproduce import plot_comparison
    from napari_slads_eds.results import plot_td_curve

    def no_switch(*args, **kwargs):
        raise AssertionError("matplotlib.use() called")

    monkeypatch.setattr(matplotlib, "use", no_switch)
    backend = matplotlib.rcParams._get("backend")
    had_pyplot = "matplotlib.pyplot" in sys.modules
    curve = [[0.01, 0.2], [0.05, 0.05], [0.1, 0.01]]
    plot_td_curve({"td_curve": curve, "td_curve_random": curve, "td_curve_halton": curve, "grid": [8, 8],
                   "phases": 2, "td": 0.01, "sampling_fraction": 0.1}, tmp_path / "td.png")
    plot_comparison([{"name": "a", "td_curve": curve, "td_curve_halton": curve, "td_slads": 0.01}] * 2,
                    tmp_path / "cmp.png")
    assert matplotlib.rcParams._get("backend") is backend
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules
    assert iio.imread(tmp_path / "td.png").shape[:2] == (480, 720)
    assert iio.imread(tmp_path / "cmp.png").shape[1] > iio.imread(tmp_path / "cmp.png").shape[0]


# ----------------------------------------------------------------------------- replay (scrub)

@pytest.mark.engine
def test_replay_slider_shows_the_journals_first_k_positions(make_napari_viewer, qtbot, trained_models, tmp_path):
    """After a run, "Replay the sampling order" turns mask, reconstruction and ERD into lazy
    stacks over the measurement index: the slider at step k shows the mask of the journal's
    first k positions, and the static Halton and random scans of the same budget beside it."""
    import dask.array as da

    from napari_slads_eds._widgets._specimen_info import measured_mask
    from napari_slads_eds.scan_orders import halton_order

    viewer = make_napari_viewer(show=True)          # the movie grabs the rendered canvas
    _, gt = _gold_specimen(viewer, size=32, factor=4)
    _load_models(viewer, trained_models)
    rw = _dock(viewer, "Sampling run")
    rw.set_parameters(target_fraction=0.3, frame_interval=0.05, baselines=False, seed=2)
    assert not rw.replay_button.isEnabled()
    _run_to_end(qtbot, rw.start(start=False))
    r = rw.result
    n = r["n_measured"]
    assert n == round(0.3 * 1024) and rw.replay_button.isEnabled()
    journal = _journal(rw.run.folder)["position"]
    np.testing.assert_array_equal(journal, r["positions"])
    # Start put the camera on the test region: the ground truth fills a cell of the 2 x 2 grid
    cam = viewer.scene.camera
    (r0, c0), (r1, c1) = gt.extent.world[:, -2:]
    assert abs(cam.center[-2] - (r0 + r1) / 2) < 1 and abs(cam.center[-1] - (c0 + c1) / 2) < 1
    rows, cols = viewer.canvas.grid.actual_shape(viewer.layers)
    assert (rows, cols) == (2, 2)
    h, w = viewer.canvas.size
    fill = max((r1 - r0) * cam.zoom / (h / rows), (c1 - c0) * cam.zoom / (w / cols))   # of one cell
    assert 0.8 < fill <= 1.0, fill

    rep = rw.replay()
    assert rep is not None and rep.n == n
    mask, rec, erd = rw.layers["mask"], rw.layers["reconstruction"], rw.layers["erd"]
    for layer in (mask, rec, erd):
        assert isinstance(layer.data, da.Array) and layer.data.shape == (n + 1, 32, 32)   # lazy, not n copies
    assert viewer.dims.axis_labels[0] == "measurement"
    halton, random = viewer.layers["Halton (same budget)"], viewer.layers["random (same budget)"]
    assert all(l.visible for l in (gt, mask, rec, erd, halton, random)) and viewer.canvas.grid.enabled

    for k in (0, 1, 37, n // 2, n):
        viewer.dims.set_point(0, k)
        assert rw.replay_step() == k
        shown = np.asarray(mask._slice.image.raw)          # what the canvas shows at step k
        np.testing.assert_array_equal(shown, measured_mask((32, 32), journal[:k]))
        assert shown.sum() == k
        np.testing.assert_array_equal(np.asarray(halton._slice.image.raw),
                                      measured_mask((32, 32), halton_order((32, 32), n, 3)[:k]))
        assert np.asarray(random._slice.image.raw).sum() == k
        assert f"the first {k} of {n} measurements" in rw.status.text()
    assert rep.computed <= 7              # only the steps shown (these five, the first shown), not n + 1
    # the last step is the run's final state
    np.testing.assert_array_equal(np.asarray(rec.data[n]), r["reconstruction"])
    final_erd = np.maximum(np.nan_to_num(r["erd"], nan=0.0), 0)
    np.testing.assert_allclose(rep.erd(n), final_erd, rtol=1e-6)
    shown = np.asarray(erd.data[n])                       # the same map, scaled to 0..1 for display
    assert shown.max() == 1 and shown[r["mask"] == 1].max() == 0
    np.testing.assert_array_equal(shown > 0, final_erd > 0)
    assert np.argmax(shown) == np.argmax(final_erd)
    # and the reconstruction at an earlier step is the one of its first k labels
    from napari_slads_eds.reconstruction import reconstruct

    k = n // 3
    np.testing.assert_array_equal(np.asarray(rec.data[k]),
                                  reconstruct((32, 32), r["positions"][:k], r["labels"][:k], 2))
    td = rw.session.plot("td")
    assert td.marker is not None and td.marker.get_xdata()[0] == pytest.approx(100 * n / 1024)

    # the replay as a movie (napari-animation): the mask grows from frame to frame
    import imageio.v3 as iio

    movie = rw.export_movie(tmp_path / "replay.gif", frames=6, fps=4)
    assert movie is not None and movie.is_file()
    # 6 frames: GIF writing merges identical consecutive frames, so they all differ
    assert iio.improps(movie, index=None).n_images == 6
    assert f"replay written to {movie}" in rw.status.text()
    n_notes = _n_notes()
    assert rw.export_movie(tmp_path / "replay.txt") is None
    assert any("expected .mp4" in m for m in _notes(n_notes))

    # a new run leaves the replay: live layers 2-D again, the static scans gone
    _run_to_end(qtbot, rw.start(start=False))
    assert rw.layers["mask"] is mask and mask.data.shape == (32, 32) and mask.data.sum() == n
    assert "Halton (same budget)" not in viewer.layers and rw.replay_data is None

    # a run folder replays from its journal (here the first run's folder)
    folder = rw.run.folder
    j = _journal(folder)["position"]
    rep = rw.replay_folder(folder)
    assert rep is not None and rep.n == len(j)
    assert f"ground truth ({folder.name})" in viewer.layers
    viewer.dims.set_point(0, 10)
    np.testing.assert_array_equal(np.asarray(rw.layers["mask"]._slice.image.raw), measured_mask((32, 32), j[:10]))
    n0 = _n_notes()
    assert rw.replay_folder(tmp_path) is None                       # not a run folder: a message
    assert any(m.startswith("Replay a run folder: ") for m in _notes(n0)), _notes(n0)
    _no_tensorflow()
