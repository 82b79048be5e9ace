"""A replayed map's ground truth and training data.

* :func:`cluster_phases`: the ground truth (used only to score TD) by clustering the full
  map's spectra; :func:`fill_ill` gives ill-spectra the nearest phase label.
* :func:`split_counts`: count splitting into independent Poisson shares (training share
  for the classifier, measurement share for the replay).
* :func:`phase_training_spectra`: the classifier's training spectra from the training
  share; :func:`erd_training_images`, :func:`electron_image_labels`: label images for the
  ERD model (other micrographs, or the map's own electron image).

See :mod:`napari_slads_eds.replay` for what is trained on what.  No TensorFlow, no Qt.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ._validation import InputError, check_label_image
from .eds_io import SpectrumImage, to_axis
from .spectra import EnergyAxis, ReferenceSpectra

__all__ = ["split_counts", "cluster_phases", "fill_ill", "phase_training_spectra", "erd_training_images",
           "electron_image_name", "electron_image_labels"]

_SPLIT_STREAM = 0x5B1


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
