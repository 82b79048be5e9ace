"""Writing and reading run results: result.json, images, the TD-curve plot, run.npz.

Files written to the output folder ``DIR``:

=====================  ================================================================
``result.json``        grid, phases, sampling_fraction, td, td_curve, td_random,
                       td_halton, misclassification, c, seconds, and more
``reconstruction.tif`` reconstructed phase map, uint8 labels 0..L
``reconstruction.png`` the same, coloured for viewing (each grid pixel a square of
                       whole image pixels, so small grids are at least 512 px wide)
``mask.png``           measurement mask (white = measured), enlarged as the reconstruction
``td_curve.png``       TD versus sampling fraction, SLADS and the static scans
``run.npz``            positions, labels, reconstruction, mask, ERD, ground truth,
                       TD curve and the result as JSON (no pickle)
=====================  ================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._files import jsonable, read_npz
from ._validation import InputError

__all__ = ["write_run", "load_run", "plot_td_curve", "label_colours"]

#: The files :func:`write_run` writes that the rest of the package names (the run folder's
#: layout is :mod:`napari_slads_eds.run_folder`, which re-exports these).
RESULT_FILE = "result.json"
RUN_FILE = "run.npz"
#: Entries of a result that are arrays (``run.npz``); every other entry goes to result.json.
RESULT_ARRAYS = ("positions", "labels", "reconstruction", "mask", "erd", "ground_truth", "specimen_labels",
                 "posteriors", "labels_in_loop", "decided_probabilities")
_ARRAYS = RESULT_ARRAYS
#: td_curve holds every step; result.json keeps at most this many points of it.
MAX_JSON_CURVE = 5000


def label_colours(n_labels: int) -> np.ndarray:
    """RGB colours (n_labels + 1, 3) uint8 for labels 0..L (0 = black)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    cols = [(0, 0, 0)] + [tuple(int(255 * c) for c in cmap(i % 10)[:3]) for i in range(n_labels)]
    return np.array(cols, dtype=np.uint8)


def _thin(curve, n_max: int):
    curve = list(curve)
    if len(curve) <= n_max:
        return curve
    idx = np.unique(np.linspace(0, len(curve) - 1, n_max).round().astype(int))
    return [curve[i] for i in idx]


def plot_td_curve(result: dict, path) -> None:
    """TD versus sampling fraction of SLADS and of the static scans, as a PNG.

    Drawn on a bare :class:`~matplotlib.figure.Figure` with the Agg canvas (no pyplot):
    the process-wide matplotlib backend (napari's Qt one) is left alone, and the plot can
    be drawn in a worker thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    c = np.asarray(result["td_curve"], dtype=float)
    if c.size:
        ax.plot(100 * c[:, 0], c[:, 1], label="SLADS", lw=2)
    for name, style in (("random", "--"), ("halton", ":")):
        bc = result.get(f"td_curve_{name}")
        if bc:
            b = np.asarray(bc, dtype=float)
            ax.plot(100 * b[:, 0], b[:, 1], style, marker="o", ms=3,
                    label=f"static {'Halton' if name == 'halton' else 'random'}")
    ax.set_xlabel("sampling fraction (%)")
    ax.set_ylabel("TD (fraction of wrong pixels)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    g = result.get("grid", ["?", "?"])
    ax.set_title(f"{g[0]}×{g[1]}, {result.get('phases', '?')} phases: "
                 f"TD {result.get('td', float('nan')):.4f} at {100 * result.get('sampling_fraction', 0):.1f} %")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


VIEW_PNG_PIXELS = 512


def _zoom(img: np.ndarray, z: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W[, C]) image by an integer factor ``z``."""
    return img if z == 1 else np.repeat(np.repeat(img, z, axis=0), z, axis=1)


def write_run(result: dict, out_dir) -> dict:
    """Write a run's files into ``out_dir`` (see the module docstring).

    Returns
    -------
    dict : name -> path of each file written.

    Raises
    ------
    InputError
        A result without ``reconstruction`` (H, W) or ``mask`` (H, W), or an ``out_dir``
        that is a file.
    """
    import imageio.v3 as iio
    import tifffile

    for k in ("reconstruction", "mask"):
        if k not in result or np.ndim(result[k]) != 2:
            raise InputError(f"write_run: the result needs {k!r} as an (H, W) array")
    if np.shape(result["mask"]) != np.shape(result["reconstruction"]):
        raise InputError("write_run: mask and reconstruction must have the same shape")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"write_run: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k not in _ARRAYS}
    summary["td_curve"] = _thin(summary.get("td_curve", []), MAX_JSON_CURVE)
    summary = jsonable(summary)
    files = {RESULT_FILE: out / RESULT_FILE}
    tmp = out / f"{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(files[RESULT_FILE])
    rec = np.asarray(result["reconstruction"])
    mask = np.asarray(result["mask"], dtype=bool)
    L = int(result.get("phases", rec.max()))
    tifffile.imwrite(out / "reconstruction.tif", rec.astype(np.uint8))
    z = max(1, VIEW_PNG_PIXELS // max(rec.shape))  # PNGs for viewing: whole pixels, >= 512 px wide
    iio.imwrite(out / "reconstruction.png", _zoom(label_colours(L)[np.clip(rec, 0, L)], z))
    iio.imwrite(out / "mask.png", _zoom((mask * 255).astype(np.uint8), z))
    files.update({"reconstruction.tif": out / "reconstruction.tif",
                  "reconstruction.png": out / "reconstruction.png", "mask.png": out / "mask.png"})
    plot_td_curve(result, out / "td_curve.png")
    files["td_curve.png"] = out / "td_curve.png"
    arrays = {k: np.asarray(result[k]) for k in _ARRAYS if k in result and result[k] is not None}
    bad = [k for k, a in arrays.items() if a.dtype == object]
    if bad:   # would need pickle to store, and the file could not be read back
        raise InputError(f"write_run: entries {bad} must be numeric arrays")
    arrays["td_curve"] = np.asarray(result.get("td_curve", []), dtype=np.float64).reshape(-1, 2)
    np.savez_compressed(out / RUN_FILE, result_json=np.array(json.dumps(summary)), **arrays)
    files[RUN_FILE] = out / RUN_FILE
    return files


def load_run(path) -> dict:
    """Read a run written by :func:`write_run` (a ``run.npz`` or its folder).

    Raises
    ------
    InputError
        Missing, corrupt or truncated file, or not a run file.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RUN_FILE
    d = read_npz(p, what="run file")
    if "result_json" not in d:
        raise InputError(f"{p}: not a napari-slads-eds run file (no result_json entry)")
    try:
        out = json.loads(str(d.pop("result_json")))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: corrupt result entry: {exc}") from exc
    out.update(d)
    return out
