"""``slads-eds reproduce``: the paper's four experiment kinds on the bundled micrographs,
against static random and low-discrepancy (Halton) scans at the same budget.

=========================  ======  ============  =======  =====================================
experiment                 phases  grid          budget   test object
=========================  ======  ============  =======  =====================================
2-phase-128                2       128 x 128     15 %     nanoporous gold, 256 px region, 2x down
2-phase-1024               2       1024 x 1024   5 %      nanoporous gold, 512 px region, 2x up
3-phase-256                3       256 x 256     20 %     glass/sand/bubbles, 512 px region, 2x down
3-phase-1024               3       1024 x 1024   5 %      glass/sand/bubbles, 512 px region, 2x up
=========================  ======  ============  =======  =====================================

The paper's Pb-Sn and CaO/LaO/Si/C images are not public; the bundled micrographs stand
in for them (2 and 3 phases), with the paper's grids and budgets.  The ERD model is
trained on regions of the same micrograph that do not overlap the test region; the
classifier on other noisy realisations of the reference spectra.  The 1024² objects are
the micrograph interpolated 2x before segmenting, i.e. the same object at a higher
resolution (the paper made its 128² object by down-sampling a 1024² one).

A fifth run checks the learned stopping rule: the 2-phase 128² experiment with a target
TD of 0.01 and no fixed budget (up to 40 %).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ._validation import InputError
from .pipeline import RunSettings, prepare_experiment, run_experiment
from .spectra import sample_data_dir

__all__ = ["EXPERIMENTS", "run_reproduce", "write_table", "check_experiment_names"]

GOLD = "sem_nanoporous_gold_inlens.png"
GLASS = "sem_glass_sand_bubbles_bse.png"

#: name -> (micrograph, phases, settings)
EXPERIMENTS = {
    "2-phase-128": (GOLD, 2, RunSettings(size=128, downsample=2, fraction=0.15, baseline_fractions=(0.10,))),
    "2-phase-1024": (GOLD, 2, RunSettings(size=1024, downsample=1, upsample=2, fraction=0.05,
                                          max_train_regions=1)),
    "3-phase-256": (GLASS, 3, RunSettings(size=256, downsample=2, fraction=0.20, max_train_regions=1)),
    "3-phase-1024": (GLASS, 3, RunSettings(size=1024, downsample=1, upsample=2, fraction=0.05,
                                           max_train_regions=1)),
}

COLUMNS = ("name", "grid", "phases", "fraction", "td_slads", "td_random", "td_halton",
           "misclassification", "c", "seconds")


def _td_at(curve, fraction: float) -> float:
    c = np.asarray(curve, dtype=float)
    i = int(np.searchsorted(c[:, 0], fraction - 1e-12))
    return float(c[min(i, len(c) - 1), 1])


def check_experiment_names(names) -> None:
    """Check ``--only`` names before anything runs.

    Raises
    ------
    InputError
        A name that is neither an experiment of :data:`EXPERIMENTS` nor "stopping-rule".
    """
    known = [*EXPERIMENTS, "stopping-rule"]
    bad = [n for n in (names or []) if n not in known]
    if bad:
        raise InputError(f"unknown experiment(s) {bad}; known: {' '.join(known)}")


def run_reproduce(out_dir, *, names=None, seed: int = 0, erd: str = "linear", on_message=None,
                  log=print) -> dict:
    """Run the experiments (all, or ``names``) and the stopping-rule check; write
    ``table.md``, ``table.json`` and one folder per experiment (with its TD plot).

    Returns
    -------
    dict with ``rows`` (one dict per experiment, keys :data:`COLUMNS` and more) and
    ``stopping`` (the stopping-rule check).

    Raises
    ------
    InputError
        An unknown experiment name (before anything runs).
    """
    from .engine import Engine

    check_experiment_names(names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names or EXPERIMENTS) + ([] if names else ["stopping-rule"])
    rows, stopping = [], None
    with Engine() as eng:
        for name in names:
            t0 = time.perf_counter()
            if name == "stopping-rule":
                image, L, s = EXPERIMENTS["2-phase-128"]
                s = replace(s, fraction=0.40, stop_td=0.01, baseline_fractions=())
            elif name in EXPERIMENTS:
                image, L, s = EXPERIMENTS[name]
            else:  # pragma: no cover - checked above
                raise InputError(f"unknown experiment {name!r}")
            s = replace(s, seed=seed, erd=erd)
            log(f"[{name}] {L} phases, {s.size}x{s.size}, budget {100 * s.fraction:g} % ...")
            exp = prepare_experiment(sample_data_dir() / image, L, s)
            res = run_experiment(exp, out / name, engine=eng, on_message=on_message)
            if name == "stopping-rule":
                ref = next((r for r in rows if r["name"] == "2-phase-128"), None)
                curve = np.asarray(ref["td_curve"] if ref else res["td_curve"], dtype=float)
                reach = curve[curve[:, 1] <= 0.01, 0]
                stopping = {"target_td": 0.01, "stop_fraction": res["sampling_fraction"],
                            "stop_reason": res["stop_reason"], "td_at_stop": res["td"],
                            "threshold": (res.get("erd_model", {}).get("stopping") or {}).get("threshold"),
                            "first_fraction_td_below_target": float(reach[0]) if reach.size else None}
                if reach.size:
                    stopping["difference_points"] = 100 * (stopping["stop_fraction"] - float(reach[0]))
                log(f"[{name}] stopped at {100 * res['sampling_fraction']:.2f} % ({res['stop_reason']}); "
                    f"TD first <= 0.01 at {stopping['first_fraction_td_below_target']}")
                continue
            row = {"name": name, "grid": res["grid"], "phases": res["phases"],
                   "fraction": res["sampling_fraction"], "td_slads": res["td"], "td_random": res["td_random"],
                   "td_halton": res["td_halton"], "misclassification": res["misclassification"],
                   "c": res["c"], "seconds": time.perf_counter() - t0,
                   "misclassification_run": res.get("misclassification_run"),
                   "td_curve": res["td_curve"], "td_curve_random": res.get("td_curve_random"),
                   "td_curve_halton": res.get("td_curve_halton")}
            for f in s.baseline_fractions:
                row[f"td_slads_at_{f:g}"] = _td_at(res["td_curve"], f)
                row[f"td_halton_at_{f:g}"] = _td_at(res["td_curve_halton"], f)
                row[f"td_random_at_{f:g}"] = _td_at(res["td_curve_random"], f)
            rows.append(row)
            log(f"[{name}] TD SLADS {row['td_slads']:.5f}, random {row['td_random']:.5f}, "
                f"Halton {row['td_halton']:.5f} ({row['seconds']:.0f} s)")
            write_table(rows, stopping, out)
    write_table(rows, stopping, out)
    plot_comparison(rows, out / "td_curves.png")
    return {"rows": rows, "stopping": stopping}


def write_table(rows, stopping, out: Path) -> None:
    """``table.json`` (rows without the curves, plus the stopping-rule check) and
    ``table.md``."""
    slim = [{k: v for k, v in r.items() if not k.startswith("td_curve")} for r in rows]
    (out / "table.json").write_text(json.dumps({"rows": slim, "stopping_rule": stopping}, indent=1))
    lines = ["| experiment | grid | phases | sampled | TD SLADS | TD random | TD Halton | misclassification | c | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in slim:
        g = r["grid"]
        lines.append(f"| {r['name']} | {g[0]}×{g[1]} | {r['phases']} | {100 * r['fraction']:.1f} % | "
                     f"{r['td_slads']:.5f} | {r['td_random']:.5f} | {r['td_halton']:.5f} | "
                     f"{r['misclassification']:.4f} | {r['c']:g} | {r['seconds']:.0f} |")
    extra = [r for r in slim if "td_slads_at_0.1" in r]
    if extra:
        lines += ["", "At 10 % sampled:", "", "| experiment | TD SLADS | TD random | TD Halton | SLADS / Halton |",
                  "|---|---|---|---|---|"]
        for r in extra:
            ratio = r["td_slads_at_0.1"] / r["td_halton_at_0.1"] if r["td_halton_at_0.1"] else float("nan")
            lines.append(f"| {r['name']} | {r['td_slads_at_0.1']:.5f} | {r['td_random_at_0.1']:.5f} | "
                         f"{r['td_halton_at_0.1']:.5f} | {ratio:.3f} |")
    if stopping:
        lines += ["", f"Stopping rule (target TD {stopping['target_td']}, 2-phase 128²): stopped at "
                      f"{100 * stopping['stop_fraction']:.2f} % ({stopping['stop_reason']}, TD {stopping['td_at_stop']:.5f}); "
                      f"the TD curve first reached {stopping['target_td']} at "
                      + (f"{100 * stopping['first_fraction_td_below_target']:.2f} %" if
                         stopping["first_fraction_td_below_target"] is not None else "never")
                      + (f" (difference {stopping['difference_points']:+.2f} percentage points)."
                         if "difference_points" in stopping else ".")]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot_comparison(rows, path) -> None:
    """TD versus sampling fraction, SLADS against both static scans, one panel per experiment
    (a bare Figure with the Agg canvas: the process-wide matplotlib backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        return
    fig = Figure(figsize=(4.2 * len(rows), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(rows), squeeze=False)
    for ax, r in zip(axes[0], rows):
        c = np.asarray(r["td_curve"], dtype=float)
        ax.plot(100 * c[:, 0], c[:, 1], lw=2, label="SLADS")
        for key, style, lab in (("td_curve_random", "--", "static random"), ("td_curve_halton", ":", "static Halton")):
            if r.get(key):
                b = np.asarray(r[key], dtype=float)
                ax.plot(100 * b[:, 0], b[:, 1], style, marker="o", ms=3, label=lab)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("sampling fraction (%)")
        ax.set_title(f"{r['name']}: TD {r['td_slads']:.4f}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("TD")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path)
