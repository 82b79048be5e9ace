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
  scale (:data:`KRAMERS_K`, calibrated once on the NIST Si standard, see docs/synthesis.md).
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

Nothing here imports TensorFlow or Qt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy.special import erf

from ._validation import InputError, check_seed
from .spectra import EnergyAxis, ReferenceSpectra

__all__ = [
    "DetectorModel",
    "Line",
    "parse_composition",
    "characteristic_lines",
    "expected_spectrum",
    "synthesize_spectrum",
    "synthetic_references",
    "fwhm_keV",
    "detector_efficiency",
    "KRAMERS_K",
    "STANDARD_COMPOSITIONS",
]

#: Kramers constant relative to the characteristic scale of this module (dimensionless).
#: Calibrated by least squares on the background of the NIST Si standard (15 kV); see
#: docs/synthesis.md and tools/synthesis_validation.py.
KRAMERS_K = 8.4e-6

#: Mn Ka energy (keV), the reference of the resolution law.
MNKA_KEV = 5.8987

#: Electrons in each level (for the ionisation cross-section).
_SHELL_ELECTRONS = {"K": 2, "L1": 2, "L2": 2, "L3": 4, "M1": 2, "M2": 2, "M3": 4, "M4": 4, "M5": 6}

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


@dataclass(frozen=True)
class DetectorModel:
    """Detector and geometry of the simulated measurement.

    Attributes
    ----------
    fwhm_mnka_eV : float
        Resolution at Mn Ka (eV), 130 eV for a typical SDD.
    takeoff_deg : float
        X-ray take-off (elevation) angle, degrees.
    window : tuple of (formula, thickness_um, density_g_cm3)
        Window layers (default: a 0.3 um polymer ultra-thin window with 40 nm Al).
    dead_layer_um : float
        Si dead layer, um.
    crystal_um : float
        Si crystal thickness, um (450 um).
    kramers_k : float
        Continuum constant relative to the characteristic lines (:data:`KRAMERS_K`).
    """

    fwhm_mnka_eV: float = 130.0
    takeoff_deg: float = 35.0
    window: tuple = (("C22H10N2O5", 0.3, 1.42), ("Al", 0.04, 2.70))
    dead_layer_um: float = 0.03
    crystal_um: float = 450.0
    kramers_k: float = KRAMERS_K

    def __post_init__(self):
        if not (self.fwhm_mnka_eV > 0 and 0 < self.takeoff_deg <= 90 and self.crystal_um > 0
                and self.dead_layer_um >= 0 and self.kramers_k >= 0):
            raise InputError(f"detector model: invalid parameters {self}")


@dataclass(frozen=True)
class Line:
    """One characteristic line of a composition at a beam energy.

    Attributes
    ----------
    element : str
    name : str
        Siegbahn name from xraydb (``Ka1``, ``La1``, ``Ma``, ...).
    energy_keV : float
    generated : float
        Generated photons (relative units, per electron).
    detected : float
        ``generated`` times specimen absorption ``f(chi)`` and detector efficiency.
    """

    element: str
    name: str
    energy_keV: float
    generated: float
    detected: float


_COMP_ITEM = re.compile(r"^\s*([A-Z][a-z]?)\s*[:=]?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


def parse_composition(text) -> dict[str, float]:
    """Mass fractions from ``"Pb 0.7, Sn 0.3"`` (mass fractions or %), a formula
    (``"CaF2"``, ``"CaCO3"``: stoichiometry -> mass fractions) or a dict.

    Returns
    -------
    dict of element symbol -> mass fraction, summing to 1.

    Raises
    ------
    InputError
        Unknown element, negative or zero total, unparsable text.
    """
    import xraydb

    if isinstance(text, dict):
        items = {str(k): float(v) for k, v in text.items()}
    else:
        s = str(text).strip()
        if not s:
            raise InputError("composition: empty")
        parts = [p for p in re.split(r"[,;]", s) if p.strip()]
        m = [_COMP_ITEM.match(p) for p in parts]
        if all(m):
            items = {}
            for mm in m:
                v = float(mm.group(2)) / (100.0 if mm.group(3) else 1.0)
                items[mm.group(1)] = items.get(mm.group(1), 0.0) + v
        else:
            try:
                atoms = xraydb.chemparse(s.replace(" ", ""))
            except Exception as exc:
                raise InputError(f"composition {s!r}: expected 'El fraction, El fraction, ...' "
                                 f"(mass fractions) or a chemical formula such as 'CaF2' ({exc})") from exc
            if not atoms:
                raise InputError(f"composition {s!r}: no elements found")
            items = {}
            for el, n in atoms.items():
                items[el] = float(n) * _atomic_mass(el)
    out = {}
    for el, v in items.items():
        _atomic_number(el)  # validates the symbol
        if not (math.isfinite(v) and v >= 0):
            raise InputError(f"composition: fraction of {el} must be >= 0, got {v}")
        if v > 0:
            out[el] = v
    tot = sum(out.values())
    if tot <= 0:
        raise InputError(f"composition {text!r}: the fractions sum to 0")
    return {el: v / tot for el, v in out.items()}


@lru_cache(maxsize=None)
def _atomic_number(el: str) -> int:
    import xraydb

    try:
        return int(xraydb.atomic_number(el))
    except Exception:
        raise InputError(f"composition: unknown element {el!r}") from None


@lru_cache(maxsize=None)
def _atomic_mass(el: str) -> float:
    import xraydb

    _atomic_number(el)
    return float(xraydb.atomic_mass(el))


def _ekey(energy_keV) -> tuple:
    """Hashable key of an energy array (eV, rounded to 1 meV) for the xraydb caches."""
    e = np.clip(np.atleast_1d(np.asarray(energy_keV, dtype=np.float64)) * 1000.0, 100.0, None)
    return tuple(np.round(e, 3).tolist())


@lru_cache(maxsize=512)
def _mu_elam_cached(el: str, ekey: tuple) -> np.ndarray:
    import xraydb

    return np.asarray(xraydb.mu_elam(el, np.asarray(ekey)), dtype=np.float64)


@lru_cache(maxsize=512)
def _material_mu_cached(formula: str, density: float, ekey: tuple) -> np.ndarray:
    import xraydb

    return np.asarray(xraydb.material_mu(formula, np.asarray(ekey), density=density), dtype=np.float64)


@lru_cache(maxsize=256)
def _lines_cached(el: str, beam_eV: float):
    import xraydb

    return xraydb.xray_lines(el, excitation_energy=beam_eV), xraydb.xray_edges(el)


def _mu_rho(comp: dict[str, float], energy_keV) -> np.ndarray:
    """Mass attenuation coefficient (cm^2/g) of a composition at energies (keV) (xraydb
    ``mu_elam``, Elam et al. tables, clipped at their 100 eV start)."""
    shape = np.shape(energy_keV)
    key = _ekey(energy_keV)
    mu = np.zeros(len(key))
    for el, c in comp.items():
        mu += c * _mu_elam_cached(el, key)
    return mu.reshape(shape) if shape else mu


def fwhm_keV(energy_keV, fwhm_mnka_eV: float = 130.0) -> np.ndarray:
    """Detector resolution (keV) at ``energy_keV``:
    ``FWHM^2 = FWHM_MnKa^2 + 2.5 eV * (E - E_MnKa)`` (Fiori & Newbury 1978), all in eV.

    Returns
    -------
    ndarray, same shape as ``energy_keV``, float64, keV (at least 10 eV).
    """
    e = np.asarray(energy_keV, dtype=np.float64)
    f2 = float(fwhm_mnka_eV) ** 2 + 2.5 * (e - MNKA_KEV) * 1000.0
    return np.sqrt(np.maximum(f2, 100.0)) / 1000.0


def detector_efficiency(energy_keV, detector: DetectorModel = DetectorModel()) -> np.ndarray:
    """Fraction of photons of energy E (keV) the detector counts (window, dead layer, crystal).

    Returns
    -------
    ndarray, same shape as ``energy_keV``, float64 in [0, 1].
    """
    e = np.asarray(energy_keV, dtype=np.float64)
    key = _ekey(e.reshape(-1))
    att = np.zeros(len(key))
    for formula, t_um, rho in detector.window:
        att += _material_mu_cached(str(formula), float(rho), key) * t_um * 1e-4
    mu_si = _material_mu_cached("Si", 2.33, key)
    att += mu_si * detector.dead_layer_um * 1e-4
    eff = np.exp(-att) * (1.0 - np.exp(-mu_si * detector.crystal_um * 1e-4))
    eff[e.reshape(-1) < 0.05] = 0.0
    return eff.reshape(e.shape)


def _absorption(comp, e_keV, ec_keV, beam_keV, takeoff_deg) -> np.ndarray:
    """Philibert-Duncumb-Heinrich f(chi) for photons of e_keV generated above edge ec_keV."""
    e = np.asarray(e_keV, dtype=np.float64)
    ec = np.asarray(ec_keV, dtype=np.float64)
    chi = _mu_rho(comp, e) / math.sin(math.radians(takeoff_deg))
    sigma = 4.5e5 / np.maximum(beam_keV ** 1.65 - np.minimum(ec, beam_keV * 0.999) ** 1.65, 1e-6)
    A = sum(c * _atomic_mass(el) for el, c in comp.items())
    Z = sum(c * _atomic_number(el) for el, c in comp.items())
    h = 1.2 * A / Z ** 2
    x = chi / sigma
    return 1.0 / ((1.0 + x) * (1.0 + h / (1.0 + h) * x))


@lru_cache(maxsize=4096)
def _ionisation_integral(ckey: tuple, ec_keV: float, beam_keV: float, n: int = 200) -> float:
    """∫_{Ec}^{E0} Q(E)/S(E) dE with Bethe Q (per electron in the level) and Joy-Luo S;
    ``ckey``: the composition as a sorted tuple of (element, mass fraction)."""
    comp = dict(ckey)
    if ec_keV >= beam_keV:
        return 0.0
    E = np.linspace(ec_keV, beam_keV, n)
    U = E / ec_keV
    Q = np.log(U) / (U * ec_keV ** 2)
    S = np.zeros_like(E)
    for el, c in comp.items():
        Z = _atomic_number(el)
        J = (9.76 * Z + 58.5 * Z ** -0.19) / 1000.0
        S += c * Z / _atomic_mass(el) * np.log(1.166 * (E + 0.85 * J) / J)
    S = S / E
    return float(np.trapezoid(Q / S, E))


def characteristic_lines(composition, beam_energy_keV: float, *,
                         detector: DetectorModel = DetectorModel(),
                         min_energy_keV: float = 0.1, min_relative: float = 1e-4) -> list[Line]:
    """The characteristic lines a composition emits at a beam energy, with weights.

    Parameters
    ----------
    composition : str or dict
        See :func:`parse_composition`.
    beam_energy_keV : float
    detector : DetectorModel
    min_energy_keV : float
        Lines below this energy are dropped (0.1 keV).
    min_relative : float
        Lines weaker than this fraction of the strongest detected line are dropped.

    Returns
    -------
    list of Line, sorted by energy.

    Raises
    ------
    InputError
        Bad composition or beam energy.
    """
    comp = parse_composition(composition)
    E0 = float(beam_energy_keV)
    if not (E0 > 0.5 and math.isfinite(E0)):
        raise InputError(f"beam energy must be > 0.5 keV, got {beam_energy_keV}")
    ckey = tuple(sorted(comp.items()))
    rows = []
    for el, c in comp.items():
        lines, edges = _lines_cached(el, E0 * 1000.0)
        integrals = {}
        for name, ln in lines.items():
            lvl = ln.initial_level
            if lvl not in _SHELL_ELECTRONS or lvl not in edges:
                continue
            e_line = ln.energy / 1000.0
            ec = edges[lvl].energy / 1000.0
            if e_line < min_energy_keV or ec >= E0:
                continue
            if lvl not in integrals:
                integrals[lvl] = _ionisation_integral(ckey, ec, E0)
            gen = (c / _atomic_mass(el) * edges[lvl].fyield * float(ln.intensity)
                   * _SHELL_ELECTRONS[lvl] * integrals[lvl])
            rows.append((el, name, e_line, ec, gen))
    if not rows:
        return []
    e = np.array([r[2] for r in rows])
    ec = np.array([r[3] for r in rows])
    det = (np.array([r[4] for r in rows]) * _absorption(comp, e, ec, E0, detector.takeoff_deg)
           * detector_efficiency(e, detector))
    keep = det >= min_relative * det.max()
    out = [Line(r[0], r[1], float(r[2]), float(r[4]), float(d))
           for r, d, k in zip(rows, det, keep) if k]
    return sorted(out, key=lambda ln: ln.energy_keV)


def _channel_gauss(axis: EnergyAxis, centres, sigmas) -> np.ndarray:
    """Fraction of each Gaussian (m,) falling in each channel: (m, p)."""
    edges = axis.offset_keV - axis.scale_keV / 2 + axis.scale_keV * np.arange(axis.size + 1)
    z = (edges[None, :] - np.asarray(centres)[:, None]) / (np.sqrt(2.0) * np.asarray(sigmas)[:, None])
    return 0.5 * np.diff(erf(z), axis=1)


def expected_spectrum(composition, axis: EnergyAxis, beam_energy_keV: float, *,
                      detector: DetectorModel = DetectorModel(), total_counts: float | None = None,
                      parts: bool = False, shift_keV: float = 0.0):
    """Expected counts per channel of a composition (no noise).

    Parameters
    ----------
    composition : str or dict
        See :func:`parse_composition`.
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
