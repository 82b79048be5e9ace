"""Export and reload a SLADS run as a HyperSpy file (``.hspy``/``.zspy``) or a plain ``.npz``.

The HyperSpy file (format version 2, written through RosettaSciIO; the full layout and
the reasons for it are in :mod:`napari_slads_eds._hspy`)::

    s = hs.load("run.hspy")      # EDS_SEM (H, W | p): x/y navigation, Energy (keV)
    s.inav[col, row]             # the spectrum measured at (row, col); zeros elsewhere
    s.metadata.SLADS.Maps.reconstruction   # Signal2D (H, W), x/y calibrated; also mask,
                                           # erd, ground_truth, specimen_labels
    s.metadata.SLADS.positions   # (n, 2) int64 (row, col) in measurement order; labels,
                                 # td curves, grid, result_json (settings, TD, baselines)
    s.metadata.Sample.elements, s.metadata.Acquisition_instrument.SEM (when known)

Files of format version 1 (1-D "measurement" navigation, the maps as plain arrays in
``metadata.SLADS``) still load.  The ``.npz`` holds the arrays under the same names plus
``spectra`` (n, p), ``energy_axis_json``, ``result_json`` and ``export_json`` (no pickle:
``np.load(..., allow_pickle=False)``).  :func:`load_export` reads either back into the
dictionary :func:`export_run` took (the form of :func:`napari_slads_eds.results.load_run`,
plus ``spectra`` and ``energy_axis``), and :func:`export_layers` turns it into napari layer
data (used by the reader).

Nothing here imports Qt or TensorFlow; HyperSpy itself is not needed (RosettaSciIO writes
and reads the file).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._files import JOURNAL_NAME, jsonable, read_npz
from ._validation import InputError, check_integers, check_spectra
from ._hspy import FORMAT_VERSION as _FORMAT_VERSION
from ._hspy import read_hspy, write_hspy
from .run_folder import RUN_FILE, SPECIMEN_FILE
from .spectra import EnergyAxis

__all__ = ["export_run", "load_export", "export_layers", "EXPORT_SUFFIXES", "is_export_file"]

#: Suffixes :func:`export_run` writes.
EXPORT_SUFFIXES = (".hspy", ".zspy", ".npz")
_FORMAT = "napari-slads-eds run export"
_MAP_KEYS = ("reconstruction", "mask", "ground_truth", "specimen_labels", "erd")
_CURVE_KEYS = ("td_curve", "td_curve_random", "td_curve_halton")


def _summary(result: dict) -> dict:
    skip = set(_MAP_KEYS) | set(_CURVE_KEYS) | {"positions", "labels", "spectra", "energy_axis"}
    return jsonable({k: v for k, v in result.items() if k not in skip and not k.startswith("export_")})


def _integers(value, what: str, *, lo=None, hi=None) -> np.ndarray:
    return check_integers(value, what, lo=lo, hi=hi, context="export")


def _arrays(result: dict, spectra, axis: EnergyAxis | None):
    if not isinstance(result, dict) or "positions" not in result or "labels" not in result:
        raise InputError("export: the result has no measured positions and labels (not a SLADS run?)")
    pos = _integers(result["positions"], "measured positions")
    if pos.size % 2 or (pos.ndim != 2 and pos.size) or (pos.ndim == 2 and pos.shape[1] != 2 and pos.size):
        raise InputError(f"export: measured positions must be (n, 2) (row, col), got shape {pos.shape}")
    pos = pos.reshape(-1, 2)
    lab = _integers(result["labels"], "labels", lo=0, hi=np.iinfo(np.int16).max).astype(np.int16).reshape(-1)
    if lab.size != pos.shape[0]:
        raise InputError(f"export: {pos.shape[0]} positions but {lab.size} labels")
    arrays = {"positions": pos, "labels": lab}
    for k in _MAP_KEYS:
        v = result.get(k)
        if v is not None and not isinstance(v, dict):
            v = np.asarray(v)
            if v.ndim == 2 and v.dtype != object:
                arrays[k] = v
    if "reconstruction" not in arrays:
        raise InputError("export: the result has no reconstruction")
    H, W = arrays["reconstruction"].shape
    for k in _MAP_KEYS:
        if k in arrays and arrays[k].shape != (H, W):
            raise InputError(f"export: the {k.replace('_', ' ')} is {arrays[k].shape}, the reconstruction {(H, W)}")
        if k in arrays and k != "erd" and k != "mask":
            _integers(arrays[k], f"{k.replace('_', ' ')} labels")
    if len(pos) and (pos.min() < 0 or pos[:, 0].max() >= H or pos[:, 1].max() >= W):
        raise InputError(f"export: measured positions outside the {H} x {W} grid "
                         f"(rows {pos[:, 0].min()}..{pos[:, 0].max()}, cols {pos[:, 1].min()}..{pos[:, 1].max()})")
    for k in _CURVE_KEYS:
        if result.get(k) is not None:
            try:
                c = np.asarray(result[k], dtype=np.float64)
            except (TypeError, ValueError):
                c = None
            if c is None or (c.size and (c.ndim != 2 or c.shape[1] != 2)) or c.size % 2:
                raise InputError(f"export: {k} must be a list of [fraction, TD] pairs, got {result[k]!r:.80}")
            arrays[k] = c.reshape(-1, 2)
    if spectra is not None:
        if axis is not None and not isinstance(axis, EnergyAxis):
            if isinstance(axis, dict):
                try:
                    axis = EnergyAxis.from_dict(axis)
                except (KeyError, TypeError, ValueError) as exc:
                    raise InputError(f"export: not an energy axis: {axis!r} ({exc})") from exc
            else:
                raise InputError(f"export: axis must be an EnergyAxis, got {type(axis).__name__}")
        if axis is None:
            raise InputError("export: spectra need their energy axis (axis=EnergyAxis)")
        sp = np.asarray(spectra)
        if sp.size == 0 and len(pos) == 0:
            sp = np.zeros((0, axis.size), np.float32)
        sp = check_spectra(sp, axis.size, name="exported spectra")
        if sp.shape[0] != pos.shape[0]:
            raise InputError(f"export: {sp.shape[0]} spectra for {pos.shape[0]} positions")
        arrays["spectra"] = sp
    return arrays, axis


def _refuse_run_folder_file(p: Path) -> None:
    """Refuse to write an export over a file a run folder needs (its ``run.npz``, its
    specimen, its models): an export is written beside them (``run_export.npz``,
    ``run.hspy``) or elsewhere."""
    from .run_folder import MODELS_DIR, SETTINGS_FILE

    try:
        q = p.resolve()
    except OSError:
        return
    for folder in list(q.parents)[:3]:
        if (folder / SETTINGS_FILE).is_file() or (folder / JOURNAL_NAME).is_file():
            rel = q.relative_to(folder).as_posix()
            if rel in (RUN_FILE, SPECIMEN_FILE) or rel.startswith(f"{MODELS_DIR}/"):
                raise InputError(f"export: {p} is a file of the run folder {folder} (its {rel}); "
                                 f"export to another name, e.g. {folder / 'run_export.npz'}")
            return


def _known_number(value, name: str) -> float | None:
    """A positive finite number, or None for unknown (None or 0, as a run without calibration)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"export: {name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"export: {name} must be a number, got {value!r}") from None
    if v == 0:
        return None
    if not (np.isfinite(v) and v > 0):
        raise InputError(f"export: {name} must be a positive finite number, got {value!r}")
    return v


def export_run(result: dict, path, *, spectra=None, axis: EnergyAxis | None = None,
               beam_energy_keV: float | None = None, pixel_size: float | None = None,
               pixel_units: str = "", elements=None, live_time_s: float | None = None,
               energy_resolution_MnKa_eV: float | None = None, overwrite: bool = True) -> Path:
    """Write a run (positions, spectra, labels, reconstruction, mask, ERD, TD curves, settings).

    The HyperSpy file (``.hspy``/``.zspy``, format version 2, layout in
    :mod:`napari_slads_eds._hspy`): ``hs.load(path)`` gives one EDS_SEM signal
    (H, W | p) with x/y navigation (pixel size and units, or scale 1 "px" without a
    calibration) and the energy axis in keV; the measured spectrum sits at its pixel
    (``s.inav[col, row]``), unmeasured pixels hold zero counts (the flag and the mask are in
    ``metadata.SLADS``); counts are uint16 (uint32 when a channel exceeds 65535, float32
    for non-integer spectra).  The reconstruction, the measurement mask, the ERD map and
    the ground truth are x/y-calibrated Signal2D in ``metadata.SLADS.Maps`` (HyperSpy's own
    way of storing signals in a signal, so one file and one signal from ``hs.load``).
    Without spectra the file's signal is the reconstruction.

    Parameters
    ----------
    result : dict
        A run result (:func:`napari_slads_eds.replay.run_replay`, the engine's
        ``run_slads``, :func:`napari_slads_eds.results.load_run`): needs ``positions``
        (n, 2) int (row, col) inside the grid, ``labels`` (n,) and ``reconstruction``
        (H, W); ``mask``, ``erd``, ``ground_truth`` (H, W) and the TD curves when present.
        ``phase_names`` (the phases' reference spectra, e.g. ``["Si", "Fe"]``) give
        ``Sample.elements`` when they are formulas; ``elements``, ``live_time_s`` and
        ``energy_resolution_MnKa_eV`` entries are used when the keywords are not given.
    path : str or Path
        ``.hspy`` or ``.zspy`` (HyperSpy, via RosettaSciIO) or ``.npz``.
    spectra : array_like, shape (n, p), optional
        The measured spectra (counts) in measurement order.
    axis : EnergyAxis, optional
        Energy axis of ``spectra`` (required with them).
    beam_energy_keV, pixel_size, pixel_units
        Stored in the metadata when given (a simulated run has neither: the keys are left
        out rather than written as 0).  ``pixel_size`` in ``pixel_units`` per pixel.
    elements : str or sequence of str, optional
        Element symbols for ``metadata.Sample.elements`` (default: from the result).
    live_time_s : float, optional
        Live time of one measured spectrum, s (``...Detector.EDS.live_time``).
    energy_resolution_MnKa_eV : float, optional
        Detector FWHM at Mn Ka, eV (``...Detector.EDS.energy_resolution_MnKa``).
    overwrite : bool

    Returns
    -------
    Path of the written file.

    Raises
    ------
    InputError
        Unknown suffix, an existing file with ``overwrite=False``, a result without
        positions/labels/reconstruction, positions outside the grid, spectra that do not
        match, a negative or non-numeric calibration, unknown element symbols.
    """
    from ._hspy import check_elements, elements_of

    p = Path(path)
    suf = p.suffix.lower()
    if suf not in EXPORT_SUFFIXES:
        raise InputError(f"export: expected a .hspy, .zspy or .npz file name, got {p.name!r}")
    if p.exists() and not overwrite:
        raise InputError(f"export: {p} exists (overwrite=False)")
    _refuse_run_folder_file(p)
    arrays, axis = _arrays(result, spectra, axis)
    summary = _summary(result)
    try:
        json.dumps(summary)
    except (TypeError, ValueError) as exc:
        raise InputError(f"export: the result's entries must be JSON values (numbers, strings, lists, "
                         f"dicts): {exc}") from exc
    summary["export"] = {"format": _FORMAT, "format_version": _FORMAT_VERSION}
    H, W = arrays["reconstruction"].shape
    extra = {"grid": [int(H), int(W)]}  # unknown calibration is left out, never written as 0
    px = _known_number(pixel_size, "pixel_size")
    if px:
        extra.update(pixel_size=px, pixel_units=str(pixel_units or ""))
    instrument = {"beam_energy": _known_number(beam_energy_keV, "beam_energy_keV"),
                  "live_time": _known_number(live_time_s if live_time_s is not None
                                             else result.get("live_time_s"), "live_time_s"),
                  "energy_resolution_MnKa": _known_number(
                      energy_resolution_MnKa_eV if energy_resolution_MnKa_eV is not None
                      else result.get("energy_resolution_MnKa_eV"), "energy_resolution_MnKa_eV")}
    for k, name in (("beam_energy", "beam_energy_keV"), ("live_time", "live_time_s"),
                    ("energy_resolution_MnKa", "energy_resolution_MnKa_eV")):
        if instrument[k]:
            extra[name] = instrument[k]
    if elements is None:
        elements = result.get("elements")
    if elements is None:
        names = result.get("phase_names") or (result.get("settings") or {}).get("phase_names")
        elements = elements_of(names if isinstance(names, (list, tuple)) else ())
    elements = check_elements(elements)
    if elements:
        extra["elements"] = elements
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"export: cannot create the folder {p.parent} ({exc.strerror or exc})") from exc
    if p.is_dir() and suf != ".zspy":
        raise InputError(f"export: {p} is a folder, expected a file name")
    if suf == ".npz":
        out = dict(arrays)
        out["result_json"] = np.array(json.dumps(summary))
        out["energy_axis_json"] = np.array(json.dumps(axis.to_dict() if axis is not None else None))
        out["export_json"] = np.array(json.dumps(extra))
        tmp = p.with_name(p.name + ".tmp.npz")
        np.savez_compressed(tmp, **out)
        tmp.replace(p)
        return p
    slads = dict(extra)
    slads.pop("elements", None)         # metadata.Sample.elements
    slads.update(result_json=json.dumps(summary), format=_FORMAT, format_version=_FORMAT_VERSION)
    write_hspy(p, arrays, arrays.pop("spectra", None), axis, slads, instrument, elements, _version())
    return p


def is_export_file(path) -> bool:
    """True when ``path`` is a run exported by :func:`export_run` (cheap check)."""
    p = Path(path)
    suf = p.suffix.lower()
    try:
        if suf == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return "result_json" in z.files and "energy_axis_json" in z.files
        if suf in (".hspy", ".zspy"):
            d = load_export(p, _check_only=True)
            return bool(d)
    except Exception:
        return False
    return False


def _from_npz(p: Path) -> dict:
    d = read_npz(p)
    if "result_json" not in d or "energy_axis_json" not in d:
        raise InputError(f"{p}: not a napari-slads-eds run export (no result_json/energy_axis_json)")
    try:
        out = json.loads(str(d.pop("result_json")))
        ax = json.loads(str(d.pop("energy_axis_json")))
        extra = json.loads(str(d.pop("export_json"))) if "export_json" in d else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: corrupt entry: {exc}") from exc
    out.update(d)
    out["energy_axis"] = EnergyAxis.from_dict(ax) if ax else None
    out.update({f"export_{k}": v for k, v in extra.items()})
    return out


def load_export(path, *, _check_only: bool = False) -> dict:
    """Read a run written by :func:`export_run` (``.hspy``, ``.zspy`` or ``.npz``).

    Returns
    -------
    dict
        The run's result entries (``grid``, ``td``, ``td_curve``, ``settings``, ...) and
        arrays ``positions`` (n, 2) int64, ``labels`` (n,) int16, ``reconstruction``
        (H, W), ``mask`` (H, W) bool, ``erd`` (H, W) float, ``spectra`` (n, p) float32 in
        measurement order (when exported), ``energy_axis`` (EnergyAxis or None), and when
        known ``export_pixel_size``, ``export_pixel_units``, ``export_beam_energy_keV``,
        ``export_live_time_s``, ``export_energy_resolution_MnKa_eV``, ``export_elements``.

    Raises
    ------
    InputError
        Missing, unreadable or corrupt file, or not a run export.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    suf = p.suffix.lower()
    if suf == ".npz":
        out = _from_npz(p)
    elif suf in (".hspy", ".zspy"):
        out = read_hspy(p, check_only=_check_only)
        if _check_only:
            return out
    else:
        raise InputError(f"{p}: expected a .hspy, .zspy or .npz run export")
    if "mask" in out:
        out["mask"] = np.asarray(out["mask"]).astype(bool)
    for k in ("positions", "labels", "reconstruction"):
        if k not in out:
            raise InputError(f"{p}: the export has no {k!r} entry")
    out["positions"] = np.asarray(out["positions"], dtype=np.int64).reshape(-1, 2)
    out["labels"] = np.asarray(out["labels"], dtype=np.int16).reshape(-1)
    out["td_curve"] = np.asarray(out.get("td_curve", np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2)
    return out


def export_layers(run: dict, name: str = "SLADS run") -> list[tuple]:
    """napari layer data of a run (from :func:`load_export` or :func:`napari_slads_eds.results.load_run`).

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``labels``: the reconstruction (H, W); ``labels``: the ground truth when present;
        ``image``: the measurement mask (hidden); ``points``: the measured positions
        (row, col) with their labels as ``features`` and, in ``metadata``, their spectra
        (n, p) and energy axis for a per-point spectrum plot.
    """
    scale = None
    px = run.get("export_pixel_size")
    if px:
        scale = (float(px), float(px))
    common = {"scale": scale} if scale else {}
    layers = []
    rec = np.asarray(run["reconstruction"])
    layers.append((rec.astype(np.int32), {"name": f"{name}: reconstruction", "opacity": 0.7,
                                          "metadata": {"td": run.get("td"),
                                                       "sampling_fraction": run.get("sampling_fraction")},
                                          **common}, "labels"))
    if run.get("ground_truth") is not None:
        layers.append((np.asarray(run["ground_truth"]).astype(np.int32),
                       {"name": f"{name}: ground truth", "visible": False, **common}, "labels"))
    if run.get("mask") is not None:
        layers.append((np.asarray(run["mask"]).astype(np.uint8),
                       {"name": f"{name}: mask", "visible": False, "colormap": "gray", **common}, "image"))
    pos = np.asarray(run["positions"], dtype=np.float64).reshape(-1, 2)
    meta = {"labels": np.asarray(run["labels"])}
    if run.get("spectra") is not None:
        meta["spectra"] = np.asarray(run["spectra"])
        ax = run.get("energy_axis")
        meta["energy_axis"] = ax.to_dict() if isinstance(ax, EnergyAxis) else ax
    layers.append((pos, {"name": f"{name}: measured", "size": 1, "face_color": "white",
                         "features": {"label": np.asarray(run["labels"], dtype=np.int16)},
                         "metadata": meta, **common}, "points"))
    return layers


def _version() -> str:
    from . import __version__

    return __version__


# ----------------------------------------------------------------------------- command line

def load_any_run(path) -> dict:
    """A run from a run folder (``run_export.npz`` preferred, else ``run.npz``), a
    ``run.npz`` of :func:`napari_slads_eds.results.write_run`, or an exported file.

    Raises
    ------
    InputError
        Nothing readable at ``path``.
    """
    from .results import load_run

    p = Path(path)
    if p.is_dir() and p.suffix.lower() != ".zspy":
        if (p / "run_export.npz").is_file():
            return load_export(p / "run_export.npz")
        if not (p / RUN_FILE).is_file() and (p / JOURNAL_NAME).is_file():
            raise InputError(f"{p}: the run has not finished (a journal but no run.npz): "
                             f"complete it with 'slads-eds resume {p}' first")
        return _with_journal_spectra(load_run(p), p)
    if not p.exists():
        raise InputError(f"run not found: {p}")
    if p.suffix.lower() in (".hspy", ".zspy"):
        return load_export(p)
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                names = set(z.files)
        except Exception as exc:  # zipfile, pickle refusal, OS errors
            from ._files import npz_error
            raise npz_error(p, "run file", exc) from exc
        return load_export(p) if "energy_axis_json" in names else load_run(p)
    raise InputError(f"{p}: expected a run folder, run.npz, or an exported .hspy/.zspy/.npz")


def _with_journal_spectra(run: dict, folder: Path) -> dict:
    """Add the measured spectra and their energy axis from the run folder's acquisition
    journal (``journal.h5``; the axis from ``specimen.npz``), when they match the run's
    measured positions."""
    import json

    from ._files import read_npz
    from .journal import read_journal

    jp, sp = folder / JOURNAL_NAME, folder / SPECIMEN_FILE
    if not (jp.is_file() and sp.is_file()):
        return run
    j = read_journal(jp)
    pos = np.asarray(run.get("positions", np.zeros((0, 2))), dtype=np.int64).reshape(-1, 2)
    if len(j["position"]) != len(pos) or not np.array_equal(j["position"], pos):
        return run
    run["spectra"] = j["spectrum"]
    run["energy_axis"] = EnergyAxis.from_dict(json.loads(str(read_npz(sp, ["axis"], "specimen file")["axis"])))
    return run
