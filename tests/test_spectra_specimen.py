import numpy as np
import pytest

from napari_slads_eds import EnergyAxis, InputError, SimulatedSpecimen, make_reference_spectra, read_spectrum
from napari_slads_eds.spectra import bundled_standards, default_axis, default_standards_for


def test_read_nist_standard_with_energy_axis(sample_dir):
    s = read_spectrum(sample_dir / "spectra" / "nist_Si_std_15kV.msa")
    assert s.counts.shape == (4096,) and s.axis.size == 4096
    assert s.axis.scale_keV == pytest.approx(0.01001223)
    assert s.axis.offset_keV == pytest.approx(0.00351609)
    assert s.beam_energy_keV == 15
    # the Si K-alpha peak (1.740 keV) is the strongest line
    assert abs(s.axis.energies[np.argmax(s.counts)] - 1.740) < 0.02


def test_reference_spectra_shapes_and_peaks():
    stds = [read_spectrum(bundled_standards()[n]) for n in default_standards_for(2)]
    refs = make_reference_spectra(stds, n_per_phase=6, counts_per_spectrum=7500, seed=1)
    assert refs.spectra.shape == (2, 6, 2048)
    assert refs.phase_names == ("nist_Si_std_15kV", "nist_Fe_std_15kV")
    tot = refs.spectra.sum(-1)
    assert np.all(np.abs(tot - 7500) < 5 * np.sqrt(7500))
    fe = refs.spectra[1].mean(0)
    e = refs.axis.energies
    band = (e > 5.5) & (e < 7.5)
    assert abs(e[band][np.argmax(fe[band])] - 6.40) < 0.03     # Fe K-alpha
    again = make_reference_spectra(stds, n_per_phase=6, seed=1)
    assert np.array_equal(again.spectra, refs.spectra)


def test_reference_of_other_calibration_is_rejected(sample_dir):
    calcite = read_spectrum(sample_dir / "spectra" / "tima_calcite_25kV.msa")   # 10 eV/ch, 3000 ch
    with pytest.raises(InputError, match="energy axis"):
        make_reference_spectra([calcite], axis=default_axis())
    short = EnergyAxis(0.0035, 0.01001223, 4096 + 10)
    si = read_spectrum(bundled_standards()["Si"])
    with pytest.raises(InputError, match="cannot be cut"):
        si.on_axis(short)


def test_bad_spectrum_files(tmp_path):
    p = tmp_path / "bad.msa"
    p.write_text("#FORMAT : EMSA/MAS\n#garbage\n1, 2, x\n")
    with pytest.raises(InputError):
        read_spectrum(p)
    with pytest.raises(InputError, match="not found"):
        read_spectrum(tmp_path / "none.msa")


@pytest.fixture(scope="module")
def specimen():
    stds = [read_spectrum(bundled_standards()[n]) for n in default_standards_for(2)]
    refs = make_reference_spectra(stds, n_per_phase=4, seed=0)
    pm = np.ones((20, 20), dtype=np.int16)
    pm[:, 10:] = 2
    return SimulatedSpecimen(pm, refs, ill_fraction=0.1, seed=7)


def test_specimen_is_reproducible_per_pixel(specimen):
    pos = np.array([[0, 0], [5, 15], [19, 19], [3, 4]])
    a = specimen.measure(pos)
    b = specimen.measure(pos[::-1])[::-1]
    assert a.dtype == np.float32 and a.shape == (4, 2048)
    assert np.array_equal(a, b)                  # same pixel, same spectrum, any order
    other = SimulatedSpecimen(specimen.phase_map, specimen.references, ill_fraction=0.1, seed=8)
    assert not np.array_equal(a, other.measure(pos))


def test_specimen_noise_model(specimen):
    lab = specimen.labels
    assert 0.04 < np.mean(lab == 0) < 0.18
    assert np.array_equal(lab[lab > 0], specimen.phase_map[lab > 0])
    ill = np.argwhere(lab == 0)
    s = specimen.measure(ill)
    assert abs(s.mean() - 20) < 0.5             # Poisson(20) per channel
    good = np.argwhere(lab == 2)[:50]
    g = specimen.measure(good)
    refs = specimen.references.spectra[1]
    # phase spectrum = one of the M references + Poisson(2): the residual has mean 2
    resid = np.array([min(np.abs((x - r).mean() - 2) for r in refs) for x in g])
    assert np.all(resid < 0.2)


def test_specimen_bad_input(specimen):
    with pytest.raises(InputError, match="1..2"):
        SimulatedSpecimen(np.full((4, 4), 3), specimen.references)
    with pytest.raises(InputError, match="outside"):
        specimen.measure([[0, 20]])
