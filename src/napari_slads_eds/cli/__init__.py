"""Command line: ``slads-eds`` and its subcommands, one module each (run, replay, export,
sweep, microscope).  No library module imports this package.

The CLI imports neither Qt nor TensorFlow; training and sampling run in the engine process.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]

from .run import _add_run_options, _do_reproduce, _do_resume, _do_run


def main(argv=None) -> int:
    """Entry point of the ``slads-eds`` command."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from .. import __version__
    from .._files import JOURNAL_NAME
    from .._validation import InputError, os_error_text
    from ..engine import EngineError, JobCancelled

    ap = argparse.ArgumentParser(
        prog="slads-eds",
        description="Dynamic sparse sampling (SLADS) of EDS phase maps: simulated objects built from SEM "
                    "micrographs (demo, run, reproduce, sweep), replays of acquired spectrum images (replay) "
                    "and microscopes (serve, acquire).")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    pd = sub.add_parser("demo", help="run the whole chain on the bundled 2-phase sample (no arguments needed)")
    pd.add_argument("--out", default="slads-demo",
                    help="output folder (default %(default)s; a demo run already there is replaced)")
    pd.add_argument("--sample", choices=("gold", "glass"), default="gold",
                    help="bundled micrograph: 'gold' (2 phases) or 'glass' (3 phases)")
    pd.add_argument("--overwrite", action="store_true",
                    help="replace a run in --out that is not an earlier demo (default: refuse)")
    _add_run_options(pd, demo=True)

    pr = sub.add_parser("run", help="run the whole chain on a micrograph")
    pr.add_argument("--image", required=True, help="SEM micrograph (PNG/TIFF)")
    pr.add_argument("--phases", type=int, required=True, help="number of phases L")
    pr.add_argument("--train", nargs="+", default=None,
                    help="training micrographs (default: regions of --image that do not overlap the test region)")
    pr.add_argument("--spectra", nargs="+", default=None,
                    help="one standard spectrum (.msa) per phase, darkest phase first (default: bundled NIST standards)")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--overwrite", action="store_true",
                    help="replace a run that is already in --out (default: refuse, so no measurement is lost)")
    _add_run_options(pr, demo=False)

    pres = sub.add_parser("resume", help="continue a stopped or crashed run from its journal")
    pres.add_argument("dir", help="the run's output folder")
    pres.add_argument("--quiet", action="store_true", help="no progress bars")

    prep = sub.add_parser("reproduce", help="the paper's four experiment kinds on the bundled data, "
                                            "whole micrographs down-sampled to the grid, against static random and Halton "
                                            "scans and the oracle (takes about 35 min)")
    prep.add_argument("--out", required=True, help="output folder (table.md, table.json, plots, runs)")
    prep.add_argument("--only", nargs="+", default=None, metavar="NAME",
                      help="run only these experiments (2-phase-128 2-phase-1024 3-phase-256 3-phase-1024 "
                           "stopping-rule; the crop variant: 2-phase-128-crop 2-phase-1024-crop 3-phase-256-crop "
                           "3-phase-1024-crop)")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--erd", choices=("linear", "rich", "mlp"), default="linear")
    prep.add_argument("--quiet", action="store_true", help="no progress bars")

    from .export import add_export_parser
    from .microscope import add_microscope_parsers
    from .replay import add_replay_parser
    from .sweep import add_sweep_parser
    add_replay_parser(sub)
    add_export_parser(sub)
    add_sweep_parser(sub)
    add_microscope_parsers(sub)

    args = ap.parse_args(argv)
    try:
        if args.command == "demo":
            from ..spectra import sample_data_dir

            img, L = {"gold": ("sem_nanoporous_gold_inlens.png", 2),
                      "glass": ("sem_glass_sand_bubbles_bse.png", 3)}[args.sample]
            return _do_run(sample_data_dir() / img, L, args)
        if args.command == "replay":
            from .replay import replay_command
            return replay_command(args)
        if args.command == "export":
            from .export import export_command
            return export_command(args)
        if args.command == "sweep":
            from .sweep import sweep_command
            return sweep_command(args)
        if args.command in ("serve", "acquire"):
            from .microscope import microscope_command
            return microscope_command(args)
        if args.command == "run":
            return _do_run(args.image, args.phases, args, train=args.train, spectra=args.spectra)
        if args.command == "resume":
            return _do_resume(args)
        if args.command == "reproduce":
            return _do_reproduce(args)
    except InputError as exc:
        print(f"slads-eds: error: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        if exc.kind == "input":           # bad input found inside the engine (a file, a setting)
            print(f"slads-eds: error: {exc}", file=sys.stderr)
            return 2
        print(f"slads-eds: engine error: {exc}", file=sys.stderr)
        if exc.remote_traceback:
            print(exc.remote_traceback, file=sys.stderr)
        return 1
    except OSError as exc:                # a file or folder that cannot be read or written
        print(f"slads-eds: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except (JobCancelled, KeyboardInterrupt):
        out = getattr(args, "out", None) or getattr(args, "dir", None)
        hint = (f"; every measurement so far is in {out}/journal.h5: continue with 'slads-eds resume {out}'"
                if out and args.command in ("run", "demo", "resume", "replay") and (Path(out) / JOURNAL_NAME).exists()
                else "")
        if args.command == "acquire" and out and (Path(out) / JOURNAL_NAME).exists():
            hint = (f"; every measurement so far is in {out}/journal.h5: continue with the same "
                    f"'slads-eds acquire' command and --resume")
        print(f"slads-eds: cancelled{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
