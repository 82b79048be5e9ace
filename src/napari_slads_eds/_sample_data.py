"""napari sample data: the bundled SEM micrographs (File > Open Sample > SLADS-EDS).

Returns napari LayerData tuples; imports neither Qt nor TensorFlow.
"""

from __future__ import annotations

from .segmentation import read_micrograph, segment_phases
from .spectra import sample_data_dir

# file, phases L, layer name (short: it must be readable in the layer list and the combo
# boxes), pixel size, unit
_GOLD = ("sem_nanoporous_gold_inlens.png", 2, "gold SE (2 phases)", 0.543, "nm")
_GLASS = ("sem_glass_sand_bubbles_bse.png", 3, "glass BSE (3 phases)", 3.17, "µm")

#: Metadata key marking a phase Labels layer made from a micrograph (by the sample data
#: or the "Micrograph & phases" widget); ``source`` names the micrograph layer.
PHASES_KEY = "slads_eds_phases"


def _micrograph(entry):
    fname, L, name, px, unit = entry
    img = read_micrograph(sample_data_dir() / fname)
    meta = {"n_phases": L, "pixel_size": px, "pixel_unit": unit, "source": fname}
    return img, {"name": name, "metadata": meta, "colormap": "gray"}


def _ready(entry):
    img, kw = _micrograph(entry)
    L = entry[1]
    labels = segment_phases(img, L)
    # the phase layer says which micrograph it belongs to, so that "Segment into phases"
    # on this micrograph updates it instead of adding a second phase layer
    meta = {"n_phases": L, PHASES_KEY: True, "source": kw["name"]}
    return [(img, kw, "image"), (labels, {"name": "phases", "metadata": meta, "opacity": 0.5}, "labels")]


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
    return _ready(_GOLD)


def glass_ready_to_run():
    """The 3-phase micrograph with its phase labels."""
    return _ready(_GLASS)
