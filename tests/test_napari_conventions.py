"""napari conventions (issue 14, item 5) in a real viewer under Xvfb: the run writer
(File > Save Selected Layers), run folders opened by the reader, a spectrum image as a
lazy 3-D layer with an energy axis in keV, a spectrum file drawn in the Plots dock, and
engine jobs shown in napari's activity dock.  No TensorFlow in this process."""

import json
import time

import numpy as np
import pytest

from napari_slads_eds import InputError
from napari_slads_eds.results import write_run
from napari_slads_eds.spectra import EnergyAxis, bundled_standards, read_spectrum

from _gui_helpers import PLUGIN, _no_tensorflow

pytestmark = pytest.mark.gui


def _run(H=10, W=12, seed=0):
    rng = np.random.default_rng(seed)
    rec = np.ones((H, W), np.int16)
    rec[:, 7:] = 2
    flat = rng.choice(H * W, 20, replace=False)
    pos = np.stack(np.divmod(flat, W), axis=1)
    mask = np.zeros((H, W), bool)
    mask[pos[:, 0], pos[:, 1]] = True
    return {"grid": [H, W], "phases": 2, "td": 0.04, "sampling_fraction": 20 / (H * W), "n_measured": 20,
            "td_curve": [[0.05, 0.2], [20 / (H * W), 0.04]], "positions": pos,
            "labels": rec[pos[:, 0], pos[:, 1]].copy(), "reconstruction": rec, "mask": mask,
            "ground_truth": rec.copy(), "settings": {"batch": 1}}


def test_writer_round_trip_from_a_run_folder(make_napari_viewer, tmp_path):
    """A run folder opens as the run's layers; saving its reconstruction + mask (+ points)
    writes a run file that opens as the same run."""
    viewer = make_napari_viewer()
    r = _run()
    write_run(r, tmp_path / "myrun")
    layers = viewer.open(str(tmp_path / "myrun"), plugin=PLUGIN)
    names = [l.name for l in layers]
    assert names == ["myrun: reconstruction", "myrun: ground truth", "myrun: mask", "myrun: measured"]
    rec, mask, pts = viewer.layers["myrun: reconstruction"], viewer.layers["myrun: mask"], layers[3]
    np.testing.assert_array_equal(rec.data, r["reconstruction"])
    np.testing.assert_array_equal(mask.data.astype(bool), r["mask"])
    for suffix in (".hspy", ".npz"):
        out = tmp_path / f"saved{suffix}"
        viewer.layers.selection = {rec, mask, pts}
        written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
        assert written == [str(out)] and out.exists()
        back = viewer.open(str(out), plugin=PLUGIN)
        assert [type(l).__name__ for l in back] == ["Labels", "Image", "Points"]
        np.testing.assert_array_equal(back[0].data, r["reconstruction"])
        np.testing.assert_array_equal(back[1].data.astype(bool), r["mask"])
        # the measurement order and labels come from the points layer; the summary is kept
        np.testing.assert_array_equal(back[2].data.astype(int), r["positions"])
        np.testing.assert_array_equal(back[2].features["label"], r["labels"])
        assert back[0].metadata["td"] == pytest.approx(0.04)
        assert back[0].metadata["slads_eds_result"]["settings"] == {"batch": 1}
    # reconstruction + mask alone (no points): positions from the mask, labels from the map
    viewer.layers.selection = {rec, mask}
    viewer.layers.save(str(tmp_path / "two.npz"), selected=True, plugin=PLUGIN)
    from napari_slads_eds.export import load_export

    two = load_export(tmp_path / "two.npz")
    np.testing.assert_array_equal(two["mask"], r["mask"])
    assert {tuple(p) for p in two["positions"]} == {tuple(p) for p in r["positions"]}
    np.testing.assert_array_equal(two["labels"], r["reconstruction"][tuple(two["positions"].T)])
    _no_tensorflow()


def test_writer_refuses_layers_that_are_not_a_run(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    lab = viewer.add_labels(np.ones((5, 5), np.int32), name="phases")
    img = viewer.add_image(np.zeros((5, 5)), name="sem")
    viewer.layers.selection = {lab, img}
    msg = "'phases' \\(labels\\), 'sem' \\(image\\) are not part of a SLADS run"
    # napari's Save dialog calls the chosen writer, whose error napari shows
    from napari_slads_eds._writer import write_run_layers

    data = [l.as_layer_data_tuple() for l in (lab, img)]
    with pytest.raises(InputError, match=msg), pytest.warns(UserWarning, match=msg):
        write_run_layers(str(tmp_path / "x.npz"), data)
    # layers.save(plugin=...) turns a writer's ValueError into "not a valid writer": the
    # reason is still given, as a warning
    with pytest.warns(UserWarning, match=msg):
        assert viewer.layers.save(str(tmp_path / "x.npz"), selected=True, plugin=PLUGIN) == []
    assert not (tmp_path / "x.npz").exists()


def test_writer_saves_the_live_layers_of_a_run(make_napari_viewer, tmp_path):
    """The Sampling-run widget's live layers (metadata slads_eds_live) save as a run."""
    from napari_slads_eds.export import load_export

    viewer = make_napari_viewer()
    r = _run()
    rec = viewer.add_labels(r["reconstruction"], name="SLADS reconstruction", scale=(2.0, 2.0),
                            units=("µm", "µm"), metadata={"slads_eds_live": "reconstruction"})
    mask = viewer.add_image(r["mask"].astype(np.uint8), name="measured", scale=(2.0, 2.0),
                            metadata={"slads_eds_live": "mask"})
    viewer.layers.selection = {rec, mask}
    viewer.layers.save(str(tmp_path / "live.hspy"), selected=True, plugin=PLUGIN)
    back = load_export(tmp_path / "live.hspy")
    np.testing.assert_array_equal(back["reconstruction"], r["reconstruction"])
    np.testing.assert_array_equal(back["mask"], r["mask"])
    assert float(back["export_pixel_size"]) == 2.0 and back["export_pixel_units"] == "µm"
    assert back["sampling_fraction"] == pytest.approx(20 / 120)


def test_reader_takes_run_folders_and_declines_other_folders(make_napari_viewer, tmp_path):
    from napari_slads_eds._reader import napari_get_reader

    viewer = make_napari_viewer()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "result.json").write_text(json.dumps({"td": 0.1}))   # not enough
    assert napari_get_reader(str(tmp_path / "photos")) is None
    assert napari_get_reader(str(tmp_path)) is None
    with pytest.raises(ValueError, match="refused"):
        viewer.open(str(tmp_path / "photos"), plugin=PLUGIN)
    # an unfinished run (a journal, no run.npz) is ours, with a clear message
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "journal.h5").write_bytes(b"")
    reader = napari_get_reader(str(tmp_path / "unfinished"))
    assert reader is not None
    with pytest.raises(InputError, match="has not finished"):
        reader(str(tmp_path / "unfinished"))


def _map(H=24, W=30, p=200, seed=0):
    from napari_slads_eds.eds_io import SpectrumImage

    axis = EnergyAxis(-0.2, 0.05, p)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    fe = ((yy - 12) ** 2 + (xx - 10) ** 2) < 40
    lam = np.full((H, W, p), 0.05)
    ch = int((6.4 - axis.offset_keV) / axis.scale_keV)      # Fe K-alpha
    lam[..., ch - 2: ch + 3] += np.where(fe, 6.0, 0.2)[..., None]
    cube = rng.poisson(lam).astype(np.uint16)
    bse = np.where(fe, 200.0, 90.0)
    return SpectrumImage(cube, axis, 15.0, 1.0, 0.5, "µm", {"BSE": bse}, "test map"), ch


def test_spectrum_image_is_a_lazy_3d_layer_in_kev(make_napari_viewer, tmp_path):
    import dask.array as da

    si, ch = _map()
    f = tmp_path / "map.npz"
    np.savez(f, counts=si.counts, energy_offset_keV=si.axis.offset_keV, energy_scale_keV=si.axis.scale_keV,
             pixel_size_um=0.5, image_BSE=si.images["BSE"])
    viewer = make_napari_viewer()
    layers = viewer.open(str(f), plugin=PLUGIN)
    cube = next(l for l in layers if l.ndim == 3)
    total = next(l for l in layers if l.name.endswith("(total counts)"))
    assert isinstance(cube.data, da.Array) and cube.data.shape == (200, 24, 30)
    np.testing.assert_array_equal(np.asarray(cube.data[ch]), si.counts[..., ch])
    np.testing.assert_allclose(cube.scale, (0.05, 0.5, 0.5))
    np.testing.assert_allclose(cube.translate, (-0.2, 0.0, 0.0))
    assert tuple(cube.axis_labels) == ("energy", "y", "x")
    assert [str(u) for u in cube.units] == ["kiloelectron_volt", "micrometer", "micrometer"]
    # the viewer gets an energy slider in keV; the 2-D layers are shown at every energy
    assert viewer.dims.ndim == 3 and viewer.dims.axis_labels[0] == "energy"
    assert str(viewer.dims.units[0]) == "kiloelectron_volt"
    lo, hi, step = viewer.dims.range[0]
    assert lo == pytest.approx(-0.2) and hi == pytest.approx(-0.2 + 199 * 0.05) and step == pytest.approx(0.05)
    viewer.dims.set_point(0, 6.4)
    assert np.asarray(cube._slice.image.raw).sum() == si.counts[..., ch].sum()
    # the total-counts layer keeps the spectra for the replay widget and pixel spectra
    assert total.metadata["spectra"].shape == (24, 30, 200) and not total.visible
    assert [str(u) for u in total.units] == ["micrometer", "micrometer"]
    _no_tensorflow()


def test_the_phases_step_offers_micrographs_not_result_layers(make_napari_viewer, tmp_path):
    """A run's mask or ERD and a spectrum image's energy cube are images, but not micrographs:
    the Phases step does not offer them (it took a run's mask for its micrograph)."""
    from napari_slads_eds._widgets.micrograph import _is_micrograph

    run = _run()
    write_run(run, tmp_path / "run")
    si, _ = _map()
    f = tmp_path / "map.npz"
    np.savez(f, counts=si.counts, energy_offset_keV=si.axis.offset_keV, energy_scale_keV=si.axis.scale_keV,
             image_BSE=si.images["BSE"])
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "run"), plugin=PLUGIN) + viewer.open(str(f), plugin=PLUGIN)
    offered = {l.name for l in layers if _is_micrograph(l)}
    images = {l.name for l in layers if l._type_string == "image"}
    assert any(n.endswith("BSE") for n in offered) and any(n.endswith("(total counts)") for n in offered)
    assert not any("mask" in n or "spectrum image" in n for n in offered)
    assert any("mask" in n for n in images) and any("spectrum image" in n for n in images)   # (there to refuse)
    viewer.add_image(np.zeros((8, 8)), name="a micrograph")
    assert _is_micrograph(viewer.layers["a micrograph"])


def test_spectrum_file_is_drawn_in_the_plots_dock(make_napari_viewer):
    from napari_slads_eds._widgets._session import session_for

    viewer = make_napari_viewer()
    fe = str(bundled_standards()["Fe"])
    # no dock: the spectrum shows as a path layer on the canvas
    (before,) = viewer.open(fe, plugin=PLUGIN)
    assert before.visible and before.metadata["kind"] == "eds_spectrum"
    dock = session_for(viewer).plots_dock()
    # the dock draws the spectrum opened before it
    line = dock.spectrum.ax.get_lines()[-1]
    np.testing.assert_allclose(line.get_ydata(), before.metadata["counts"])
    si = str(bundled_standards()["Si"])
    (spec,) = viewer.open(si, plugin=PLUGIN)
    s = read_spectrum(si)
    line = dock.spectrum.ax.get_lines()[-1]
    np.testing.assert_allclose(line.get_xdata(), s.axis.energies)
    np.testing.assert_allclose(line.get_ydata(), s.counts)
    assert dock.tabs.currentWidget() is dock.spectrum and "Si" in dock.spectrum.title
    assert not spec.visible and len(spec.data) == 0   # drawn in the dock, not as a path over the maps
    viewer.layers.selection.active = before      # selecting a spectrum layer draws it again
    np.testing.assert_allclose(dock.spectrum.ax.get_lines()[-1].get_ydata(), before.metadata["counts"])


def test_engine_job_progress_in_the_activity_dock(make_napari_viewer, qtbot, monkeypatch):
    """A job's messages drive a napari progress bar, closed when the job ends or fails (the
    engine is replaced by a fake message stream; worker, relay signals and session are real)."""
    from napari.utils import progress

    from napari_slads_eds._widgets import _session

    def ours():
        return [p for p in progress._all_instances if "SLADS-EDS" in p.desc]

    viewer = make_napari_viewer()
    s = _session.session_for(viewer)
    msgs = [{"type": "progress", "stage": "erd-database", "done": i, "total": 4} for i in range(5)]
    msgs += [{"type": "baseline", "name": "random", "curve": []},
             {"type": "progress", "stage": "c-search", "done": 1, "total": 3}]

    def relay(name, kwargs, prepare=None):
        assert s.progress is not None      # made before the worker started
        for i, m in enumerate(msgs):
            yield m
            t0 = time.monotonic()          # like the engine: the next message comes later
            while len(got) <= i and time.monotonic() - t0 < 5:
                time.sleep(0.005)
        return _session.JobOutcome(name, "done", {"ok": True})

    monkeypatch.setattr(s, "_relay", relay)
    got, states = [], []
    worker = s.run_job("train_erd", {}, on_message=got.append, on_done=got.append, start=False)
    bar = s.progress.bar
    assert bar in ours() and bar.desc.startswith("SLADS-EDS, training the ERD model")
    # connected after the session's own handler: sees the bar as each message left it
    worker.yielded.connect(lambda m: states.append((bar.desc.rstrip(": "), bar.total, bar.n, len(ours()))))
    with qtbot.waitSignal(worker.finished, timeout=10000):
        worker.start()
    qtbot.waitUntil(lambda: not s.busy, timeout=5000)
    assert got[-1].status == "done" and len(got) == len(msgs) + 1    # the widget still gets every message
    title = "SLADS-EDS, training the ERD model"
    assert states[0] == (f"{title}: ERD training database", 4, 0, 1)
    assert states[4] == (f"{title}: ERD training database", 4, 4, 1)
    assert states[5] == states[4]                                    # a baseline message: no change
    assert states[6] == (f"{title}: c search", 3, 1, 1)
    assert s.progress is None and ours() == []          # closed at the end of the job

    # a failing job (and a sampling run's frames) close it too
    def failing(name, kwargs, prepare=None):
        yield {"type": "frame", "n_measured": 7, "target": 50, "positions": []}
        return _session.JobOutcome(name, "error", error=RuntimeError("boom"))

    monkeypatch.setattr(s, "_relay", failing)
    w2 = s.run_job("run_slads", {}, start=False)
    jp = s.progress
    with qtbot.waitSignal(w2.finished, timeout=10000):
        w2.start()
    qtbot.waitUntil(lambda: not s.busy, timeout=5000)
    assert (jp.stage, jp.messages) == ("sampling", 1) and jp.closed
    assert s.progress is None and ours() == []
    _no_tensorflow()


def test_cancelling_the_activity_bar_stops_the_job(make_napari_viewer, qtbot, monkeypatch):
    from napari_slads_eds._widgets import _session

    viewer = make_napari_viewer()
    s = _session.session_for(viewer)
    stops = []
    monkeypatch.setattr(s, "stop", lambda *a, **k: stops.append(1))
    release = []

    def relay(name, kwargs, prepare=None):
        yield {"type": "progress", "stage": "classifier", "done": 0, "total": 5}
        while not release:
            import time
            time.sleep(0.01)
        return _session.JobOutcome(name, "cancelled")

    monkeypatch.setattr(s, "_relay", relay)
    w = s.run_job("train_classifier", {}, start=False)
    with qtbot.waitSignal(w.yielded, timeout=10000):
        w.start()
    s.progress.bar.cancel_callback()          # what napari's Cancel button calls
    assert stops == [1]
    release.append(1)
    qtbot.waitUntil(lambda: not s.busy, timeout=5000)
    assert s.progress is None
