"""Does SLADS save dose on real EDS maps?  Replay on every real spectrum image available.

For each map, seed (0-4 by default) and dwell time (the acquired one and 4x shorter, by
binomial thinning), the replay (:mod:`napari_slads_eds.replay`) splits the counts into a
training share (20 %) and a measurement share, takes the ground truth from the full-dwell
spectra (clustering with spatial smoothing, the same for every strategy), trains the
classifier on the training share and the ERD model on label images that are not the map's
ground truth, then runs SLADS to the largest fraction and the static random and Halton
scans through the same classifier, decisions and reconstruction.  The TD of SLADS at a
smaller fraction is that of the run stopped there (same final decisions as the static
scans).  "raster" is a full raster of every pixel at the same dwell, through the same
classifier and decisions: the best any scan of that dwell can do.

Set-ups (--configs):
  paper            NNR + CNN classifier, hard labels, ERD trained on the bundled micrograph
  poisson-hard     Poisson likelihood classifier, hard labels, ERD on the micrograph
  poisson-soft     Poisson classifier, spatial decisions + probability votes, ERD on the micrograph
  poisson-soft-ei  as poisson-soft, ERD trained on the map's own electron (BSE) image (default)
  poisson-soft-ei-u3  as poisson-soft-ei, ERD raised 3x where the votes are split (not by default)

Real maps: the Bruker P45 map of ../shared/data (GPL, not bundled; found next to the
repository or through $SLADS_EDS_SHARED_DATA) and any files given with --maps.  No package
installed here ships another real spectrum image (RosettaSciIO fetches its test files from
the network, exspy ships single spectra), so the table has what it has.

    python benchmarks/bench_real_maps.py                       # the whole table (~20 min on 2 cores)
    python benchmarks/bench_real_maps.py --seeds 0 --configs poisson-soft-ei   # a quick look

Writes docs/real_maps.json (every run) and docs/images/real_maps_td.png (TD versus
fraction); prints a Markdown table for docs/real_maps.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "paper": dict(classifier_kind="cnn", uncertainty=None, erd_training="micrograph"),
    "poisson-hard": dict(classifier_kind="poisson", uncertainty=None, erd_training="micrograph"),
    "poisson-soft": dict(classifier_kind="poisson", uncertainty="soft", erd_training="micrograph"),
    "poisson-soft-ei": dict(classifier_kind="poisson", uncertainty="soft", erd_training="electron-image"),
    "poisson-soft-ei-u3": dict(classifier_kind="poisson", uncertainty="soft", erd_training="electron-image",
                               erd_uncertainty_weight=3.0),
}


def shared_maps() -> list[tuple[str, Path, int]]:
    """(name, path, phases) of the real maps found."""
    cands = [Path(os.environ["SLADS_EDS_SHARED_DATA"])] if os.environ.get("SLADS_EDS_SHARED_DATA") else []
    cands += [ROOT.parent / "shared" / "data", ROOT / ".." / ".." / "shared" / "data"]
    for c in cands:
        p = c / "eds_map_bruker_P45.npz"
        if p.is_file():
            return [("P45 (Bruker, 75x100, 2 phases)", p, 2)]
    return []


def at(curve, f, P):
    """TD of a [fraction, TD] curve at the point nearest fraction f."""
    c = np.asarray(curve, dtype=np.float64).reshape(-1, 2)
    return float(c[np.argmin(np.abs(c[:, 0] - f)), 1])


def slads_td_at(result, f, H, W, k, soft):
    """TD of the SLADS run stopped at fraction f (the run's final decisions for soft)."""
    n = int(round(f * H * W))
    if not soft:
        return at(result["td_curve"], n / (H * W), H * W)
    from napari_slads_eds.uncertainty import decide_static, reconstruct_soft

    pos, post = result["positions"][:n], result["posteriors"][:n]
    lab, pp = decide_static((H, W), pos, post, k, vote_prob=result["decided_probabilities"][:n])
    rec = reconstruct_soft((H, W), pos, lab, pp, k)
    return float(np.mean(rec != result["_truth"]))


def raster_td(exp, clf_path, soft, k):
    from napari_slads_eds.likelihood import classifier_kind, load_classifier
    from napari_slads_eds.jobs import posterior_of
    from napari_slads_eds.uncertainty import decide_static

    if classifier_kind(clf_path) != "poisson":
        return float("nan")      # the CNN runs only in the engine; its raster is not computed here
    clf = load_classifier(clf_path)
    H, W = exp.truth.shape
    allp = np.stack(np.divmod(np.arange(H * W), W), axis=1)
    post = posterior_of(clf)(exp.specimen.measure(allp))
    if soft:
        lab, _ = decide_static((H, W), allp, post, k)
    else:
        lab = clf.predict(exp.specimen.measure(allp))
    return float(np.mean(lab.reshape(H, W) != exp.truth))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--maps", nargs="*", default=[], help="more maps as PATH:PHASES")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--dwells", type=float, nargs="+", default=[1.0, 0.25],
                    help="dwell as a fraction of the full measurement dwell (1 - training share)")
    ap.add_argument("--configs", nargs="+", default=[c for c in CONFIGS if not c.endswith("-u3")],
                    choices=list(CONFIGS))
    ap.add_argument("--append", action="store_true", help="add the rows to an existing --out file")
    ap.add_argument("--out", default=str(ROOT / "docs" / "real_maps.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "images" / "real_maps_td.png"))
    a = ap.parse_args(argv)

    from napari_slads_eds.engine import Engine
    from napari_slads_eds.replay import ReplaySettings, prepare_replay

    maps = shared_maps() + [(Path(m.rsplit(":", 1)[0]).name, Path(m.rsplit(":", 1)[0]), int(m.rsplit(":", 1)[1]))
                            for m in a.maps]
    if not maps:
        print("bench_real_maps: no real map found (set SLADS_EDS_SHARED_DATA)", file=sys.stderr)
        return 1
    fmax = max(a.fractions)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_real_maps_"))
    eng = Engine()
    t_all = time.perf_counter()
    try:
        for name, path, L in maps:
            for seed in a.seeds:
                erd_cache, exp_cache, clf_cache = {}, {}, {}
                for dwell in a.dwells:
                    for cname in a.configs:
                        cfg = dict(CONFIGS[cname])
                        beta = cfg.pop("erd_uncertainty_weight", 0.0)
                        s = ReplaySettings(fraction=fmax, seed=seed, dwell=0.8 * dwell, **cfg)
                        key = (dwell, cfg["erd_training"])
                        if key not in exp_cache:
                            exp_cache[key] = prepare_replay(path, L, s)
                        exp = exp_cache[key]
                        exp.settings = s.check()
                        H, W = exp.truth.shape
                        ck = (dwell, cfg["classifier_kind"])
                        if ck not in clf_cache:
                            kw = {"kind": "poisson"} if cfg["classifier_kind"] == "poisson" else {}
                            clf_cache[ck] = eng.run("train_classifier", references=exp.train_references,
                                                    out_dir=str(tmp / f"clf_{seed}_{dwell}_{cfg['classifier_kind']}"),
                                                    seed=seed, noise_lambda=0.0, n_noisy=1, n_noisy_val=1, **kw)
                        clf = clf_cache[ck]
                        ek = cfg["erd_training"]
                        if ek not in erd_cache:
                            erd_cache[ek] = eng.run("train_erd", label_images=exp.erd_images, n_phases=L,
                                                    out_path=str(tmp / f"erd_{seed}_{ek}.npz"), seed=seed,
                                                    k=10, c_search_fraction=0.2)
                        erd = erd_cache[ek]
                        t0 = time.perf_counter()
                        res = eng.run("run_slads", specimen=exp.specimen, classifier=clf["path"],
                                      erd_model=erd["path"], target_fraction=fmax, seed=seed, send_maps=False,
                                      uncertainty=cfg["uncertainty"], baseline_fractions=tuple(a.fractions),
                                      **({"erd_uncertainty_weight": beta} if beta else {}))
                        res["_truth"] = exp.truth
                        soft = cfg["uncertainty"] == "soft"
                        row = {"map": name, "seed": seed, "dwell": dwell, "config": cname,
                               "counts_per_measurement": exp.source["mean_counts_per_measurement"],
                               "misclassification_validation": clf["misclassification"],
                               "misclassification_run": res["misclassification_run"],
                               "c": res["c"], "seconds": time.perf_counter() - t0,
                               "raster": raster_td(exp, clf["path"], soft, 10)}
                        for f in a.fractions:
                            row[f"slads@{f:g}"] = slads_td_at(res, f, H, W, 10, soft)
                            row[f"random@{f:g}"] = at(res["td_curve_random"], f, H * W)
                            row[f"halton@{f:g}"] = at(res["td_curve_halton"], f, H * W)
                        rows.append(row)
                        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                              flush=True)
    finally:
        eng.close()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    if a.append and Path(a.out).is_file():
        rows = json.loads(Path(a.out).read_text())["rows"] + rows
    Path(a.out).write_text(json.dumps({"fractions": a.fractions, "rows": rows,
                                       "seconds": time.perf_counter() - t_all}, indent=1))
    print(markdown(rows, a.fractions))
    plot(rows, a.fractions, a.plot)
    return 0


def _med(rows, key):
    v = np.array([r[key] for r in rows], dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return "–"
    return f"{np.median(v):.4f} ({v.min():.4f}–{v.max():.4f})" if v.size > 1 else f"{v[0]:.4f}"


def markdown(rows, fractions) -> str:
    out = ["| map | dwell | set-up | sampled | SLADS | random | Halton | SLADS / Halton | raster (100 %) "
           "| misclass. val / run |", "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["map"], r["dwell"], r["config"]) for r in rows},
                  key=lambda t: (t[0], -t[1], list(CONFIGS).index(t[2])))
    for m, d, c in keys:
        rs = [r for r in rows if (r["map"], r["dwell"], r["config"]) == (m, d, c)]
        for f in fractions:
            s = np.median([r[f"slads@{f:g}"] for r in rs])
            h = np.median([r[f"halton@{f:g}"] for r in rs])
            mis = f"{np.median([r['misclassification_validation'] for r in rs]):.3f} / " \
                  f"{np.median([r['misclassification_run'] for r in rs]):.3f}"
            out.append(f"| {m} | {'full' if d == 1 else f'{d:g}×'} | {c} | {100 * f:g} % | {_med(rs, f'slads@{f:g}')} "
                       f"| {_med(rs, f'random@{f:g}')} | {_med(rs, f'halton@{f:g}')} | {s / h:.2f} "
                       f"| {_med(rs, 'raster')} | {mis} |")
    return "\n".join(out)


def plot(rows, fractions, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = sorted({r["map"] for r in rows})
    dwells = sorted({r["dwell"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(len(maps), len(dwells), figsize=(5.5 * len(dwells), 4 * len(maps)), squeeze=False)
    for i, m in enumerate(maps):
        for j, d in enumerate(dwells):
            ax = axes[i, j]
            for c in CONFIGS:
                rs = [r for r in rows if r["map"] == m and r["dwell"] == d and r["config"] == c]
                if not rs:
                    continue
                y = [np.median([r[f"slads@{f:g}"] for r in rs]) for f in fractions]
                ax.plot(np.array(fractions) * 100, y, "o-", label=f"SLADS, {c}")
            rs = [r for r in rows if r["map"] == m and r["dwell"] == d and r["config"] == "poisson-soft-ei"] or \
                 [r for r in rows if r["map"] == m and r["dwell"] == d]
            for b, st in (("random", "s--"), ("halton", "^--")):
                y = [np.median([r[f"{b}@{f:g}"] for r in rs]) for f in fractions]
                ax.plot(np.array(fractions) * 100, y, st, color="grey" if b == "random" else "black",
                        label=f"{b} ({rs[0]['config']})")
            rast = np.nanmedian([r["raster"] for r in rs])
            if np.isfinite(rast):
                ax.axhline(rast, color="green", ls=":", label="full raster, same dwell")
            ax.set_title(f"{m}, {'full' if d == 1 else f'{d:g}×'} dwell")
            ax.set_xlabel("sampled (%)")
            ax.set_ylabel("TD (median over seeds)")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
