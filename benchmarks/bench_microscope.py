"""Benchmark of the microscope seam (issue 15, "Done when").

On the run folder of ``slads-eds demo`` (bundled 2-phase micrograph, 128x128 grid,
simulated specimen, trained classifier and linear ERD model; trained here first when
``--models`` is not given), all runs to 15 % with overlap on and the same seed, in one
engine process:

1. **in-process**: ``run_slads`` on the specimen, with the static random and Halton
   baselines (TD of SLADS and of the baselines);
2. **in-process, timed**: the same without baselines: the compute time of the run
   (classification, reconstruction, ERD, selection and the simulated measurement);
3. **server**: the same run against ``slads-eds serve`` on localhost (a subprocess)
   with a dwell delay of ``--dwell`` s per spot: mask and TD must be identical to (1);
   wall time against (number of spectra x dwell) + compute time of (2), and against the
   issue's (number of batches x dwell) + compute;
4. **server killed twice**: as (3) with ``--state-dir``, the server SIGKILLed at 1/3 and
   2/3 of the budget and restarted after ``--down`` s: spectra lost (journal against the
   run's positions), spots measured twice (the server's record over its three lives),
   mask and TD against (1).

Usage::

    python benchmarks/bench_microscope.py [--models DEMO_RUN] [--dwell 0.02] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def start_server(run_dir, port, dwell, token, state_dir=None):
    import httpx

    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               SLADS_EDS_TOKEN=token)
    cmd = [sys.executable, "-m", "napari_slads_eds", "serve", "--specimen", str(run_dir), "--port", str(port),
           "--dwell-delay", str(dwell), "--quiet"]
    if state_dir:
        cmd += ["--state-dir", str(state_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def free_port():
    from napari_slads_eds.server import listen_socket

    s = listen_socket("127.0.0.1", 0)
    port = s.getsockname()[1]
    s.close()
    return port


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="a slads-eds demo run folder (default: run the demo first)")
    ap.add_argument("--dwell", type=float, default=0.02)
    ap.add_argument("--fraction", type=float, default=0.15)
    ap.add_argument("--down", type=float, default=2.0, help="seconds the killed server stays down")
    ap.add_argument("--batch", type=int, default=1, help="positions per step (default 1, pointwise)")
    ap.add_argument("--skip-kill", action="store_true", help="leave out the run with the server killed twice")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from napari_slads_eds.acquisition import read_journal
    from napari_slads_eds.engine import Engine
    from napari_slads_eds.microscope import HttpMicroscope
    from napari_slads_eds.run_folder import CLASSIFIER_DIR, ERD_FILE
    from napari_slads_eds.server import read_measured_log
    from napari_slads_eds.specimen import load_specimen

    tmp = Path(tempfile.mkdtemp(prefix="bench-microscope-"))
    run = Path(args.models) if args.models else tmp / "demo"
    if not args.models:
        subprocess.run([sys.executable, "-m", "napari_slads_eds", "demo", "--out", str(run), "--quiet"], check=True,
                       env=dict(os.environ, PYTHONPATH=str(SRC)))
    spec = load_specimen(run / "specimen.npz")
    token = "bench-token"
    common = dict(classifier=str(run / CLASSIFIER_DIR), erd_model=str(run / ERD_FILE), target_fraction=args.fraction,
                  overlap=True, seed=0, send_maps=False, batch=args.batch)
    out = {"setup": {"data": "slads-eds demo: bundled 2-phase micrograph (sem_nanoporous_gold_inlens.png), "
                             "simulated specimen, 2048 channels", "grid": list(spec.shape),
                     "fraction": args.fraction, "overlap": True, "batch": args.batch, "seed": 0, "dwell_s": args.dwell,
                     "machine": f"{os.cpu_count()} cores, server and engine on localhost"}}

    with Engine() as eng:
        t = time.perf_counter()
        a = eng.run("run_slads", specimen=spec, baselines=("random", "halton"), **common)
        out["in_process"] = {"td": a["td"], "td_random": a["td_random"], "td_halton": a["td_halton"],
                             "n_measured": a["n_measured"], "wall_s": time.perf_counter() - t}
        print("in-process", out["in_process"], flush=True)

        t = time.perf_counter()
        b = eng.run("run_slads", specimen=spec, baselines=(), **common)
        compute = b["seconds"]
        out["in_process_timed"] = {"job_seconds": compute, "wall_s": time.perf_counter() - t,
                                   "same_mask": bool(np.array_equal(b["mask"], a["mask"]))}
        print("in-process timed", out["in_process_timed"], flush=True)

        port = free_port()
        proc = start_server(run, port, args.dwell, token)
        try:
            mic = HttpMicroscope(f"http://127.0.0.1:{port}", n_phases=spec.n_phases, token=token,
                                 dwell_s=args.dwell, phase_map=spec.phase_map, labels=spec.labels)
            mic.close()
            jp = tmp / "server_run" / "journal.h5"
            t = time.perf_counter()
            c = eng.run("run_slads", specimen=mic, baselines=(), journal_path=str(jp), **common)
            wall = time.perf_counter() - t
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        j = read_journal(jp)
        n_batches = int(j["batch"].max()) + 1
        n_spectra = len(j["label"])
        exp_spots = n_spectra * args.dwell + compute
        exp_batches = n_batches * args.dwell + compute
        out["server"] = {"td": c["td"], "same_mask_as_in_process": bool(np.array_equal(c["mask"], a["mask"])),
                         "same_positions_as_in_process": bool(np.array_equal(c["positions"], a["positions"])),
                         "same_td": c["td"] == a["td"], "wall_s": wall, "job_seconds": c["seconds"],
                         "n_spectra": n_spectra, "n_batches": n_batches,
                         "expected_s_spectra_x_dwell_plus_compute": exp_spots,
                         "ratio_to_spectra_x_dwell_plus_compute": c["seconds"] / exp_spots,
                         "expected_s_batches_x_dwell_plus_compute": exp_batches,
                         "ratio_to_batches_x_dwell_plus_compute": c["seconds"] / exp_batches}
        print("server", out["server"], flush=True)

        if args.skip_kill:
            return _write(out, args)
        # 4. killed twice
        state = tmp / "state"
        proc = start_server(run, port, args.dwell, token, state)
        procs = [proc]
        target = int(round(args.fraction * spec.shape[0] * spec.shape[1]))
        kills = [target // 3, 2 * target // 3]
        logs = []
        restarts = []

        def restart():
            time.sleep(args.down)
            procs.append(start_server(run, port, args.dwell, token, state))
            restarts.append(time.perf_counter())

        def on_message(m):
            if m.get("type") == "log":
                logs.append(m["text"])
            if m.get("type") == "frame" and kills and m["n_measured"] >= kills[0]:
                kills.pop(0)
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait(10)
                threading.Thread(target=restart, daemon=True).start()

        try:
            mic = HttpMicroscope(f"http://127.0.0.1:{port}", n_phases=spec.n_phases, token=token,
                                 dwell_s=args.dwell, phase_map=spec.phase_map, labels=spec.labels)
            mic.close()
            jp = tmp / "killed_run" / "journal.h5"
            t = time.perf_counter()
            d = eng.run("run_slads", specimen=mic, baselines=(), journal_path=str(jp), on_message=on_message,
                        **common)
            wall = time.perf_counter() - t
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(10)
        j = read_journal(jp)
        jpos = {tuple(p) for p in j["position"]}
        spos = [tuple(p) for r in read_measured_log(state) for p in r["positions"]]
        used = {tuple(p) for p in d["positions"]}
        out["server_killed_twice"] = {
            "kills": 2, "down_s_each": args.down, "td": d["td"],
            "same_mask_as_in_process": bool(np.array_equal(d["mask"], a["mask"])), "same_td": d["td"] == a["td"],
            "n_measured": d["n_measured"], "journal_spectra": len(j["label"]),
            "spectra_lost": len(used - jpos) + (d["n_measured"] - len(j["label"])),
            "spots_measured_by_server": len(spos), "spots_measured_twice": len(spos) - len(set(spos)),
            "server_record_equals_journal": set(spos) == jpos,
            "journal_spectra_equal_specimen": bool(np.array_equal(j["spectrum"], spec.measure(j["position"]))),
            "pause_messages": [t for t in logs if "microscope" in t], "wall_s": wall}
        print("killed", out["server_killed_twice"], flush=True)
    return _write(out, args)


def _write(out, args):
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
