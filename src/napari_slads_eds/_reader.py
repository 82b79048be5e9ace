"""napari reader contribution: EDS spectra, spectrum images and exported runs.

``napari_get_reader(path)`` returns a reader for

* **spectrum images** (Bruker ``.bcf``, HyperSpy ``.hspy``/``.zspy``, Ripple ``.rpl``,
  EDAX ``.spd``, EMD, this project's ``.npz`` maps, ...): a lazy 3-D Image of the cube
  (a dask array (p, H, W): energy first, so napari gives it a slider in keV; ``scale``
  (keV per channel, pixel, pixel), ``translate`` (energy offset, 0, 0), ``axis_labels``
  ("energy", "y", "x"), ``units`` ("keV", pixel units, pixel units)), plus a hidden
  Image of the total counts per pixel whose ``metadata`` holds the spectra --
  ``metadata["spectra"]`` (H, W, p) counts and ``metadata["energy_axis"]``
  (:meth:`EnergyAxis.to_dict`) -- for the replay widget and a per-pixel spectrum plot
  (:func:`pixel_spectrum`); co-registered BSE/SE images become extra (hidden) Image layers;
* **single spectra** (EMSA/MSA, Bruker ``.spx``, a 1-D ``.hspy``): a Shapes layer with
  the spectrum drawn as a path (x = channel, y = counts scaled to 256 rows), its counts
  and energy axis in ``metadata`` (``kind`` "eds_spectrum"); with the plugin's Plots
  dock open the spectrum is drawn there (energy in keV against counts) instead;
* **runs**: exported runs (``.hspy``/``.zspy``/``.npz`` from
  :func:`napari_slads_eds.export.export_run`), ``run.npz`` of ``slads-eds run`` and
  **run folders** (written by ``slads-eds run``/``replay`` or the GUI: ``run.npz``,
  ``run_export.npz`` or ``journal.h5`` inside): reconstruction and ground truth (Labels),
  mask (Image), measured positions (Points, spectra in ``metadata``).  Each layer's
  ``metadata[RUN_KEY]`` names its role, and the reconstruction's
  ``metadata["slads_eds_result"]`` holds the run's summary, so that the plugin's writer
  (:mod:`napari_slads_eds._writer`) can save the layers as a run file again;
* **micrographs** (``.tif``/``.tiff``/``.png``/``.jpg``), through :func:`read_path` only:
  a grey Image layer, scaled by the pixel size RosettaSciIO finds in TIFF tags (FEI,
  Zeiss, ...).  :func:`napari_get_reader` declines plain images, and the manifest does
  not claim them, so napari's own readers open them (no competing reader, no greying of
  a colour image); the plugin's Phases widget reads micrographs itself.

Never imports TensorFlow or Qt (the napari process must stay free of TensorFlow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._validation import InputError
from .run_folder import JOURNAL_FILE, RESULT_ARRAYS, RUN_FILE

__all__ = ["napari_get_reader", "read_path", "pixel_spectrum", "SPECTRUM_SUFFIXES",
           "MICROGRAPH_SUFFIXES", "RUN_KEY", "RESULT_KEY", "is_run_folder"]

#: ``layer.metadata`` key naming a run layer's role ("reconstruction", "ground_truth",
#: "mask", "erd", "measured"); the writer finds a run's layers by it.
RUN_KEY = "slads_eds_run"
#: ``layer.metadata`` key of the run's summary (JSON-able dict) on its reconstruction layer.
RESULT_KEY = "slads_eds_result"
#: Files that make a folder a run folder (any one of them).
RUN_FOLDER_FILES = (RUN_FILE, "run_export.npz", JOURNAL_FILE)

#: Suffixes tried as EDS data (spectra, maps, runs).
SPECTRUM_SUFFIXES = (".msa", ".emsa", ".ems", ".mas", ".bcf", ".spx", ".hspy", ".zspy", ".rpl",
                     ".spd", ".spc", ".emd", ".npz", ".pts")
#: Suffixes :func:`read_path` reads as micrographs (not claimed by the napari reader).
MICROGRAPH_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def napari_get_reader(path):
    """The reader for ``path`` (a str, Path or a list of them), or None when not ours.

    Ours: EDS files and runs (:data:`SPECTRUM_SUFFIXES`; a ``.npz`` only if it holds
    ``counts`` or ``result_json``) and run folders (:func:`is_run_folder`).  Plain images
    (:data:`MICROGRAPH_SUFFIXES`) are not: they are napari's (read them with
    :func:`read_path` to get a calibrated grey layer).  Any other folder: None.
    """
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths:
        return None
    for p in paths:
        suf = Path(str(p)).suffix.lower()
        if Path(str(p)).is_dir() and suf != ".zspy":
            if not is_run_folder(p):
                return None
            continue
        if suf not in SPECTRUM_SUFFIXES:
            return None
        if suf == ".npz" and not _is_our_npz(Path(str(p))):
            return None
        if suf in (".hspy", ".zspy") and not Path(str(p)).exists():
            return None
    return read_path


def is_run_folder(path) -> bool:
    """True when ``path`` is a folder holding a run (any of :data:`RUN_FOLDER_FILES`)."""
    p = Path(str(path))
    return p.is_dir() and any((p / name).is_file() for name in RUN_FOLDER_FILES)


def _is_our_npz(p: Path) -> bool:
    try:
        with np.load(p, allow_pickle=False) as z:
            names = set(z.files)
    except Exception:
        return False
    return "counts" in names or "result_json" in names


def read_path(path) -> list[tuple]:
    """Read one or several files into napari layer data ``[(data, kwargs, type), ...]``.

    Raises
    ------
    InputError
        A file that cannot be read (napari shows the message).
    """
    paths = path if isinstance(path, (list, tuple)) else [path]
    out = []
    for p in paths:
        out.extend(_read_one(Path(str(p))))
    return out


def _read_one(p: Path) -> list[tuple]:
    from .export import is_export_file, load_any_run, load_export

    suf = p.suffix.lower()
    if p.is_dir() and suf != ".zspy":
        if not is_run_folder(p):
            raise InputError(f"{p}: not a run folder (it holds none of {', '.join(RUN_FOLDER_FILES)})")
        return _run_layers(load_any_run(p), name=p.name)   # InputError for an unfinished run
    if suf in MICROGRAPH_SUFFIXES:
        return [_micrograph_layer(p)]
    if suf in (".hspy", ".zspy", ".npz") and is_export_file(p):
        return _run_layers(load_export(p), name=p.stem)
    if suf == ".npz":
        with np.load(p, allow_pickle=False) as z:
            is_run = "result_json" in z.files and "counts" not in z.files
        if is_run:
            from .results import load_run

            return _run_layers(load_run(p), name=p.parent.name or p.stem)
    from .eds_io import SpectrumImage, read_eds

    data = read_eds(p)
    if isinstance(data, SpectrumImage):
        return _spectrum_image_layers(data)
    return [_spectrum_layer(data)]


_ROLE_SUFFIXES = {": reconstruction": "reconstruction", ": ground truth": "ground_truth",
                  ": mask": "mask", ": measured": "measured"}
_RUN_ARRAYS = RESULT_ARRAYS + ("spectra", "energy_axis")


def _run_layers(run: dict, name: str) -> list[tuple]:
    """:func:`~napari_slads_eds.export.export_layers` of ``run``, each layer's role under
    :data:`RUN_KEY` in its metadata and the run's summary (every entry but the arrays, as
    JSON-able values) under :data:`RESULT_KEY` on the reconstruction."""
    from ._files import jsonable
    from .export import export_layers

    layers = export_layers(run, name=name)
    summary = jsonable({k: v for k, v in run.items() if k not in _RUN_ARRAYS})
    for data, kw, kind in layers:
        role = next((r for suf, r in _ROLE_SUFFIXES.items() if str(kw.get("name", "")).endswith(suf)), None)
        if role is None:
            continue
        md = dict(kw.get("metadata") or {})
        md[RUN_KEY] = role
        if role == "reconstruction":
            md[RESULT_KEY] = summary
        kw["metadata"] = md
    return layers


def _pixel_units(units: str) -> str:
    """``units`` if napari (pint) knows it as a length, else "pixel"."""
    u = str(units or "").strip()
    if not u or u.startswith("<"):
        return "pixel"
    try:
        import pint

        q = pint.get_application_registry().parse_expression(u)
        return u if q.dimensionality == pint.get_application_registry().meter.dimensionality else "pixel"
    except Exception:   # pint absent (napari brings it) or an unknown unit
        return "pixel"


def _lazy_cube(counts: np.ndarray):
    """The (H, W, p) cube as a lazy (p, H, W) array: a dask array (no copy; a slice is
    computed when napari shows it), or a transposed numpy view without dask."""
    try:
        import dask.array as da
    except ImportError:   # pragma: no cover - dask is a dependency
        return np.moveaxis(counts, -1, 0)
    H, W, p = counts.shape
    step = max(1, min(p, int(2**22 // max(1, H * W))))   # ~4 M values per chunk
    return da.from_array(counts, chunks=(H, W, step)).transpose(2, 0, 1)


def _spectrum_image_layers(si) -> list[tuple]:
    """Layers of a spectrum image: total counts (hidden, carries the spectra), the
    co-registered images (hidden) and the lazy 3-D cube (shown, on top)."""
    px = float(si.pixel_size) if si.pixel_size else 1.0
    scale = (px, px)
    units = _pixel_units(si.pixel_units) if si.pixel_size else "pixel"
    common = {"scale": scale, "units": (units, units), "axis_labels": ("y", "x")}
    meta = {"kind": "eds_spectrum_image", "spectra": si.counts, "energy_axis": si.axis.to_dict(),
            "beam_energy_keV": si.beam_energy_keV, "live_time_s": si.live_time_s,
            "pixel_units": si.pixel_units, "pixel_size": si.pixel_size, "file": si.metadata.get("file", ""),
            "name": si.name, "images": {str(k): np.asarray(v) for k, v in si.images.items()}}
    layers = [(si.total_counts.astype(np.float32),
               {"name": f"{si.name} (total counts)", "colormap": "magma", "visible": False,
                "metadata": meta, **common}, "image")]
    for key, im in si.images.items():
        layers.append((np.asarray(im), {"name": f"{si.name} {key}", "colormap": "gray",
                                        "visible": False, **common}, "image"))
    counts = np.asarray(si.counts)
    H, W, p = counts.shape
    if not (H and W and p):
        raise InputError(f"spectrum image {si.name!r} is empty: {H}x{W} pixels of {p} channels")
    s = max(1, int(max(H, W) // 256))       # contrast from a sub-sample (the cube stays lazy)
    # the 99.5th percentile, not the maximum: the strongest line would leave every other
    # energy's slice nearly black (a strong line's slice saturates instead)
    hi = float(np.quantile(counts[::s, ::s], 0.995)) if counts.size else 1.0
    ax = si.axis
    layers.append((_lazy_cube(counts),
                   {"name": f"{si.name} (spectrum image)", "colormap": "viridis",
                    "contrast_limits": (0.0, max(1.0, hi)),
                    "scale": (float(ax.scale_keV), px, px), "translate": (float(ax.offset_keV), 0.0, 0.0),
                    "axis_labels": ("energy", "y", "x"), "units": ("keV", units, units),
                    "metadata": {"kind": "eds_spectrum_cube", "energy_axis": ax.to_dict(),
                                 "name": si.name, "file": si.metadata.get("file", "")}},
                   "image"))
    return layers


def _spectrum_layer(spec) -> tuple:
    c = np.asarray(spec.counts, dtype=np.float64)
    top = c.max() if c.size and c.max() > 0 else 1.0
    path = np.stack([256.0 * (1.0 - c / top), np.arange(c.size, dtype=np.float64)], axis=1)
    meta = {"kind": "eds_spectrum", "counts": c, "energy_axis": spec.axis.to_dict(),
            "beam_energy_keV": spec.beam_energy_keV, "live_time_s": spec.live_time_s,
            "file": spec.metadata.get("file", "")}
    return ([path], {"name": f"{spec.name} (spectrum)", "shape_type": "path", "edge_width": 1,
                     "edge_color": "yellow", "metadata": meta}, "shapes")


def _micrograph_layer(p: Path) -> tuple:
    from .segmentation import read_micrograph

    img = read_micrograph(p)
    kw = {"name": p.stem, "colormap": "gray", "metadata": {"kind": "micrograph", "file": str(p)}}
    if p.suffix.lower() in (".tif", ".tiff"):
        try:
            from rsciio.tiff import file_reader

            ax = file_reader(str(p))[0]["axes"]
            sc = [float(a.get("scale", 1.0)) for a in ax[:2]]
            units = str(ax[0].get("units") or "")
            if units and units != "<undefined>" and all(s > 0 for s in sc):
                kw["scale"] = tuple(sc)
                kw["metadata"]["pixel_units"] = units
        except Exception:
            pass  # no calibration in the tags: pixel units
    return (img, kw, "image")


def pixel_spectrum(metadata: dict, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """Energies and counts of one pixel of a spectrum-image layer (for a spectrum plot).

    Parameters
    ----------
    metadata : dict
        ``layer.metadata`` of an Image layer made by this reader.
    row, col : int
        Pixel (data coordinates).

    Returns
    -------
    energies : ndarray (p,), float64, keV
    counts : ndarray (p,), float64

    Raises
    ------
    InputError
        Not a spectrum-image layer, or a pixel outside the map.
    """
    from .spectra import EnergyAxis

    if not isinstance(metadata, dict) or "spectra" not in metadata or "energy_axis" not in metadata:
        raise InputError("not a spectrum-image layer (its metadata has no 'spectra' and 'energy_axis')")
    spectra = metadata["spectra"]
    H, W = np.shape(spectra)[:2]
    r, c = int(row), int(col)
    if not (0 <= r < H and 0 <= c < W):
        raise InputError(f"pixel ({r}, {c}) outside the {H}x{W} map")
    axis = EnergyAxis.from_dict(metadata["energy_axis"])
    return axis.energies, np.asarray(spectra[r, c], dtype=np.float64)
