"""Reference spectra from compositions: a small physics model of an SEM-EDS spectrum.

Define a phase by its composition ("Pb 0.7, Sn 0.3" by mass, or a formula "CaF2") and
the beam energy, and get spectra a classifier can be trained on (the paper's stated
future work: "train on analytically simulated EDS spectra", Zhang et al. 2018, sec. 5).

The model (expected counts per channel, then Poisson counts):

* **Characteristic lines** from xraydb (Elam et al. tables): energies and relative line
  intensities within each initial level (``xraydb.xray_lines``), fluorescence yields
  ``omega`` of the level (``xraydb.xray_edge``).  Generated photons of line j of shell s
  of element i, per electron::

      n_j  ∝  (C_i / A_i) * omega_s * p_j * ∫_{E_c}^{E_0} Q_s(E) / S(E) dE

  with the Bethe ionisation cross-section ``Q_s = n_s * ln(U) / (U * E_c^2)``
  (``U = E / E_c``, ``n_s`` electrons in the level; Powell's constants are common to all
  shells here) and the Bethe stopping power with the Joy-Luo low-energy correction
  ``S(E) ∝ Σ_k (C_k Z_k / A_k) / E * ln(1.166 (E + 0.85 J_k) / J_k)``,
  ``J = 9.76 Z + 58.5 Z^-0.19`` eV (Goldstein et al., *Scanning Electron Microscopy and
  X-ray Microanalysis*, 4th ed., ch. 19).  Coster-Kronig transitions and backscatter
  losses are ignored.
* **Bremsstrahlung**: Kramers' law ``N(E) dE = K * Zbar * (E_0 - E) / E dE`` (mass-
  fraction mean Z), with one dimensionless constant ``K`` relative to the characteristic
  scale (:data:`~napari_slads_eds.eds_detector.KRAMERS_K`, calibrated once on the NIST Si
  standard, see docs/synthesis.md).
* **Absorption in the specimen**: Philibert-Duncumb-Heinrich ``f(chi) = 1 / ((1 + chi /
  sigma) (1 + h / (1 + h) chi / sigma))``, ``chi = (mu/rho)(E) / sin(takeoff)``,
  ``sigma = 4.5e5 / (E_0^1.65 - E_c^1.65)``, ``h = 1.2 A / Z^2`` (composition means);
  mass attenuation coefficients from xraydb (``mu_elam``).  The continuum at E uses
  ``E_c = E``.
* **Detector efficiency**: transmission of the window layers and the Si dead layer
  times absorption in the Si crystal, ``exp(-Σ mu_l rho_l t_l) * (1 - exp(-mu_Si rho_Si t))``.
* **Detector resolution**: Gaussian peaks, ``FWHM(E)^2 = FWHM_MnKa^2 + 2.5 eV * (E -
  5898.7 eV)`` (Fiori & Newbury 1978; the law exspy/HyperSpy use), integrated over each
  channel (erf differences).
* **Counts**: the shape is scaled to ``count_rate_cps * live_time_s`` expected counts and
  drawn with Poisson noise.

This module owns the spectrum synthesis; the lines, compositions and specimen absorption
are in :mod:`napari_slads_eds.xray_lines`, the detector (efficiency, resolution,
:class:`~napari_slads_eds.eds_detector.DetectorModel`) in :mod:`napari_slads_eds.eds_detector`.

Nothing here imports TensorFlow or Qt.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ._validation import InputError, check_seed
from .eds_detector import DetectorModel, _channel_gauss, detector_efficiency, fwhm_keV
from .spectra import EnergyAxis, ReferenceSpectra
from .xray_lines import _absorption, _atomic_number, characteristic_lines, parse_composition

__all__ = [
    "expected_spectrum",
    "synthesize_spectrum",
    "synthetic_references",
    "STANDARD_COMPOSITIONS",
]

#: Compositions (mass fractions) of the bundled / shared standards.  K412: NIST SRM 470
#: glass K412 (MgO 19.33, Al2O3 9.27, SiO2 45.35, CaO 15.25, FeO 9.96 wt%).
STANDARD_COMPOSITIONS = {
    "MgO": "MgO",
    "Al": "Al",
    "Si": "Si",
    "CaF2": "CaF2",
    "K412 glass": "O 0.4276, Mg 0.1166, Al 0.0491, Si 0.2120, Ca 0.1090, Fe 0.0774",
    "Fe": "Fe",
    "calcite": "CaCO3",
}


def expected_spectrum(composition, axis: EnergyAxis, beam_energy_keV: float, *,
                      detector: DetectorModel = DetectorModel(), total_counts: float | None = None,
                      parts: bool = False, shift_keV: float = 0.0):
    """Expected counts per channel of a composition (no noise).

    Parameters
    ----------
    composition : str or dict
        See :func:`~napari_slads_eds.xray_lines.parse_composition`.
    axis : EnergyAxis
    beam_energy_keV : float
    detector : DetectorModel
    total_counts : float, optional
        Scale the spectrum to this many counts; default: relative units of the model
        (useful to compare compositions).
    parts : bool
        Also return the characteristic and continuum parts.
    shift_keV : float
        Calibration error to emulate: the peaks appear ``shift_keV`` higher.

    Returns
    -------
    ndarray, shape (p,), float64
        (or ``(total, characteristic, continuum)`` with ``parts=True``).

    Raises
    ------
    InputError
        Bad composition, beam energy, or a composition without lines or continuum on
        the axis.
    """
    comp = parse_composition(composition)
    E0 = float(beam_energy_keV)
    lines = characteristic_lines(comp, E0, detector=detector)
    E = axis.energies
    char = np.zeros(axis.size)
    if lines:
        ce = np.array([ln.energy_keV for ln in lines])
        w = np.array([ln.detected for ln in lines])
        sig = fwhm_keV(ce, detector.fwhm_mnka_eV) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        char = w @ _channel_gauss(axis, ce + float(shift_keV), sig)
    zbar = sum(c * _atomic_number(el) for el, c in comp.items())
    valid = (E > 0.05) & (E < E0)
    Ev = np.where(valid, E, 1.0)
    cont_gen = np.where(valid, detector.kramers_k * zbar * (E0 - Ev) / Ev, 0.0) * axis.scale_keV
    cont = cont_gen * _absorption(comp, Ev, Ev, E0, detector.takeoff_deg) * detector_efficiency(Ev, detector)
    # the continuum also passes the detector resolution (a small smoothing)
    sig_c = fwhm_keV(np.clip(Ev, 0.1, None), detector.fwhm_mnka_eV) / 2.3548 / axis.scale_keV
    from scipy.ndimage import gaussian_filter1d

    cont = gaussian_filter1d(cont, float(np.median(sig_c[valid])) if valid.any() else 1.0, mode="constant")
    total = char + cont
    s = total.sum()
    if not s > 0:
        raise InputError(f"composition {composition!r}: no counts on the axis {axis.describe()} at "
                         f"{E0} keV")
    if total_counts is not None:
        f = float(total_counts) / s
        total, char, cont = total * f, char * f, cont * f
    return (total, char, cont) if parts else total


def synthesize_spectrum(composition, axis: EnergyAxis, beam_energy_keV: float, *,
                        live_time_s: float = 10.0, count_rate_cps: float = 750.0,
                        detector: DetectorModel = DetectorModel(), seed: int = 0,
                        size: int | None = None) -> np.ndarray:
    """Poisson counts of a composition for a live time and count rate.

    Parameters
    ----------
    live_time_s : float
        Dwell (live) time, s.
    count_rate_cps : float
        Detected counts per second over the whole spectrum (the paper's 10 s spot
        spectra hold about 7.5k counts: 750 cps).
    seed : int
    size : int, optional
        Number of spectra (default: one, shape (p,)).

    Returns
    -------
    ndarray, shape (p,) or (size, p), float64 counts.

    Raises
    ------
    InputError
        Non-positive live time or count rate, or as :func:`expected_spectrum`.
    """
    if not (live_time_s > 0 and count_rate_cps > 0):
        raise InputError(f"live time and count rate must be > 0, got {live_time_s} s and {count_rate_cps} cps")
    mu = expected_spectrum(composition, axis, beam_energy_keV, detector=detector,
                           total_counts=live_time_s * count_rate_cps)
    rng = np.random.default_rng(check_seed(seed))
    shape = (axis.size,) if size is None else (int(size), axis.size)
    return rng.poisson(mu, size=shape).astype(np.float64)


def synthetic_references(phases, axis: EnergyAxis, beam_energy_keV: float, *, n_per_phase: int = 24,
                         live_time_s: float = 10.0, count_rate_cps: float = 750.0,
                         detector: DetectorModel = DetectorModel(), vary: float = 1.0,
                         seed: int = 0) -> ReferenceSpectra:
    """Reference spectra per phase from compositions, for the classifier.

    Each of the M spectra of a phase is drawn from the model with its own detector
    parameters (when ``vary > 0``): FWHM at Mn Ka ×(1 ± 0.1·vary), Kramers constant
    ×exp(±0.3·vary), take-off ±3°·vary, window polymer ×(1 ± 0.5·vary), count rate
    ×exp(±0.3·vary) and a calibration shift of ±1 channel·vary (uniform).  These spread
    the training set over the instruments the model does not pin down, so a classifier
    trained on it is less sensitive to the model's own errors.

    Parameters
    ----------
    phases : dict name -> composition, or sequence of compositions
        Phase 1 first.
    axis : EnergyAxis
    beam_energy_keV : float
    n_per_phase : int
        M.
    live_time_s, count_rate_cps : float
        Expected counts per spectrum = live time × count rate.
    detector : DetectorModel
        The nominal detector.
    vary : float
        Scale of the parameter variation (0: every spectrum from ``detector``).
    seed : int

    Returns
    -------
    ReferenceSpectra
        ``spectra`` (L, M, p) float64 Poisson counts; phase names from the dict keys (or
        the composition strings).

    Raises
    ------
    InputError
        No phases, bad compositions or parameters.
    """
    if isinstance(phases, dict):
        names, comps = list(phases.keys()), list(phases.values())
    else:
        comps = list(phases)
        names = [c if isinstance(c, str) else ", ".join(f"{k} {v:g}" for k, v in c.items()) for c in comps]
    if not comps:
        raise InputError("need at least one phase composition")
    if int(n_per_phase) < 1:
        raise InputError(f"n_per_phase must be >= 1, got {n_per_phase}")
    if not (live_time_s > 0 and count_rate_cps > 0 and vary >= 0):
        raise InputError("live time and count rate must be > 0 and vary >= 0")
    rng = np.random.default_rng(check_seed(seed))
    M = int(n_per_phase)
    out = np.empty((len(comps), M, axis.size))
    for l, comp in enumerate(comps):
        comp = parse_composition(comp)
        for m in range(M):
            u = rng.uniform(-1.0, 1.0, size=6) * vary
            win = tuple((f, t * (1 + 0.5 * u[3]) if i == 0 else t, r)
                        for i, (f, t, r) in enumerate(detector.window))
            det = replace(detector, fwhm_mnka_eV=detector.fwhm_mnka_eV * (1 + 0.1 * u[0]),
                          kramers_k=detector.kramers_k * math.exp(0.3 * u[1]),
                          takeoff_deg=float(np.clip(detector.takeoff_deg + 3 * u[2], 5, 90)), window=win)
            mu = expected_spectrum(comp, axis, beam_energy_keV, detector=det, shift_keV=u[5] * axis.scale_keV,
                                   total_counts=live_time_s * count_rate_cps * math.exp(0.3 * u[4]))
            out[l, m] = rng.poisson(mu)
    return ReferenceSpectra(out, axis, tuple(str(n) for n in names))
