"""Specimens: anything that answers ``measure(positions) -> spectra``.

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

from ._validation import InputError, check_label_image, check_positions, check_seed
from .spectra import EnergyAxis, ReferenceSpectra

__all__ = ["SimulatedSpecimen", "save_specimen", "load_specimen"]


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
