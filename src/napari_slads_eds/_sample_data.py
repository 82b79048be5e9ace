"""napari sample data: the bundled SEM micrographs (File > Open Sample > SLADS-EDS).

Returns napari LayerData tuples; imports neither Qt nor TensorFlow.
"""

from __future__ import annotations

from .segmentation import read_micrograph, segment_phases
from .spectra import sample_data_dir

_GOLD = ("sem_nanoporous_gold_inlens.png", 2, "nanoporous gold (SE, 2 phases)", 0.543, "nm")
_GLASS = ("sem_glass_sand_bubbles_bse.png", 3, "glass, sand and bubbles (BSE, 3 phases)", 3.17, "µm")


def _micrograph(entry):
    fname, L, name, px, unit = entry
    img = read_micrograph(sample_data_dir() / fname)
    meta = {"n_phases": L, "pixel_size": px, "pixel_unit": unit, "source": fname}
    return img, {"name": f"SEM {name}", "metadata": meta, "colormap": "gray"}


def gold_micrograph():
    """Nanoporous gold, Zeiss InLens SE image (MIT licence): 2 phases, pores and Au."""
    img, kw = _micrograph(_GOLD)
    return [(img, kw, "image")]


def glass_micrograph():
    """Glass melt with sand grains and bubbles, FEI BSE image (CC-BY 4.0): 3 phases."""
    img, kw = _micrograph(_GLASS)
    return [(img, kw, "image")]


def gold_ready_to_run():
    """The 2-phase micrograph with its phase labels, ready for the simulated object widget."""
    img, kw = _micrograph(_GOLD)
    labels = segment_phases(img, _GOLD[1])
    return [(img, kw, "image"),
            (labels, {"name": "phases", "metadata": {"n_phases": _GOLD[1]}, "opacity": 0.5}, "labels")]


def glass_ready_to_run():
    """The 3-phase micrograph with its phase labels."""
    img, kw = _micrograph(_GLASS)
    labels = segment_phases(img, _GLASS[1])
    return [(img, kw, "image"),
            (labels, {"name": "phases", "metadata": {"n_phases": _GLASS[1]}, "opacity": 0.5}, "labels")]
