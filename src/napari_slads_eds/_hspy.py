"""The HyperSpy layout of an exported run (format version 2), written and read through
RosettaSciIO (:mod:`napari_slads_eds.export` is the public side).

One file, one signal (``hs.load(path)`` returns it, not a list)::

    EDS_SEM (H, W | p)  data (H, W, p) uint16 | uint32 | float32: the measured spectrum at
                        its (row, col) = (y, x) pixel, zero counts at unmeasured pixels
      axes   "y" (navigation, H rows), "x" (navigation, W columns): pixel size and units
             (scale 1, units "px" when the run has no calibration); "Energy" (signal, keV)
    metadata.Sample.elements                        the phases' elements (when known)
    metadata.Acquisition_instrument.SEM.beam_energy  keV (when known)
            ....SEM.Detector.EDS.live_time (s), energy_resolution_MnKa (eV)  (when known)
    metadata.SLADS   positions (n, 2) (row, col) in measurement order, labels (n,),
                     td curves, grid, result_json, spectra_layout "xy", unmeasured_pixels
    metadata.SLADS.Maps.reconstruction, mask, erd, ground_truth, specimen_labels:
                     Signal2D (H, W), x/y calibrated like the cube

Why the maps sit in ``metadata.SLADS.Maps``: a ``_sig_`` group in the metadata is how
HyperSpy itself stores a signal inside a signal (``s.metadata.set_item("a.b", signal)``,
``Signal.Noise_properties.variance``), and ``hs.load`` turns it back into a real
``Signal2D`` (``s.metadata.SLADS.Maps.reconstruction.plot()``), so one file holds the run
and ``hs.load`` still returns one EDS signal.  Several experiments in one file would make
``hs.load`` return a list, and sibling files can be lost when the run is copied.

Why a dense (H, W, p) cube: ``s.inav[x, y]`` and HyperSpy's map tools need the (x, y)
navigation.  Integer counts are stored as uint16 (uint32 above 65535 counts in a channel;
non-integer spectra as float32), written block by block (16 x 16 pixel tiles of a lazy
dask array, gzip-compressed HDF5/zarr chunks), so writing never holds the whole cube and
the unmeasured tiles compress to almost nothing: a 128 x 128 x 2048 run with 15 % measured
is about 3 MB on disk, written in about 1 s (docs/replay.md).  Reading gathers the n measured spectra from
the tiles lazily.  When a position was measured twice (a cube cannot hold both spectra)
the spectra keep the 1-D "measurement" navigation of format version 1 instead
(``spectra_layout`` "measurement").
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from ._validation import InputError
from .spectra import EnergyAxis

#: Format version of the HyperSpy layout written here (1: spectra in measurement order,
#: maps as plain arrays in metadata.SLADS; still read).
FORMAT_VERSION = 2
MAP_TITLES = {"reconstruction": ("SLADS reconstruction", "Phase label (0: ill-spectrum)"),
              "mask": ("measurement mask", "Measured (1) or not (0)"),
              "erd": ("ERD", "Expected reduction in distortion"),
              "ground_truth": ("ground truth", "Phase label"),
              "specimen_labels": ("specimen labels", "Phase label (0: ill-spectrum)")}
_TILE = 16
_SYMBOLS = frozenset((
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am "
    "Cm Bk Cf Es Fm Md No Lr").split())
#: Phase names that are not formulas: the bundled standards under their file names (the
#: classifier's phase names are the spectrum files' stems, e.g. "nist_Si_std_15kV"), the
#: NIST K412 glass (SiO2, MgO, CaO, FeO, Al2O3) and calcite (CaCO3).
_K412 = ("O", "Mg", "Al", "Si", "Ca", "Fe")
_KNOWN_ELEMENTS = {"k412 glass": _K412, "k412": _K412, "nist_k412_glass_15kv": _K412,
                   "calcite": ("C", "O", "Ca"), "tima_calcite_25kv": ("C", "O", "Ca"),
                   "nist_mgo_std_15kv": ("Mg", "O"), "nist_al_std_15kv": ("Al",),
                   "nist_si_std_15kv": ("Si",), "nist_caf2_std_15kv": ("Ca", "F"),
                   "nist_fe_std_15kv": ("Fe",)}


def _formula_elements(s: str) -> list[str]:
    toks = re.findall(r"[A-Z][a-z]?", s)
    rest = re.sub(r"[A-Z][a-z]?", "", s)
    if toks and all(t in _SYMBOLS for t in toks) and re.fullmatch(r"[\d\s.,;:=%()]*", rest):
        return toks
    return []


def elements_of(names) -> list[str]:
    """Element symbols of phase names that are formulas, compositions or bundled standards.

    ``"Si"``, ``"CaF2"``, ``"MgO"``, ``"Pb 0.7, Sn 0.3"``, ``"K412 glass"`` and the bundled
    standards' file stems (``"nist_Si_std_15kV"``, what a classifier trained on them
    calls its phases) give their elements; other names (``"phase 1"``, ``"matrix"``) give
    none rather than a guess.  Returns a sorted list of unique symbols (possibly empty).
    """
    out: set[str] = set()
    for name in names or ():
        s = str(name).strip()
        out.update(_KNOWN_ELEMENTS.get(s.lower()) or _formula_elements(s))
    return sorted(out)


def check_elements(elements) -> list[str]:
    """``elements`` (a symbol or a sequence of symbols) as a sorted list of unique symbols.

    Raises
    ------
    InputError
        A name that is not an element symbol (``"Fe"``, not ``"iron"`` or ``"FE"``).
    """
    if isinstance(elements, str):
        elements = [elements]
    if not isinstance(elements, (list, tuple, set, frozenset, np.ndarray)) or \
            not all(isinstance(e, (str, np.str_)) for e in elements):
        raise InputError(f"export: elements must be element symbols (a str or a list of str, e.g. "
                         f"['Fe', 'Si']), got {elements!r}")
    out = [str(e).strip() for e in elements]
    bad = [e for e in out if e not in _SYMBOLS]
    if bad:
        raise InputError(f"export: not element symbols: {bad} (expected e.g. 'Fe', 'Si')")
    return sorted(set(out))


def counts_dtype(spectra: np.ndarray):
    """uint16 (or uint32) for non-negative integer counts, float32 otherwise."""
    if spectra.size == 0:
        return np.dtype(np.uint16)
    if spectra.min() >= 0 and np.array_equal(spectra, np.round(spectra)):
        mx = float(spectra.max())
        if mx <= np.iinfo(np.uint16).max:
            return np.dtype(np.uint16)
        if mx <= np.iinfo(np.uint32).max:
            return np.dtype(np.uint32)
    return np.dtype(np.float32)


def spectrum_cube(positions: np.ndarray, spectra: np.ndarray, shape, dtype, tile: int = _TILE):
    """Lazy (H, W, p) dask array: ``spectra[i]`` at ``positions[i]``, zeros elsewhere,
    built one ``tile`` x ``tile`` block at a time."""
    import dask.array as da
    from dask.array.core import normalize_chunks

    H, W = int(shape[0]), int(shape[1])
    p = spectra.shape[1]
    rows, cols = positions[:, 0], positions[:, 1]

    def block(block_info=None):
        (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
        out = np.zeros((r1 - r0, c1 - c0, p), dtype)
        sel = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        out[rows[sel] - r0, cols[sel] - c0] = spectra[sel]
        return out

    chunks = normalize_chunks((min(tile, H), min(tile, W), p), shape=(H, W, p))
    return da.map_blocks(block, dtype=dtype, chunks=chunks, meta=np.empty((0, 0, 0), dtype))


def _xy_axes(H: int, W: int, px: float | None, units: str, navigate: bool) -> list[dict]:
    scale, u = (float(px), str(units or "")) if px else (1.0, "px")
    return [{"name": n, "size": int(s), "offset": 0.0, "scale": scale, "units": u, "navigate": navigate}
            for n, s in (("y", H), ("x", W))]


def map_signal(data: np.ndarray, key: str, px: float | None, units: str) -> dict:
    """A HyperSpy Signal2D dictionary (for a ``_sig_`` group) of one (H, W) map."""
    title, quantity = MAP_TITLES.get(key, (key, ""))
    d = np.asarray(data)
    if d.dtype == bool:
        d = d.astype(np.uint8)
    return {"data": np.ascontiguousarray(d), "axes": _xy_axes(*d.shape, px, units, navigate=False),
            "metadata": {"General": {"title": title}, "Signal": {"signal_type": "", "quantity": quantity}},
            "original_metadata": {}, "tmp_parameters": {}, "attributes": {"_lazy": False, "ragged": False},
            "learning_results": {}}


def write_hspy(p: Path, arrays: dict, spectra, axis: EnergyAxis | None, slads: dict, instrument: dict,
               elements: list[str], version: str) -> None:
    """Write the format-2 layout (see the module docstring) to ``p`` (.hspy or .zspy).

    ``arrays`` holds positions, labels, the (H, W) maps and curves; ``slads`` the other
    ``metadata.SLADS`` entries; ``instrument`` beam_energy (keV), live_time (s),
    energy_resolution_MnKa (eV), each only when known.
    """
    pos = arrays["positions"]
    H, W = arrays["reconstruction"].shape
    px, units = slads.get("pixel_size"), slads.get("pixel_units", "")
    md_slads = {k: v for k, v in arrays.items() if k not in MAP_TITLES}
    md_slads.update(slads)
    md_slads["Maps"] = {f"_sig_{k}": map_signal(v, k, px, units) for k, v in arrays.items() if k in MAP_TITLES}
    e_ax = {"name": "Energy", "size": 1, "offset": 0.0, "scale": 1.0, "units": "keV", "navigate": False}
    if axis is not None:
        e_ax.update(size=int(axis.size), offset=float(axis.offset_keV), scale=float(axis.scale_keV))
    md = {"General": {"title": "SLADS run", "original_filename": p.name},
          "Signal": {"signal_type": "EDS_SEM", "quantity": "X-rays (Counts)"}}
    chunks = None
    unique = len(np.unique(pos[:, 0] * W + pos[:, 1])) == len(pos)
    if spectra is None:
        # no spectra: the reconstruction is the signal (x/y calibrated), hs.load shows the map
        data = np.ascontiguousarray(arrays["reconstruction"])
        axes = _xy_axes(H, W, px, units, navigate=False)
        md = {"General": {"title": "SLADS reconstruction (no spectra exported)", "original_filename": p.name},
              "Signal": {"signal_type": "", "quantity": MAP_TITLES["reconstruction"][1]}}
        md_slads["spectra_layout"] = "none"
    elif unique:
        dt = counts_dtype(spectra)
        data = spectrum_cube(pos, spectra, (H, W), dt)
        chunks = tuple(c[0] for c in data.chunks)
        axes = _xy_axes(H, W, px, units, navigate=True) + [e_ax]
        md_slads.update(spectra_layout="xy", counts_dtype=dt.name,
                        unmeasured_pixels="zero counts: only the pixels of metadata.SLADS.Maps.mask "
                                          "(and metadata.SLADS.positions) were measured")
    else:
        data = np.ascontiguousarray(spectra, dtype=np.float32).reshape(len(pos), -1)
        axes = [{"name": "measurement", "size": len(pos), "offset": 0.0, "scale": 1.0, "units": "",
                 "navigate": True}, e_ax]
        md_slads["spectra_layout"] = "measurement"
    if elements:
        md["Sample"] = {"elements": list(elements)}
    sem = {k: v for k, v in (("beam_energy", instrument.get("beam_energy")),) if v}
    eds = {k: float(instrument[k]) for k in ("live_time", "energy_resolution_MnKa") if instrument.get(k)}
    if eds:
        sem["Detector"] = {"EDS": eds}
    if sem:
        md["Acquisition_instrument"] = {"SEM": sem}
    md["SLADS"] = md_slads
    signal = {"data": data, "axes": axes, "metadata": md, "original_metadata": {}, "tmp_parameters": {},
              "attributes": {"_lazy": chunks is not None}, "learning_results": {}, "models": {},
              "package_info": {"name": "napari-slads-eds", "version": version}}
    suf = p.suffix.lower()
    try:
        if suf == ".hspy":
            from rsciio.hspy import file_writer
        else:
            from rsciio.zspy import file_writer
    except ImportError as exc:
        raise InputError(f"export: the {suf} writer of RosettaSciIO cannot be loaded ({exc}); "
                         f"{'write .hspy instead (or install zarr < 3 with numcodecs)' if suf == '.zspy' else 'install h5py'}"
                         ) from exc
    import dask

    _close_lazy_handles(p)
    if p.exists():
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        else:
            p.unlink()
    try:
        with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
            warnings.filterwarnings("ignore", category=FutureWarning, module="zarr")
            warnings.filterwarnings("ignore", message=".*NestedDirectoryStore.*")
            file_writer(str(p), signal, chunks=chunks, show_progressbar=False)
    except AttributeError as exc:
        if suf == ".zspy" and ("zarr" in str(exc).lower() or "Store" in str(exc)):
            raise InputError(f"export: RosettaSciIO's .zspy writer does not work with the installed "
                             f"zarr ({exc}); write .hspy instead (or install zarr < 3)") from exc
        raise


def _close_lazy_handles(p: Path) -> None:
    """Close the HDF5 handles RosettaSciIO keeps open for lazily read ``p`` (private API:
    skipped when it is not there)."""
    try:
        from rsciio.hspy._api import _close_tracked_handles
    except ImportError:
        return
    _close_tracked_handles(p)


def read_hspy(p: Path, check_only: bool = False) -> dict:
    """The run of an exported .hspy/.zspy (format 1 or 2) as :func:`export.load_export`
    returns it (without the final type normalisation).

    Raises
    ------
    InputError
        Unreadable file, a HyperSpy file that is not a run export, corrupt metadata.
    """
    from .eds_io import read_rsciio

    kw = {"lazy": True}
    if p.suffix.lower() == ".zspy":
        kw["mode"] = "r"
    try:
        items = read_rsciio(p, **kw)
        item = next((it for it in items if "SLADS" in (it.get("metadata") or {})), None)
        if item is None:
            raise InputError(f"{p}: a HyperSpy file, but not a napari-slads-eds run export "
                             "(no metadata.SLADS)")
        if check_only:
            return {"ok": True}
        return _run_from_item(p, item)
    finally:
        _close_lazy_handles(p)


def _run_from_item(p: Path, item: dict) -> dict:
    slads = dict(item["metadata"]["SLADS"])
    try:
        out = json.loads(str(slads.pop("result_json")))
    except (KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: corrupt metadata.SLADS.result_json ({exc})") from exc
    maps = slads.pop("Maps", None) or {}
    for k, v in list(slads.items()):
        if hasattr(v, "compute") or isinstance(v, np.ndarray):
            slads[k] = np.asarray(v)
    for k in ("positions", "labels", *MAP_TITLES, "td_curve", "td_curve_random", "td_curve_halton"):
        if k in slads:
            out[k] = np.asarray(slads[k])
    for k in MAP_TITLES:
        sig = maps.get(f"_sig_{k}")
        if isinstance(sig, dict) and "data" in sig:
            out[k] = np.asarray(sig["data"])
    layout = str(slads.get("spectra_layout", "measurement"))
    data = item["data"]
    ax = item["axes"][-1]
    n = np.asarray(out.get("positions", np.zeros((0, 2)))).reshape(-1, 2).shape[0]
    out["energy_axis"] = None
    if layout == "xy":
        pos = np.asarray(out["positions"], dtype=np.int64).reshape(-1, 2)
        if hasattr(data, "vindex"):
            sp = np.asarray(data.vindex[pos[:, 0], pos[:, 1]]) if n else np.zeros((0, data.shape[-1]))
        else:
            sp = np.asarray(data)[pos[:, 0], pos[:, 1]]
        out["spectra"] = np.asarray(sp, dtype=np.float32).reshape(n, data.shape[-1])
    elif layout == "measurement":
        sp = np.asarray(data, dtype=np.float32)
        if sp.ndim == 1:
            sp = sp.reshape(1, -1)
        out["spectra"] = sp.reshape(n, -1) if n else sp
    if "spectra" in out:
        units = str(ax.get("units", "")).lower()
        if int(ax.get("size", 0)) > 1 or units == "kev" and out["spectra"].shape[1] > 1:
            f = 1e-3 if units == "ev" else 1.0
            out["energy_axis"] = EnergyAxis(float(ax["offset"]) * f, float(ax["scale"]) * f, int(ax["size"]))
        else:
            del out["spectra"]          # the format-1 placeholder of a run without spectra
    md = item["metadata"]
    for k in ("pixel_size", "pixel_units", "beam_energy_keV", "live_time_s", "energy_resolution_MnKa_eV"):
        if k in slads:
            out[f"export_{k}"] = slads[k]
    els = (md.get("Sample") or {}).get("elements")
    if els is not None and len(els):
        out["export_elements"] = [str(e) for e in np.atleast_1d(els)]
    return out
