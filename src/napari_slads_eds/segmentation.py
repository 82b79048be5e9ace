"""Micrograph -> phase labels: reading, grey conversion, data-bar crop, denoising,
multi-Otsu segmentation, majority-vote down-sampling, and test/training regions.

The paper (section 3.1) segments SEM backscattered-electron images by thresholding and
denoises the labels; phases 1..L are ordered by brightness (BSE brightness grows with the
mean atomic number).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ._validation import InputError, check_int, check_label_image

__all__ = [
    "read_micrograph",
    "to_grey",
    "crop_data_bar",
    "segment_phases",
    "multiotsu_thresholds",
    "majority_downsample",
    "Regions",
    "split_regions",
]

_IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


def to_grey(image, *, name: str = "micrograph") -> np.ndarray:
    """Return a 2-D grey image as float64, converting RGB/RGBA with a warning.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, 3) or (H, W, 4), any real dtype

    Returns
    -------
    ndarray, shape (H, W), float64
        Grey values in the image's own units (RGB is converted with the ITU-R 709 luma
        weights of ``skimage.color.rgb2gray`` on the original scale).

    Raises
    ------
    InputError
        Not 2-D/RGB/RGBA, complex, empty, or containing NaN/inf.
    """
    a = np.asarray(image)
    if a.size == 0:
        raise InputError(f"{name}: the image is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name}: expected a numeric grey image, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        kind = "RGBA" if a.shape[-1] == 4 else "RGB"
        warnings.warn(f"{name}: {kind} image converted to grey (luma of R, G, B"
                      + ("; alpha ignored)" if kind == "RGBA" else ")"), UserWarning, stacklevel=2)
        rgb = a[..., :3].astype(np.float64)
        a = rgb @ np.array([0.2125, 0.7154, 0.0721])
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-D grey image (H, W) or RGB/RGBA (H, W, 3|4), got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: the image contains NaN or inf")
    return a


#: Suffixes of files that imageio might open but that are not micrographs.
_NOT_MICROGRAPHS = {".npz", ".npy", ".bcf", ".hspy", ".zspy", ".msa", ".emsa", ".rpl", ".raw", ".h5", ".keras"}


def read_micrograph(path, *, crop_bottom: int = 0) -> np.ndarray:
    """Read an SEM micrograph (PNG/TIFF/JPEG, 8- or 16-bit) as a grey float64 image.

    Parameters
    ----------
    path : str or Path
    crop_bottom : int
        Rows to remove at the bottom (the instrument data bar), see :func:`crop_data_bar`.

    Returns
    -------
    ndarray, shape (H, W), float64

    Raises
    ------
    InputError
        Missing file, not an image, multi-page stack, or a bad image (see :func:`to_grey`).
    """
    import imageio.v3 as iio

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a micrograph file (PNG, TIFF or JPEG)")
    if not path.is_file():
        raise InputError(f"micrograph not found: {path}")
    if path.suffix.lower() in _NOT_MICROGRAPHS:
        raise InputError(f"{path}: a {path.suffix} file is EDS or array data, expected a micrograph "
                         f"(PNG, TIFF or JPEG)")
    try:
        img = iio.imread(path)
    except Exception as exc:  # imageio raises format-specific errors
        why = "" if "Could not find a backend" in str(exc) else f": {exc}"  # that one only repeats the path
        raise InputError(f"{path}: not a readable image file (PNG, TIFF or JPEG expected){why}") from exc
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] not in (1, 3, 4):
        raise InputError(f"{path}: expected a single 2-D micrograph, got an image stack of shape {img.shape}")
    grey = to_grey(img, name=str(path))
    return crop_data_bar(grey, crop_bottom)


def crop_data_bar(image: np.ndarray, rows: int) -> np.ndarray:
    """Remove ``rows`` rows from the bottom of ``image`` (the SEM data bar).

    Raises
    ------
    InputError
        When ``rows`` is negative or removes the whole image.
    """
    rows = int(rows)
    if rows < 0 or rows >= image.shape[0]:
        raise InputError(f"data-bar crop of {rows} rows is not possible on an image of {image.shape[0]} rows")
    return image[: image.shape[0] - rows] if rows else image


def multiotsu_thresholds(image: np.ndarray, n_phases: int) -> np.ndarray:
    """Grey-level thresholds splitting ``image`` into ``n_phases`` classes (multi-Otsu).

    Returns
    -------
    ndarray, shape (n_phases - 1,), float64, increasing

    Raises
    ------
    InputError
        n_phases < 1, or fewer distinct grey levels than phases (e.g. a constant image).
    """
    from skimage.filters import threshold_multiotsu

    n_phases = int(n_phases)
    if n_phases < 1:
        raise InputError(f"number of phases must be >= 1, got {n_phases}")
    img = to_grey(image)
    if n_phases == 1:
        return np.zeros(0)
    levels = np.unique(img).size
    if levels < n_phases:
        what = "the image is constant" if levels == 1 else f"the image has only {levels} grey levels"
        raise InputError(f"cannot segment into {n_phases} phases: {what}; "
                         f"at least {n_phases} distinct grey levels are needed")
    nbins = _multiotsu_bins(n_phases, 256 if levels > 256 else max(levels, n_phases + 1))
    try:
        th = threshold_multiotsu(img, classes=n_phases, nbins=nbins)
    except ValueError as exc:
        raise InputError(f"multi-Otsu could not split the image into {n_phases} phases: {exc}") from exc
    return np.asarray(th, dtype=np.float64)


def _multiotsu_bins(n_phases: int, nbins: int, budget: float = 5e6) -> int:
    """Histogram bins for multi-Otsu: its exhaustive search visits C(nbins, L - 1)
    threshold combinations, so with many phases the histogram is made coarser to keep
    that number below ``budget`` (256 bins up to 4 phases, 45 bins for 7)."""
    from math import comb

    while nbins > n_phases + 1 and comb(nbins, n_phases - 1) > budget:
        nbins -= 1
    return nbins


def segment_phases(image, n_phases: int, *, denoise_size: int = 5, label_smoothing: int = 3,
                   thresholds=None) -> np.ndarray:
    """Segment a grey micrograph into phases 1..L by multi-Otsu thresholds.

    Steps: median filter of ``denoise_size`` (grey-level denoising), thresholds (multi-Otsu
    unless given), labels 1..L ordered by brightness, then a majority (mode) filter of
    ``label_smoothing`` pixels to remove isolated mislabelled pixels (the paper denoises
    the labels).

    Parameters
    ----------
    image : array_like, shape (H, W) (RGB/RGBA converted with a warning)
    n_phases : int
        L >= 1.
    denoise_size : int
        Median filter size in pixels; 0 or 1 disables it.
    label_smoothing : int
        Size of the majority filter on the labels; 0 or 1 disables it.
    thresholds : sequence of float, optional
        L - 1 increasing grey thresholds to use instead of multi-Otsu.

    Returns
    -------
    ndarray, shape (H, W), int16, values 1..L

    Raises
    ------
    InputError
        Bad image, constant image, fewer grey levels than phases, wrong number of thresholds.
    """
    n_phases = check_int(n_phases, "number of phases", 1, 255)
    denoise_size = check_int(denoise_size or 0, "denoise_size (median filter size in pixels)", 0, 255)
    img = to_grey(image)
    if min(img.shape) < 2:
        raise InputError(f"micrograph: expected at least 2x2 pixels, got {img.shape}")
    if denoise_size and denoise_size > 1:
        img = ndi.median_filter(img, size=int(denoise_size), mode="reflect")
    if thresholds is None:
        th = multiotsu_thresholds(img, n_phases)
    else:
        th = np.sort(np.asarray(thresholds, dtype=np.float64).ravel())
        if th.size != n_phases - 1:
            raise InputError(f"expected {n_phases - 1} thresholds for {n_phases} phases, got {th.size}")
    labels = (np.digitize(img, th, right=True) + 1).astype(np.int16)
    if label_smoothing and label_smoothing > 1 and n_phases > 1:
        labels = _majority_filter(labels, n_phases, int(label_smoothing))
    return labels


def _majority_filter(labels: np.ndarray, n_phases: int, size: int) -> np.ndarray:
    """Mode filter over a size x size window; ties keep the current label, then the lowest."""
    counts = np.stack([ndi.uniform_filter((labels == l).astype(np.float32), size=size, mode="nearest")
                       for l in range(1, n_phases + 1)])
    # favour the current label on ties
    cur = labels.astype(np.intp) - 1
    np.add.at(counts, (cur, *np.indices(labels.shape)), 1e-3)
    return (counts.argmax(0) + 1).astype(np.int16)


def majority_downsample(labels, factor: int) -> np.ndarray:
    """Down-sample a label image by an integer ``factor`` with a majority vote per block.

    Rows/columns beyond a multiple of ``factor`` are dropped.  Ties go to the lowest label.

    Parameters
    ----------
    labels : array_like, shape (H, W), integer 0..L
    factor : int >= 1

    Returns
    -------
    ndarray, shape (H // factor, W // factor), int16

    Raises
    ------
    InputError
        Bad labels, or a factor < 1 or larger than the image.
    """
    lab = check_label_image(labels)
    f = int(factor)
    if f < 1 or f > min(lab.shape):
        raise InputError(f"down-sampling factor must be in 1..{min(lab.shape)}, got {factor}")
    if f == 1:
        return lab.copy()
    h, w = lab.shape[0] // f, lab.shape[1] // f
    blocks = lab[: h * f, : w * f].reshape(h, f, w, f)
    n = int(lab.max()) + 1
    counts = np.stack([(blocks == l).sum(axis=(1, 3)) for l in range(n)])
    return counts.argmax(0).astype(np.int16)


@dataclass(frozen=True)
class Regions:
    """Non-overlapping square regions of a micrograph for testing and training.

    Attributes
    ----------
    test : tuple (row, col, side)
        Top-left corner and side (micrograph pixels) of the test region.
    train : list of tuple (row, col, side)
        Training regions; none overlaps ``test``.
    factor : int
        Down-sampling factor from micrograph pixels to the N x N grid.
    """

    test: tuple[int, int, int]
    train: tuple[tuple[int, int, int], ...]
    factor: int

    @staticmethod
    def cut(image: np.ndarray, region: tuple[int, int, int]) -> np.ndarray:
        r, c, s = region
        return image[r: r + s, c: c + s]


def split_regions(shape: tuple[int, int], size: int, *, factor: int = 1, max_train: int = 4,
                  test_index: int = 0) -> Regions:
    """Tile a micrograph into square regions of ``size * factor`` pixels: one test region,
    the others for training (never overlapping the test region).

    Parameters
    ----------
    shape : (H, W)
        Micrograph shape.
    size : int
        N, the side of the sampling grid after down-sampling.
    factor : int
        Majority-vote down-sampling factor (micrograph pixels per grid pixel).
    max_train : int
        At most this many training regions (the tiles nearest to the test tile first).
    test_index : int
        Which tile (row-major) is the test region.

    Raises
    ------
    InputError
        When the micrograph holds fewer than two tiles (one test and one training region), or
        size, factor or max_train is not an integer in range.
    """
    size = check_int(size, "grid size N", 8)
    factor = check_int(factor, "down-sampling factor", 1)
    max_train = check_int(max_train, "max_train (training regions)", 1)
    side = size * factor
    nr, nc = shape[0] // side, shape[1] // side
    if nr * nc < 2:
        raise InputError(
            f"a {shape[0]}x{shape[1]} micrograph holds fewer than two {side}x{side} regions "
            f"(N = {size} at down-sampling {factor}); the test region and the training regions "
            "must not overlap: use a smaller --size or --downsample, or give --train images")
    tiles = [(i * side, j * side, side) for i in range(nr) for j in range(nc)]
    if not 0 <= test_index < len(tiles):
        raise InputError(f"test region index must be in 0..{len(tiles) - 1}, got {test_index}")
    test = tiles.pop(test_index)
    tiles.sort(key=lambda t: (abs(t[0] - test[0]) + abs(t[1] - test[1]), t))
    return Regions(test=test, train=tuple(tiles[:max_train]), factor=factor)
