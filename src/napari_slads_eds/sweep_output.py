"""A sweep's output folder: its settings file, models, finished rows, table, summary and plots.

Owns what a sweep reads from and writes to ``DIR`` (see :mod:`napari_slads_eds.sweep`):
the check that a resumed sweep has the same fixed settings (``sweep.json``), the trained
models and their reports (``models/``), the rows of finished tasks (``rows/``, what resume
skips), and, at the end, the table (``results.parquet``, ``results.csv``), its summary
(:func:`summarise`, ``summary.md``) and the two plots.  Runs in the client process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ._validation import InputError
from .sweep_config import (AXES, CONFIG_FILE, CSV_FILE, CURVE_POINTS, MODELS_DIR, ROWS_DIR, SUMMARY_FILE,
                           TABLE_FILE, _FORMAT, SweepConfig, _td_column)

__all__ = ["summarise"]


# ------------------------------------------------------------------- settings, models, rows

def _read_models(out: Path, cfg: SweepConfig) -> tuple[dict, dict]:
    """Models already in DIR/models: ({"classifier": files, "erd": {kind: bytes}}, reports)."""
    mdir = out / MODELS_DIR
    models, reports = {"classifier": {}, "erd": {}}, {}
    if (mdir / "reports.json").is_file():
        reports = json.loads((mdir / "reports.json").read_text())
    cdir = mdir / "classifier"
    names = ("classifier.json", "detector.keras", "cnn.keras")
    if all((cdir / n).is_file() for n in names):
        models["classifier"] = {n: (cdir / n).read_bytes() for n in names}
    for kind in cfg.erd:
        p = mdir / f"erd_{kind}.npz"
        if p.is_file():
            models["erd"][kind] = p.read_bytes()
    return models, reports


def _write_models(out: Path, models: dict, reports: dict) -> None:
    mdir = out / MODELS_DIR
    (mdir / "classifier").mkdir(parents=True, exist_ok=True)
    for name, data in models["classifier"].items():
        _atomic_write(mdir / "classifier" / name, data)
    for kind, data in models["erd"].items():
        _atomic_write(mdir / f"erd_{kind}.npz", data)
    _atomic_write(mdir / "reports.json", json.dumps(reports, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _check_config(out: Path, cfg: SweepConfig) -> None:
    p = out / CONFIG_FILE
    if p.is_file():
        try:
            old = json.loads(p.read_text())
            old_fixed = old["fixed"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{p}: not a sweep settings file ({exc}); choose another --out") from exc
        new = json.loads(json.dumps(cfg.fixed(), default=str))
        differ = [f"{k} {old_fixed.get(k)!r} (now {new[k]!r})" for k in new if old_fixed.get(k) != new[k]]
        if differ:
            raise InputError(f"{out} holds a sweep with other settings: {', '.join(differ)}; "
                             f"its finished rows and models would not fit: use those settings or another --out")
    elif any(out.iterdir()) and not (out / ROWS_DIR).is_dir():
        names = {q.name for q in out.iterdir()} - {".slads-eds.lock"}
        if names:
            raise InputError(f"{out} is not empty and holds no sweep; choose an empty or new --out")
    _atomic_write(p, json.dumps({"format": _FORMAT, "fixed": cfg.fixed(), "axes": {a: getattr(cfg, a) for a in AXES}},
                                indent=1, default=str).encode())


def _finished_rows(out: Path, tasks: list) -> dict:
    rows = {}
    want = {t["id"] for t in tasks}
    for p in (out / ROWS_DIR).glob("*.json"):
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError):
            continue                        # a torn file (killed while writing): run it again
        if isinstance(r, dict) and r.get("id") in want:
            rows[r["id"]] = r
    return rows


def _json_row(row: dict) -> bytes:
    def fix(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({k: ([fix(x) for x in v] if isinstance(v, list) else fix(v)) for k, v in row.items()}).encode()


# -------------------------------------------------------------------- table and summary

def _table(cfg: SweepConfig, tasks: list, rows: dict):
    import pandas as pd

    recs = []
    for t in tasks:
        r = dict(rows[t["id"]])
        for k, v in list(r.items()):
            if v is None and k not in ("curve_fraction", "curve_td"):
                r[k] = float("nan")
        recs.append(r)
    df = pd.DataFrame.from_records(recs)
    cols = (["id", "image", "strategy", "erd", "batch", "initial", "seed", "status", "error", "grid", "phases"]
            + [_td_column(f) for f in cfg.fractions]
            + ["fraction_at_target", "spectra", "beam_s", "misclassification_run", "seconds", "worker",
               "curve_fraction", "curve_td"])
    for c in cols:
        if c not in df:
            df[c] = float("nan")
    df = df[cols]
    df["batch"] = df["batch"].astype("int64")
    df["seed"] = df["seed"].astype("int64")
    df["spectra"] = df["spectra"].astype("int64")
    return df


def _write_outputs(out: Path, cfg: SweepConfig, table, seconds: float) -> None:
    table.to_parquet(out / TABLE_FILE, index=False)
    table.drop(columns=["curve_fraction", "curve_td"]).to_csv(out / CSV_FILE, index=False)
    rp = out / MODELS_DIR / "reports.json"
    reports = json.loads(rp.read_text()) if rp.is_file() else {}
    text = summarise(table, cfg, seconds=seconds,
                     misclassification=reports.get("classifier", {}).get("misclassification"))
    _atomic_write(out / SUMMARY_FILE, text.encode())
    _plots(out, table, cfg)


def _setting(r) -> str:
    if r["strategy"] != "slads":
        return str(r["strategy"])
    return f"slads ({r['erd']}, batch {int(r['batch'])}, initial {r['initial']})"


def summarise(table, cfg: SweepConfig, *, seconds: float | None = None,
              misclassification: float | None = None) -> str:
    """The sweep's ``summary.md``: per strategy and setting, TD at every fraction (mean over
    images and seeds, with the spread of the per-image means), and the sampling fraction
    and beam time at which the target TD is reached, against a raster scan and Halton.

    Parameters
    ----------
    table : pandas.DataFrame
        The sweep's table (:func:`sweep`).
    cfg : SweepConfig
    seconds : float, optional
        Wall time of this invocation, for the header.
    misclassification : float, optional
        The classifier's validation misclassification (a warning above 5 %).
    """
    df = table.copy()
    ok = df[df["status"] == "ok"].copy()
    ok["setting"] = ok.apply(_setting, axis=1) if len(ok) else []
    P = cfg.size * cfg.size
    raster_s = P * cfg.dwell
    lines = ["# SLADS-EDS sweep", "",
             f"{len(df)} tasks ({len(ok)} ok, {len(df) - len(ok)} failed) over {df['image'].nunique()} "
             f"micrograph(s), {cfg.phases} phases, {cfg.size}x{cfg.size} grid (downsample {cfg.downsample}), "
             f"seeds {list(cfg.seeds)}; dwell {cfg.dwell:g} s per spectrum, so a full raster map takes "
             f"{raster_s:g} s of beam time." + (f" Wall time of this run: {seconds:.1f} s." if seconds else ""),
             ""]
    if misclassification is not None:
        lines += [f"Classifier: {100 * misclassification:.2f} % of its validation spectra misclassified."
                  + (" **Warning: above 5 %; the phase maps can be no better than their labels (more "
                     "--epochs?), so these TDs say more about the classifier than about the sampling.**"
                     if misclassification > 0.05 else ""), ""]
    lines += ["## TD per sampling fraction", "",
             "Mean TD over images and seeds; in brackets the lowest and highest mean of one image.", ""]
    fr = [_td_column(f) for f in cfg.fractions]
    lines.append("| strategy | tasks | " + " | ".join(f"TD at {100 * f:g} %" for f in cfg.fractions) + " |")
    lines.append("|---|---|" + "---|" * len(fr))
    order = list(dict.fromkeys(ok["setting"])) if len(ok) else []
    for s in order:
        g = ok[ok["setting"] == s]
        per_img = g.groupby("image")[fr].mean()
        cells = [f"{g[c].mean():.4f} [{per_img[c].min():.4f}–{per_img[c].max():.4f}]" for c in fr]
        lines.append(f"| {s} | {len(g)} | " + " | ".join(cells) + " |")
    lines += ["", f"## Beam time to reach TD ≤ {cfg.target_td:g}", "",
              f"Fraction sampled when TD first reaches {cfg.target_td:g} on a {CURVE_POINTS}-point curve up to "
              f"{100 * max(cfg.fractions):g} % (median over the tasks that reach it), the beam time per map "
              f"and what it saves against a full raster scan ({raster_s:g} s) and against Halton.", "",
              "| strategy | reached | median fraction | beam time (s) | saved vs raster | saved vs Halton |",
              "|---|---|---|---|---|---|"]
    halton = ok[ok["strategy"] == "halton"]["fraction_at_target"].dropna()
    f_halton = float(halton.median()) if len(halton) else float("nan")
    for s in order:
        g = ok[ok["setting"] == s]["fraction_at_target"]
        reached = g.dropna()
        if len(reached):
            f = float(reached.median())
            t = f * P * cfg.dwell
            vs_h = (f"{(f_halton - f) * P * cfg.dwell:.0f} s ({100 * (1 - f / f_halton):.0f} %)"
                    if math.isfinite(f_halton) else "n/a (Halton does not reach it)")
            lines.append(f"| {s} | {len(reached)}/{len(g)} | {100 * f:.1f} % | {t:.0f} | "
                         f"{raster_s - t:.0f} s ({100 * (1 - f):.0f} %) | {vs_h} |")
        else:
            lines.append(f"| {s} | 0/{len(g)} | > {100 * max(cfg.fractions):g} % | – | – | – |")
    failed = df[df["status"] != "ok"]
    if len(failed):
        lines += ["", "## Failed tasks", "", "| task | error |", "|---|---|"]
        lines += [f"| {r['id']} | {str(r['error']).replace('|', '/')} |" for _, r in failed.iterrows()]
    lines += ["", "Plots: `td_vs_fraction.png`, `beam_time_saved.png`; the table: "
              f"`{TABLE_FILE}` (`{CSV_FILE}` without the curves).", ""]
    return "\n".join(lines)


def _plots(out: Path, table, cfg: SweepConfig) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"].copy()
    if not len(ok):
        return
    ok["setting"] = ok.apply(_setting, axis=1)
    fr = [_td_column(f) for f in cfg.fractions]
    x = 100 * np.asarray(cfg.fractions)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for s in dict.fromkeys(ok["setting"]):
        per_img = ok[ok["setting"] == s].groupby("image")[fr].mean()
        ax.plot(x, per_img.median().to_numpy(), marker="o", label=s)
        ax.fill_between(x, per_img.min().to_numpy(), per_img.max().to_numpy(), alpha=0.2)
    ax.axhline(cfg.target_td, color="grey", ls=":", lw=1, label=f"target TD {cfg.target_td:g}")
    ax.set_yscale("symlog", linthresh=1.0 / (cfg.size * cfg.size))   # TD 0 (no wrong pixel) shows
    ax.set_ylim(bottom=0)
    ax.set_xlabel("sampling fraction (%)")
    ax.set_ylabel("TD (fraction of wrong pixels)")
    ax.set_title(f"TD vs fraction: median over {ok['image'].nunique()} image(s), band = image range")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "td_vs_fraction.png")
    plt.close(fig)

    P = cfg.size * cfg.size
    names, saved = [], []
    for s in dict.fromkeys(ok["setting"]):
        f = ok[ok["setting"] == s]["fraction_at_target"].dropna()
        names.append(s)
        saved.append(100 * (1 - float(f.median())) if len(f) else 0.0)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.barh(names, saved, color="tab:green")
    ax.set_xlabel(f"beam time saved vs raster at TD ≤ {cfg.target_td:g} (%; 0 = not reached)")
    ax.set_xlim(0, 100)
    ax.set_title(f"{cfg.size}x{cfg.size} grid, {P * cfg.dwell:g} s per raster map")
    fig.tight_layout()
    fig.savefig(out / "beam_time_saved.png")
    plt.close(fig)
