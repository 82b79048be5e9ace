"""Real EDS data in: spectra and spectrum images through RosettaSciIO and this project's ``.npz``.

Reading
-------
:func:`read_eds` opens any file RosettaSciIO reads (EMSA/MSA, Bruker ``.bcf``/``.spx``,
HyperSpy ``.hspy``/``.zspy``, Ripple ``.rpl``/``.raw``, EDAX ``.spd``/``.spc``, JEOL,
EMD, ...) plus this project's plain ``.npz`` spectrum images (keys ``counts``,
``energy_offset_keV``, ``energy_scale_keV``, see ``shared/data/PROVENANCE.md``) and
returns a :class:`Spectrum` (one spectrum, ``(p,)``) or a :class:`SpectrumImage`
(``(H, W, p)``).  The energy axis keeps its offset and scale converted to keV (HyperSpy
convention: channel ``i`` is centred at ``offset + i * scale``); the beam energy (keV),
live time (s), pixel size and co-registered images (BSE/SE of a Bruker hypermap) are kept.

Missing calibration
-------------------
An energy axis without units and with the uncalibrated values ``offset 0, scale 1`` is
*missing*: :func:`read_eds` raises :class:`InputError` unless ``default_calibration``
(offset keV, scale keV/channel) is given (see :mod:`napari_slads_eds.energy_axes`, which
owns the calibration rules and the conversion between energy axes, :func:`to_axis`).

Nothing here imports Qt or TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validation import InputError
from .energy_axes import energy_axis_from_rsciio, to_axis
from .spectra import EnergyAxis, Spectrum

__all__ = [
    "SpectrumImage",
    "spectrum_image_from_layer",
    "read_eds",
    "read_spectrum_image",
    "read_spectrum_any",
    "read_rsciio",
    "supported_extensions",
    "to_axis",      # re-exported from energy_axes: replay.py, docs/replay.md and tools import it here
]

#: File suffixes read by this project's own ``.npz`` spectrum-image reader.
_NPZ_SUFFIXES = (".npz",)


@dataclass
class SpectrumImage:
    """A fully acquired spectrum image (EDS map) with its calibration.

    Attributes
    ----------
    counts : ndarray, shape (H, W, p), non-negative numbers (the file's dtype, usually
        an unsigned integer)
        ``counts[row, col, channel]``.
    axis : EnergyAxis
        Energy axis of the p channels (keV).
    beam_energy_keV : float or None
    live_time_s : float or None
        Live (or, when only that is stored, real) time of the whole map, seconds.
    pixel_size : float or None
        Size of a pixel in ``pixel_units`` (from the file's navigation axes).
    pixel_units : str
    images : dict of str -> ndarray (H, W)
        Co-registered images (e.g. ``"BSE"``, ``"SE"`` of a Bruker hypermap).
    name : str
    metadata : dict
        The file's name, format and the original HyperSpy-style metadata tree.

    Raises
    ------
    InputError
        ``counts`` not 3-D, channels not matching ``axis``, negative or non-finite
        counts, images of another shape.
    """

    counts: np.ndarray
    axis: EnergyAxis
    beam_energy_keV: float | None = None
    live_time_s: float | None = None
    pixel_size: float | None = None
    pixel_units: str = ""
    images: dict = field(default_factory=dict)
    name: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        c = np.asarray(self.counts)
        if c.ndim != 3:
            raise InputError(f"spectrum image {self.name!r}: expected counts of shape (H, W, p), "
                             f"got shape {c.shape}")
        if c.shape[2] != self.axis.size:
            raise InputError(f"spectrum image {self.name!r}: {c.shape[2]} channels but the energy "
                             f"axis has {self.axis.size}")
        if not np.issubdtype(c.dtype, np.number) or np.iscomplexobj(c):
            raise InputError(f"spectrum image {self.name!r}: expected real counts, got {c.dtype}")
        if c.size and not np.issubdtype(c.dtype, np.unsignedinteger):
            if np.issubdtype(c.dtype, np.floating) and not np.all(np.isfinite(c)):
                raise InputError(f"spectrum image {self.name!r}: counts contain NaN or inf")
            if c.min() < 0:
                raise InputError(f"spectrum image {self.name!r}: negative counts")
        self.counts = c
        for k, im in self.images.items():
            if np.shape(im) != c.shape[:2]:
                raise InputError(f"spectrum image {self.name!r}: image {k!r} has shape "
                                 f"{np.shape(im)}, expected {c.shape[:2]}")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the map."""
        return tuple(self.counts.shape[:2])

    @property
    def total_counts(self) -> np.ndarray:
        """Counts per pixel summed over channels, shape (H, W), float64."""
        return self.counts.sum(axis=2, dtype=np.float64)

    def spectrum_at(self, row: int, col: int) -> Spectrum:
        """The spectrum of one pixel as a :class:`Spectrum`.

        Raises
        ------
        InputError
            Pixel outside the map.
        """
        H, W = self.shape
        if not (0 <= int(row) < H and 0 <= int(col) < W):
            raise InputError(f"pixel ({row}, {col}) outside the {H}x{W} map")
        return Spectrum(np.asarray(self.counts[int(row), int(col)], dtype=np.float64), self.axis,
                        beam_energy_keV=self.beam_energy_keV, name=f"{self.name}[{row},{col}]")

    def sum_spectrum(self, mask=None) -> Spectrum:
        """Sum of the spectra (of the pixels where ``mask`` (H, W) bool is True)."""
        c = self.counts if mask is None else self.counts[np.asarray(mask, dtype=bool)]
        s = c.reshape(-1, self.axis.size).sum(axis=0, dtype=np.float64)
        return Spectrum(s, self.axis, beam_energy_keV=self.beam_energy_keV, name=f"{self.name} (sum)")

    def to_axis(self, axis: EnergyAxis) -> "SpectrumImage":
        """The map on another energy axis (exact cut or count-conserving rebinning, see
        :func:`to_axis`); counts become float64 when rebinned.

        Raises
        ------
        InputError
            As :func:`to_axis`.
        """
        c = to_axis(self.counts, self.axis, axis, beam_energy_keV=self.beam_energy_keV,
                    what=f"spectrum image {self.name!r}")
        return SpectrumImage(c, axis, self.beam_energy_keV, self.live_time_s, self.pixel_size,
                             self.pixel_units, dict(self.images), self.name, dict(self.metadata))


# ----------------------------------------------------------------------------- reading

def supported_extensions() -> list[str]:
    """Lower-case file suffixes (with the dot) RosettaSciIO reads, plus ``.npz``."""
    from rsciio import IO_PLUGINS

    ext = {f".{e.lower()}" for p in IO_PLUGINS for e in p["file_extensions"]}
    ext.add(".raw")  # Ripple data file next to its .rpl header
    return sorted(ext | set(_NPZ_SUFFIXES))


def _plugins_for(path: Path):
    from rsciio import IO_PLUGINS

    ext = path.suffix.lower().lstrip(".")
    return [p for p in IO_PLUGINS if ext in [e.lower() for e in p["file_extensions"]]]


def read_rsciio(path, **kwargs) -> list[dict]:
    """All signals in a file, as RosettaSciIO dictionaries (``data``, ``axes``, ``metadata``).

    The reader is chosen by the file suffix; when several RosettaSciIO plugins claim the
    suffix (``.h5``, ``.xml``, ``.csv``, ...) each is tried in turn.  A ``.raw`` file is
    read through its ``.rpl`` header.

    Raises
    ------
    InputError
        Missing file, no reader for the suffix, or no reader could read it.
    """
    import importlib

    p = Path(path)
    if p.suffix.lower() == ".raw" and p.with_suffix(".rpl").is_file():
        p = p.with_suffix(".rpl")
    if not (p.is_file() or (p.is_dir() and p.suffix.lower() == ".zspy")):   # .zspy is a folder
        raise InputError(f"file not found: {p}")
    plugins = _plugins_for(p)
    if not plugins:
        raise InputError(f"{p}: no RosettaSciIO reader for {p.suffix!r} files")
    errors = []
    for plug in plugins:
        try:
            reader = importlib.import_module(plug["api"]).file_reader
            items = reader(str(p), **kwargs)
            if items:
                return list(items)
        except Exception as exc:  # every plugin raises its own exception types
            errors.append(f"{plug['name']}: {type(exc).__name__}: {exc}")
    raise InputError(f"{p}: not readable by RosettaSciIO ({'; '.join(errors) or 'no signal'})")


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _instrument(md: dict) -> dict:
    ai = _get(md, "Acquisition_instrument", default={}) or {}
    return ai.get("SEM") or ai.get("TEM") or {}


def _float_or_none(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _signal_axis_index(item: dict) -> int | None:
    axes = item.get("axes") or []
    sig = [i for i, a in enumerate(axes) if not a.get("navigate", False)]
    if len(sig) == 1:
        return sig[0]
    return None


def _is_spectral(item: dict) -> bool:
    st = str(_get(item, "metadata", "Signal", "signal_type", default="") or "").upper()
    data = item.get("data")
    ndim = np.ndim(data) if data is not None else 0
    i = _signal_axis_index(item)
    if "EDS" in st:
        return True
    if i is None or ndim == 0:
        return False
    units = str((item["axes"][i].get("units") or "")).lower()
    # one signal axis, last (HyperSpy's layout), in energy units or without units
    # (an uncalibrated spectrum: the calibration check reports it)
    return (i == ndim - 1 and units in ("ev", "kev", "", "<undefined>", "undefined")
            and (ndim == 1 or ndim == 3) and np.shape(data)[-1] > 1)


def _read_npz(path: Path, default_calibration=None):
    from ._files import read_npz

    d = read_npz(path)
    if "counts" not in d:
        raise InputError(f"{path}: expected a spectrum image .npz with a 'counts' (H, W, p) entry "
                         f"and energy_offset_keV / energy_scale_keV, got keys {sorted(d)}")
    counts = d["counts"]
    if counts.ndim not in (1, 3) or not (np.issubdtype(counts.dtype, np.integer)
                                         or np.issubdtype(counts.dtype, np.floating)):
        raise InputError(f"{path}: 'counts' must be a numeric spectrum (p,) or spectrum image (H, W, p), "
                         f"got shape {counts.shape} and dtype {counts.dtype}")
    if np.issubdtype(counts.dtype, np.integer) and counts.size and (int(counts.max()) > 2**31 - 1):
        raise InputError(f"{path}: counts up to {int(counts.max())} per channel are not X-ray counts "
                         f"(expected at most 2**31 - 1)")
    p = counts.shape[-1]
    if "energy_offset_keV" in d and "energy_scale_keV" in d:
        try:
            off, scale = (float(np.asarray(d[k]).item()) for k in ("energy_offset_keV", "energy_scale_keV"))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: energy_offset_keV and energy_scale_keV must be single numbers "
                             f"(keV), got {d['energy_offset_keV']!r} and {d['energy_scale_keV']!r}") from exc
        axis = EnergyAxis(off, scale, int(p))
    else:
        axis = energy_axis_from_rsciio({"size": p, "scale": 1.0, "offset": 0.0, "units": None},
                                       what=str(path), default_calibration=default_calibration)
    scal = {k: _float_or_none(d[k]) for k in ("beam_energy_keV", "live_time_s", "real_time_s",
                                             "pixel_size_um") if k in d and np.ndim(d[k]) == 0}
    images = {}
    for k, v in d.items():
        if k.startswith("image_") and v.ndim == 2 and v.shape == counts.shape[:2]:
            images[k[len("image_"):].split("_")[0]] = v
    md = {"file": str(path), "format": "npz",
          "note": str(d["note"]) if "note" in d and d["note"].ndim == 0 else ""}
    if counts.ndim == 1:
        return Spectrum(counts.astype(np.float64), axis, beam_energy_keV=scal.get("beam_energy_keV"),
                        live_time_s=scal.get("live_time_s"), name=path.stem, metadata=md)
    return SpectrumImage(counts, axis, scal.get("beam_energy_keV"),
                         scal.get("live_time_s", scal.get("real_time_s")), scal.get("pixel_size_um"),
                         "µm" if "pixel_size_um" in scal else "", images, path.stem, md)


def read_eds(path, *, default_calibration=None, **reader_kwargs):
    """Read an EDS spectrum or spectrum image from any file RosettaSciIO reads.

    Parameters
    ----------
    path : str or Path
    default_calibration : (offset_keV, scale_keV), optional
        Assumed (with a warning) when the file has no energy calibration.
    **reader_kwargs
        Passed to the RosettaSciIO reader (e.g. ``downsample`` for ``.bcf``).

    Returns
    -------
    Spectrum or SpectrumImage
        A :class:`Spectrum` for 1-D data ``(p,)``, a :class:`SpectrumImage` for a map
        ``(H, W, p)``.  A file with several signals (a Bruker hypermap holds BSE, SE and
        the EDS map) gives its spectral signal; same-sized 2-D images go into
        :attr:`SpectrumImage.images` under their titles.

    Raises
    ------
    InputError
        Missing or unreadable file, no spectral signal, a stack of spectra that is neither
        a single spectrum nor a 2-D map, missing calibration (see the module docstring).
    """
    p = Path(path)
    if p.suffix.lower() in _NPZ_SUFFIXES:
        if not p.is_file():
            raise InputError(f"file not found: {p}")
        return _read_npz(p, default_calibration)
    items = read_rsciio(p, **reader_kwargs)
    spectral = [it for it in items if _is_spectral(it)]
    if not spectral:
        kinds = [f"{np.shape(it.get('data'))} {_get(it, 'metadata', 'General', 'title', default='')!r}"
                 for it in items]
        raise InputError(f"{p}: no EDS spectrum or spectrum image in the file (found {kinds})")
    item = max(spectral, key=lambda it: np.ndim(it["data"]))
    data = np.asarray(item["data"])
    si = _signal_axis_index(item)
    if si is None:
        si = data.ndim - 1
    if si != data.ndim - 1:
        data = np.moveaxis(data, si, -1)
    md = item.get("metadata") or {}
    inst = _instrument(md)
    det = _get(inst, "Detector", "EDS", default={}) or {}
    axis = energy_axis_from_rsciio(item["axes"][si], what=str(p), default_calibration=default_calibration)
    title = _get(md, "General", "title", default="") or p.stem
    meta = {"file": str(p), "format": p.suffix.lower().lstrip("."), "title": title,
            "original_metadata": md}
    beam = _float_or_none(inst.get("beam_energy"))
    live = _float_or_none(det.get("live_time"))
    if live is None:
        live = _float_or_none(det.get("real_time"))
    if data.ndim == 1:
        return Spectrum(data.astype(np.float64), axis, beam_energy_keV=beam, live_time_s=live,
                        name=p.stem, metadata=meta)
    if data.ndim == 2:
        data = data[None]  # a line scan: one row
    if data.ndim != 3:
        raise InputError(f"{p}: expected a spectrum (p,) or a map (H, W, p), got data of shape {data.shape}")
    nav = [a for a in item["axes"] if a.get("navigate", False)]
    px = _float_or_none(nav[-1].get("scale")) if nav else None
    pu = str(nav[-1].get("units") or "") if nav else ""
    if pu in ("", "<undefined>"):
        px, pu = None, ""
    images = {}
    for it in items:
        if it is item:
            continue
        im = np.asarray(it.get("data"))
        if im.ndim == 2 and im.shape == data.shape[:2]:
            images[str(_get(it, "metadata", "General", "title", default=f"image{len(images)}"))] = im
    return SpectrumImage(data, axis, beam, live, px, pu, images, p.stem, meta)


def read_spectrum_image(path, **kwargs) -> SpectrumImage:
    """:func:`read_eds` for a map; :class:`InputError` when the file holds one spectrum."""
    out = read_eds(path, **kwargs)
    if not isinstance(out, SpectrumImage):
        raise InputError(f"{path}: expected a spectrum image (H, W, p), the file holds a single spectrum")
    return out


def read_spectrum_any(path, **kwargs) -> Spectrum:
    """:func:`read_eds` for one spectrum (any RosettaSciIO format, not only EMSA/MSA).

    Raises
    ------
    InputError
        The file holds a map, or as :func:`read_eds`.
    """
    out = read_eds(path, **kwargs)
    if not isinstance(out, Spectrum):
        raise InputError(f"{path}: expected a single spectrum, the file holds a "
                         f"{out.shape[0]}x{out.shape[1]} spectrum image")
    return out


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
