"""``slads-eds demo``, ``run``, ``resume`` and ``reproduce``: the simulated experiment of
:mod:`napari_slads_eds.pipeline` (and :mod:`napari_slads_eds.reproduce`) from the command
line; ``resume`` continues a run folder of any kind (a replay's too)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .._console import _Progress, _table, run_with_progress


def _add_run_options(p: argparse.ArgumentParser, *, demo: bool) -> None:
    from ..pipeline import RunSettings

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
    from ..pipeline import RunSettings

    return RunSettings(size=args.size, downsample=args.downsample, fraction=args.fraction, seed=args.seed,
                       batch=args.batch, batch_mode=args.batch_mode, initial_pattern=args.initial,
                       ill_fraction=args.ill_fraction, epochs=args.epochs, overlap=args.overlap,
                       stop_td=args.stop_td, erd=args.erd, upsample=getattr(args, "upsample", 1),
                       crop_bottom=getattr(args, "crop_bottom", 0),
                       denoise=getattr(args, "denoise", RunSettings().denoise),
                       classifier=getattr(args, "classifier_kind", "cnn"),
                       uncertainty=getattr(args, "uncertainty", "hard"))


def _do_run(image, phases, args, train=None, spectra=None) -> int:
    from .._files import output_folder
    from ..pipeline import prepare_experiment, run_experiment

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
    from .._files import OutputFolder
    from .._validation import InputError
    from ..pipeline import resume_experiment

    t0 = time.perf_counter()
    d = Path(args.dir)
    if not d.is_dir():                            # (the lock file needs the folder)
        raise InputError(f"{d} cannot be resumed: not a folder")
    from ..run_folder import read_mode

    mode = read_mode(d)
    if mode == "microscope":
        raise InputError(f"{d} is a run on a microscope: continue it with the same 'slads-eds acquire' command "
                         "and --resume")
    if mode == "replay":
        from ..replay import resume_replay as resume
    else:
        resume = resume_experiment
    with OutputFolder(d):
        result = run_with_progress(args.quiet, resume, d)
    print(f"\nSLADS-EDS result, resumed ({result['n_replayed']} measurements replayed from the journal, "
          f"{time.perf_counter() - t0:.1f} s, files in {args.dir}):")
    print(_table(result))
    return 0


def _do_reproduce(args) -> int:
    from .._files import output_folder
    from .._validation import check_seed
    from ..reproduce import check_experiment_names, run_reproduce

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
