"""GUI tests of the Run tab's "Microscope" source (napari viewer under Xvfb, pytest-qt).

The reference server (``napari_slads_eds.server``) runs in a thread of this process on a
free localhost port, serving a small simulated specimen of the phases of the demo models
shipped with the plugin (no training here).  SLADS runs in the engine process, which opens
its own connection to the server; TensorFlow never enters this process.
"""

import json

import numpy as np
import pytest
from _gui_helpers import _dock, _n_notes, _no_tensorflow, _notes

pytestmark = pytest.mark.gui

PLUGIN = "napari-slads-eds"
TOKEN = "t0ken-for-gui-tests"


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SLADS_EDS_RUNS", str(tmp_path / "runs"))


def _specimen(size, seed=3, axis=None):
    """A size x size two-phase specimen of the demo models' phases (the Object tab's Si and Fe
    standards, 7500 counts, the spectra not used to train the classifier)."""
    from skimage.data import binary_blobs

    from napari_slads_eds._widgets.specimen import N_CLASSIFIER, N_REFERENCES
    from napari_slads_eds.specimen import SimulatedSpecimen
    from napari_slads_eds.spectra import (bundled_standards, default_standards_for, make_reference_spectra,
                                          read_spectrum)

    names = list(default_standards_for(2))
    std = bundled_standards()
    kw = {} if axis is None else {"axis": axis}
    refs = make_reference_spectra([read_spectrum(std[n]) for n in names], n_per_phase=N_REFERENCES,
                                  counts_per_spectrum=7500.0, seed=0, phase_names=names, **kw)
    _, test_refs = refs.split(N_CLASSIFIER)
    truth = binary_blobs(size, blob_size_fraction=0.3, volume_fraction=0.4, rng=seed).astype(np.int16) + 1
    return SimulatedSpecimen(truth, test_refs, ill_fraction=0.01, seed=0)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The 32 x 32 specimen the server serves, and its file (the optional ground truth)."""
    from napari_slads_eds.specimen import save_specimen

    spec = _specimen(32)
    f = tmp_path_factory.mktemp("served") / "specimen.npz"
    save_specimen(spec, f)
    return spec, f


def _microscope_tab(make_napari_viewer):
    """A viewer with the shipped demo models loaded and the Run tab on the Microscope source."""
    from napari_slads_eds._sample_data import demo_models

    viewer = make_napari_viewer()
    clf, erd, _ = demo_models()
    tw = _dock(viewer, "Training")
    assert tw.load_classifier(clf) is not None and tw.load_erd(erd) is not None
    rw = _dock(viewer, "Sampling run")
    assert rw.source() == "simulated" and not rw.url_edit.isVisibleTo(rw)
    assert not rw.start_button.isEnabled()                  # no simulated object
    rw.set_source("microscope")
    # the microscope's rows instead of the simulated object's; Start needs no object
    assert rw.url_edit.isVisibleTo(rw) and rw.token_edit.isVisibleTo(rw) and rw.overlap_check.isChecked()
    assert not rw.specimen_combo.isVisibleTo(rw) and not rw.baselines_check.isVisibleTo(rw)
    assert rw.url_edit.text() == "http://127.0.0.1:8765" and rw.mic_dwell_spin.value() == 0
    assert rw.token_edit.echoMode() == rw.token_edit.EchoMode.Password
    assert rw.start_button.isEnabled() and "microscope" in rw.start_button.toolTip()
    return viewer, rw


def _wait(qtbot, worker, timeout=20000):
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        worker.start()


def _journal(folder):
    from napari_slads_eds.journal import JOURNAL_NAME, read_journal

    return read_journal(folder / JOURNAL_NAME)


@pytest.mark.engine
def test_a_run_on_a_microscope_from_the_run_tab(make_napari_viewer, qtbot, served):
    """Connect, Start: the engine measures through the server, the live layers have the
    microscope's grid, every spectrum is journaled in the run folder, TD is n/a without a
    ground truth; with one, TD is reported, and Pause and Stop work as for a simulated run."""
    from napari_slads_eds.server import ServerThread, create_app

    spec, spec_file = served
    viewer, rw = _microscope_tab(make_napari_viewer)
    app = create_app(spec, token=TOKEN, dwell_delay=0.002, name="test specimen")
    state = app.state.microscope
    with ServerThread(app) as srv:
        rw.url_edit.setText(srv.url)
        rw.token_edit.setText(TOKEN)
        _wait(qtbot, rw.connect_microscope(start=False))
        text = rw.status.text()
        assert "32 x 32 grid" in text and "2048 channels" in text and "dwell 0.02 s" in text, text
        assert "fits the classifier" in text and state.n_measured == 0

        # 1. to the target, overlap on (the default), no ground truth
        rw.set_parameters(target_fraction=0.1, frame_interval=0.05)
        _wait(qtbot, rw.start(start=False))          # reads /v1/info, then starts the engine job
        assert rw.session.busy and rw.session.job_name == "run_slads"
        qtbot.waitUntil(lambda: not rw.session.busy, timeout=90000)
        r = rw.result
        assert r is not None, rw.status.text()
        target = round(0.1 * 32 * 32)
        assert r["stop_reason"] == "target fraction reached" and r["n_measured"] == target
        mask = rw.layers["mask"]
        assert mask.data.shape == (32, 32) and rw.layers["reconstruction"].data.shape == (32, 32)
        assert int(mask.data.sum()) == r["n_measured"] == state.n_measured      # nothing measured twice
        assert set(np.unique(rw.layers["reconstruction"].data)) <= {0, 1, 2}
        assert "TD n/a" in rw.status.text() and not np.isfinite(r["td"])
        folder = rw.run.folder
        j = _journal(folder)
        np.testing.assert_array_equal(j["position"], r["positions"])
        np.testing.assert_array_equal(j["spectrum"], spec.measure(j["position"]))
        assert j["settings"]["microscope"] == srv.url and j["settings"]["run"]["overlap"] is True
        qtbot.waitUntil(lambda: rw.saved_to == folder, timeout=30000)
        res = json.loads((folder / "result.json").read_text())
        from napari_slads_eds.run_folder import RunResult

        assert sorted(res) == list(RunResult.json_keys()) and res["mode"] == "microscope"
        assert res["microscope"]["url"] == srv.url and res["microscope"]["dwell_s"] == 0.02
        assert res["microscope"]["info"]["shape"] == [32, 32] and np.isnan(res["td"])   # as slads-eds acquire
        assert (folder / "models" / "classifier" / "cnn.keras").is_file() and not (folder / "specimen.npz").exists()
        for f in folder.rglob("*"):                 # the token is never written
            if f.is_file() and f.suffix in (".json", ".h5", ".npz"):
                assert TOKEN.encode() not in f.read_bytes(), f
        visible = {l.name for l in viewer.layers if l.visible}
        assert visible == {"measurement mask", "reconstruction", "ERD"}, visible
        rep = rw.replay()                           # the sampling order, as after a simulated run
        assert rep is not None and rep.n == target and rw.layers["mask"].data.shape == (target + 1, 32, 32)

        # 2. with the served specimen as ground truth: TD; Pause and Stop
        rw.truth_edit.setText(str(spec_file))
        rw.set_parameters(target_fraction=0.8, batch=2)
        state.dwell_delay = 0.01
        n_before = state.n_measured
        _wait(qtbot, rw.start(start=False))
        qtbot.waitUntil(lambda: rw.frames >= 2, timeout=60000)
        rw.pause()
        assert rw.pause_button.text() == "Resume"
        qtbot.wait(400)                              # the batch under the beam is finished
        n_paused = state.n_measured
        qtbot.wait(600)
        assert state.n_measured == n_paused          # the beam rests while paused
        rw.resume()
        qtbot.waitUntil(lambda: state.n_measured > n_paused, timeout=10000)
        rw.stop()
        qtbot.waitUntil(lambda: not rw.session.busy, timeout=20000)
        r = rw.result
        assert r["stop_reason"] == "stopped by the user" and r["n_measured"] < round(0.8 * 1024)
        assert int(rw.layers["mask"].data.sum()) == r["n_measured"] == state.n_measured - n_before
        assert len(_journal(rw.run.folder)["label"]) == r["n_measured"]
        text = rw.status.text()
        assert 0 <= r["td"] < 0.5 and f"TD {r['td']:.4f}" in text
        # how to continue it: slads-eds acquire ... --resume (the GUI's Resume is for simulated runs)
        assert f"'slads-eds acquire --microscope {srv.url} --models {rw.run.folder}" in text
        assert "--fraction 0.8 --batch 2 --overlap" in text and "--resume'" in text
        gt = viewer.layers["ground truth (microscope)"]
        np.testing.assert_array_equal(gt.data, spec.labels)
        assert gt.visible and rw.session.engine.is_alive()
        assert rw.resume_run(rw.run.folder) is None
        assert "is a run on the microscope at" in rw.status.text() and "--resume" in rw.status.text()
    _no_tensorflow()


def test_a_microscope_that_cannot_be_used_is_refused_in_the_status_line(make_napari_viewer, qtbot, served,
                                                                         tmp_path):
    """A closed port, a malformed URL, a wrong token, another energy axis and a ground truth of
    another grid: one line in the Run tab's status line each, and no engine job."""
    from napari_slads_eds.server import ServerThread, create_app, listen_socket
    from napari_slads_eds.specimen import save_specimen
    from napari_slads_eds.spectra import EnergyAxis, default_axis

    spec, _ = served
    viewer, rw = _microscope_tab(make_napari_viewer)

    def refused(action, *expected):
        n0 = _n_notes()
        worker = action(start=False)
        if worker is not None:
            assert not rw.start_button.isEnabled()       # while /v1/info is read
            _wait(qtbot, worker)
        text = rw.status.text()
        assert text.startswith("Error: Microscope: ") or text.startswith("Error: Sampling run: "), text
        line = text.split("\n")[0]
        assert all(e in line for e in expected), line
        assert any(all(e in m for e in expected) for m in _notes(n0)), _notes(n0)
        assert rw.session.engine is None and not rw.session.busy and rw.run is None
        assert rw.start_button.isEnabled()

    sock = listen_socket("127.0.0.1", 0)
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    rw.url_edit.setText(closed)
    refused(rw.start, f"no microscope answers at {closed}", "is the server running")
    refused(rw.connect_microscope, f"no microscope answers at {closed}")
    rw.url_edit.setText("127.0.0.1:8765")
    refused(rw.start, "microscope URL: expected an http:// or https:// URL")

    with ServerThread(create_app(spec, token=TOKEN)) as srv:
        rw.url_edit.setText(srv.url)
        refused(rw.start, "needs a token")
        rw.token_edit.setText("wrong")
        refused(rw.start, "refused the token", "check it")
        rw.token_edit.setText(TOKEN)
        small = tmp_path / "small.npz"
        save_specimen(_specimen(16), small)
        rw.truth_edit.setText(str(small))
        refused(rw.start, "ground truth's grid is 16 x 16, the microscope's 32 x 32")
        rw.truth_edit.setText(str(tmp_path / "missing.npz"))
        refused(rw.start, "ground truth: ", "missing.npz")
        rw.truth_edit.setText("")
        rw.mic_dwell_spin.setValue(100.0)
        refused(rw.start, "dwell time 100 s is outside the microscope's limits 0-60 s")
    full = default_axis()
    other = _specimen(16, axis=EnergyAxis(full.offset_keV, full.scale_keV, 1024))    # a shorter detector
    rw.mic_dwell_spin.setValue(0.0)
    with ServerThread(create_app(other)) as srv:
        rw.url_edit.setText(srv.url)
        refused(rw.start, "the microscope's energy axis (1024 channels", "is not the one the classifier was "
                          "trained on (2048 channels")
        assert srv.server.config.app.state.microscope.n_measured == 0
    _no_tensorflow()
