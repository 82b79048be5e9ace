"""Replay of a fully acquired spectrum image: how SLADS would have done on a real map.

A :class:`ReplaySpecimen` serves ``measure(positions)`` from an acquired map
``counts[row, col, channel]`` with the interface of
:class:`~napari_slads_eds.specimen.SimulatedSpecimen` (``shape``, ``n_phases``, ``axis``,
``phase_map``, ``labels``, ``references``), so the engine's ``run_slads`` job runs on it
unchanged.  Shorter dwell times are emulated by **binomial thinning**: if a channel holds
``N ~ Poisson(λ)`` counts, keeping each count with probability ``d`` gives
``Binomial(N, d) ~ Poisson(d λ)``, exactly the counts of a ``d`` times shorter dwell.  The
thinning of a pixel is drawn from a generator seeded by ``(seed, pixel index)``, so a pixel
always gives the same spectrum whenever it is measured.

Ground truth, classifier and ERD training (what is trained on what)
--------------------------------------------------------------------
The classifier and the ERD model must not be trained on the data they are tested on, and
a real map is small (the shared Bruker map is 75 × 100 pixels of about 22 counts).

* **Ground truth** (used only to score TD): clustering of the full map (default) --
  spectra smoothed spatially by a Gaussian of ``smooth`` pixels, binned to 10 channels,
  normalised per pixel, square-rooted, PCA to 5 components, k-means (scipy ``kmeans2``,
  k-means++ with restarts); phases ordered by the mean of the BSE image when the file
  has one (else by mean total counts), darkest first -- or the labels a trained
  classifier gives the full map (``truth="classifier"``), ill-spectra filled by the
  nearest phase label.
* **Classifier training: count splitting.**  The counts are split per pixel into two
  independent Poisson shares (binomial thinning again): a *training share* (fraction
  ``train_share``, default 0.2) and a *measurement share* (the rest).  The replayed
  measurements come only from the measurement share; the classifier learns only from
  the training share: per phase, the mean spectrum of its training-share pixels gives the
  spectral shape, and the training spectra are Poisson draws of that shape at the count
  level of a measurement (training share mean counts rescaled to the measured dwell,
  times a log-normal spread of 25 %).  Because the two shares are independent Poisson
  counts, the classifier has never seen a single count it later classifies -- the
  situation of a microscopist who acquired a short training map first.  The price: the
  replayed measurements carry ``1 - train_share`` (80 %) of the acquired dose at most.
* **ERD model**: trained on *other* label images: by default the bundled BSE micrograph
  of glass, sand grains and bubbles, segmented into L phases and majority-down-sampled
  4× (features of a few to a few tens of pixels, like the grains of the map), or the
  micrographs given with ``train``.  Never the map's own BSE image or labels.

The command ``slads-eds replay`` (:func:`replay_command`) runs all of it and writes
``DIR/result.json`` with the keys of ``slads-eds run`` (:func:`napari_slads_eds.results.write_run`)
plus ``DIR/run.hspy`` and ``DIR/run_export.npz`` (:mod:`napari_slads_eds.export`).

Nothing here imports TensorFlow; training and sampling run in the engine process.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ._validation import InputError, check_int, check_label_image, check_positions, check_seed
from .config import SamplingConfig
from .eds_io import SpectrumImage, read_spectrum_image, to_axis
from .spectra import EnergyAxis, ReferenceSpectra

__all__ = [
    "ReplaySpecimen",
    "ReplaySettings",
    "ReplayExperiment",
    "thin_counts",
    "split_counts",
    "cluster_phases",
    "phase_training_spectra",
    "erd_training_images",
    "prepare_replay",
    "run_replay",
    "spectrum_image_from_layer",
]

_THIN_STREAM = 0x7E1
_SPLIT_STREAM = 0x5B1


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


def split_counts(counts, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split a map's counts into two independent Poisson shares (count splitting).

    Parameters
    ----------
    counts : array_like, shape (H, W, p), non-negative integers
    share : float in (0, 1)
        Expected fraction of the counts in the first share.
    seed : int

    Returns
    -------
    first, rest : ndarray, shape (H, W, p), int64
        ``first = Binomial(counts, share)`` per pixel and channel (one generator seeded
        by ``seed`` for the whole map), ``rest = counts -
        first``; for Poisson counts they are independent Poisson maps with means ``share
        λ`` and ``(1 - share) λ``.

    Raises
    ------
    InputError
        ``share`` outside (0, 1) or bad counts.
    """
    c = np.asarray(counts)
    if c.ndim != 3:
        raise InputError(f"count splitting: expected (H, W, p) counts, got {c.shape}")
    if not 0.0 < float(share) < 1.0:
        raise InputError(f"count splitting: share must be in (0, 1), got {share}")
    if c.size and (c.min() < 0 or (np.issubdtype(c.dtype, np.floating) and not np.all(c == np.round(c)))):
        raise InputError("count splitting needs non-negative integer counts")
    ci = c.astype(np.int64)
    first = np.zeros_like(ci)
    nz = np.flatnonzero(ci)
    rng = np.random.default_rng([int(seed), _SPLIT_STREAM])
    first.reshape(-1)[nz] = rng.binomial(ci.reshape(-1)[nz], float(share))
    return first, ci - first


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
        """Spectra at ``positions`` (the acquired counts, thinned to the dwell fraction).

        Parameters
        ----------
        positions : array_like, shape (n, 2), int (row, col)

        Returns
        -------
        ndarray, shape (n, p), float32
            Counts on :attr:`axis`; the same pixel always gives the same spectrum.

        Raises
        ------
        InputError
            Positions outside the grid or not (n, 2).
        """
        pos = check_positions(positions, self.shape)
        W = self.shape[1]
        raw = self.counts[pos[:, 0], pos[:, 1]]
        thin = thin_counts(raw, self.dwell_fraction, self.seed, pos[:, 0] * W + pos[:, 1])
        out = to_axis(thin, self.source_axis, self.axis, beam_energy_keV=self.beam_energy_keV,
                      what="replayed spectra")
        return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------- truth

def cluster_phases(counts, axis: EnergyAxis, n_phases: int, *, smooth: float = 1.0,
                   bin_channels: int = 10, n_components: int = 5, order_image=None,
                   min_energy_keV: float = 0.1, max_energy_keV: float | None = None,
                   seed: int = 0, restarts: int = 10) -> np.ndarray:
    """Phase labels of a spectrum image by clustering (numpy/scipy only).

    Steps: Gaussian smoothing of the map over ``smooth`` pixels (per channel), channels
    between ``min_energy_keV`` and ``max_energy_keV`` summed in groups of
    ``bin_channels``, each pixel normalised to unit total and square-rooted (Hellinger
    embedding of the composition), PCA (SVD) to ``n_components``, k-means with k-means++
    initialisation (``scipy.cluster.vq.kmeans2``), the best of ``restarts`` by inertia.
    Clusters are ordered by the mean of ``order_image`` (e.g. the BSE image: dark
    to bright), or by mean total counts when it is None.

    Parameters
    ----------
    counts : array_like, shape (H, W, p)
    axis : EnergyAxis
    n_phases : int
        L >= 1.
    smooth : float
        Gaussian sigma in pixels (0: none).
    order_image : array_like, shape (H, W), optional

    Returns
    -------
    ndarray, shape (H, W), int16, labels 1..L (every label present)

    Raises
    ------
    InputError
        Bad shapes, L < 1, more phases than pixels, an empty energy range, or k-means
        leaving a cluster empty in every restart.
    """
    from scipy import ndimage as ndi
    from scipy.cluster.vq import kmeans2

    c = np.asarray(counts)
    if c.ndim != 3 or c.shape[2] != axis.size:
        raise InputError(f"clustering: expected counts (H, W, {axis.size}), got {c.shape}")
    L = int(n_phases)
    H, W, p = c.shape
    if L < 1 or L > H * W:
        raise InputError(f"clustering: number of phases must be in 1..{H * W}, got {n_phases}")
    if L == 1:
        return np.ones((H, W), np.int16)
    E = axis.energies
    hi = max_energy_keV if max_energy_keV is not None else E[-1]
    keep = np.flatnonzero((E >= min_energy_keV) & (E <= hi))
    nb = keep.size // max(1, int(bin_channels))
    if nb < 2:
        raise InputError(f"clustering: fewer than 2 energy bins between {min_energy_keV} and {hi} keV")
    # binning and spatial smoothing are both linear: bin first (10x less to smooth)
    x = c[:, :, keep[: nb * bin_channels]].reshape(H, W, nb, int(bin_channels)).sum(
        axis=3, dtype=np.float32)
    if smooth and smooth > 0:
        x = ndi.gaussian_filter(x, (float(smooth), float(smooth), 0), mode="nearest")
    x = x.reshape(H * W, nb)
    tot = x.sum(axis=1, keepdims=True)
    x = np.sqrt(x / np.maximum(tot, 1e-12))
    x -= x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(int(n_components), s.size)
    scores = u[:, :k] * s[:k]
    best = None
    for r in range(int(restarts)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cent, lab = kmeans2(scores, L, minit="++", seed=int(seed) + r)
        if np.unique(lab).size < L:
            continue
        inertia = float(((scores - cent[lab]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, lab)
    if best is None:
        raise InputError(f"clustering: could not find {L} non-empty clusters; try fewer phases")
    lab = best[1].reshape(H, W)
    key = (np.asarray(order_image, dtype=np.float64) if order_image is not None
           else c.sum(axis=2, dtype=np.float64))
    if key.shape != (H, W):
        raise InputError(f"clustering: order image {key.shape} does not match the map {(H, W)}")
    means = np.array([key[lab == j].mean() for j in range(L)])
    rank = np.empty(L, np.int64)
    rank[np.argsort(means, kind="stable")] = np.arange(L)
    return (rank[lab] + 1).astype(np.int16)


def fill_ill(labels) -> np.ndarray:
    """Replace label 0 by the nearest non-zero label (for ground truth from a classifier).

    Returns
    -------
    ndarray, same shape, int16, labels 1..L

    Raises
    ------
    InputError
        Every pixel is 0.
    """
    from scipy import ndimage as ndi

    lab = np.asarray(labels, dtype=np.int16)
    zero = lab == 0
    if not zero.any():
        return lab.copy()
    if zero.all():
        raise InputError("every pixel is an ill-spectrum (label 0): no ground truth")
    _, (ri, ci) = ndi.distance_transform_edt(zero, return_indices=True)
    return lab[ri, ci].astype(np.int16)


# ----------------------------------------------------------------------------- training data

def phase_training_spectra(train_counts, phase_map, n_phases: int, source_axis: EnergyAxis,
                           axis: EnergyAxis, *, count_scale: float, n_per_phase: int = 600,
                           spread: float = 0.25, window: int = 5, prior_counts: float = 50.0,
                           beam_energy_keV=None, seed: int = 0,
                           phase_names=None) -> ReferenceSpectra:
    """Training spectra per phase from the training share of a map.

    Each training spectrum of phase l gets its spectral shape from a random pixel of the
    phase: the training-share counts of the same-phase pixels in the ``window`` ×
    ``window`` neighbourhood, regularised towards the phase's mean shape ``m_l`` with
    ``prior_counts`` pseudo-counts, ``shape = (local + a m_l) / (sum(local) + a)`` --
    so the training set carries the composition variation within a phase, not only its
    mean.  The count level is the phase's mean training-share counts per pixel times
    ``count_scale`` (measured dwell / training share); each spectrum is
    ``Poisson(shape * t)`` with ``t = level * exp(N(0, spread^2))``.

    Parameters
    ----------
    train_counts : array_like, shape (H, W, p_src)
    phase_map : array_like, shape (H, W), labels 1..L
    n_phases : int
    source_axis, axis : EnergyAxis
        Axis of ``train_counts`` and of the returned spectra (rebinned by energy).
    count_scale : float > 0
    n_per_phase : int
        M (the classifier trains on the first half, validates on the second).
    spread : float
        Log-normal spread of the counts per spectrum.
    window : int
        Side of the neighbourhood (pixels) a local shape is summed over.
    prior_counts : float
        Weight (counts) of the phase mean in each local shape.
    seed : int

    Returns
    -------
    ReferenceSpectra
        ``spectra`` (L, M, p) float64 counts.

    Raises
    ------
    InputError
        A phase without pixels or without counts, bad parameters.
    """
    tc = np.asarray(train_counts)
    pm = check_label_image(phase_map, n_phases, name="phase map", allow_zero=False)
    if tc.shape[:2] != pm.shape:
        raise InputError(f"training counts {tc.shape} do not match the phase map {pm.shape}")
    if not (count_scale > 0 and n_per_phase >= 2 and spread >= 0):
        raise InputError("count_scale must be > 0, n_per_phase >= 2 and spread >= 0")
    rng = np.random.default_rng([int(seed), 0x7A1])
    flat = tc.reshape(-1, tc.shape[2])
    lab = pm.reshape(-1)
    H, W = pm.shape
    h = int(window) // 2
    out = np.empty((int(n_phases), int(n_per_phase), axis.size))
    for l in range(1, int(n_phases) + 1):
        idx = np.flatnonzero(lab == l)
        if idx.size == 0:
            raise InputError(f"phase {l} has no pixels in the ground truth; use fewer phases")
        mean_src = flat[idx].mean(axis=0, dtype=np.float64)
        if mean_src.sum() <= 0:
            raise InputError(f"phase {l} has no counts in the training share")
        level = mean_src.sum() * float(count_scale)
        mean_shape = mean_src / mean_src.sum()
        # local shapes: same-phase training-share counts in a window around random pixels
        # of the phase, regularised towards the phase mean (prior of `prior_counts` counts)
        shapes = np.empty((int(n_per_phase), tc.shape[2]))
        for m, f in enumerate(rng.choice(idx, size=int(n_per_phase), replace=True).tolist()):
            r, c = divmod(f, W)
            rs, cs = slice(max(0, r - h), r + h + 1), slice(max(0, c - h), c + h + 1)
            win = tc[rs, cs][pm[rs, cs] == l].sum(axis=0, dtype=np.float64)
            shapes[m] = (win + float(prior_counts) * mean_shape) / (win.sum() + float(prior_counts))
        shapes = np.asarray(to_axis(shapes, source_axis, axis, beam_energy_keV=beam_energy_keV,
                                    what="training spectra"), np.float64)
        t = level * np.exp(rng.normal(0.0, float(spread), size=int(n_per_phase)))
        drawn = rng.poisson(t[:, None] * shapes)
        for _ in range(50):
            # at very short dwell a spectrum may hold no count at all; training spectra are
            # drawn given at least one count (the classifier sees no information in an empty one)
            empty = drawn.sum(axis=1) == 0
            if not empty.any():
                break
            drawn[empty] = rng.poisson(t[empty, None] * shapes[empty])
        empty = drawn.sum(axis=1) == 0
        drawn[empty, np.argmax(shapes[empty], axis=1)] = 1
        out[l - 1] = drawn
    names = phase_names or tuple(f"phase {l}" for l in range(1, int(n_phases) + 1))
    return ReferenceSpectra(out, axis, tuple(names))


def erd_training_images(n_phases: int, micrographs=None, *, downsample: int = 4,
                        tile: int = 128, max_tiles: int = 2) -> list[np.ndarray]:
    """Label images for the ERD model: micrographs segmented into L phases (multi-Otsu),
    majority-down-sampled and cut into tiles of at most ``tile`` × ``tile``.

    Parameters
    ----------
    n_phases : int
    micrographs : sequence of path or ndarray, optional
        Default: the bundled BSE micrograph of glass, sand grains and bubbles.
    downsample : int
    tile : int
    max_tiles : int
        Tiles per micrograph.

    Returns
    -------
    list of ndarray (h, w) int16, labels 1..L

    Raises
    ------
    InputError
        Unreadable micrographs, or too small after down-sampling.
    """
    from .segmentation import majority_downsample, read_micrograph, segment_phases, to_grey
    from .spectra import sample_data_dir

    srcs = list(micrographs) if micrographs else [sample_data_dir() / "sem_glass_sand_bubbles_bse.png"]
    out = []
    for i, m in enumerate(srcs):
        img = read_micrograph(m) if isinstance(m, (str, Path)) else to_grey(m, name=f"training image {i}")
        lab = segment_phases(img, int(n_phases))
        small = majority_downsample(lab, downsample) if downsample > 1 else lab
        if min(small.shape) < 16:
            raise InputError(f"training micrograph {i}: only {small.shape} pixels after down-sampling "
                             f"by {downsample}")
        tiles = [small[r:r + tile, c:c + tile] for r in range(0, small.shape[0] - 15, tile)
                 for c in range(0, small.shape[1] - 15, tile)]
        out.extend(t for t in tiles[: int(max_tiles)] if min(t.shape) >= 16)
    return out


def electron_image_name(si: SpectrumImage) -> str:
    """Name of the electron image of a map used for the ERD (BSE preferred, then SE).

    Raises
    ------
    InputError
        The map carries no electron image.
    """
    for key in ("BSE", "bse", "SE", "se"):
        if key in si.images:
            return key
    if si.images:
        return sorted(si.images)[0]
    raise InputError("--erd-training electron-image: the spectrum image carries no electron (BSE/SE) "
                     "image; use --erd-training micrograph")


def electron_image_labels(si: SpectrumImage, n_phases: int) -> np.ndarray:
    """The map's co-registered electron image segmented into L phases (multi-Otsu after a
    median filter, :func:`~napari_slads_eds.segmentation.segment_phases`): a label image
    (H, W) int16 of the field's own feature sizes for the ERD model.  It is a training
    image only; the ground truth stays the clustering of the spectra."""
    from .segmentation import segment_phases, to_grey

    img = to_grey(np.asarray(si.images[electron_image_name(si)], np.float64), name="electron image")
    return segment_phases(img, int(n_phases))


# ----------------------------------------------------------------------------- experiment

@dataclass
class ReplaySettings:
    """Settings of a replay experiment.

    Attributes
    ----------
    fraction : float
        Target sampling fraction (0, 1].
    seed : int
    truth : {"cluster", "classifier"}
        Ground truth from clustering the full map, or from ``classifier`` on the full map.
    classifier : str, optional
        A trained classifier folder: used for the run (and for ``truth="classifier"``)
        instead of training one on the training share.
    smooth : float
        Gaussian sigma (pixels) of the clustering.
    train_share : float in (0, 1)
        Fraction of the counts set aside (count splitting) to train the classifier;
        ignored (0) with ``classifier``.
    dwell : float, optional
        Emulated dwell time as a fraction of the acquired one (default and maximum:
        ``1 - train_share``).
    n_per_phase : int
        Training spectra per phase (half train, half validate).
    epochs : int, optional
        CNN epochs (default 12).
    train : list of str, optional
        Micrographs for the ERD model (default: the bundled glass BSE micrograph).
    erd_downsample : int
    initial_fraction, initial_pattern, batch, batch_mode, k
        As :class:`~napari_slads_eds.pipeline.RunSettings`.
    c_values : tuple of float, optional
        Candidates for the ERD's c (default: :data:`napari_slads_eds.erd.C_CANDIDATES`).
    classifier_kind : {"poisson", "cnn"}
        Trained on the training share: the count-aware Poisson likelihood classifier
        (default, chosen by benchmarks/bench_real_maps.py) or the paper's NNR + CNN.
    uncertainty : {"soft", None}
        "soft": spatial phase decisions and probability votes
        (:mod:`napari_slads_eds.uncertainty`; default); None: the paper's hard labels.
    erd_training : {"auto", "micrograph", "electron-image", "both"}
        Label images the ERD model learns from: the bundled (or ``train``) micrographs;
        the map's own electron (BSE) image segmented into L phases (an SEM takes it in
        seconds before any EDS; the ground truth stays the spectra); or both.  "auto"
        (default): the electron image when the map carries one and no ``train`` is given,
        else the micrographs.
    default_calibration : (offset_keV, scale_keV), optional
        Assumed, with a warning, for a map without energy calibration.
    """

    fraction: float = 0.2
    seed: int = 0
    truth: str = "cluster"
    classifier: str | None = None
    smooth: float = 1.0
    train_share: float = 0.2
    dwell: float | None = None
    n_per_phase: int = 600
    epochs: int | None = None
    train: list | None = None
    erd_downsample: int = 4
    initial_fraction: float = 0.01
    initial_pattern: str = "halton"
    batch: int = 1
    batch_mode: str = "top"
    k: int = 10
    c_values: tuple | None = None
    classifier_kind: str = "poisson"
    uncertainty: str | None = "soft"
    erd_training: str = "auto"
    default_calibration: tuple | None = None

    @property
    def sampling(self) -> SamplingConfig:
        """The replay's :class:`~napari_slads_eds.config.SamplingConfig` (its sampling
        fields; ``uncertainty`` None = "hard")."""
        return SamplingConfig.from_settings(self)

    def check(self) -> "ReplaySettings":
        """Validate (the sampling fields by :meth:`SamplingConfig.check`); returns ``self``.

        Raises
        ------
        InputError
            A setting outside its range, named as the CLI names it.
        """
        if self.uncertainty not in (None, "soft"):
            raise InputError(f"--uncertainty must be 'soft' or 'hard', got {self.uncertainty!r}")
        self.sampling  # noqa: B018  (fraction, seed, pattern, batch, batch mode, k)
        if self.truth not in ("cluster", "classifier"):
            raise InputError(f"--truth must be 'cluster' or 'classifier', got {self.truth!r}")
        if self.truth == "classifier" and not self.classifier:
            raise InputError("--truth classifier needs --classifier DIR (a trained classifier)")
        if not self.classifier and not 0 < self.train_share < 1:
            raise InputError(f"--train-share must be in (0, 1), got {self.train_share}")
        limit = 1.0 if self.classifier else 1.0 - self.train_share
        if self.dwell is not None and not 0 < self.dwell <= limit + 1e-12:
            raise InputError(f"--dwell must be in (0, {limit:g}] (the counts not set aside for "
                             f"training), got {self.dwell}")
        if self.n_per_phase < 4:
            raise InputError(f"n_per_phase must be >= 4, got {self.n_per_phase}")
        if not 0 <= self.smooth <= 50:   # NaN fails too
            raise InputError(f"--smooth (Gaussian sigma in pixels) must be in 0..50, got {self.smooth}")
        if self.epochs is not None:
            check_int(self.epochs, "--epochs", 1, 10000)
        if self.classifier_kind not in ("poisson", "cnn"):
            raise InputError(f"--classifier-kind must be 'poisson' or 'cnn', got {self.classifier_kind!r}")
        if self.erd_training not in ("auto", "micrograph", "electron-image", "both"):
            raise InputError(f"--erd-training must be auto, micrograph, electron-image or both, "
                             f"got {self.erd_training!r}")
        return self


@dataclass
class ReplayExperiment:
    """Everything a replay run needs, prepared in the calling process."""

    settings: ReplaySettings
    n_phases: int
    image: SpectrumImage
    truth: np.ndarray                        # (H, W) labels 1..L
    specimen: ReplaySpecimen
    train_references: ReferenceSpectra | None
    erd_images: list
    source: dict = field(default_factory=dict)


def _classify_full_map(engine, classifier, si: SpectrumImage, axis: EnergyAxis) -> np.ndarray:
    H, W = si.shape
    flat = si.counts.reshape(H * W, -1)
    spectra = np.asarray(to_axis(flat, si.axis, axis, beam_energy_keV=si.beam_energy_keV,
                                 what="spectrum image"), np.float32)
    lab = engine.run("classify", classifier=str(classifier), spectra=spectra)
    return fill_ill(np.asarray(lab).reshape(H, W))


def _classifier_axis(path) -> tuple[EnergyAxis, list]:
    p = Path(path) / "classifier.json"
    try:
        meta = json.loads(p.read_text())
        return EnergyAxis.from_dict(meta["axis"]), list(meta.get("phase_names", []))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{p}: not a readable classifier description ({exc})") from exc


def prepare_replay(spectrum_image, n_phases: int, settings: ReplaySettings | None = None, *,
                   engine=None) -> ReplayExperiment:
    """Read a map, find the ground truth, split the counts, build the specimen.

    Parameters
    ----------
    spectrum_image : path or SpectrumImage
    n_phases : int
        L >= 1.
    settings : ReplaySettings
    engine : Engine, optional
        Needed only for ``truth="classifier"`` (one is started and closed otherwise).

    Raises
    ------
    InputError
        Unreadable file, not a map, bad settings, a phase without pixels.
    """
    s = (settings or ReplaySettings()).check()
    L = check_int(n_phases, "--phases", 1, 255)
    si = (spectrum_image if isinstance(spectrum_image, SpectrumImage)
          else read_spectrum_image(spectrum_image, default_calibration=s.default_calibration))
    counts = np.asarray(si.counts)
    if not np.issubdtype(counts.dtype, np.integer):
        if not np.all(counts == np.round(counts)):
            raise InputError("replay needs integer counts (a map of measured X-ray counts)")
        counts = counts.astype(np.int64)
    H, W = si.shape
    if H * W < 64:
        raise InputError(f"the map has only {H}x{W} pixels; replay needs at least 64")
    bse = None
    for key in ("BSE", "bse"):
        if key in si.images:
            bse = np.asarray(si.images[key], np.float64)
    source = {"spectrum_image": si.metadata.get("file", si.name), "map_shape": [H, W],
              "energy_axis": si.axis.to_dict(), "beam_energy_keV": si.beam_energy_keV,
              "mean_counts_per_pixel": float(counts.sum() / (H * W)), "truth": s.truth}
    axis = si.axis
    if s.classifier:
        axis, names = _classifier_axis(s.classifier)
        if len(names) != L:
            raise InputError(f"the classifier knows {len(names)} phases, --phases is {L}")
    if s.truth == "cluster":
        truth = cluster_phases(counts, si.axis, L, smooth=s.smooth, order_image=bse,
                               max_energy_keV=si.beam_energy_keV, seed=s.seed)
        source["truth_order"] = "BSE brightness" if bse is not None else "total counts"
    else:
        from .engine import Engine

        own = engine is None
        eng = engine or Engine()
        try:
            truth = _classify_full_map(eng, s.classifier, si, axis)
        finally:
            if own:
                eng.close()
        if np.unique(truth).size < L:
            warnings.warn("the classifier finds fewer phases in the map than --phases", UserWarning,
                          stacklevel=2)
    source["truth_fractions"] = [float(np.mean(truth == l)) for l in range(1, L + 1)]
    refs = None
    if s.classifier:
        measure_counts, share = counts, 0.0
    else:
        share = float(s.train_share)
        train_counts, measure_counts = split_counts(counts, share, seed=s.seed)
    dwell = s.dwell if s.dwell is not None else 1.0 - share
    thin = dwell / (1.0 - share)
    if not s.classifier:
        refs = phase_training_spectra(train_counts, truth, L, si.axis, axis, count_scale=dwell / share,
                                      n_per_phase=s.n_per_phase, beam_energy_keV=si.beam_energy_keV,
                                      seed=s.seed)
    specimen = ReplaySpecimen(measure_counts, si.axis, truth, n_phases=L, axis=axis,
                              dwell_fraction=min(1.0, thin), beam_energy_keV=si.beam_energy_keV,
                              seed=s.seed, references=refs)
    source.update({"train_share": share, "dwell_fraction": float(dwell),
                   "mean_counts_per_measurement": float(measure_counts.sum() / (H * W) * min(1.0, thin))})
    erd_imgs, names = [], []
    how = s.erd_training
    if how == "auto":
        how = "electron-image" if si.images and not s.train else "micrograph"
    source["erd_training_mode"] = how
    if how in ("micrograph", "both"):
        erd_imgs += erd_training_images(L, s.train, downsample=s.erd_downsample)
        names += [str(t) for t in s.train] if s.train else ["bundled sem_glass_sand_bubbles_bse.png"]
    if how in ("electron-image", "both"):
        erd_imgs.append(electron_image_labels(si, L))
        names.append(f"the map's own electron image ({electron_image_name(si)}), segmented into {L} phases")
    source["erd_training"] = names
    source["erd_training_shapes"] = [list(t.shape) for t in erd_imgs]
    return ReplayExperiment(s, L, si, truth, specimen, refs, erd_imgs, source)


def spectrum_image_from_layer(metadata: dict, name: str = "") -> SpectrumImage:
    """The :class:`~napari_slads_eds.eds_io.SpectrumImage` behind a spectrum-image layer of
    this plugin's reader (its ``metadata``: spectra (H, W, p), energy_axis, beam energy,
    pixel size, co-registered images).

    Raises
    ------
    InputError
        Metadata that is not a spectrum image's.
    """
    if not isinstance(metadata, dict) or "spectra" not in metadata or "energy_axis" not in metadata:
        raise InputError("not a spectrum-image layer: open a map (.bcf, .hspy, .npz, ...) with the "
                         "napari-slads-eds reader; its total-counts layer carries the spectra")
    try:
        axis = EnergyAxis.from_dict(metadata["energy_axis"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"spectrum-image layer: bad energy axis ({exc})") from exc
    return SpectrumImage(np.asarray(metadata["spectra"]), axis, metadata.get("beam_energy_keV"),
                         metadata.get("live_time_s"), metadata.get("pixel_size"),
                         str(metadata.get("pixel_units") or ""), dict(metadata.get("images") or {}),
                         str(metadata.get("name") or name), {"file": str(metadata.get("file", ""))})


class InProcessEngine:
    """``engine.run(name, **kwargs)`` calling the jobs directly, for code that already runs
    inside the engine process (the ``replay`` job: :func:`run_replay` there)."""

    def __init__(self, ctx, resolve):
        self.ctx = ctx
        self.resolve = resolve          # job name -> function (jobs.resolve; passed in, no import cycle)

    def run(self, name, on_message=None, **kwargs):
        return self.resolve(name)(self.ctx, **kwargs)

    def close(self) -> None:
        pass


def replay_job(ctx, experiment, out_dir, export: bool = True) -> dict:
    """Engine job ``replay`` (the napari widget's real-map replay): :func:`run_replay` inside
    the engine process, the classifier and ERD training and the run called directly,
    streaming progress and ``frame`` messages with the maps.  Writes ``out_dir`` as
    ``slads-eds replay`` does and returns its result."""
    from .jobs import resolve

    return run_replay(experiment, out_dir, engine=InProcessEngine(ctx, resolve), export=export, send_maps=True)


def run_replay(exp: ReplayExperiment, out_dir, *, engine=None, on_message=None, export: bool = True,
               baseline_fractions=(), send_maps: bool = False, resume: bool = False) -> dict:
    """Train (classifier on the training share, ERD on other label images), run SLADS and
    the static baselines on the replayed map, write the results.

    The run folder ``out_dir`` is that of ``slads-eds run`` (:mod:`napari_slads_eds.run_folder`,
    mode "replay": settings, models, journal, ``result.json`` with the same keys as every
    run); with ``export`` also ``run.hspy`` and ``run_export.npz``
    (:func:`napari_slads_eds.export.export_run`).  A stopped replay continues with
    :func:`resume_replay` (``resume=True`` here: the models in ``out_dir`` are used and
    the journal is replayed first).

    Returns
    -------
    dict
        The result (:meth:`RunResult.to_dict`: as result.json, plus arrays).
    """
    from .engine import Engine
    from .orchestrator import finish, sample, train_classifier, train_erd
    from .run_folder import read_run_folder, write_run_folder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = exp.settings
    config = s.sampling.replace(baseline_fractions=tuple(baseline_fractions))
    t0 = time.perf_counter()
    own = engine is None
    eng = engine or Engine()
    cb = on_message or (lambda m: None)
    try:
        if resume:
            rf = read_run_folder(out)
            clf_report, erd_report, t_train = rf.classifier_report, rf.erd_report, rf.seconds_training
        else:
            if s.classifier:
                clf_report = dict(json.loads((Path(s.classifier) / "classifier.json").read_text()).get("report") or {})
            else:
                opts = {"noise_lambda": 0.0, "n_noisy": 1, "n_noisy_val": 1}
                if s.classifier_kind == "cnn" and s.epochs:
                    opts["epochs"] = s.epochs
                clf_report = train_classifier(eng, out, references=exp.train_references, seed=s.seed,
                                              kind=s.classifier_kind, options=opts, on_message=cb)
            erd_report = train_erd(eng, out, label_images=exp.erd_images, n_phases=exp.n_phases, seed=s.seed,
                                   k=s.k, fraction=s.fraction, c_values=s.c_values, on_message=cb)
            t_train = time.perf_counter() - t0
            write_run_folder(out, None, s, clf_report, erd_report, clf_dir=s.classifier or None,
                             source=exp.source, n_phases=exp.n_phases, seconds_training=t_train, mode="replay")
        raw = sample(eng, exp.specimen, out, config, erd_report, resume=resume, send_maps=send_maps,
                     journal_settings={"replay": {"spectrum_image": str(exp.source.get("spectrum_image", ""))}},
                     on_message=cb)
    finally:
        if own:
            eng.close()
    # dose = total dwell time (in units of the acquired map's dwell per pixel), not the
    # number of positions
    result = finish(raw, out, mode="replay", config=config, settings={**asdict(s), "n_phases": exp.n_phases},
                    source=exp.source, classifier_report=clf_report, erd_report=erd_report,
                    seconds=(t_train if resume else 0.0) + time.perf_counter() - t0, ground_truth=exp.truth,
                    specimen_labels=exp.specimen.labels, dwell_per_position=float(exp.source["dwell_fraction"]),
                    resumed=resume).to_dict()
    if export:
        from .export import export_run

        spectra = exp.specimen.measure(result["positions"])
        for name in ("run.hspy", "run_export.npz"):
            export_run(result, out / name, spectra=spectra, axis=exp.specimen.axis,
                       beam_energy_keV=exp.image.beam_energy_keV, pixel_size=exp.image.pixel_size,
                       pixel_units=exp.image.pixel_units)
    return result


def resume_replay(out_dir, *, engine=None, on_message=None, export: bool = True) -> dict:
    """Continue a stopped or crashed replay in ``out_dir`` from its journal: the map is read
    again from the file its ``run_settings.json`` names, the specimen rebuilt with the same
    settings and seed (the journal's first spectra are checked against it), the journal
    replayed and the run continued with the models in ``out_dir``.

    Raises
    ------
    InputError
        Not a replay's run folder, the map file missing, or a journal of another run.
    """
    from .run_folder import CLASSIFIER_DIR, read_run_folder

    rf = read_run_folder(out_dir)
    if rf.mode != "replay":
        raise InputError(f"{rf.path} holds a {rf.mode}, not a replay")
    d = dict(rf.settings)
    d.pop("n_phases", None)
    for key in ("c_values", "default_calibration"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    try:
        s = ReplaySettings(**d)
    except TypeError as exc:
        raise InputError(f"{rf.path}: invalid replay settings ({exc})") from exc
    if s.classifier:                       # the run folder's copy of the classifier it was given
        s = replace(s, classifier=str(rf.path / CLASSIFIER_DIR))
    path = rf.source.get("spectrum_image")
    if not path or not Path(path).is_file():
        raise InputError(f"{rf.path} cannot be resumed: the map it replays ({path or 'unknown'}) is not there")
    exp = prepare_replay(path, rf.n_phases, s, engine=engine)
    return run_replay(exp, rf.path, engine=engine, on_message=on_message, export=export, resume=True,
                      baseline_fractions=exp.settings.sampling.baseline_fractions)
