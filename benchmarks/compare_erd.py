"""ERD variants on paper conditions (issue 12), against the static scans and the oracle.

Test objects: the WHOLE bundled micrographs segmented and down-sampled to the grid
(no crop), with true labels as measurements (no classifier, no ill-spectra):

* ``gold-128``: nanoporous gold, 2 phases, 8x down (86 x 128); ERD trained on the glass
  micrograph segmented into 2 phases;
* ``glass2-128``: the glass micrograph segmented into 2 phases, 8x down (110 x 128);
  ERD trained on the gold micrograph;
* ``glass3-256``: the glass micrograph, 3 phases, 4x down (221 x 256); ERD trained on the
  gold micrograph.

For each, TD (eq. 19) at 5/10/15/20 % sampled of: static random and Halton scans,
SLADS (1 % Halton start, one point per step) with each ERD variant, and the oracle
(the same loop with the true RD, eqs. 7-9 on the true error map, at the c the linear
ERD chose).  ERD variants: ``linear`` (the paper's), ``rich`` (:func:`rich_features`),
each trained on the other micrograph at the test's scale only (``single``) or at the
test's scale, half and twice it (``multi``); c is chosen by the area under the TD curve
of a simulated run on the training map at the test's scale.

Usage::

    python benchmarks/compare_erd.py [--only gold-128 ...] [--variants linear-single ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

FRACTIONS = (0.05, 0.10, 0.15, 0.20)
GOLD = "sem_nanoporous_gold_inlens.png"
GLASS = "sem_glass_sand_bubbles_bse.png"
#: name -> (test image, phases, down-sampling, training image, training phases)
CASES = {"gold-128": (GOLD, 2, 8, GLASS, 2), "glass2-128": (GLASS, 2, 8, GOLD, 2),
         "glass3-256": (GLASS, 3, 4, GOLD, 2)}
VARIANTS = ("linear-single", "rich-single", "linear-multi", "rich-multi")


def whole(name: str, n_phases: int, factor: int) -> np.ndarray:
    from napari_slads_eds.segmentation import majority_downsample, read_micrograph, segment_phases
    from napari_slads_eds.spectra import sample_data_dir

    lab = segment_phases(read_micrograph(sample_data_dir() / name), n_phases, denoise_size=5)
    return majority_downsample(lab, factor) if factor > 1 else lab


def td_at(fr, td, x: float) -> float:
    return float(td[min(len(td) - 1, int(np.searchsorted(fr, x - 1e-12)))])


def static_td(truth, n_phases: int, kind: str) -> list:
    from napari_slads_eds import reconstruct
    from napari_slads_eds.metrics import total_distortion
    from napari_slads_eds.scan_orders import halton_order, random_order

    H, W = truth.shape
    out = []
    for x in FRACTIONS:
        n = int(round(x * H * W))
        p = halton_order(truth.shape, n, 0) if kind == "halton" else random_order(truth.shape, 0)[:n]
        out.append(total_distortion(truth, reconstruct(truth.shape, p, truth[p[:, 0], p[:, 1]], n_phases)))
    return out


def main(argv=None) -> int:
    from napari_slads_eds.erd import simulate_td_curve, train_erd
    from napari_slads_eds.oracle import oracle_td_curve

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=tuple(CASES), default=list(CASES))
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--no-oracle", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out = {}
    for name in args.only:
        img, L, f, timg, tL = CASES[name]
        test = whole(img, L, f)
        row = {"grid": list(test.shape), "halton": static_td(test, L, "halton"),
               "random": static_td(test, L, "random")}
        c_linear = None
        for v in args.variants:
            reg, scales = v.split("-")
            factors = [f] if scales == "single" else [f, max(1, f // 2), 2 * f]
            train = [whole(timg, tL, g) for g in dict.fromkeys(factors)]
            t0 = time.perf_counter()
            model, rep = train_erd(train, L, c_search_fraction=0.2, regressor=reg, seed=0)
            fr, td = simulate_td_curve(test, L, model, stop_fraction=max(FRACTIONS), batch=1)
            row[v] = [td_at(fr, td, x) for x in FRACTIONS]
            row[f"{v}_c"] = rep["c"]
            row[f"{v}_seconds"] = time.perf_counter() - t0
            if reg == "linear" and c_linear is None:
                c_linear = rep["c"]
            print(f"{name} {v}: c {rep['c']:g}, TD {np.round(row[v], 4).tolist()}", file=sys.stderr, flush=True)
        if not args.no_oracle:
            c = c_linear or 4.0
            fr, td = oracle_td_curve(test, L, c=c, stop_fraction=max(FRACTIONS))
            row["oracle"] = [td_at(fr, td, x) for x in FRACTIONS]
            row["oracle_c"] = c
        out[name] = row
    cols = ["random", "halton", *args.variants] + ([] if args.no_oracle else ["oracle"])
    for name, row in out.items():
        print(f"\n{name} ({row['grid'][0]}x{row['grid'][1]}), TD at " + ", ".join(f"{100 * x:g} %" for x in FRACTIONS))
        print("| scan | " + " | ".join(f"{100 * x:g} %" for x in FRACTIONS) + " |")
        print("|---|" + "---|" * len(FRACTIONS))
        for c in cols:
            print(f"| {c} | " + " | ".join(f"{t:.4f}" for t in row[c]) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
