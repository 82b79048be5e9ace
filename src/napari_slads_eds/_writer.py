"""napari writer contribution: save a SLADS run's layers as a run file.

File ▸ Save Selected Layers… on a run's layers -- its reconstruction (Labels) and
measurement mask (Image), optionally its ground truth (Labels), ERD map (Image) and
measured points (Points) -- writes one run file through
:func:`napari_slads_eds.export.export_run`: HyperSpy ``.hspy``/``.zspy`` or ``.npz``,
which the plugin's reader (and ``slads-eds export``, ``hs.load``) opens again.

A layer belongs to a run when its ``metadata`` names its role:

* ``metadata["slads_eds_run"]`` (:data:`napari_slads_eds._reader.RUN_KEY`): layers the
  plugin's reader made from a run file or folder, and the replay widget's live layers;
  the reader's reconstruction also carries the run's summary (TD, TD curves, settings)
  under ``metadata["slads_eds_result"]``, which is written back;
* ``metadata["slads_eds_live"]``: the live layers of the Sampling-run widget.

What the file holds comes from the layers alone:

* ``reconstruction`` (H, W) from the Labels layer, ``ground_truth`` from a second one;
* ``positions`` (n, 2) and ``labels`` (n,): from the measured Points layer (its order
  is the measurement order; labels from its ``label`` feature), else from the mask
  (measured pixels in row-major order -- the measurement order is not in a mask -- with
  the reconstruction's labels there, which are the measured labels);
* ``mask`` (H, W) bool: the mask layer, else made from the positions;
* spectra and their energy axis: from the Points layer's metadata when the reader put
  them there;
* ``pixel_size``/``pixel_units``: from the reconstruction layer's scale and units.

A live run's summary (TD curves, settings) is not in its layers: the Sampling-run widget's
Save writes the whole run folder.  Never imports Qt or TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._reader import RESULT_KEY, RUN_KEY
from ._validation import InputError, check_integers

__all__ = ["write_run_layers", "layers_to_run", "LIVE_KEY"]

#: ``metadata`` key of the Sampling-run widget's live layers (its value is the role).
LIVE_KEY = "slads_eds_live"

_ROLE_TYPES = {"reconstruction": "labels", "ground_truth": "labels", "mask": "image", "erd": "image",
               "measured": "points"}


def _role(meta: dict) -> str | None:
    md = meta.get("metadata") or {}
    if not isinstance(md, dict):
        return None
    role = md.get(RUN_KEY) or md.get(LIVE_KEY)
    return role if isinstance(role, str) and role in _ROLE_TYPES else None


def _labels_feature(meta: dict):
    feats = meta.get("features")
    if feats is None:
        return None
    try:
        col = feats["label"]
    except (KeyError, TypeError, IndexError):
        return None
    return _int_labels(col, "the measured points' 'label' feature")


def _int_labels(values, what: str) -> np.ndarray:
    """``values`` as int16 phase labels 0..32767 (integral, finite), or InputError."""
    a = check_integers(values, what, lo=0, hi=int(np.iinfo(np.int16).max), context="save a SLADS run",
                       kind="integer phase labels")
    return a.astype(np.int16).reshape(-1) if a.ndim <= 1 else a.astype(np.int16)


def layers_to_run(layer_data: list[tuple]) -> tuple[dict, dict]:
    """The run result and the :func:`~napari_slads_eds.export.export_run` keyword
    arguments made from a run's layers.

    Parameters
    ----------
    layer_data : list of (data, meta, layer_type)
        napari's full layer data (``Layer.as_layer_data_tuple()``).  Needs one Labels
        layer with the role "reconstruction" (H, W) and the mask (Image, (H, W), 0/1) or
        the measured Points (n, 2) (row, col in data coordinates).

    Returns
    -------
    result : dict
        ``reconstruction`` (H, W) int32, ``positions`` (n, 2) int64, ``labels`` (n,)
        int16, ``mask`` (H, W) bool, ``ground_truth``/``erd`` when given, ``grid``,
        ``sampling_fraction``, and the reader's run summary when present.
    kwargs : dict
        ``spectra`` (n, p) and ``axis`` (EnergyAxis) when the Points layer carries them,
        ``pixel_size`` and ``pixel_units``.

    Raises
    ------
    InputError
        Layers that are not a SLADS run (no role in their metadata, no reconstruction, two
        layers of one role), or whose shapes do not match.
    """
    from .spectra import EnergyAxis

    roles: dict[str, tuple] = {}
    foreign = []
    for item in layer_data:
        data, meta, ltype = item
        role = _role(meta)
        if role is None or _ROLE_TYPES[role] != ltype:
            foreign.append(f"{meta.get('name', '?')!r} ({ltype})")
            continue
        if role in roles:
            raise InputError(f"save a SLADS run: two {role.replace('_', ' ')} layers "
                             f"({roles[role][1].get('name')!r}, {meta.get('name')!r}); select one run's layers")
        roles[role] = item
    if foreign or "reconstruction" not in roles:
        what = f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not part of a SLADS run" \
            if foreign else "no reconstruction layer"
        raise InputError(f"save a SLADS run: {what}. Select a run's reconstruction (Labels) and mask "
                         "(Image) layers -- made by the Sampling-run or Replay widget or opened from a run "
                         "file or folder -- and save as .hspy, .zspy or .npz.")
    rec_data, rec_meta, _ = roles["reconstruction"]
    rec = np.asarray(rec_data)
    if rec.ndim != 2:
        raise InputError(f"save a SLADS run: the reconstruction must be 2-D, got shape {rec.shape}")
    H, W = rec.shape
    _int_labels(rec, f"the reconstruction {rec_meta.get('name', '')!r}")
    summary = (rec_meta.get("metadata") or {}).get(RESULT_KEY)
    summary = dict(summary) if isinstance(summary, dict) else {}
    result = {k: v for k, v in summary.items() if not k.startswith("export_")}
    for k in ("td", "sampling_fraction"):
        v = (rec_meta.get("metadata") or {}).get(k)
        if v is not None and k not in result:
            result[k] = v
    result["reconstruction"] = rec.astype(np.int32)
    maps = {}
    for role in ("ground_truth", "mask", "erd"):
        if role in roles:
            a = np.asarray(roles[role][0])
            if a.shape != (H, W):
                raise InputError(f"save a SLADS run: the {role.replace('_', ' ')} is {a.shape}, the "
                                 f"reconstruction {(H, W)}")
            if role == "ground_truth":
                _int_labels(a, f"the ground truth {roles[role][1].get('name', '')!r}")
            elif a.size and (not np.issubdtype(a.dtype, np.number) and a.dtype != bool
                             or not np.all(np.isfinite(a))):
                raise InputError(f"save a SLADS run: the {role} {roles[role][1].get('name', '')!r} must be "
                                 f"finite numbers, got dtype {a.dtype}{' with NaN or inf' if a.dtype.kind == 'f' else ''}")
            maps[role] = a
    kwargs: dict = {}
    if "measured" in roles:
        pdata, pmeta, _ = roles["measured"]
        try:
            pts = np.asarray(pdata, dtype=np.float64)
        except (TypeError, ValueError):
            pts = np.zeros((0, 0))
        if pts.size == 0:
            pts = np.zeros((0, 2))
        if pts.ndim != 2 or pts.shape[1] < 2 or not np.all(np.isfinite(pts)):
            raise InputError(f"save a SLADS run: the measured points must be (n, 2) finite (row, col), got "
                             f"shape {pts.shape}")
        # points of a 3-D or 4-D view: (…, row, col) -- the last two columns
        pos = np.rint(pts[:, -2:]).astype(np.int64)
        if pos.size and (pos.min() < 0 or pos[:, 0].max() >= H or pos[:, 1].max() >= W):
            raise InputError(f"save a SLADS run: measured points outside the {H}x{W} reconstruction")
        labels = _labels_feature(pmeta)
        pmd = pmeta.get("metadata") or {}
        if labels is None and pmd.get("labels") is not None:
            labels = _int_labels(pmd["labels"], "the measured points' metadata labels").reshape(-1)
        if labels is None or labels.size != len(pos):
            labels = rec[pos[:, 0], pos[:, 1]].astype(np.int16)
        sp, ax = pmd.get("spectra"), pmd.get("energy_axis")
        if sp is not None and ax is not None and np.shape(sp)[0] == len(pos):
            kwargs["spectra"] = np.asarray(sp)
            kwargs["axis"] = ax if isinstance(ax, EnergyAxis) else EnergyAxis.from_dict(ax)
    elif "mask" in maps:
        pos = np.argwhere(maps["mask"] > 0).astype(np.int64)
        labels = rec[pos[:, 0], pos[:, 1]].astype(np.int16)
    else:
        raise InputError("save a SLADS run: select the run's mask (Image) or measured points (Points) "
                         "layer with its reconstruction: they say where the run measured")
    if "mask" not in maps:
        m = np.zeros((H, W), bool)
        m[pos[:, 0], pos[:, 1]] = True
        maps["mask"] = m
    maps["mask"] = np.asarray(maps["mask"]) > 0
    result.update(maps)
    result["positions"], result["labels"] = pos, labels
    result["grid"] = [int(H), int(W)]
    result.setdefault("sampling_fraction", float(len(pos)) / float(H * W))
    result.setdefault("n_measured", int(len(pos)))
    kwargs.update(_calibration(rec_meta, summary))
    return result, kwargs


def _calibration(meta: dict, summary: dict) -> dict:
    """pixel_size/pixel_units from the layer's scale and units (or the summary's)."""
    try:
        scale = tuple(float(s) for s in (meta.get("scale") if meta.get("scale") is not None else (1.0, 1.0)))[-2:]
    except (TypeError, ValueError):
        scale = (1.0, 1.0)           # not a scale napari would have: uncalibrated
    units = meta.get("units")
    if isinstance(units, str) or not isinstance(units, (list, tuple)):
        units = [units] if units is not None else None
    unit = str(units[-1]) if units is not None and len(units) else ""
    unit = "" if unit in ("pixel", "px") else unit.replace("micrometer", "µm").replace("nanometer", "nm")
    px = summary.get("export_pixel_size")
    if len(scale) == 2 and abs(scale[0] - scale[1]) < 1e-12 * max(1.0, abs(scale[0])) and scale[0] != 1.0:
        px = scale[0]
    out = {}
    if px:
        out["pixel_size"] = float(px)
        out["pixel_units"] = unit or str(summary.get("export_pixel_units") or "")
    if summary.get("export_beam_energy_keV"):
        out["beam_energy_keV"] = float(summary["export_beam_energy_keV"])
    return out


def write_run_layers(path: str, layer_data: list[tuple]) -> list[str]:
    """npe2 writer: save a run's layers (see the module docstring) as one run file.

    Parameters
    ----------
    path : str
        ``.hspy``, ``.zspy`` or ``.npz`` (napari passes what the user typed; the manifest
        offers these three).
    layer_data : list of (data, meta, layer_type)

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    InputError
        Not a SLADS run's layers (:func:`layers_to_run`), or a file that cannot be
        written (:func:`~napari_slads_eds.export.export_run`).
    """
    import warnings

    from .export import export_run

    try:
        result, kwargs = layers_to_run(layer_data)
    except InputError as exc:
        # napari's layers.save(plugin=...) turns a writer's ValueError into "not a valid
        # writer"; the warning keeps the reason (the Save dialog shows the error itself)
        warnings.warn(str(exc), UserWarning, stacklevel=2)
        raise
    out = export_run(result, Path(path), **kwargs)
    return [str(out)]
