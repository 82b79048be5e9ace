"""Reading spectra and spectrum images through RosettaSciIO; energy axes by value."""

from pathlib import Path

import numpy as np
import pytest

from napari_slads_eds import InputError
from napari_slads_eds.eds_io import SpectrumImage, read_eds, read_rsciio, read_spectrum_any, read_spectrum_image
from napari_slads_eds.energy_axes import energy_axis_from_rsciio, rebin_counts, to_axis
from napari_slads_eds.spectra import EnergyAxis, bundled_standards, default_axis, read_spectrum

from conftest import SHARED_DATA as SHARED  # noqa: E402
needs_shared = pytest.mark.skipif(not (SHARED / "eds_map_bruker_P45.bcf").is_file(),
                                  reason="shared/data (GPL Bruker test map) not present")


def _map_signal(counts, axis_dict, beam=15.0, signal_type="EDS_SEM"):
    H, W, p = counts.shape
    md = {"General": {"title": "map"}, "Signal": {"signal_type": signal_type}}
    if beam is not None:
        md["Acquisition_instrument"] = {"SEM": {"beam_energy": beam, "Detector": {"EDS": {"live_time": 2.5}}}}
    return {"data": counts, "metadata": md, "original_metadata": {}, "tmp_parameters": {},
            "attributes": {"_lazy": False}, "learning_results": {}, "models": {},
            "package_info": {"name": "test", "version": "0"},
            "axes": [{"name": "y", "size": H, "offset": 0.0, "scale": 2.0, "units": "µm", "navigate": True},
                     {"name": "x", "size": W, "offset": 0.0, "scale": 2.0, "units": "µm", "navigate": True},
                     dict(axis_dict, name="Energy", size=p, navigate=False)]}


@pytest.fixture
def small_map():
    rng = np.random.default_rng(0)
    return rng.poisson(0.2, size=(5, 6, 64)).astype(np.uint16)


def test_msa_through_rosettasciio_matches_spectra_reader():
    path = bundled_standards()["Si"]
    a = read_spectrum_any(path)
    b = read_spectrum(path)
    assert a.axis == b.axis and a.beam_energy_keV == 15 and a.live_time_s == 60
    np.testing.assert_array_equal(a.counts, b.counts)
    with pytest.raises(InputError, match="single spectrum"):
        read_spectrum_image(path)


def test_hspy_map_roundtrip_keeps_axis_beam_and_pixel_size(tmp_path, small_map):
    from rsciio.hspy import file_writer

    f = tmp_path / "map.hspy"
    file_writer(str(f), _map_signal(small_map, {"offset": -100.0, "scale": 20.0, "units": "eV"}),
                show_progressbar=False)
    si = read_eds(f)
    assert isinstance(si, SpectrumImage)
    assert si.shape == (5, 6) and si.counts.dtype == np.uint16
    assert si.axis == EnergyAxis(-0.1, 0.02, 64)          # eV converted to keV
    assert si.beam_energy_keV == 15.0 and si.live_time_s == 2.5
    assert si.pixel_size == 2.0 and si.pixel_units == "µm"
    np.testing.assert_array_equal(si.counts, small_map)
    np.testing.assert_allclose(si.total_counts, small_map.sum(2))
    assert si.spectrum_at(1, 2).counts.sum() == small_map[1, 2].sum()
    with pytest.raises(InputError, match="outside"):
        si.spectrum_at(5, 0)


def test_ripple_without_calibration_is_an_error_or_a_warned_default(tmp_path, small_map):
    from rsciio.ripple import file_writer

    f = tmp_path / "map.rpl"
    file_writer(str(f), _map_signal(small_map, {"offset": 0.0, "scale": 1.0, "units": ""}, beam=None,
                                    signal_type=""))
    with pytest.raises(InputError, match="no energy calibration"):
        read_eds(f)
    with pytest.warns(UserWarning, match="assuming offset"):
        si = read_eds(f, default_calibration=(0.0, 0.01))
    assert si.axis == EnergyAxis(0.0, 0.01, 64)
    # the .raw data file opens through its header
    with pytest.warns(UserWarning):
        assert read_eds(f.with_suffix(".raw"), default_calibration=(0.0, 0.01)).shape == (5, 6)


def test_calibrated_ripple_map(tmp_path, small_map):
    from rsciio.ripple import file_writer

    f = tmp_path / "cal.rpl"
    file_writer(str(f), _map_signal(small_map, {"offset": -0.1, "scale": 0.01, "units": "keV"}))
    si = read_eds(f)
    assert si.axis == EnergyAxis(-0.1, 0.01, 64) and si.beam_energy_keV == 15.0


def test_npz_map_and_missing_keys(tmp_path, small_map):
    f = tmp_path / "m.npz"
    np.savez(f, counts=small_map, energy_offset_keV=-0.2, energy_scale_keV=0.01, beam_energy_keV=20.0,
             image_BSE_6x5=np.arange(30).reshape(5, 6))
    si = read_eds(f)
    assert si.axis == EnergyAxis(-0.2, 0.01, 64) and si.beam_energy_keV == 20.0
    assert "BSE" in si.images
    g = tmp_path / "nocal.npz"
    np.savez(g, counts=small_map)
    with pytest.raises(InputError, match="no energy calibration"):
        read_eds(g)
    h = tmp_path / "other.npz"
    np.savez(h, x=np.zeros(3))
    with pytest.raises(InputError, match="'counts'"):
        read_eds(h)


def test_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_eds(tmp_path / "none.msa")
    bad = tmp_path / "bad.msa"
    bad.write_text("not an emsa file\n")
    with pytest.raises(InputError, match="not readable|no EDS spectrum"):
        read_eds(bad)
    odd = tmp_path / "x.abc"
    odd.write_text("")
    with pytest.raises(InputError, match="no RosettaSciIO reader"):
        read_rsciio(odd)


def test_units_other_than_energy_are_rejected():
    with pytest.raises(InputError, match="unsupported units"):
        energy_axis_from_rsciio({"size": 10, "offset": 0.0, "scale": 2.0, "units": "nm"})
    with pytest.warns(UserWarning, match="without units"):
        ax = energy_axis_from_rsciio({"size": 10, "offset": 0.0, "scale": 10.0, "units": ""})
    assert ax.scale_keV == pytest.approx(0.01)


def test_rebinning_conserves_counts_and_places_peaks_by_energy():
    src = EnergyAxis(0.0, 0.01, 1000)
    dst = EnergyAxis(0.005, 0.02, 500)
    rng = np.random.default_rng(1)
    c = rng.poisson(3.0, size=(4, 1000)).astype(float)
    r = rebin_counts(c, src, dst)
    assert r.shape == (4, 500)
    np.testing.assert_allclose(r.sum(1), c.sum(1))          # same range: all counts kept
    np.testing.assert_allclose(r[:, 1], c[:, 2] + c[:, 3])   # channel edges coincide
    # a peak at 6.4 keV stays at 6.4 keV on a shifted, narrower axis
    e = src.energies
    peak = np.exp(-0.5 * ((e - 6.4) / 0.05) ** 2) * 1000
    other = EnergyAxis(0.1234, 0.005, 2000)
    rp = rebin_counts(peak, src, other)
    com = (rp * other.energies).sum() / rp.sum()
    assert abs(com - 6.4) < 0.005
    assert rp.sum() == pytest.approx(peak.sum(), rel=1e-9)
    with pytest.raises(InputError, match="channels"):
        rebin_counts(np.zeros(10), src, dst)


def test_to_axis_cut_resample_or_reject():
    src = default_axis(4096)
    dst = default_axis(2048)
    c = np.arange(4096, dtype=float)
    np.testing.assert_array_equal(to_axis(c, src, dst), c[:2048])           # exact cut
    shifted = EnergyAxis(src.offset_keV + 0.1, src.scale_keV, 4096)
    with pytest.raises(InputError, match="resample"):
        to_axis(c, shifted, dst, resample=False)
    out = to_axis(c, shifted, dst)
    assert out.shape == (2048,)
    # a 10 kV spectrum ending at 10.2 keV: zeros above the beam energy are the truth
    short = EnergyAxis(-0.1, 0.01, 1030)
    ten = to_axis(np.ones(1030), short, dst, beam_energy_keV=10.0)
    assert ten[dst.channel_of(15.0)] == 0 and ten.sum() > 1000
    with pytest.raises(InputError, match="below the beam energy"):
        to_axis(np.ones(1030), short, dst, beam_energy_keV=15.0)
    with pytest.raises(InputError, match="below the beam energy"):
        to_axis(np.ones(1030), short, dst)                                # beam energy unknown
    late = EnergyAxis(1.0, 0.01, 3000)
    with pytest.raises(InputError, match="starts at"):
        to_axis(np.ones(3000), late, dst, beam_energy_keV=15.0)


def test_shared_standards_of_other_calibrations_resample():
    for name in ("tima_calcite_25kV.msa", "exspy_EDS_SEM_TM002_10kV.msa"):
        f = SHARED / "spectra" / name
        if not f.is_file():
            pytest.skip("shared/data spectra not present")
        s = read_spectrum_any(f)
        out = to_axis(s.counts, s.axis, default_axis(), beam_energy_keV=s.beam_energy_keV)
        assert out.shape == (2048,)
        assert out.sum() == pytest.approx(s.counts.sum(), rel=0.01)


@needs_shared
def test_bruker_bcf_matches_npz():
    si = read_eds(SHARED / "eds_map_bruker_P45.bcf")
    npz = read_eds(SHARED / "eds_map_bruker_P45.npz")
    assert si.shape == (75, 100) and si.axis.size == 2048
    assert si.axis.offset_keV == pytest.approx(-0.472397235) and si.axis.scale_keV == pytest.approx(0.010001)
    assert si.beam_energy_keV == 20.0 and si.pixel_size == pytest.approx(8.7368, rel=1e-4)
    assert set(si.images) == {"BSE", "SE"}
    np.testing.assert_array_equal(si.counts, npz.counts)
    np.testing.assert_array_equal(si.images["BSE"], npz.images["BSE"])
