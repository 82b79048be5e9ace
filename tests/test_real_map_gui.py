"""GUI test of the real-map replay (napari viewer under Xvfb; the replay runs in the engine).

A spectrum image opened with the plugin's reader is replayed from the "Real map" tab: the
live layers (mask, reconstruction, ERD) sit over the map's electron image, and the result
is the one ``slads-eds replay`` writes.  TensorFlow never enters this process.
"""

import json
import sys

import numpy as np
import pytest

from napari_slads_eds._reader import _spectrum_image_layers
from napari_slads_eds.eds_io import SpectrumImage
from napari_slads_eds.energy_axes import to_axis
from napari_slads_eds.spectra import EnergyAxis, bundled_standards, read_spectrum

pytestmark = pytest.mark.gui


def _generated_map(H=30, W=36, counts=40.0, seed=0):
    """Two phases (Si matrix, Fe discs) with Poisson counts of the standards' shapes and a BSE image."""
    axis = EnergyAxis(0.04, 0.08, 256)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    truth = np.where(((yy - 8) ** 2 + (xx - 9) ** 2 < 30) | ((yy - 20) ** 2 + (xx - 26) ** 2 < 40), 2, 1)
    shapes = []
    for name in ("Si", "Fe"):
        s = read_spectrum(bundled_standards()[name])
        c = to_axis(s.counts, s.axis, axis, beam_energy_keV=15.0)
        shapes.append(c / c.sum())
    cube = rng.poisson(np.stack(shapes)[truth - 1] * counts).astype(np.uint16)
    bse = np.where(truth == 2, 200.0, 80.0) + rng.normal(0, 5, truth.shape)
    return SpectrumImage(cube, axis, 15.0, 1.0, 2.0, "µm", {"BSE": bse}, "generated map"), truth


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SLADS_EDS_RUNS", str(tmp_path / "runs"))


@pytest.mark.engine
def test_replay_a_real_map_from_the_real_map_tab(make_napari_viewer, qtbot):
    from napari_slads_eds._widgets.workflow import WorkflowWidget

    viewer = make_napari_viewer()
    si, truth = _generated_map()
    for data, kw, kind in _spectrum_image_layers(si):
        getattr(viewer, f"add_{kind}")(data, **kw)
    wf = WorkflowWidget(viewer)
    w = wf.real_map
    assert w.map_combo.layer() is viewer.layers["generated map (total counts)"]
    w.phases.setValue(2)
    w.fraction.setValue(0.25)
    worker = w.start(start=False)
    assert worker is not None
    with qtbot.waitSignal(worker.started, timeout=10000):
        worker.start()
    qtbot.waitUntil(lambda: w.last_result is not None or "Error" in w.status.text(), timeout=180000)
    assert w.last_result is not None, w.status.text()
    r = w.last_result
    names = [l.name for l in viewer.layers]
    # the live layers lie over the map's electron image, which is shown
    bse = viewer.layers["generated map BSE"]
    assert bse.visible and not viewer.layers["generated map (total counts)"].visible
    for live in ("replay mask", "replay reconstruction", "replay ERD"):
        assert names.index(live) > names.index("generated map BSE")
    mask = viewer.layers["replay mask"].data
    assert int(mask.sum()) == r["n_measured"] == round(0.25 * truth.size)
    assert np.array_equal(viewer.layers["replay reconstruction"].data, r["reconstruction"])
    assert 0 <= r["td"] <= r["td_random"] + 0.05
    assert r["classifier_kind"] == "poisson" and r["uncertainty"] == "soft"
    saved = json.loads((w.out_dir / "result.json").read_text())
    assert saved["td"] == pytest.approx(r["td"]) and saved["mode"] == "replay"
    assert f"TD SLADS {r['td']:.4f}" in w.status.text() and "Halton" in w.status.text()
    assert w.start_button.isEnabled()
    assert "tensorflow" not in sys.modules


def test_replay_without_a_map_says_what_to_open(make_napari_viewer):
    from napari_slads_eds._widgets.real_map import RealMapWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="just an image")
    w = RealMapWidget(viewer)
    assert w.map_combo.layer() is None
    assert w.start() is None
    assert "no spectrum image" in w.status.text() and "Error" in w.status.text()
