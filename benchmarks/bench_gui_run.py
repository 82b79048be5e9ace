"""GUI run against the command line's run: wall time and measurement rate.

Runs under a display (``xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_gui_run.py``):
a real napari window of 1600x1000 with the workflow dock, the gold sample, a 128x128 object
(down-sampling 2), models trained once in the GUI (``--epochs``), then ``--repeats`` GUI runs
to 15 % (pointwise, the default run view: ground truth, ERD, reconstruction and mask in
grid view) alternated with the same ``run_slads`` job run as ``slads-eds run`` runs it
(``send_maps`` False, same specimen, models and settings, its own run folder).  Prints the
medians and, with ``--json``, writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-run-view", action="store_true",
                    help="Start without the run view (ERD layer hidden, no grid): the display before issue 16")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-gui-"))
    os.environ["SLADS_EDS_RUNS"] = str(tmp / "runs")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_slads_eds import Engine
    from napari_slads_eds._widgets._session import specimen_info
    from napari_slads_eds.acquisition import JOURNAL_NAME
    from napari_slads_eds.run_folder import read_run_folder, sampling_job_kwargs

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    _, wf = viewer.window.add_plugin_dock_widget("napari-slads-eds")

    def wait(cond, timeout=600.0):
        t0 = time.time()
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.time() - t0 > timeout:
                raise TimeoutError
        app.processEvents()

    viewer.open_sample("napari-slads-eds", "gold_ready")
    sw, tw, rw = wf.specimen, wf.training, wf.sampling
    sw.size_spin.setValue(args.size)
    sw.factor_spin.setValue(2)
    gt = sw.create_specimen()
    info = specimen_info(gt)
    tw.epochs_spin.setValue(args.epochs)
    tw.train_both()
    wait(lambda: tw.session.erd_path is not None and not tw.session.busy)
    wf.show_step(3)
    if args.no_run_view:
        rw.focus_check.setChecked(False)

    gui, cli = [], []
    with Engine() as eng:
        eng.run("engine_info")       # the CLI engine started before timing
        for i in range(args.repeats):
            t0 = time.perf_counter()
            rw.start()
            wait(lambda: not rw.session.busy and rw.result is not None)
            wall = time.perf_counter() - t0
            r = rw.result
            gui.append({"wall_s": wall, "rate": r["measurements_per_second"], "n": r["n_measured"],
                        "td": r["td"], "displays": rw.displayed_frames, "frames": rw.frames})
            folder = rw.run.folder
            wait(lambda: rw.saved_to == folder, 120)
            # the same job as slads-eds run: a copy of the run folder without its journal
            cfolder = tmp / f"cli-{i}"
            shutil.copytree(folder / "models", cfolder / "models")
            shutil.copy2(folder / "run_settings.json", cfolder / "run_settings.json")
            shutil.copy2(folder / "specimen.npz", cfolder / "specimen.npz")
            rf = read_run_folder(folder)
            kw = sampling_job_kwargs(cfolder, rf.settings.sampling, rf.erd_report, resume=False,
                                     stop_td=rf.settings.stop_td)
            kw["journal_path"] = str(cfolder / JOURNAL_NAME)
            t0 = time.perf_counter()
            rc = eng.run("run_slads", specimen=info.specimen, **kw)
            cli.append({"wall_s": time.perf_counter() - t0, "rate": rc["measurements_per_second"],
                        "n": rc["n_measured"], "td": rc["td"]})
            print(f"run {i}: GUI {gui[-1]['wall_s']:.2f} s, {gui[-1]['rate']:.0f}/s;  "
                  f"CLI {cli[-1]['wall_s']:.2f} s, {cli[-1]['rate']:.0f}/s", flush=True)
    viewer.close()

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    out = {"grid": args.size, "target": 0.15, "repeats": args.repeats, "run_view": not args.no_run_view,
           "gui": gui, "cli": cli,
           "median": {"gui_wall_s": med(gui, "wall_s"), "cli_wall_s": med(cli, "wall_s"),
                      "gui_rate": med(gui, "rate"), "cli_rate": med(cli, "rate")}}
    m = out["median"]
    print(f"median wall: GUI {m['gui_wall_s']:.2f} s, CLI {m['cli_wall_s']:.2f} s "
          f"(ratio {m['gui_wall_s'] / m['cli_wall_s']:.2f}); rate: GUI {m['gui_rate']:.0f}/s, "
          f"CLI {m['cli_rate']:.0f}/s (ratio {m['gui_rate'] / m['cli_rate']:.2f})")
    print(f"TD (same specimen, models, seed): GUI {gui[0]['td']:.4f}, CLI {cli[0]['td']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
