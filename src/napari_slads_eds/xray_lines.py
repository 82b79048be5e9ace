"""X-ray lines of a composition: composition parsing, xraydb atomic and line data, the
generated intensities, absorption in the specimen and :func:`characteristic_lines`.

Generated photons of line j of shell s of element i, per electron::

    n_j  ∝  (C_i / A_i) * omega_s * p_j * ∫_{E_c}^{E_0} Q_s(E) / S(E) dE

with the Bethe ionisation cross-section and the Joy-Luo stopping power, and
Philibert-Duncumb-Heinrich absorption in the specimen (see
:mod:`napari_slads_eds.synthesis` for the whole model).  The detector's part (efficiency)
comes from :mod:`napari_slads_eds.eds_detector`.  Nothing here imports TensorFlow or Qt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._validation import InputError
from .eds_detector import DetectorModel, _ekey, detector_efficiency

__all__ = ["Line", "parse_composition", "characteristic_lines"]

#: Electrons in each level (for the ionisation cross-section).
_SHELL_ELECTRONS = {"K": 2, "L1": 2, "L2": 2, "L3": 4, "M1": 2, "M2": 2, "M3": 4, "M4": 4, "M5": 6}


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


@lru_cache(maxsize=512)
def _mu_elam_cached(el: str, ekey: tuple) -> np.ndarray:
    import xraydb

    return np.asarray(xraydb.mu_elam(el, np.asarray(ekey)), dtype=np.float64)


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
