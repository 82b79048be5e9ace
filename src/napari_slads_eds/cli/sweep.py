"""``slads-eds sweep``: many runs on Dask (:func:`napari_slads_eds.sweep.sweep`)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["add_sweep_parser", "sweep_command"]


def add_sweep_parser(sub) -> None:
    """Register ``slads-eds sweep`` on the CLI's sub-parsers."""
    from ..sweep_config import STRATEGIES, SweepConfig

    d = SweepConfig()
    p = sub.add_parser("sweep", help="many SLADS / static-scan runs over micrographs, as Dask tasks "
                                     "(a local cluster, or --scheduler ADDRESS)")
    p.add_argument("--images", nargs="+", required=True, metavar="GLOB",
                   help="micrographs (paths or quoted glob patterns)")
    p.add_argument("--phases", type=int, required=True, help="number of phases L of every micrograph")
    p.add_argument("--fractions", nargs="+", type=float, default=list(d.fractions),
                   help="sampling fractions at which TD is reported (default %(default)s)")
    p.add_argument("--strategies", nargs="+", default=list(d.strategies), choices=STRATEGIES,
                   help="default: all of %(default)s")
    p.add_argument("--erd", nargs="+", default=list(d.erd), choices=("linear", "mlp"),
                   help="ERD models of the SLADS tasks (default linear)")
    p.add_argument("--batch", nargs="+", type=int, default=list(d.batch),
                   help="positions per SLADS step (default 1)")
    p.add_argument("--initial", nargs="+", default=list(d.initial), choices=("halton", "random"),
                   help="initial 1%% pattern of the SLADS tasks (default halton)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds), help="default 0")
    p.add_argument("--size", type=int, default=d.size, help="N of the N x N grid (default %(default)s)")
    p.add_argument("--downsample", type=int, default=d.downsample,
                   help="micrograph pixels per grid pixel (default %(default)s)")
    p.add_argument("--out", required=True, help="output folder (a sweep there is resumed)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler, e.g. tcp://127.0.0.1:8786 (default: a local cluster)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--target-td", type=float, default=d.target_td,
                   help="TD the summary reports the beam time for (default %(default)s)")
    p.add_argument("--dwell", type=float, default=d.dwell, help="seconds per spectrum (default %(default)s)")
    p.add_argument("--train", nargs="+", default=None, metavar="PATH",
                   help="ERD training micrographs (default: the non-test regions of --images)")
    p.add_argument("--model-seed", type=int, default=d.model_seed,
                   help="seed of the reference spectra and the model training (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="classifier training epochs (default: automatic)")
    p.add_argument("--c-values", nargs="+", type=float, default=None, metavar="C",
                   help="candidates for the ERD model's c, chosen by a simulated run (default 2 4 8 16 32)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not bind each worker process to a core of its own (default: bind, one "
                        "core per worker, which makes 2 workers on 2 cores twice as fast as 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def sweep_command(args) -> int:
    """Run ``slads-eds sweep`` from parsed arguments; print the summary."""
    import importlib

    # the module (the package's name "sweep" is the function), its sweep() looked up at call
    # time: tests replace it
    sweep_module = importlib.import_module("napari_slads_eds.sweep")
    from .._validation import check_int
    from ..sweep_config import SUMMARY_FILE

    if args.workers is not None:
        check_int(args.workers, "--workers", 1, 1024)
    log = (lambda text: None) if args.quiet else (lambda text: print(f"slads-eds: {text}", file=sys.stderr))
    table = sweep_module.sweep(args.images, args.phases, out=args.out, fractions=args.fractions,
                  strategies=args.strategies, erd=args.erd, batch=args.batch, initial=args.initial,
                  seeds=args.seeds, size=args.size, downsample=args.downsample, scheduler=args.scheduler,
                  workers=args.workers, target_td=args.target_td, dwell=args.dwell, train=args.train or (),
                  model_seed=args.model_seed, epochs=args.epochs, c_values=tuple(args.c_values or ()),
                  progress=not args.quiet, log=log, pin_cores=not args.no_pin)
    print((Path(args.out) / SUMMARY_FILE).read_text())
    n_err = int((table["status"] != "ok").sum())
    if n_err:
        print(f"slads-eds: {n_err} of {len(table)} tasks failed (see the table's 'error' column)",
              file=sys.stderr)
    return 0
