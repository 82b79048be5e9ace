"""``slads-eds replay``: SLADS replayed on a fully acquired spectrum image
(:mod:`napari_slads_eds.replay`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

__all__ = ["add_replay_parser", "replay_command"]


def add_replay_parser(sub) -> None:
    """Register ``slads-eds replay`` on an argparse sub-parsers object."""
    from ..replay import ReplaySettings

    d = ReplaySettings()
    p = sub.add_parser("replay", help="replay SLADS on a fully acquired spectrum image (.bcf, .hspy, .rpl, .npz ...)")
    p.add_argument("--spectrum-image", required=True, help="the acquired map (any RosettaSciIO format or .npz)")
    p.add_argument("--phases", type=int, required=True, help="number of phases L")
    p.add_argument("--fraction", type=float, default=d.fraction, help="target sampling fraction (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--truth", choices=("cluster", "classifier"), default=d.truth,
                   help="ground truth by clustering the full map, or by --classifier (default %(default)s)")
    p.add_argument("--classifier", default=None,
                   help="a trained classifier folder to use instead of training one on the map's training share")
    p.add_argument("--train-share", type=float, default=d.train_share,
                   help="fraction of the counts set aside (count splitting) to train the classifier (default %(default)s)")
    p.add_argument("--dwell", type=float, default=None,
                   help="emulated dwell time as a fraction of the acquired one (default: 1 - train share)")
    p.add_argument("--smooth", type=float, default=d.smooth, help="Gaussian sigma (pixels) of the clustering (default %(default)s)")
    p.add_argument("--train", nargs="+", default=None,
                   help="micrographs for the ERD model (default: the bundled glass BSE micrograph)")
    p.add_argument("--epochs", type=int, default=None, help="classifier training epochs (default: automatic)")
    p.add_argument("--classifier-kind", choices=("poisson", "cnn"), default=d.classifier_kind,
                   help="classifier trained on the training share: the count-aware Poisson likelihood "
                        "(default) or the paper's NNR + CNN")
    p.add_argument("--uncertainty", choices=("soft", "hard"), default="soft",
                   help="soft: spatial phase decisions and probability votes (default); hard: the paper's labels")
    p.add_argument("--erd-training", choices=("auto", "micrograph", "electron-image", "both"),
                   default=d.erd_training,
                   help="label images of the ERD model: the bundled/--train micrographs, the map's own electron "
                        "image segmented into L phases, or both; auto (default): the electron image when the "
                        "map has one")
    p.add_argument("--calibration", type=float, nargs=2, default=None, metavar=("OFFSET_KEV", "SCALE_KEV"),
                   help="energy calibration to assume when the file has none")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run that is already in --out (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def replay_command(args) -> int:
    """Run ``slads-eds replay`` from parsed arguments (see :func:`add_replay_parser`)."""
    from .._console import _table, run_with_progress
    from .._files import output_folder
    from ..replay import ReplaySettings, prepare_replay, run_replay

    s = ReplaySettings(fraction=args.fraction, seed=args.seed, truth=args.truth, classifier=args.classifier,
                       smooth=args.smooth, train_share=args.train_share, dwell=args.dwell,
                       epochs=args.epochs, train=args.train, classifier_kind=args.classifier_kind,
                       uncertainty=None if args.uncertainty == "hard" else "soft", erd_training=args.erd_training,
                       default_calibration=tuple(args.calibration) if args.calibration else None)
    t0 = time.perf_counter()
    s.check()
    with output_folder(args.out, refuse_run=True, overwrite=args.overwrite) as out:
        exp = prepare_replay(args.spectrum_image, args.phases, s)
        H, W = exp.truth.shape
        print(f"slads-eds replay: {Path(str(args.spectrum_image)).name}, {H}x{W} map, {args.phases} phases "
              f"(truth: {s.truth}, fractions {[round(f, 3) for f in exp.source['truth_fractions']]}), "
              f"{exp.source['mean_counts_per_measurement']:.1f} counts per measurement, "
              f"target {100 * s.fraction:g} %, output {out}", file=sys.stderr)
        result = run_with_progress(args.quiet, run_replay, exp, out)
    print(f"\nSLADS-EDS replay result ({time.perf_counter() - t0:.1f} s, files in {out}):")
    print(_table(result))
    return 0
