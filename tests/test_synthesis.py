"""Reference spectra from compositions: line data, resolution law, efficiency, agreement with
the real (bundled) NIST standards, and a classifier trained only on synthetic spectra that
classifies the real standards (through the engine)."""

import sys

import numpy as np
import pytest

from napari_slads_eds import Engine, InputError
from napari_slads_eds.spectra import EnergyAxis, bundled_standards, default_axis, read_spectrum
from napari_slads_eds.eds_detector import DetectorModel, detector_efficiency, fwhm_keV
from napari_slads_eds.synthesis import (STANDARD_COMPOSITIONS, expected_spectrum, synthesize_spectrum,
                                        synthetic_references)
from napari_slads_eds.xray_lines import characteristic_lines, parse_composition

AXIS = default_axis()
NIST = ["MgO", "Al", "Si", "CaF2", "K412 glass", "Fe"]


def test_parse_composition():
    assert parse_composition("Pb 0.7, Sn 0.3") == pytest.approx({"Pb": 0.7, "Sn": 0.3})
    assert parse_composition("Pb 70%, Sn 30%") == pytest.approx({"Pb": 0.7, "Sn": 0.3})
    assert parse_composition("Fe 2, Ni 2") == pytest.approx({"Fe": 0.5, "Ni": 0.5})   # normalised
    caf2 = parse_composition("CaF2")                                                 # formula
    assert caf2["Ca"] == pytest.approx(40.078 / 78.07, rel=1e-3)
    assert sum(parse_composition("CaCO3").values()) == pytest.approx(1.0)
    for bad in ("", "Xx 1", "Pb -1", "Pb 0, Sn 0", "hello world"):
        with pytest.raises(InputError):
            parse_composition(bad)


def test_resolution_law_and_efficiency():
    assert fwhm_keV(5.8987, 130.0) == pytest.approx(0.130)
    # FWHM^2 = 130^2 + 2.5 (E - E_MnKa) eV: Si Ka ~ 80 eV, Cu Ka ~ 143 eV
    assert fwhm_keV(1.74, 130.0) * 1000 == pytest.approx(np.sqrt(130 ** 2 + 2.5 * (1740 - 5898.7)), rel=1e-6)
    assert 0.075 < fwhm_keV(1.74) < 0.085 and 0.14 < fwhm_keV(8.04) < 0.15
    eff = detector_efficiency(np.array([0.28, 1.0, 5.0, 15.0, 40.0]))
    assert np.all((eff >= 0) & (eff <= 1))
    assert eff[2] > 0.95 and eff[0] < eff[1] < eff[2] and eff[4] < eff[3]   # window / thin crystal


def test_lines_of_pb_sn_at_15kv():
    lines = characteristic_lines("Pb 0.7, Sn 0.3", 15.0)
    names = {(ln.element, ln.name) for ln in lines}
    assert ("Pb", "Ma") in names and ("Sn", "La1") in names
    assert not any(ln.element == "Sn" and ln.name.startswith("K") for ln in lines)   # Sn K edge 29 keV
    pb_l = [ln for ln in lines if ln.element == "Pb" and ln.name == "La1"]
    assert pb_l and pb_l[0].energy_keV == pytest.approx(10.55, abs=0.01)        # L3 edge 13.0 keV < 15
    assert not characteristic_lines("Pb", 12.0) or all(ln.energy_keV < 10 for ln in characteristic_lines("Pb", 12.0))
    with pytest.raises(InputError, match="beam energy"):
        characteristic_lines("Pb", 0.1)


def test_counts_and_references():
    c = synthesize_spectrum("Si", AXIS, 15.0, live_time_s=10, count_rate_cps=750, seed=1, size=200)
    assert c.shape == (200, AXIS.size) and np.all(c == np.round(c))
    assert c.sum(1).mean() == pytest.approx(7500, rel=0.01)
    np.testing.assert_array_equal(c[0], synthesize_spectrum("Si", AXIS, 15.0, seed=1, size=200)[0])
    assert expected_spectrum("Si", AXIS, 15.0)[AXIS.channel_of(16.0)] == 0                # above E0
    refs = synthetic_references({"Pb-rich": "Pb 0.7, Sn 0.3", "Sn-rich": "Sn 0.95, Pb 0.05"},
                                AXIS, 15.0, n_per_phase=6, seed=0)
    assert refs.spectra.shape == (2, 6, AXIS.size) and refs.phase_names == ("Pb-rich", "Sn-rich")
    with pytest.raises(InputError):
        synthesize_spectrum("Si", AXIS, 15.0, live_time_s=0)
    with pytest.raises(InputError, match="at least one"):
        synthetic_references({}, AXIS, 15.0)


@pytest.mark.parametrize("name", NIST)
def test_model_matches_the_real_standard(name):
    """Main peak within one channel of the measured one; shape correlation reported (>= 0.95
    linear, >= 0.95 on square-root counts; Fe: its L lines are overestimated, see docs)."""
    real = read_spectrum(bundled_standards()[name]).on_axis(AXIS)
    model = expected_spectrum(STANDARD_COMPOSITIONS[name], AXIS, 15.0)
    E = AXIS.energies
    m = (E > 0.2) & (E < 15.0)
    main = int(np.argmax(np.where(m, real, 0)))
    near = slice(main - 5, main + 6)
    assert abs(int(np.argmax(model[near])) - 5) <= 1
    r_sqrt = np.corrcoef(np.sqrt(model[m]), np.sqrt(real[m]))[0, 1]
    r_lin = np.corrcoef(model[m], real[m])[0, 1]
    assert r_sqrt > 0.95
    assert r_lin > (0.85 if name == "Fe" else 0.95)


@pytest.mark.engine
def test_classifier_trained_on_synthetic_spectra_classifies_the_real_standards(tmp_path):
    refs = synthetic_references({n: STANDARD_COMPOSITIONS[n] for n in NIST}, AXIS, 15.0,
                                n_per_phase=240, seed=0)
    rng = np.random.default_rng(5)
    test, true = [], []
    for l, n in enumerate(NIST):
        c = read_spectrum(bundled_standards()[n]).on_axis(AXIS).astype(np.int64)
        for _ in range(10):                                 # real counts, thinned to 7500
            test.append(rng.binomial(c, 7500.0 / c.sum()))
            true.append(l + 1)
    with Engine() as eng:
        eng.run("train_classifier", references=refs, out_dir=str(tmp_path / "clf"), seed=0,
                noise_lambda=0.0, n_noisy=1, n_noisy_val=1, epochs=10)
        lab = np.asarray(eng.run("classify", classifier=str(tmp_path / "clf"),
                                 spectra=np.asarray(test, np.float32)))
    conf = np.zeros((7, 7), int)
    np.add.at(conf, (np.asarray(true), lab), 1)
    assert np.trace(conf) == len(true), f"confusion (rows true 0..6):\n{conf}"
    assert "tensorflow" not in sys.modules
