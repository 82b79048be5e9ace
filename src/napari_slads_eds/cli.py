"""Command line: ``slads-eds demo`` and ``slads-eds run``.

The CLI imports neither Qt nor TensorFlow; training and sampling run in the engine process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

from ._console import _Progress, _table, run_with_progress  # noqa: E402  (shared with replay)


def _add_run_options(p: argparse.ArgumentParser, *, demo: bool) -> None:
    from .pipeline import RunSettings

    d = RunSettings()
    p.add_argument("--size", type=int, default=d.size, help="N of the N x N grid (default %(default)s)")
    p.add_argument("--downsample", type=int, default=d.downsample,
                   help="micrograph pixels per grid pixel, majority vote (default %(default)s)")
    p.add_argument("--fraction", type=float, default=d.fraction,
                   help="target sampling fraction, 0-1 (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch, help="positions per step (default 1, pointwise)")
    p.add_argument("--batch-mode", choices=("top", "pseudo"), default=d.batch_mode,
                   help="top-b of one ERD map, or pseudo-measurements (default %(default)s)")
    p.add_argument("--initial", choices=("halton", "random"), default=d.initial_pattern,
                   help="initial 1%% pattern (default %(default)s)")
    p.add_argument("--ill-fraction", type=float, default=d.ill_fraction,
                   help="fraction of ill-spectrum pixels in the simulated specimen (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="classifier training epochs (default: automatic)")
    p.add_argument("--classifier-kind", choices=("cnn", "poisson"), default=d.classifier,
                   help="the paper's NNR + CNN (default) or the count-aware Poisson likelihood classifier")
    p.add_argument("--uncertainty", choices=("hard", "soft"), default=d.uncertainty,
                   help="hard labels (the paper, default) or spatial decisions and probability votes")
    p.add_argument("--overlap", action="store_true",
                   help="choose the next batch while the current one is measured (pseudo-measurements)")
    p.add_argument("--stop-td", type=float, default=None, metavar="TD",
                   help="also stop when the learned stopping rule expects TD below this (e.g. 0.01)")
    p.add_argument("--erd", choices=("linear", "rich", "mlp"), default=d.erd,
                   help="ERD regressor: least squares on polynomial SLADS features (the paper), on the 11 rich features, or an MLP (SLADS-Net)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if not demo:
        p.add_argument("--upsample", type=int, default=d.upsample,
                       help="interpolate the micrograph this many times finer before segmenting (default 1)")
        p.add_argument("--crop-bottom", type=int, default=0, help="rows of instrument data bar to remove")
        p.add_argument("--denoise", type=int, default=d.denoise, help="median filter size before segmentation")


def _settings(args):
    from .pipeline import RunSettings

    return RunSettings(size=args.size, downsample=args.downsample, fraction=args.fraction, seed=args.seed,
                       batch=args.batch, batch_mode=args.batch_mode, initial_pattern=args.initial,
                       ill_fraction=args.ill_fraction, epochs=args.epochs, overlap=args.overlap,
                       stop_td=args.stop_td, erd=args.erd, upsample=getattr(args, "upsample", 1),
                       crop_bottom=getattr(args, "crop_bottom", 0),
                       denoise=getattr(args, "denoise", RunSettings().denoise),
                       classifier=getattr(args, "classifier_kind", "cnn"),
                       uncertainty=getattr(args, "uncertainty", "hard"))


def _do_run(image, phases, args, train=None, spectra=None) -> int:
    from ._files import output_folder
    from .pipeline import prepare_experiment, run_experiment

    settings = _settings(args).check()        # bad options are refused before the folder is made
    folder = output_folder(args.out, refuse_run=True, overwrite=args.overwrite, demo=args.command == "demo")
    t0 = time.perf_counter()
    with folder as out:
        exp = prepare_experiment(image, phases, settings, train=train, spectra=spectra)
        _warn_missing_phases(exp.source)
        if phases == 1:
            print("slads-eds: warning: with 1 phase every reconstruction is that phase (TD 0 at any "
                  "sampling fraction); dynamic sampling needs 2 or more phases", file=sys.stderr)
        n = exp.settings.size
        print(f"slads-eds: {Path(str(image)).name}, {phases} phases, {n}x{n} grid, "
              f"target {100 * exp.settings.fraction:g} %, output {out}", file=sys.stderr)
        result = run_with_progress(args.quiet, run_experiment, exp, out)
    _warn_classifier(result)
    print(f"\nSLADS-EDS result ({time.perf_counter() - t0:.1f} s, files in {out}):")
    print(_table(result))
    return 0


def _warn_classifier(result: dict) -> None:
    m = result.get("misclassification")
    if isinstance(m, (int, float)) and m > 0.05:
        print(f"slads-eds: warning: the classifier misclassifies {100 * m:.0f} % of its validation spectra "
              f"(see the confusion matrix in result.json); the phase map can be no better than its labels: "
              f"are the reference spectra of the phases different enough?", file=sys.stderr)


def _warn_missing_phases(source: dict) -> None:
    missing = source.get("phases_missing_in_test_region")
    if missing:
        print(f"slads-eds: warning: phase(s) {missing} do not occur in the {source.get('test_region', ['?'])[-1]}"
              f"-pixel test region, so the run cannot show how they are sampled; a larger --size or "
              f"--downsample, or fewer --phases, gives a more telling run", file=sys.stderr)


def _do_resume(args) -> int:
    from ._files import OutputFolder
    from ._validation import InputError
    from .pipeline import resume_experiment

    t0 = time.perf_counter()
    d = Path(args.dir)
    if not d.is_dir():                            # (the lock file needs the folder)
        raise InputError(f"{d} cannot be resumed: not a folder")
    with OutputFolder(d):
        result = run_with_progress(args.quiet, resume_experiment, d)
    print(f"\nSLADS-EDS result, resumed ({result['n_replayed']} measurements replayed from the journal, "
          f"{time.perf_counter() - t0:.1f} s, files in {args.dir}):")
    print(_table(result))
    return 0


def _do_reproduce(args) -> int:
    from ._files import output_folder
    from ._validation import check_seed
    from .reproduce import check_experiment_names, run_reproduce

    check_experiment_names(args.only)
    check_seed(args.seed, "--seed")
    prog = _Progress(args.quiet)
    try:
        with output_folder(args.out) as out:
            run_reproduce(out, names=args.only, seed=args.seed, erd=args.erd, on_message=prog,
                          log=lambda t: (prog.close(), print(t, file=sys.stderr)))
    finally:
        prog.close()
    print((Path(args.out) / "table.md").read_text())
    return 0


def main(argv=None) -> int:
    """Entry point of the ``slads-eds`` command."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from . import __version__
    from ._files import JOURNAL_NAME
    from ._validation import InputError, os_error_text
    from .engine import EngineError, JobCancelled

    ap = argparse.ArgumentParser(
        prog="slads-eds",
        description="Dynamic sparse sampling (SLADS) of simulated EDS phase maps built from SEM micrographs.")
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

    from .replay import add_replay_parser  # slads-eds replay and export (in replay.py, export.py)
    add_replay_parser(sub)
    from .sweep import add_sweep_parser  # slads-eds sweep (in sweep.py)
    add_sweep_parser(sub)
    from .microscope_cli import add_microscope_parsers  # slads-eds serve and acquire (microscope_cli.py)
    add_microscope_parsers(sub)

    args = ap.parse_args(argv)
    try:
        if args.command == "demo":
            from .spectra import sample_data_dir

            img, L = {"gold": ("sem_nanoporous_gold_inlens.png", 2),
                      "glass": ("sem_glass_sand_bubbles_bse.png", 3)}[args.sample]
            return _do_run(sample_data_dir() / img, L, args)
        if args.command in ("replay", "export"):
            from .replay import replay_command
            return replay_command(args)
        if args.command == "sweep":
            from .sweep import sweep_command
            return sweep_command(args)
        if args.command in ("serve", "acquire"):
            from .microscope_cli import microscope_command
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
                if out and args.command in ("run", "demo", "resume") and (Path(out) / JOURNAL_NAME).exists() else "")
        if args.command == "acquire" and out and (Path(out) / JOURNAL_NAME).exists():
            hint = (f"; every measurement so far is in {out}/journal.h5: continue with the same "
                    f"'slads-eds acquire' command and --resume")
        print(f"slads-eds: cancelled{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
