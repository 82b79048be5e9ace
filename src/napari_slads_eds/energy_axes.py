"""Energy axes by value: a file's calibration, count-conserving rebinning, :func:`to_axis`.

This module owns the conversion of counts between energy axes (:class:`EnergyAxis`,
channel ``i`` centred at ``offset + i * scale``, keV); :mod:`napari_slads_eds.eds_io`
reads files and uses it.

Missing calibration
-------------------
An energy axis without units and with the uncalibrated values ``offset 0, scale 1``
(what RosettaSciIO reports for a Ripple file without ``ev-per-chan``/``depth-scale``) is
*missing*: :func:`energy_axis_from_rsciio` raises :class:`InputError` unless
``default_calibration`` (offset keV, scale keV/channel) is given, in which case that
calibration is used and a ``UserWarning`` says so.  An axis without units but with plainly
non-unit values is read in eV when the scale exceeds 0.5 (EMSA's default unit), in keV
otherwise, with a warning.

Energy axes by value
--------------------
:func:`rebin_counts` resamples counts from one calibration onto another by energy,
conserving counts: the cumulative counts are interpolated linearly at the target
channel edges (each source channel's counts spread uniformly over its width,
``[E_i - scale/2, E_i + scale/2]``) and differenced.  :func:`to_axis` uses the exact
cut when the calibrations agree (:meth:`Spectrum.on_axis`) and rebinning otherwise;
target channels the source does not cover are an :class:`InputError`, except the
channels above the beam energy (no X-rays there, so 0 counts is the truth) and the
channels below ``LOW_ENERGY_CUTOFF_KEV`` (0.1 keV: below every line an SDD measures).

Nothing here imports Qt or TensorFlow.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._validation import InputError, check_spectra
from .spectra import EnergyAxis

__all__ = [
    "energy_axis_from_rsciio",
    "rebin_counts",
    "to_axis",
    "check_on_axis",
    "LOW_ENERGY_CUTOFF_KEV",
]

#: Target channels below this energy may lie outside the source axis (filled with 0).
LOW_ENERGY_CUTOFF_KEV = 0.1


def _units_scale(units) -> float | None:
    u = (units or "").strip().lower()
    if u in ("kev",):
        return 1.0
    if u in ("ev",):
        return 1e-3
    return None


def energy_axis_from_rsciio(ax: dict, *, what: str = "file",
                            default_calibration=None) -> EnergyAxis:
    """Energy axis (keV) from a RosettaSciIO axis dictionary.

    Parameters
    ----------
    ax : dict
        ``{"size", "offset", "scale", "units", ...}`` of the signal (energy) axis.
    what : str
        Names the file in messages.
    default_calibration : (offset_keV, scale_keV), optional
        Used, with a warning, when the file has no calibration.

    Returns
    -------
    EnergyAxis

    Raises
    ------
    InputError
        Non-uniform axis, units that are not energies, or missing calibration without
        ``default_calibration``.
    """
    if "axis" in ax and ax.get("scale") is None:
        raise InputError(f"{what}: non-uniform energy axis; only calibrated linear axes are supported")
    size = int(ax.get("size", 0))
    scale, offset, units = ax.get("scale"), ax.get("offset"), ax.get("units")
    f = _units_scale(units)
    uncal = scale in (None, 0) or offset is None or (
        f is None and float(scale) == 1.0 and float(offset) == 0.0)
    u = "" if units is None else str(units).strip()
    if f is None and not uncal and u not in ("", "<undefined>", "undefined"):
        raise InputError(f"{what}: energy axis in unsupported units {units!r} (expected eV or keV)")
    if uncal:
        if default_calibration is None:
            raise InputError(
                f"{what}: the file has no energy calibration (offset/scale of the spectral axis); "
                "give default_calibration=(offset_keV, scale_keV) to assume one")
        off, sc = (float(v) for v in default_calibration)
        warnings.warn(f"{what}: no energy calibration in the file; assuming offset {off} keV and "
                      f"{sc * 1000:g} eV/channel", UserWarning, stacklevel=3)
        return EnergyAxis(off, sc, size)
    if f is None:
        f = 1e-3 if abs(float(scale)) > 0.5 else 1.0
        warnings.warn(f"{what}: energy axis without units; reading it in "
                      f"{'eV' if f == 1e-3 else 'keV'} (scale {scale})", UserWarning, stacklevel=3)
    return EnergyAxis(float(offset) * f, float(scale) * f, size)


def rebin_counts(counts, source: EnergyAxis, target: EnergyAxis) -> np.ndarray:
    """Resample counts from ``source`` onto ``target`` by energy, conserving counts.

    Each source channel's counts are spread uniformly over its width
    ``[E_i - s/2, E_i + s/2]``; the cumulative counts are interpolated linearly at the
    target channel edges and differenced (the standard count-conserving rebinning of
    histograms).  Target channels outside the source range get 0 (use :func:`to_axis`
    for the coverage check).

    Parameters
    ----------
    counts : array_like, shape (..., source.size)
    source, target : EnergyAxis

    Returns
    -------
    ndarray, shape (..., target.size), float64
        The counts that fall in each target channel; the total is conserved over the
        energy range both axes cover.

    Raises
    ------
    InputError
        ``counts`` whose last dimension is not ``source.size``.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.shape[-1:] != (source.size,):
        raise InputError(f"rebin: expected counts with {source.size} channels in the last "
                         f"dimension, got shape {c.shape}")
    p = source.size
    cum = np.concatenate([np.zeros(c.shape[:-1] + (1,)), np.cumsum(c, axis=-1)], axis=-1)
    edges_t = target.offset_keV - target.scale_keV / 2 + target.scale_keV * np.arange(target.size + 1)
    x = (edges_t - (source.offset_keV - source.scale_keV / 2)) / source.scale_keV
    x = np.clip(x, 0.0, float(p))
    i = np.minimum(np.floor(x).astype(np.int64), p - 1)
    frac = x - i
    at = cum[..., i] + frac * c[..., i]
    return np.diff(at, axis=-1)


def to_axis(counts, source: EnergyAxis, target: EnergyAxis, *, beam_energy_keV=None,
            resample: bool = True, what: str = "spectrum") -> np.ndarray:
    """Counts on ``target``: an exact cut when the calibrations agree, else rebinning.

    Parameters
    ----------
    counts : array_like, shape (..., source.size)
    source, target : EnergyAxis
    beam_energy_keV : float, optional
        Target channels above it may lie outside the source (0 counts there).
    resample : bool
        False: raise instead of rebinning a different calibration.
    what : str
        Names the data in messages.

    Returns
    -------
    ndarray, shape (..., target.size)
        The source dtype for an exact cut, float64 when rebinned.

    Raises
    ------
    InputError
        Different calibration with ``resample=False``; target channels between
        ``LOW_ENERGY_CUTOFF_KEV`` and the beam energy that the source does not cover.
    """
    c = np.asarray(counts)
    if c.shape[-1:] != (source.size,):
        raise InputError(f"{what}: expected {source.size} channels in the last dimension, got {c.shape}")
    head = EnergyAxis(source.offset_keV, source.scale_keV, min(source.size, target.size))
    if source.size >= target.size and target.is_compatible(head):
        return c[..., :target.size]
    if not resample:
        raise InputError(f"{what}: its energy axis ({source.describe()}) differs from the expected "
                         f"{target.describe()}; resample it by energy (resample=True)")
    lo_s = source.offset_keV - source.scale_keV / 2
    hi_s = source.offset_keV + source.scale_keV * (source.size - 0.5)
    lo_t = target.offset_keV - target.scale_keV / 2
    hi_t = target.offset_keV + target.scale_keV * (target.size - 0.5)
    tol = 0.5 * target.scale_keV
    if lo_t < lo_s - tol and lo_s > LOW_ENERGY_CUTOFF_KEV + tol:
        raise InputError(f"{what}: its energy axis starts at {lo_s:.3f} keV, above the expected "
                         f"axis' start {lo_t:.3f} keV; the channels in between would be unknown")
    if hi_t > hi_s + tol:
        if beam_energy_keV is None or hi_s + tol < float(beam_energy_keV):
            known = "unknown" if beam_energy_keV is None else f"{float(beam_energy_keV):g} keV"
            raise InputError(
                f"{what}: its energy axis ends at {hi_s:.3f} keV, below the expected axis' end "
                f"{hi_t:.3f} keV and below the beam energy ({known}); the missing channels "
                "cannot be assumed empty")
    return rebin_counts(c, source, target)


def check_on_axis(spectra, axis: EnergyAxis, source: EnergyAxis | None = None, *,
                  beam_energy_keV=None, what: str = "spectra") -> np.ndarray:
    """Validate spectra and bring them onto ``axis`` (float32, shape (n, axis.size)).

    ``source`` is their own axis (default: ``axis``, i.e. only the channel count is checked).

    Raises
    ------
    InputError
        As :func:`to_axis` and :func:`napari_slads_eds._validation.check_spectra`.
    """
    src = source or axis
    x = check_spectra(spectra, src.size, name=what)
    return np.asarray(to_axis(x, src, axis, beam_energy_keV=beam_energy_keV, what=what), np.float32)
