"""``slads-eds reproduce``: the paper's four experiment kinds on the bundled micrographs,
against static random and low-discrepancy (Halton) scans at the same budget and the
oracle (greedy sampling with the true RD, :mod:`napari_slads_eds.oracle`).

Paper conditions (the default): each test object is the WHOLE micrograph down-sampled to
the grid (majority vote), as the paper made its 128² object from the whole 1024² image;
the grid keeps the micrograph's aspect ratio, its long side is the grid size.

=============  ======  =====================  =======  ==========================================
experiment     phases  grid                   budget   test object (whole micrograph)
=============  ======  =====================  =======  ==========================================
2-phase-128    2       86 x 128               15 %     nanoporous gold, 8x down
2-phase-1024   2       691 x 1024             5 %      nanoporous gold, native pixels
3-phase-256    3       221 x 256              20 %     glass/sand/bubbles, 4x down
3-phase-1024   3       884 x 1024             5 %      glass/sand/bubbles, native pixels
=============  ======  =====================  =======  ==========================================

The ERD model is trained on the *other* micrograph (the gold on the glass image
segmented into 2 phases, the glass on the gold image), whole, at the test's scale and at
half and twice its down-sampling (a multi-scale training database; c is searched at the
test's scale): the test micrograph is never seen in training.  The crop variant of earlier versions (a square region of a
2x down-sampled or 2x interpolated micrograph, trained on non-overlapping regions of the
same micrograph) is kept as the named experiments ``*-crop``.

A further run checks the learned stopping rule: the 2-phase-128-crop experiment with a
target TD of 0.01 and no fixed budget (up to 40 %); on paper conditions no experiment's
TD reaches 0.01 within 40 % sampled, so the check could not say where it should stop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ._validation import InputError
from .erd import ERD_CHOICES
from .oracle import oracle_td_curve
from .pipeline import Experiment, RunSettings, prepare_experiment, run_experiment
from .spectra import sample_data_dir

__all__ = ["EXPERIMENTS", "CROP_EXPERIMENTS", "WholeImage", "prepare_whole_experiment", "run_reproduce",
           "write_table", "check_experiment_names"]

GOLD = "sem_nanoporous_gold_inlens.png"
GLASS = "sem_glass_sand_bubbles_bse.png"


@dataclass(frozen=True)
class WholeImage:
    """An experiment on paper conditions: the whole ``image`` segmented into ``phases``
    and down-sampled by ``settings.downsample``; the ERD trained on the whole
    ``train_image`` segmented into ``train_phases``, down-sampled by each factor of
    ``train_scales`` times ``settings.downsample`` (a multi-scale training database; the
    first scale, the test's, is the c-search image)."""

    image: str
    phases: int
    settings: RunSettings
    train_image: str
    train_phases: int
    train_scales: tuple = (1.0, 0.5, 2.0)


#: name -> WholeImage (paper conditions, the default experiments)
EXPERIMENTS = {
    "2-phase-128": WholeImage(GOLD, 2, RunSettings(size=128, downsample=8, fraction=0.15,
                                                   baseline_fractions=(0.05, 0.10)), GLASS, 2),
    "2-phase-1024": WholeImage(GOLD, 2, RunSettings(size=1024, downsample=1, fraction=0.05), GLASS, 2),
    "3-phase-256": WholeImage(GLASS, 3, RunSettings(size=256, downsample=4, fraction=0.20,
                                                    baseline_fractions=(0.05, 0.10, 0.15)), GOLD, 2),
    "3-phase-1024": WholeImage(GLASS, 3, RunSettings(size=1024, downsample=1, fraction=0.05), GOLD, 2),
}

#: name -> (micrograph, phases, settings): the crop variant (a square region, trained on
#: other regions of the same micrograph)
CROP_EXPERIMENTS = {
    "2-phase-128-crop": (GOLD, 2, RunSettings(size=128, downsample=2, fraction=0.15, baseline_fractions=(0.10,))),
    "2-phase-1024-crop": (GOLD, 2, RunSettings(size=1024, downsample=1, upsample=2, fraction=0.05,
                                               max_train_regions=1)),
    "3-phase-256-crop": (GLASS, 3, RunSettings(size=256, downsample=2, fraction=0.20, max_train_regions=1)),
    "3-phase-1024-crop": (GLASS, 3, RunSettings(size=1024, downsample=1, upsample=2, fraction=0.05,
                                                max_train_regions=1)),
}

#: the experiment whose conditions the stopping-rule check uses
STOPPING_EXPERIMENT = "2-phase-128-crop"

COLUMNS = ("name", "grid", "phases", "fraction", "td_slads", "td_oracle", "td_random", "td_halton",
           "misclassification", "c", "seconds")


def _whole_map(path, n_phases: int, s: RunSettings, factor: int | None = None) -> np.ndarray:
    from .segmentation import majority_downsample, read_micrograph, segment_phases

    f = s.downsample if factor is None else int(factor)
    labels = segment_phases(read_micrograph(path, crop_bottom=s.crop_bottom), n_phases, denoise_size=s.denoise)
    return majority_downsample(labels, f) if f > 1 else labels


def _train_factors(spec: WholeImage, s: RunSettings) -> list:
    """Distinct integer down-sampling factors >= 1 of the training maps, the test's first."""
    out = []
    for x in spec.train_scales:
        f = int(round(float(x) * s.downsample))
        if f >= 1 and f not in out:
            out.append(f)
    return out


def prepare_whole_experiment(spec: WholeImage, settings: RunSettings | None = None) -> Experiment:
    """The experiment of ``spec`` on paper conditions: the whole micrograph, segmented
    and down-sampled to the grid (no crop), and the ERD training map from another
    micrograph.

    Parameters
    ----------
    spec : WholeImage
    settings : RunSettings, optional
        Replaces ``spec.settings`` (e.g. with another seed or ERD).

    Returns
    -------
    Experiment
        ``test_map`` (H, W) int16 labels 1..L with H, W = the micrograph's shape divided
        by ``downsample``; ``train_maps`` the maps of ``spec.train_image`` at each
        training scale (the test's scale first).

    Raises
    ------
    InputError
        Unreadable micrograph or bad settings.
    """
    from .pipeline import _references
    from .specimen import SimulatedSpecimen

    s = (settings or spec.settings).check()
    L = int(spec.phases)
    train_refs, test_refs = _references(L, None, s)
    d = sample_data_dir()
    test_map = _whole_map(d / spec.image, L, s)
    factors = _train_factors(spec, s)
    train_maps = [_whole_map(d / spec.train_image, spec.train_phases, s, f) for f in factors]
    specimen = SimulatedSpecimen(test_map, test_refs, ill_fraction=s.ill_fraction, noise_lambda=s.noise_lambda,
                                 ill_lambda=s.ill_lambda, seed=s.seed)
    source = {"image": str(d / spec.image), "conditions": "whole micrograph down-sampled to the grid",
              "downsample": s.downsample, "grid": list(test_map.shape),
              "train": [str(d / spec.train_image)], "train_phases": spec.train_phases,
              "train_downsample": factors, "train_shapes": [list(t.shape) for t in train_maps]}
    return Experiment(s, L, test_map, train_maps, specimen, train_refs, source)


def _td_at(curve, fraction: float):
    """TD of a curve [(fraction, TD), ...] at the first point reaching ``fraction``; None
    when the curve stops before it (more than 1e-4 short)."""
    c = np.asarray(curve, dtype=float)
    if fraction > c[-1, 0] + 1e-4:
        return None
    i = int(np.searchsorted(c[:, 0], fraction - 1e-12))
    return float(c[min(i, len(c) - 1), 1])


def check_experiment_names(names) -> None:
    """Check ``--only`` names before anything runs.

    Raises
    ------
    InputError
        A name that is neither an experiment of :data:`EXPERIMENTS` or
        :data:`CROP_EXPERIMENTS` nor "stopping-rule".
    """
    known = [*EXPERIMENTS, *CROP_EXPERIMENTS, "stopping-rule"]
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
    names = list(names or EXPERIMENTS) + ([] if names else [STOPPING_EXPERIMENT, "stopping-rule"])
    if erd not in ERD_CHOICES:
        raise InputError(f"the ERD model must be one of {', '.join(ERD_CHOICES)}, got {erd!r}")
    rows, stopping = [], None
    with Engine() as eng:
        for name in names:
            t0 = time.perf_counter()
            if name == "stopping-rule":
                # on the crop variant: on paper conditions no experiment's TD reaches 0.01
                # within 40 % (the check needs the fraction where it does)
                image, L, s = CROP_EXPERIMENTS[STOPPING_EXPERIMENT]
                s = replace(s, fraction=0.40, stop_td=0.01, baseline_fractions=(), seed=seed, erd=erd)
                exp = prepare_experiment(sample_data_dir() / image, L, s)
            elif name in EXPERIMENTS:
                spec = EXPERIMENTS[name]
                s = replace(spec.settings, seed=seed, erd=erd)
                exp = prepare_whole_experiment(spec, s)
            elif name in CROP_EXPERIMENTS:
                image, L, s = CROP_EXPERIMENTS[name]
                s = replace(s, seed=seed, erd=erd)
                exp = prepare_experiment(sample_data_dir() / image, L, s)
            else:  # pragma: no cover - checked above
                raise InputError(f"unknown experiment {name!r}")
            g = exp.test_map.shape
            log(f"[{name}] {exp.n_phases} phases, {g[0]}x{g[1]}, budget {100 * s.fraction:g} % ...")
            res = run_experiment(exp, out / name, engine=eng, on_message=on_message)
            if name == "stopping-rule":
                ref = next((r for r in rows if r["name"] == STOPPING_EXPERIMENT), None)
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
            t1 = time.perf_counter()
            ofr, otd = oracle_td_curve(exp.test_map, exp.n_phases, c=res["c"], stop_fraction=s.fraction,
                                       measured_labels=exp.specimen.labels, initial_fraction=s.initial_fraction,
                                       initial_pattern=s.initial_pattern, batch=s.batch, k=s.k, seed=s.seed)
            oracle_curve = np.stack([ofr, otd], axis=1).tolist()
            row = {"name": name, "grid": res["grid"], "phases": res["phases"],
                   "fraction": res["sampling_fraction"], "td_slads": res["td"], "td_oracle": float(otd[-1]),
                   "td_random": res["td_random"],
                   "td_halton": res["td_halton"], "misclassification": res["misclassification"],
                   "c": res["c"], "seconds": t1 - t0, "seconds_oracle": time.perf_counter() - t1,
                   "erd": erd, "conditions": "crop" if name in CROP_EXPERIMENTS else "whole",
                   "misclassification_run": res.get("misclassification_run"),
                   "td_curve": res["td_curve"], "td_curve_random": res.get("td_curve_random"),
                   "td_curve_halton": res.get("td_curve_halton"), "td_curve_oracle": oracle_curve}
            for f in s.baseline_fractions:
                row[f"td_slads_at_{f:g}"] = _td_at(res["td_curve"], f)
                row[f"td_oracle_at_{f:g}"] = _td_at(oracle_curve, f)
                row[f"td_halton_at_{f:g}"] = _td_at(res["td_curve_halton"], f)
                row[f"td_random_at_{f:g}"] = _td_at(res["td_curve_random"], f)
            rows.append(row)
            log(f"[{name}] TD SLADS {row['td_slads']:.5f}, oracle {row['td_oracle']:.5f}, random {row['td_random']:.5f}, "
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
    lines = ["| experiment | grid | phases | sampled | TD SLADS | TD oracle | TD random | TD Halton | "
             "misclassification | c | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in slim:
        g = r["grid"]
        lines.append(f"| {r['name']} | {g[0]}×{g[1]} | {r['phases']} | {100 * r['fraction']:.1f} % | "
                     f"{r['td_slads']:.5f} | {r.get('td_oracle', float('nan')):.5f} | {r['td_random']:.5f} | "
                     f"{r['td_halton']:.5f} | {r['misclassification']:.4f} | {r['c']:g} | {r['seconds']:.0f} |")
    for r in slim:
        fr = sorted(float(k[len("td_slads_at_"):]) for k in r if k.startswith("td_slads_at_"))
        if not fr:
            continue
        lines += ["", f"{r['name']}, TD by sampling fraction:", "",
                  "| sampled | TD SLADS | TD oracle | TD random | TD Halton | SLADS / oracle | SLADS / Halton |",
                  "|---|---|---|---|---|---|---|"]
        def num(v, fmt=".5f"):
            return "–" if v is None or not np.isfinite(v) else format(v, fmt)

        for f in fr:
            sl, orc, rnd, hal = (r.get(f"td_{x}_at_{f:g}") for x in ("slads", "oracle", "random", "halton"))
            lines.append(f"| {100 * f:g} % | {num(sl)} | {num(orc)} | {num(rnd)} | {num(hal)} | "
                         f"{num(sl / orc if sl is not None and orc else None, '.2f')} | "
                         f"{num(sl / hal if sl is not None and hal else None, '.3f')} |")
    if stopping:
        lines += ["", f"Stopping rule (target TD {stopping['target_td']}, {STOPPING_EXPERIMENT}): stopped at "
                      f"{100 * stopping['stop_fraction']:.2f} % ({stopping['stop_reason']}, TD {stopping['td_at_stop']:.5f}); "
                      f"the TD curve first reached {stopping['target_td']} at "
                      + (f"{100 * stopping['first_fraction_td_below_target']:.2f} %" if
                         stopping["first_fraction_td_below_target"] is not None else "never")
                      + (f" (difference {stopping['difference_points']:+.2f} percentage points)."
                         if "difference_points" in stopping else ".")]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot_comparison(rows, path) -> None:
    """TD versus sampling fraction, SLADS against the oracle and both static scans, one panel per experiment
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
        if r.get("td_curve_oracle"):
            o = np.asarray(r["td_curve_oracle"], dtype=float)
            ax.plot(100 * o[:, 0], o[:, 1], "-", lw=1, color="0.4", label="oracle (true RD)")
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
