"""napari sample data: the bundled SEM micrographs (File > Open Sample > SLADS-EDS).

Returns napari LayerData tuples; imports neither Qt nor TensorFlow.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

from ._validation import InputError
from .likelihood import classifier_files
from .segmentation import read_micrograph, segment_phases
from .spectra import sample_data_dir

# file, phases L, layer name (short: it must be readable in the layer list and the combo
# boxes), pixel size, unit
_GOLD = ("sem_nanoporous_gold_inlens.png", 2, "gold SE (2 phases)", 0.543, "nm")
GOLD_NAME = _GOLD[2]
_GLASS = ("sem_glass_sand_bubbles_bse.png", 3, "glass BSE (3 phases)", 3.17, "µm")

#: Metadata key marking a phase Labels layer made from a micrograph (by the sample data
#: or the "Micrograph & phases" widget); ``source`` names the micrograph layer.
PHASES_KEY = "slads_eds_phases"


def _micrograph(entry):
    fname, L, name, px, unit = entry
    img = read_micrograph(sample_data_dir() / fname)
    meta = {"n_phases": L, "pixel_size": px, "pixel_unit": unit, "source": fname}
    return img, {"name": name, "metadata": meta, "colormap": "gray"}


@functools.lru_cache(maxsize=4)
def _segmented(entry):
    img, kw = _micrograph(entry)
    return img, kw, segment_phases(img, entry[1])


def _ready(entry):
    img, kw, labels = _segmented(entry)
    # copies: napari edits layer data in place (painting a Labels layer), the cache must not change
    img, kw, labels = img.copy(), copy.deepcopy(kw), labels.copy()
    L = entry[1]
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


def demo():
    """File > Open Sample > "Run the SLADS demo": the 2-phase gold sample with its phases,
    and, once napari has added them, the workflow dock's "Run demo" on them (the same as
    pressing the button: simulated object, shipped models, run)."""
    layers = _ready(_GOLD)
    _after_layers_added(_start_demo)
    return layers


def warm_demo() -> None:
    """Do the demo's first work ahead of the click: segment the gold micrograph (cached for
    :func:`gold_ready_to_run`) and read the reference standards once (their reader's
    imports).  Pure numpy/scipy; safe to call from a background thread."""
    from .spectra import bundled_standards, default_standards_for, read_spectrum

    _segmented(_GOLD)
    stds = bundled_standards()
    for name in default_standards_for(_GOLD[1]):
        read_spectrum(stds[name])


def _after_layers_added(fn) -> None:
    # napari adds the returned layers after this function returns; run ``fn(viewer)`` then
    # (Qt is imported here only, inside napari: the module stays importable without Qt)
    try:
        import napari
        from qtpy.QtCore import QTimer
    except ImportError:           # headless library use: nothing to start
        return
    viewer = napari.current_viewer()
    if viewer is None:
        return
    QTimer.singleShot(0, lambda: fn(viewer))


def _start_demo(viewer) -> None:
    _, widget = viewer.window.add_plugin_dock_widget("napari-slads-eds", "SLADS-EDS workflow")
    widget.run_demo()


#: The pre-trained models of the one-click demo (``tools/train_demo_models.py``).
DEMO_MODELS = Path(__file__).resolve().parent / "demo_models" / "gold_2phase"


def demo_models(folder=None) -> tuple[Path, Path, dict]:
    """The shipped demo models: ``(classifier folder, ERD model file, training.json)``.

    The classifier (NNR detector + 1-D CNN, ``.keras``) and the linear ERD model were
    trained by ``tools/train_demo_models.py`` on the nanoporous-gold sample as
    ``slads-eds demo`` trains them (seed 0); ``training.json`` holds both training reports.

    Raises
    ------
    InputError
        A file is missing or ``training.json`` is unreadable (an installation without the
        package data, or a folder not written by the tool).
    """
    d = Path(folder) if folder is not None else DEMO_MODELS
    clf, erd, meta = d / "classifier", d / "erd_model.npz", d / "training.json"
    need = [clf / name for name in classifier_files(clf)] + [erd, meta]
    missing = [str(p.relative_to(d)) for p in need if not p.is_file()]
    if missing:
        raise InputError(f"the demo models are incomplete in {d} (missing {', '.join(missing)}): reinstall the "
                         "plugin, or run tools/train_demo_models.py, or train the models in the Training tab")
    try:
        info = json.loads(meta.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta}: not a readable demo-model description ({exc})") from exc
    return clf, erd, info
