"""Specimens: anything that answers ``measure(positions) -> spectra`` (the
:class:`Specimen` protocol).

:class:`ReplaySpecimen` replays a fully acquired spectrum image (binomial thinning emulates
shorter dwell times, :func:`thin_counts`; see :mod:`napari_slads_eds.replay`);
:class:`~napari_slads_eds.microscope.HttpMicroscope` measures on an instrument.

:class:`SimulatedSpecimen` is the paper's simulated object (section 3.1): a phase map,
a random subset of pixels turned into ill-spectra (label 0), and for every pixel a
spectrum made on demand -- label 0: independent Poisson(λ = 20) counts per channel;
label l: one of the M reference spectra of phase l picked at random plus Poisson(λ = 2)
noise.  The N×N×p cube is never held in memory: each pixel's spectrum comes from a random
generator seeded by (seed, pixel index), so it is the same whenever and in whatever order
the pixel is measured.
"""

from __future__ import annotations

import numpy as np

from typing import Protocol, runtime_checkable

from ._validation import InputError, check_label_image, check_positions, check_seed
from .eds_io import to_axis
from .spectra import EnergyAxis, ReferenceSpectra

__all__ = ["Specimen", "SimulatedSpecimen", "ReplaySpecimen", "thin_counts", "save_specimen", "load_specimen"]


@runtime_checkable
class Specimen(Protocol):
    """What the engine job ``run_slads`` samples: a simulated object
    (:class:`SimulatedSpecimen`), a replayed map (:class:`ReplaySpecimen`) or a microscope
    (:class:`~napari_slads_eds.microscope.HttpMicroscope`).

    Attributes
    ----------
    shape : (H, W)
        The sampling grid.
    n_phases : int
        L.
    axis : EnergyAxis
        Energy axis (keV) of the spectra :meth:`measure` returns.

    Optional attributes (a ground truth, where there is one): ``phase_map`` (H, W) int
    1..L and ``labels`` (H, W) int 0..L (0 = ill-spectrum) -- then the run reports TD;
    ``deterministic`` (default True: a pixel always gives the same spectrum, which lets a
    resume check its journal); ``attach_context(ctx)`` (a microscope reports outages).
    """

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def n_phases(self) -> int: ...

    axis: EnergyAxis

    def measure(self, positions) -> np.ndarray:
        """Spectra (n, p) float32 counts at ``positions`` (n, 2) int (row, col)."""
        ...


def _poisson_cdf(lam: float) -> np.ndarray:
    """CDF of Poisson(lam) at 0, 1, ... up to where it reaches 1 within float64."""
    from scipy.stats import poisson

    kmax = int(lam + 12 * np.sqrt(lam) + 12)
    return poisson.cdf(np.arange(kmax + 1), lam)


_CDF_CACHE: dict = {}
_MEASURE_CHUNK = 2048
#: Largest Poisson mean of the added noise and of ill-spectra (counts per channel).
MAX_LAMBDA = 1e6


def _poisson_from_uniform(u: np.ndarray, lam: float) -> np.ndarray:
    """Poisson(lam) counts from uniform numbers in [0, 1) by inverting the CDF."""
    if lam <= 0:
        return np.zeros(u.shape, dtype=np.float32)
    cdf = _CDF_CACHE.get(lam)
    if cdf is None:
        cdf = _CDF_CACHE[lam] = _poisson_cdf(lam)
    return np.searchsorted(cdf, u, side="right").astype(np.float32)


class SimulatedSpecimen:
    """Simulated EDS specimen built from a phase map and reference spectra.

    Parameters
    ----------
    phase_map : ndarray, shape (H, W), integer labels 1..L
        The true phases (e.g. a segmented micrograph).
    references : ReferenceSpectra
        M reference spectra (counts) for each of the L phases, shape (L, M, p).
    ill_fraction : float in [0, 1)
        Fraction of pixels that give an ill-spectrum (label 0).
    noise_lambda : float
        λ of the Poisson noise added to every phase spectrum (2 in the paper).
    ill_lambda : float
        λ of the per-channel Poisson counts of an ill-spectrum (20 in the paper).
    seed : int
        Seeds the ill-spectrum pixels and every pixel's spectrum.

    Attributes
    ----------
    phase_map : ndarray (H, W) int16, labels 1..L
    labels : ndarray (H, W) int16, labels 0..L (0 at ill-spectrum pixels)
    axis : EnergyAxis
    shape : (H, W)

    Raises
    ------
    InputError
        Labels outside 1..L for L reference phases, a phase without reference spectra,
        bad noise parameters.
    """

    def __init__(self, phase_map, references: ReferenceSpectra, *, ill_fraction: float = 0.01,
                 noise_lambda: float = 2.0, ill_lambda: float = 20.0, seed: int = 0):
        if not isinstance(references, ReferenceSpectra):
            raise InputError("references: expected a ReferenceSpectra (L, M, p) object")
        L = references.n_phases
        pm = check_label_image(phase_map, L, name="phase map", allow_zero=False)
        if not 0 <= ill_fraction < 1:
            raise InputError(f"ill_fraction must be in [0, 1), got {ill_fraction}")
        for name, lam in (("noise_lambda", noise_lambda), ("ill_lambda", ill_lambda)):
            if not 0 <= lam <= MAX_LAMBDA:       # NaN fails too
                raise InputError(f"{name} (Poisson mean counts per channel) must be in 0..{MAX_LAMBDA:g}, got {lam}")
        self.phase_map = pm
        self.references = references
        self.axis: EnergyAxis = references.axis
        self.noise_lambda = float(noise_lambda)
        self.ill_lambda = float(ill_lambda)
        self.ill_fraction = float(ill_fraction)
        self.seed = check_seed(seed)
        rng = np.random.default_rng([self.seed, 0x111])
        ill = rng.random(pm.shape) < ill_fraction
        self.labels = np.where(ill, 0, pm).astype(np.int16)
        self._refs32 = references.spectra.astype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return self.phase_map.shape

    @property
    def n_phases(self) -> int:
        return self.references.n_phases

    @property
    def n_channels(self) -> int:
        return self.axis.size

    def measure(self, positions) -> np.ndarray:
        """Spectra at ``positions``.

        Parameters
        ----------
        positions : array_like, shape (n, 2), int (row, col)

        Returns
        -------
        ndarray, shape (n, p), float32
            Counts per channel; the same pixel always gives the same spectrum.

        Raises
        ------
        InputError
            Positions outside the grid or not (n, 2).
        """
        pos = check_positions(positions, self.shape)
        if len(pos) > _MEASURE_CHUNK:      # bounded memory for large requests
            return np.concatenate([self.measure(pos[a:a + _MEASURE_CHUNK])
                                   for a in range(0, len(pos), _MEASURE_CHUNK)])
        W = self.shape[1]
        flat = pos[:, 0] * W + pos[:, 1]
        lab = self.labels.reshape(-1)[flat]
        p = self.axis.size
        M = self.references.n_per_phase
        # Per pixel: a generator seeded by (seed, pixel) draws which reference spectrum is
        # used and p uniform numbers; the uniforms become Poisson counts by inverting the
        # Poisson CDF for the whole batch at once (exact, and much faster than p Poisson
        # draws per pixel).
        u = np.empty((flat.size, p), dtype=np.float64)
        ref = np.zeros(flat.size, dtype=np.int64)
        for i, (f, l) in enumerate(zip(flat.tolist(), lab.tolist())):
            g = np.random.Generator(np.random.PCG64([self.seed, f]))
            ref[i] = g.integers(M) if l > 0 else 0
            g.random(out=u[i])
        out = np.empty((flat.size, p), dtype=np.float32)
        ill = lab == 0
        if ill.any():
            out[ill] = _poisson_from_uniform(u[ill], self.ill_lambda)
        ok = ~ill
        if ok.any():
            out[ok] = self._refs32[lab[ok] - 1, ref[ok]]
            if self.noise_lambda > 0:
                out[ok] += _poisson_from_uniform(u[ok], self.noise_lambda)
        return out


def save_specimen(specimen: SimulatedSpecimen, path) -> None:
    """Write a simulated specimen to ``.npz`` (phase map, reference spectra, energy axis,
    noise parameters and seed: everything needed to measure it again identically)."""
    import json

    r = specimen.references
    np.savez_compressed(
        path, kind=np.array("simulated"), phase_map=specimen.phase_map, labels=specimen.labels,
        references=r.spectra, axis=np.array(json.dumps(r.axis.to_dict())),
        phase_names=np.array(json.dumps(list(r.phase_names))),
        params=np.array(json.dumps({"ill_fraction": specimen.ill_fraction, "noise_lambda": specimen.noise_lambda,
                                    "ill_lambda": specimen.ill_lambda, "seed": specimen.seed})))


def load_specimen(path) -> SimulatedSpecimen:
    """Read a specimen written by :func:`save_specimen`.

    Raises
    ------
    InputError
        Missing, corrupt or truncated file, or not a specimen file.
    """
    import json
    from pathlib import Path

    from .spectra import EnergyAxis

    from ._files import read_npz

    p = Path(path)
    d = read_npz(p, what="specimen file")
    try:
        if str(d.get("kind")) != "simulated":
            raise InputError(f"{p}: not a simulated-specimen file")
        params = json.loads(str(d["params"]))
        refs = ReferenceSpectra(d["references"], EnergyAxis.from_dict(json.loads(str(d["axis"]))),
                                tuple(json.loads(str(d["phase_names"]))))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable specimen file (corrupt or truncated?): {exc}") from exc
    spec = SimulatedSpecimen(d["phase_map"], refs, **params)
    if not np.array_equal(spec.labels, d["labels"]):
        raise InputError(f"{p}: the stored ill-spectrum pixels do not match the seed; the file was altered")
    return spec


# ----------------------------------------------------------------------------- replay

_THIN_STREAM = 0x7E1


def thin_counts(counts, fraction: float, seed: int, pixel_ids, stream: int = _THIN_STREAM) -> np.ndarray:
    """Binomial thinning of integer counts: keep each count with probability ``fraction``.

    ``Binomial(N, d)`` of ``N ~ Poisson(λ)`` counts is ``Poisson(d λ)``: the counts of a
    ``d`` times shorter dwell.  Row ``i`` uses a generator seeded by
    ``(seed, pixel_ids[i], stream)``, so the result of a pixel does not depend on which
    other pixels are thinned with it.

    Parameters
    ----------
    counts : array_like, shape (n, p), non-negative integers (any integer or integral
        float dtype)
    fraction : float in [0, 1]
    seed : int
    pixel_ids : array_like, shape (n,), int
        Flat pixel index of each row.
    stream : int
        Separates independent uses (measurement thinning, count splitting).

    Returns
    -------
    ndarray, shape (n, p), int64

    Raises
    ------
    InputError
        ``fraction`` outside [0, 1], non-integral or negative counts, shape mismatch.
    """
    c = np.asarray(counts)
    if c.ndim != 2:
        raise InputError(f"thinning: expected counts of shape (n, p), got {c.shape}")
    if not 0.0 <= float(fraction) <= 1.0:
        raise InputError(f"thinning fraction must be in [0, 1], got {fraction}")
    if c.size and (c.min() < 0 or (np.issubdtype(c.dtype, np.floating) and not np.all(c == np.round(c)))):
        raise InputError("thinning needs non-negative integer counts (thin before any rebinning)")
    ids = np.asarray(pixel_ids, dtype=np.int64).reshape(-1)
    if ids.size != c.shape[0]:
        raise InputError(f"thinning: {ids.size} pixel ids for {c.shape[0]} spectra")
    ci = c.astype(np.int64)
    if fraction >= 1.0:
        return ci.copy()
    out = np.zeros_like(ci)
    if fraction <= 0.0:
        return out
    for i, f in enumerate(ids.tolist()):
        nz = np.flatnonzero(ci[i])
        if nz.size:
            g = np.random.Generator(np.random.PCG64([int(seed), int(f), int(stream)]))
            out[i, nz] = g.binomial(ci[i, nz], fraction)
    return out


class ReplaySpecimen:
    """A specimen that replays a fully acquired spectrum image.

    Parameters
    ----------
    counts : array_like, shape (H, W, p_src), non-negative integer counts
        The acquired map (or its measurement share, see :func:`split_counts`).
    source_axis : EnergyAxis
        Energy axis of ``counts``.
    phase_map : array_like, shape (H, W), labels 1..L
        Ground truth used for TD.
    n_phases : int, optional
        L (default: ``phase_map.max()``).
    axis : EnergyAxis, optional
        Axis of the spectra :meth:`measure` returns (the classifier's); default
        ``source_axis``.  Other calibrations are rebinned by energy after thinning.
    dwell_fraction : float in (0, 1]
        Emulated dwell time relative to ``counts`` (binomial thinning; 1 = as acquired).
    beam_energy_keV : float, optional
        Lets :func:`~napari_slads_eds.eds_io.to_axis` fill channels above the beam energy.
    seed : int
        Seeds the thinning, per pixel.
    references : ReferenceSpectra, optional
        The spectra the classifier was trained on (for display); default: one mean
        spectrum per phase of the replayed counts, shape (L, 1, p).
    labels : array_like, shape (H, W), labels 0..L, optional
        Labels of the pixels (default ``phase_map``; the map has no known ill-spectra).

    Attributes
    ----------
    shape : (H, W)
    n_phases : int
    axis : EnergyAxis
    phase_map : ndarray (H, W) int16, 1..L
    labels : ndarray (H, W) int16, 0..L
    references : ReferenceSpectra

    Raises
    ------
    InputError
        Shapes that do not match, labels outside 1..L, bad dwell fraction, an output
        axis the source axis cannot be brought onto.
    """

    def __init__(self, counts, source_axis: EnergyAxis, phase_map, *, n_phases: int | None = None,
                 axis: EnergyAxis | None = None, dwell_fraction: float = 1.0,
                 beam_energy_keV: float | None = None, seed: int = 0,
                 references: ReferenceSpectra | None = None, labels=None):
        c = np.asarray(counts)
        if c.ndim != 3 or c.shape[2] != source_axis.size:
            raise InputError(f"replay specimen: expected counts (H, W, {source_axis.size}), got {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            if not (np.issubdtype(c.dtype, np.floating) and np.all(c == np.round(c))):
                raise InputError("replay specimen: counts must be integers (thinning needs counts)")
            c = c.astype(np.int64)
        if c.size and c.min() < 0:
            raise InputError("replay specimen: negative counts")
        L = int(n_phases) if n_phases is not None else int(np.max(phase_map))
        pm = check_label_image(phase_map, L, name="ground-truth phase map", allow_zero=False)
        if pm.shape != c.shape[:2]:
            raise InputError(f"replay specimen: phase map {pm.shape} does not match the map {c.shape[:2]}")
        if not 0.0 < float(dwell_fraction) <= 1.0:
            raise InputError(f"dwell fraction must be in (0, 1], got {dwell_fraction}")
        self.counts = c
        self.source_axis = source_axis
        self.axis: EnergyAxis = axis or source_axis
        self.beam_energy_keV = beam_energy_keV
        # fail now, not in the middle of a run, if the axis cannot be served
        to_axis(np.zeros((1, source_axis.size)), source_axis, self.axis, beam_energy_keV=beam_energy_keV,
                what="replayed spectra")
        self.phase_map = pm
        self._n_phases = L
        self.labels = pm.copy() if labels is None else check_label_image(labels, L, name="labels")
        self.dwell_fraction = float(dwell_fraction)
        self.seed = check_seed(seed)
        if references is None:
            flat = c.reshape(-1, c.shape[2])
            means = np.stack([flat[pm.reshape(-1) == l].mean(axis=0) if np.any(pm == l)
                              else np.zeros(c.shape[2]) for l in range(1, L + 1)])
            means = to_axis(means, source_axis, self.axis, beam_energy_keV=beam_energy_keV)
            references = ReferenceSpectra(np.asarray(means, np.float64)[:, None, :], self.axis,
                                          tuple(f"phase {l}" for l in range(1, L + 1)))
        self.references = references

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.phase_map.shape)

    @property
    def n_phases(self) -> int:
        return self._n_phases

    @property
    def n_channels(self) -> int:
        return self.axis.size

    def measure(self, positions) -> np.ndarray:
        """Spectra (n, p) float32 on :attr:`axis` at ``positions`` (n, 2) (row, col): the
        acquired counts, thinned to the dwell fraction; the same pixel always gives the same
        spectrum (:meth:`Specimen.measure`).  Raises InputError for positions outside the
        grid or not (n, 2)."""
        pos = check_positions(positions, self.shape)
        W = self.shape[1]
        raw = self.counts[pos[:, 0], pos[:, 1]]
        thin = thin_counts(raw, self.dwell_fraction, self.seed, pos[:, 0] * W + pos[:, 1])
        out = to_axis(thin, self.source_axis, self.axis, beam_energy_keV=self.beam_energy_keV,
                      what="replayed spectra")
        return np.asarray(out, dtype=np.float32)
