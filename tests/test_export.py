"""Export and reload of runs (.hspy, .zspy, .npz), and the napari reader (no viewer needed)."""

import json
import sys

import numpy as np
import pytest

from napari_slads_eds import InputError
from napari_slads_eds._reader import napari_get_reader, pixel_spectrum, read_path
from napari_slads_eds.export import export_run, is_export_file, load_export
from napari_slads_eds.results import write_run
from napari_slads_eds.spectra import EnergyAxis, bundled_standards

AXIS = EnergyAxis(-0.1, 0.01, 128)


def _zspy_works() -> bool:
    """RosettaSciIO 0.15's .zspy writer needs zarr 2 (zarr.storage.NestedDirectoryStore)."""
    try:
        import zarr.storage
    except ImportError:
        return False
    try:
        import numcodecs  # noqa: F401
    except ImportError:
        return False
    return hasattr(zarr.storage, "NestedDirectoryStore")


def _need_zspy():
    if not _zspy_works():
        pytest.skip("RosettaSciIO's .zspy writer needs zarr < 3 with numcodecs (not installed)")


def test_zspy_without_a_working_writer_is_a_clear_error(tmp_path, run_result, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rsciio.zspy", None)      # the import fails, as without zarr 2
    with pytest.raises(InputError, match="write .hspy instead"):
        export_run(run_result[0], tmp_path / "run.zspy")


@pytest.fixture
def run_result():
    rng = np.random.default_rng(0)
    H, W, n = 12, 15, 30
    flat = rng.choice(H * W, n, replace=False)
    pos = np.stack(np.divmod(flat, W), axis=1)
    truth = np.ones((H, W), np.int16)
    truth[:, 8:] = 2
    lab = truth[pos[:, 0], pos[:, 1]].copy()
    lab[0] = 0
    mask = np.zeros((H, W), bool)
    mask[pos[:, 0], pos[:, 1]] = True
    result = {"grid": [H, W], "phases": 2, "sampling_fraction": n / (H * W), "n_measured": n,
              "td": 0.05, "td_curve": [[0.01, 0.3], [n / (H * W), 0.05]], "td_random": 0.1,
              "td_halton": 0.09, "td_curve_random": [[0.1, 0.2], [n / (H * W), 0.1]],
              "misclassification": 0.02, "c": 8.0, "seconds": 1.5, "positions": pos, "labels": lab,
              "reconstruction": truth.copy(), "mask": mask, "ground_truth": truth,
              "erd": rng.random((H, W)).astype(np.float32), "settings": {"fraction": 0.2, "seed": 0}}
    spectra = rng.poisson(1.0, size=(n, AXIS.size)).astype(np.float32)
    return result, spectra


@pytest.mark.parametrize("suffix", [".hspy", ".zspy", ".npz"])
def test_export_roundtrip(tmp_path, run_result, suffix):
    result, spectra = run_result
    if suffix == ".zspy":
        _need_zspy()
    f = export_run(result, tmp_path / f"run{suffix}", spectra=spectra, axis=AXIS, beam_energy_keV=15.0,
                   pixel_size=2.5, pixel_units="µm")
    assert is_export_file(f)
    back = load_export(f)
    np.testing.assert_array_equal(back["positions"], result["positions"])
    np.testing.assert_array_equal(back["labels"], result["labels"])
    np.testing.assert_array_equal(back["reconstruction"], result["reconstruction"])
    np.testing.assert_array_equal(back["mask"], result["mask"])
    np.testing.assert_allclose(back["td_curve"], result["td_curve"])
    np.testing.assert_allclose(back["spectra"], spectra)
    assert back["energy_axis"] == AXIS
    assert back["td"] == 0.05 and back["td_random"] == 0.1 and back["settings"]["fraction"] == 0.2
    assert float(back["export_pixel_size"]) == 2.5


@pytest.mark.parametrize("suffix", [".hspy", ".zspy"])
def test_hyperspy_opens_the_export_as_an_xy_spectrum_image_with_maps(tmp_path, run_result, suffix):
    hs = pytest.importorskip("hyperspy.api")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if suffix == ".zspy":
        _need_zspy()
    result, spectra = run_result
    result = dict(result, phase_names=["Si", "CaF2"])
    f = export_run(result, tmp_path / f"run{suffix}", spectra=spectra, axis=AXIS, beam_energy_keV=15.0,
                   pixel_size=2.5, pixel_units="µm", live_time_s=10.0, energy_resolution_MnKa_eV=130.0)
    s = hs.load(f)
    assert not isinstance(s, list)
    assert s.data.shape == (12, 15, AXIS.size) and s.data.dtype == np.uint16     # (y, x, E)
    x, y = s.axes_manager.navigation_axes
    assert (x.name, x.size, y.name, y.size) == ("x", 15, "y", 12)
    for a in (x, y):
        assert a.scale == pytest.approx(2.5) and a.units == "µm" and a.offset == 0
    e, = s.axes_manager.signal_axes
    assert e.name == "Energy" and e.units == "keV"
    assert e.offset == pytest.approx(-0.1) and e.scale == pytest.approx(0.01) and e.size == AXIS.size
    pos = result["positions"]
    for i in (0, 7, 29):
        r, c = pos[i]
        np.testing.assert_array_equal(s.inav[int(c), int(r)].data, spectra[i])
    unmeasured = np.argwhere(~result["mask"])[0]
    assert not s.inav[int(unmeasured[1]), int(unmeasured[0])].data.any()
    assert int(np.count_nonzero(s.data.sum(-1))) == int(np.count_nonzero(spectra.sum(-1)))
    assert "zero counts" in s.metadata.SLADS.unmeasured_pixels
    maps = s.metadata.SLADS.Maps
    rec = maps.reconstruction
    assert isinstance(rec, hs.signals.Signal2D)
    np.testing.assert_array_equal(rec.data, result["reconstruction"])
    np.testing.assert_array_equal(maps.mask.data.astype(bool), result["mask"])
    np.testing.assert_allclose(maps.erd.data, result["erd"])
    np.testing.assert_array_equal(maps.ground_truth.data, result["ground_truth"])
    rx, ry = rec.axes_manager.signal_axes
    assert (rx.name, rx.size, ry.name, ry.size) == ("x", 15, "y", 12)
    assert rx.scale == pytest.approx(2.5) and ry.units == "µm"
    assert list(s.metadata.Sample.elements) == ["Ca", "F", "Si"]
    sem = s.metadata.Acquisition_instrument.SEM
    assert sem.beam_energy == 15.0
    assert sem.Detector.EDS.live_time == 10.0 and sem.Detector.EDS.energy_resolution_MnKa == 130.0
    assert s.metadata.Signal.signal_type == "EDS_SEM"
    np.testing.assert_array_equal(s.metadata.SLADS.positions, pos)
    assert json.loads(s.metadata.SLADS.result_json)["td"] == 0.05
    # plots without a GUI
    r, c = pos[3]
    s.inav[int(c), int(r)].plot()
    rec.plot()
    assert len(plt.get_fignums()) >= 2
    plt.close("all")


def _write_format1(path, result, spectra):
    """A file in the format-1 layout (1-D "measurement" navigation, maps as arrays in
    metadata.SLADS), as napari-slads-eds wrote it before the x/y layout."""
    from rsciio.hspy import file_writer

    slads = {k: np.asarray(result[k]) for k in ("positions", "labels", "reconstruction", "erd")}
    slads.update(mask=result["mask"].astype(np.uint8), td_curve=np.asarray(result["td_curve"], float),
                 grid=[12, 15], pixel_size=2.0, pixel_units="nm", result_json=json.dumps({"td": 0.05}),
                 format="napari-slads-eds run export", format_version=1)
    axes = [{"name": "measurement", "size": len(spectra), "offset": 0.0, "scale": 1.0, "units": "",
             "navigate": True},
            {"name": "Energy", "size": AXIS.size, "offset": -0.1, "scale": 0.01, "units": "keV",
             "navigate": False}]
    md = {"General": {"title": "SLADS run"}, "Signal": {"signal_type": "EDS_SEM"}, "SLADS": slads}
    file_writer(str(path), {"data": spectra, "axes": axes, "metadata": md, "original_metadata": {},
                            "tmp_parameters": {}, "attributes": {"_lazy": False}, "learning_results": {},
                            "models": {}, "package_info": {"name": "napari-slads-eds", "version": "0"}},
                show_progressbar=False)


def test_format1_exports_still_load(tmp_path, run_result):
    result, spectra = run_result
    f = tmp_path / "old.hspy"
    _write_format1(f, result, spectra)
    assert is_export_file(f)
    back = load_export(f)
    np.testing.assert_array_equal(back["positions"], result["positions"])
    np.testing.assert_array_equal(back["reconstruction"], result["reconstruction"])
    np.testing.assert_array_equal(back["mask"], result["mask"])
    np.testing.assert_allclose(back["spectra"], spectra)
    assert back["energy_axis"] == AXIS and back["td"] == 0.05 and float(back["export_pixel_size"]) == 2.0
    assert [t for _, _, t in napari_get_reader(str(f))(str(f))] == ["labels", "image", "points"]


def test_counts_dtype_and_repeated_positions(tmp_path, run_result):
    hs = pytest.importorskip("hyperspy.api")
    result, spectra = run_result
    big = spectra.copy()
    big[0, 5] = 70000                     # > uint16
    frac = spectra + 0.5                  # not counts
    for sp, dt in ((big, np.uint32), (frac, np.float32)):
        f = export_run(result, tmp_path / f"{np.dtype(dt).name}.hspy", spectra=sp, axis=AXIS)
        assert hs.load(f).data.dtype == dt
        np.testing.assert_array_equal(load_export(f)["spectra"], sp)
    # a position measured twice: the cube cannot hold both, the 1-D measurement layout is kept
    rep = dict(result)
    rep["positions"] = np.concatenate([result["positions"], result["positions"][:1]])
    rep["labels"] = np.concatenate([result["labels"], result["labels"][:1]])
    sp = np.concatenate([spectra, spectra[:1] + 1])
    f = export_run(rep, tmp_path / "rep.hspy", spectra=sp, axis=AXIS)
    s = hs.load(f)
    assert s.data.shape == (31, AXIS.size) and s.axes_manager.navigation_axes[0].name == "measurement"
    assert s.metadata.SLADS.spectra_layout == "measurement"
    np.testing.assert_allclose(load_export(f)["spectra"], sp)


def test_elements_from_phase_names_and_bad_metadata(tmp_path, run_result):
    from napari_slads_eds._hspy import elements_of

    assert elements_of(["Si", "Fe"]) == ["Fe", "Si"]
    assert elements_of(["MgO", "K412 glass", "Pb 0.7, Sn 0.3"]) == ["Al", "Ca", "Fe", "Mg", "O", "Pb", "Si", "Sn"]
    assert elements_of(["nist_Si_std_15kV", "nist_CaF2_std_15kV", "tima_calcite_25kV"]) == ["C", "Ca", "F", "O", "Si"]
    assert elements_of(["phase 1", "Quartz", "matrix", "phase_A"]) == []
    from napari_slads_eds.spectra import BUNDLED_STANDARDS
    for name, fname in BUNDLED_STANDARDS.items():       # every bundled standard, by name and file stem
        assert elements_of([name]) and elements_of([name]) == elements_of([fname.rsplit(".", 1)[0]])
    result, spectra = run_result
    back = load_export(export_run(dict(result, phase_names=["phase 1", "phase 2"]), tmp_path / "p.hspy",
                                  spectra=spectra, axis=AXIS))
    assert "export_elements" not in back
    back = load_export(export_run(result, tmp_path / "e.npz", spectra=spectra, axis=AXIS, elements=["Si", "Fe"],
                                  live_time_s=2.0))
    assert back["export_elements"] == ["Fe", "Si"] and back["export_live_time_s"] == 2.0
    with pytest.raises(InputError, match="not element symbols"):
        export_run(result, tmp_path / "x.hspy", elements=["iron"])
    with pytest.raises(InputError, match="live_time_s must be a positive"):
        export_run(result, tmp_path / "x.hspy", live_time_s=-1)
    with pytest.raises(InputError, match="pixel_size must be a number"):
        export_run(result, tmp_path / "x.hspy", pixel_size="wide")
    bad = dict(result, positions=result["positions"] + [0, 20])
    with pytest.raises(InputError, match="outside the 12 x 15 grid"):
        export_run(bad, tmp_path / "x.hspy")


@pytest.mark.parametrize("suffix", [".hspy", ".npz"])
def test_unknown_calibration_is_left_out_not_written_as_zero(tmp_path, run_result, suffix):
    result, spectra = run_result
    back = load_export(export_run(result, tmp_path / f"sim{suffix}", spectra=spectra, axis=AXIS))
    for k in ("export_beam_energy_keV", "export_pixel_size", "export_pixel_units"):
        assert k not in back
    assert list(back["grid"]) == [12, 15]
    if suffix == ".hspy":
        hs = pytest.importorskip("hyperspy.api")
        s = hs.load(tmp_path / "sim.hspy")
        assert "Acquisition_instrument" not in s.metadata   # (exspy, when installed, adds its defaults)
        assert "beam_energy_keV" not in s.metadata.SLADS and "pixel_size" not in s.metadata.SLADS
        for a in (*s.axes_manager.navigation_axes, *s.metadata.SLADS.Maps.reconstruction.axes_manager.signal_axes):
            assert a.scale == 1 and a.units == "px"            # pixel units without a calibration


def test_export_without_spectra_and_bad_input(tmp_path, run_result):
    result, spectra = run_result
    f = export_run(result, tmp_path / "nospec.hspy")
    back = load_export(f)
    assert back.get("spectra") is None and back["energy_axis"] is None
    with pytest.raises(InputError, match=".hspy, .zspy or .npz"):
        export_run(result, tmp_path / "run.txt")
    with pytest.raises(InputError, match="spectra for"):
        export_run(result, tmp_path / "r.npz", spectra=spectra[:3], axis=AXIS)
    with pytest.raises(InputError, match="energy axis"):
        export_run(result, tmp_path / "r.npz", spectra=spectra)
    with pytest.raises(InputError, match="positions"):
        export_run({"reconstruction": np.ones((3, 3))}, tmp_path / "r.npz")
    with pytest.raises(InputError, match="exists"):
        export_run(result, f, overwrite=False)
    with pytest.raises(InputError, match="not found"):
        load_export(tmp_path / "none.hspy")
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(2))
    with pytest.raises(InputError, match="not a napari-slads-eds run export"):
        load_export(other)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes((tmp_path / "nospec.hspy").read_bytes()[:100])
    with pytest.raises(InputError):
        load_export(trunc)


def test_reader_opens_exports_runs_spectra_and_micrographs(tmp_path, run_result, sample_dir):
    result, spectra = run_result
    f = export_run(result, tmp_path / "run.hspy", spectra=spectra, axis=AXIS, pixel_size=2.0)
    layers = napari_get_reader(str(f))(str(f))
    kinds = [t for _, _, t in layers]
    assert kinds == ["labels", "labels", "image", "points"]
    pts = layers[-1]
    assert pts[0].shape == (30, 2) and pts[1]["metadata"]["spectra"].shape == (30, AXIS.size)
    assert layers[0][1]["scale"] == (2.0, 2.0)
    # run folder of write_run (slads-eds run): run.npz
    write_run(dict(result), tmp_path / "out")
    npz = tmp_path / "out" / "run.npz"
    assert [t for _, _, t in napari_get_reader(str(npz))(str(npz))][0] == "labels"
    # a spectrum file: a path layer with the counts in the metadata
    msa = str(bundled_standards()["Fe"])
    (data, kw, kind), = napari_get_reader(msa)(msa)
    assert kind == "shapes" and kw["metadata"]["counts"].size == 4096
    # a micrograph: napari's own readers open plain images; read_path still reads it
    png = str(sample_dir / "sem_glass_sand_bubbles_bse.png")
    assert napari_get_reader(png) is None
    (img, kw, kind), = read_path(png)
    assert kind == "image" and img.ndim == 2 and kw["metadata"]["kind"] == "micrograph"
    # not ours
    assert napari_get_reader(str(tmp_path / "x.csv")) is None
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(2))
    assert napari_get_reader(str(foreign)) is None
    assert "tensorflow" not in sys.modules


def test_reader_spectrum_image_and_pixel_spectrum(tmp_path):
    counts = np.random.default_rng(2).poisson(0.5, size=(4, 5, 64)).astype(np.uint8)
    f = tmp_path / "map.npz"
    np.savez(f, counts=counts, energy_offset_keV=0.0, energy_scale_keV=0.01, image_BSE_5x4=np.ones((4, 5)))
    layers = napari_get_reader(str(f))(str(f))
    data, kw, kind = layers[0]
    assert kind == "image" and data.shape == (4, 5)
    np.testing.assert_allclose(data, counts.sum(2))
    e, c = pixel_spectrum(kw["metadata"], 2, 3)
    assert e.shape == (64,) and e[1] == pytest.approx(0.01)
    np.testing.assert_array_equal(c, counts[2, 3])
    assert layers[1][1]["name"].endswith("BSE")
    with pytest.raises(InputError, match="outside"):
        pixel_spectrum(kw["metadata"], 4, 0)
    with pytest.raises(InputError, match="not a spectrum-image layer"):
        pixel_spectrum({}, 0, 0)


def test_cli_export_reloads_runs_and_exports(tmp_path, run_result, capsys):
    from napari_slads_eds.cli import main

    result, spectra = run_result
    # a folder of slads-eds run (no spectra kept)
    write_run(dict(result), tmp_path / "runfolder")
    assert main(["export", str(tmp_path / "runfolder"), "--to", str(tmp_path / "a.hspy")]) == 0
    out = capsys.readouterr()
    assert "TD 0.05000" in out.out and "no spectra" in out.err
    np.testing.assert_array_equal(load_export(tmp_path / "a.hspy")["reconstruction"], result["reconstruction"])
    # an exported .npz with spectra -> .hspy keeps the spectra and their axis
    export_run(result, tmp_path / "b.npz", spectra=spectra, axis=AXIS, pixel_size=3.0)
    assert main(["export", str(tmp_path / "b.npz"), "--to", str(tmp_path / "b.hspy")]) == 0
    back = load_export(tmp_path / "b.hspy")
    np.testing.assert_allclose(back["spectra"], spectra)
    assert back["energy_axis"] == AXIS and float(back["export_pixel_size"]) == 3.0
    assert main(["export", str(tmp_path / "missing"), "--to", str(tmp_path / "c.hspy")]) == 2
    assert main(["export", str(tmp_path / "b.npz"), "--to", str(tmp_path / "c.txt")]) == 2


def test_reader_and_writer_on_a_run_folder_never_load_the_models(tmp_path, run_result):
    """Run folder -> reader layers -> writer -> reader, in a fresh process: the classifier,
    the Keras ERD and TensorFlow are never imported (the napari process must stay TF-free)."""
    import subprocess

    result, spectra = run_result
    write_run(dict(result), tmp_path / "runfolder")
    code = f"""
import sys
from napari_slads_eds._reader import napari_get_reader
from napari_slads_eds._writer import write_run_layers
folder = {str(tmp_path / 'runfolder')!r}
layers = napari_get_reader(folder)(folder)
assert [k for _, _, k in layers] == ["labels", "labels", "image", "points"], layers
out = write_run_layers({str(tmp_path / 'back.npz')!r}, [l for l in layers if l[2] != "labels" or
                                                       l[1]["metadata"].get("slads_eds_run") == "reconstruction"])
back = napari_get_reader(out[0])(out[0])
assert (back[0][0] == layers[0][0]).all()
for m in ("napari_slads_eds.classifier", "napari_slads_eds.erd_keras", "tensorflow", "keras"):
    assert m not in sys.modules, m
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_writer_builds_the_run_from_layer_data_and_refuses_others():
    from napari_slads_eds._writer import layers_to_run

    rec = np.array([[1, 1, 2], [1, 2, 2]], np.int32)
    mask = np.array([[1, 0, 0], [0, 0, 1]], np.uint8)
    lt = [(rec, {"name": "r", "metadata": {"slads_eds_run": "reconstruction", "td": 0.25}}, "labels"),
          (mask, {"name": "m", "metadata": {"slads_eds_live": "mask"}}, "image")]
    run, kw = layers_to_run(lt)
    np.testing.assert_array_equal(run["positions"], [[0, 0], [1, 2]])
    np.testing.assert_array_equal(run["labels"], [1, 2])
    assert run["td"] == 0.25 and run["grid"] == [2, 3] and run["sampling_fraction"] == pytest.approx(2 / 6)
    assert kw == {}                                   # no scale: no pixel size written
    with pytest.raises(InputError, match="no reconstruction layer"):
        layers_to_run(lt[1:])
    with pytest.raises(InputError, match="the mask is \\(3, 3\\)"):
        layers_to_run([lt[0], (np.zeros((3, 3)), lt[1][1], "image")])
    with pytest.raises(InputError, match="mask \\(Image\\) or measured points"):
        layers_to_run(lt[:1])
    with pytest.raises(InputError, match="two reconstruction layers"):
        layers_to_run([lt[0], lt[0], lt[1]])
    pts = (np.array([[5.0, 0.0]]), {"name": "p", "metadata": {"slads_eds_run": "measured"}}, "points")
    with pytest.raises(InputError, match="outside the 2x3"):
        layers_to_run([lt[0], pts])
