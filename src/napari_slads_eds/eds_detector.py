"""The EDS detector of the spectrum model: geometry, window and crystal, resolution.

:class:`DetectorModel` holds the simulated detector and geometry; :func:`detector_efficiency`
is the transmission of the window layers and the Si dead layer times absorption in the Si
crystal, ``exp(-Σ mu_l rho_l t_l) * (1 - exp(-mu_Si rho_Si t))`` (mass attenuation from
xraydb); :func:`fwhm_keV` is the resolution law ``FWHM(E)^2 = FWHM_MnKa^2 + 2.5 eV * (E -
5898.7 eV)`` (Fiori & Newbury 1978), and Gaussian peaks are integrated over each channel
(erf differences).  Used by :mod:`napari_slads_eds.xray_lines` and
:mod:`napari_slads_eds.synthesis`.  Nothing here imports TensorFlow or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import erf

from ._validation import InputError
from .spectra import EnergyAxis

__all__ = ["DetectorModel", "fwhm_keV", "detector_efficiency", "KRAMERS_K", "MNKA_KEV"]

#: Kramers constant relative to the characteristic scale of the spectrum model (dimensionless).
#: Calibrated by least squares on the background of the NIST Si standard (15 kV); see
#: docs/synthesis.md and tools/synthesis_validation.py.
KRAMERS_K = 8.4e-6

#: Mn Ka energy (keV), the reference of the resolution law.
MNKA_KEV = 5.8987


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


def _ekey(energy_keV) -> tuple:
    """Hashable key of an energy array (eV, rounded to 1 meV) for the xraydb caches."""
    e = np.clip(np.atleast_1d(np.asarray(energy_keV, dtype=np.float64)) * 1000.0, 100.0, None)
    return tuple(np.round(e, 3).tolist())


@lru_cache(maxsize=512)
def _material_mu_cached(formula: str, density: float, ekey: tuple) -> np.ndarray:
    import xraydb

    return np.asarray(xraydb.material_mu(formula, np.asarray(ekey), density=density), dtype=np.float64)


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


def _channel_gauss(axis: EnergyAxis, centres, sigmas) -> np.ndarray:
    """Fraction of each Gaussian (m,) falling in each channel: (m, p)."""
    edges = axis.offset_keV - axis.scale_keV / 2 + axis.scale_keV * np.arange(axis.size + 1)
    z = (edges[None, :] - np.asarray(centres)[:, None]) / (np.sqrt(2.0) * np.asarray(sigmas)[:, None])
    return 0.5 * np.diff(erf(z), axis=1)
