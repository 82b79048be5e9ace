"""Benchmark of the SLADS sampler at microscope scale (issue: exact local updates).

For each grid size N (two-phase label images, ``skimage.data.binary_blobs`` with
features that scale with N, as the same object imaged at a higher resolution):

* ``ms_per_point``: CPU milliseconds per selected point in pointwise mode, from 1 % to
  5 % sampled (reconstruction + features + ERD update + argmax; true labels, so no
  classification), measured in this process with ``time.process_time``;
* ``ms_per_point_batch64``: the same with top-64 batches;
* ``seconds_to_5pct`` / ``seconds_to_10pct``: wall seconds of a whole run in the engine
  process on a simulated EDS specimen (spectra made on demand, NNR + CNN classification
  of every spectrum in batches of 64), from the start of the job (initial 1 % scan
  included) until 5 % / 10 % are measured;
* ``peak_rss_mb``: peak resident set size (VmHWM) of the engine process that ran the
  end-to-end run of that size (a fresh engine per size: TensorFlow, classifier,
  specimen, sampler), in MB;
* ``td_5pct``: TD of the engine run at 5 %.

The ERD model and the classifier are trained once at the start (not timed).

Usage::

    python benchmarks/bench_sampling.py [--sizes 128 256 512 1024] [--json PATH] [--erd linear|rich]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np


def blobs(n: int, seed: int) -> np.ndarray:
    from skimage.data import binary_blobs

    return binary_blobs(n, blob_size_fraction=0.05, volume_fraction=0.5, rng=seed).astype(np.int16) + 1


def sampler_ms_per_point(truth, erd, batch: int, stop: float = 0.05) -> tuple[float, float]:
    from napari_slads_eds import Sampler, initial_positions

    H, W = truth.shape
    s = Sampler((H, W), 2, erd, truth=truth)
    init = initial_positions((H, W), 0.01, "halton", 0)
    s.update(init, truth[init[:, 0], init[:, 1]])
    n0 = s.n_measured
    target = int(round(stop * H * W))
    t0 = time.process_time()
    while s.n_measured < target:
        p = s.select(min(batch, target - s.n_measured))
        s.update(p, truth[p[:, 0], p[:, 1]])
    dt = time.process_time() - t0
    return 1000 * dt / (s.n_measured - n0), s.td


def _vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a running process, from /proc/PID/status (Linux)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--no-engine", action="store_true", help="skip the end-to-end engine runs")
    ap.add_argument("--erd", choices=("linear", "rich"), default="linear",
                    help="ERD model: the paper's 6 SLADS features or the 11 rich ones (issue 12)")
    args = ap.parse_args(argv)

    from napari_slads_eds import Engine, SimulatedSpecimen
    from napari_slads_eds.erd import train_erd
    from napari_slads_eds.pipeline import RunSettings, _references

    tmp = tempfile.mkdtemp(prefix="bench_sampling_")
    print("training the ERD model on 128x128 blob images ...", file=sys.stderr)
    erd, rep = train_erd([blobs(128, s) for s in (101, 102)], 2, c_search_fraction=0.1, seed=0,
                         regressor=args.erd)
    erd_path = os.path.join(tmp, "erd.npz")
    erd.save(erd_path)
    train_refs, test_refs = _references(2, None, RunSettings())
    clf_path = os.path.join(tmp, "classifier")
    if not args.no_engine:
        print("training the classifier in the engine ...", file=sys.stderr)
        with Engine() as eng:
            eng.run("train_classifier", references=train_refs, out_dir=clf_path, seed=0)

    out = {}
    for n in args.sizes:
        truth = blobs(n, 1)
        ms1, _ = sampler_ms_per_point(truth, erd, 1)
        ms64, _ = sampler_ms_per_point(truth, erd, 64)
        row = {"ms_per_point": ms1, "ms_per_point_batch64": ms64}
        if not args.no_engine:
            eng = Engine()
            spec = SimulatedSpecimen(truth, test_refs, ill_fraction=0.01, seed=0)
            marks = {}
            t0 = time.perf_counter()
            job = eng.submit("run_slads", specimen=spec, classifier=clf_path, erd_model=erd_path,
                             target_fraction=0.10, batch=64, batch_mode="top", baselines=(),
                             send_maps=False, frame_interval=0.0)
            for msg in job.messages():
                if msg["type"] == "frame":
                    for f in (0.05, 0.10):
                        if f not in marks and msg["fraction"] >= f - 0.5 / (n * n):
                            marks[f] = (time.perf_counter() - t0, msg["td"])
            res = job.result
            row["peak_rss_mb"] = _vm_hwm_mb(eng.pid)
            eng.close()
            row["seconds_to_5pct"] = marks[0.05][0]
            row["seconds_to_10pct"] = marks[0.10][0]
            row["td_5pct"] = marks[0.05][1]
            row["td_10pct"] = res["td"]
            row["misclassification_run"] = res["misclassification_run"]
        out[str(n)] = row
        print(f"{n:5d}²  " + "  ".join(f"{k}={v:.4g}" for k, v in row.items()), file=sys.stderr)
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)",
          file=sys.stderr)

    cols = ["ms_per_point", "ms_per_point_batch64", "seconds_to_5pct", "seconds_to_10pct", "peak_rss_mb", "td_5pct"]
    print("\n| N² | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for n, row in out.items():
        print(f"| {n}² | " + " | ".join(f"{row[c]:.4g}" if c in row else "–" for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
