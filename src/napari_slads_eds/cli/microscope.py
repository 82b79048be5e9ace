"""``slads-eds serve`` and ``slads-eds acquire``: the command line of the microscope seam.

``slads-eds serve --specimen RUN_OR_SPECIMEN`` runs the reference spot-spectrum server
(:mod:`napari_slads_eds.server`); ``slads-eds acquire --microscope URL --models RUN --out
DIR`` runs SLADS against a microscope server with the classifier and ERD model of an
earlier run (``slads-eds demo``/``run``), journaling every spectrum in ``DIR/journal.h5``;
``--resume`` continues it from the journal (nothing measured twice).

Neither command imports Qt or TensorFlow in this process (sampling runs in the engine).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["add_microscope_parsers", "microscope_command", "ACQUIRE_SETTINGS"]

#: The options of an acquire run, written to its folder (no token).
ACQUIRE_SETTINGS = "acquire_settings.json"


def add_microscope_parsers(sub) -> None:
    """Add the ``serve`` and ``acquire`` sub-commands to the ``slads-eds`` parser."""
    ps = sub.add_parser("serve", help="serve a simulated specimen as a microscope (the reference spot-spectrum server)")
    ps.add_argument("--specimen", required=True,
                    help="specimen.npz, or a run folder of slads-eds run/demo (its specimen.npz)")
    ps.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    ps.add_argument("--port", type=int, default=8765, help="TCP port (default %(default)s)")
    ps.add_argument("--dwell-delay", type=float, default=0.0, metavar="S",
                    help="seconds every spot takes, the emulated dwell (default %(default)s)")
    ps.add_argument("--token-file", default=None,
                    help="require the bearer token in this file's first line (default: $SLADS_EDS_TOKEN if set, "
                         "else no token)")
    ps.add_argument("--state-dir", default=None,
                    help="keep every completed measurement in DIR/measured.jsonl, so that a restarted server "
                         "answers retried requests without measuring again")
    ps.add_argument("--pixel-size-nm", type=float, default=None, help="announced pixel size, nm")
    ps.add_argument("--beam-kev", type=float, default=15.0, help="announced beam energy, keV (default %(default)s)")
    ps.add_argument("--max-batch", type=int, default=4096, help="most positions per request (default %(default)s)")
    ps.add_argument("--quiet", action="store_true", help="no request log")

    pa = sub.add_parser("acquire", help="run SLADS against a microscope server, with the models of an earlier run")
    pa.add_argument("--microscope", required=True, metavar="URL", help="base URL of the server, e.g. http://127.0.0.1:8765")
    pa.add_argument("--models", required=True, metavar="RUN",
                    help="a run folder of slads-eds run/demo: its models/classifier and models/erd_model.npz")
    pa.add_argument("--out", required=True, help="output folder (journal.h5, result.json, images)")
    pa.add_argument("--fraction", type=float, default=0.15, help="target sampling fraction, 0-1 (default %(default)s)")
    pa.add_argument("--initial-fraction", type=float, default=0.01, help="initial measurements (default %(default)s)")
    pa.add_argument("--initial", choices=("halton", "random"), default="halton", help="initial pattern")
    pa.add_argument("--seed", type=int, default=0)
    pa.add_argument("--batch", type=int, default=1, help="positions per step (default 1)")
    pa.add_argument("--batch-mode", choices=("top", "pseudo"), default="top")
    pa.add_argument("--overlap", action="store_true",
                    help="choose the next batch while the current one is measured (pseudo-measurements)")
    pa.add_argument("--dwell", type=float, default=None, metavar="S",
                    help="dwell time per spot, s (default: the microscope's default)")
    pa.add_argument("--token-file", default=None, help="bearer token file (default: $SLADS_EDS_TOKEN if set)")
    pa.add_argument("--timeout", type=float, default=10.0, help="seconds to connect / beyond the dwell for a reply")
    pa.add_argument("--outage-timeout", type=float, default=600.0,
                    help="seconds to wait (retrying) for a microscope that stopped answering (default %(default)s)")
    pa.add_argument("--truth", default=None,
                    help="the specimen the server serves (specimen.npz or run folder), to report TD")
    pa.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its journal (give the same options as the first time)")
    pa.add_argument("--overwrite", action="store_true", help="replace a run that is already in --out")
    pa.add_argument("--quiet", action="store_true", help="no progress bars")


def microscope_command(args) -> int:
    """Run ``slads-eds serve`` or ``slads-eds acquire`` (errors raise InputError)."""
    import importlib.util

    from .._validation import InputError
    from ..server import read_token

    need = ("fastapi", "uvicorn", "httpx") if args.command == "serve" else ("httpx",)
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"slads-eds {args.command} needs {', '.join(missing)}: "
                         f"pip install 'napari-slads-eds[microscope]'")

    token = read_token(args.token_file)
    if args.command == "serve":
        from .._validation import check_int
        from ..server import serve

        check_int(args.port, "--port", 1, 65535)
        serve(args.specimen, host=args.host, port=args.port, token=token, dwell_delay=args.dwell_delay,
              state_dir=args.state_dir, pixel_size_nm=args.pixel_size_nm, beam_energy_keV=args.beam_kev,
              max_batch=args.max_batch, quiet=args.quiet)
        return 0
    return _acquire(args, token)


def _read_models(run: Path) -> tuple[Path, Path, dict, int]:
    from .._validation import InputError
    from ..likelihood import classifier_files
    from ..run_folder import CLASSIFIER_DIR, ERD_FILE, TRAINING_FILE, read_json as _read_json

    if not run.is_dir():
        raise InputError(f"--models {run}: not a folder (a run folder of slads-eds run/demo)")
    for name in [ERD_FILE, TRAINING_FILE] + [f"{CLASSIFIER_DIR}/{n}" for n in classifier_files(run / CLASSIFIER_DIR)]:
        if not (run / name).is_file():
            raise InputError(f"--models {run}: {name} is missing (a run folder of slads-eds run/demo whose "
                             f"training finished)")
    meta = _read_json(run / CLASSIFIER_DIR / "classifier.json")
    names = meta.get("phase_names")
    if not isinstance(names, list) or not names:
        raise InputError(f"{run / CLASSIFIER_DIR / 'classifier.json'}: phase_names must be a list of phase names")
    training = _read_json(run / TRAINING_FILE)
    return run / CLASSIFIER_DIR, run / ERD_FILE, training, len(names)


def _acquire(args, token) -> int:
    from .._files import JOURNAL_NAME, OutputFolder, output_folder
    from .._validation import InputError
    from .._console import run_with_progress
    from ..engine import Engine
    from ..microscope import HttpMicroscope
    from ..config import SamplingConfig
    from ..run_folder import RunResult
    from ..server import load_served_specimen

    clf_dir, erd_path, training, L = _read_models(Path(args.models))
    config = SamplingConfig(fraction=args.fraction, initial_fraction=args.initial_fraction, seed=args.seed,
                            batch=args.batch, batch_mode=args.batch_mode, initial_pattern=args.initial,
                            overlap=args.overlap, baselines=())   # bad options first (checked when made)
    truth = load_served_specimen(args.truth) if args.truth else None
    out = Path(args.out)
    if args.resume:
        if not (out / JOURNAL_NAME).is_file():
            raise InputError(f"--resume: {out / JOURNAL_NAME} not found (nothing to continue)")
        folder = OutputFolder(out)
    else:
        if (out / JOURNAL_NAME).exists() and not args.overwrite:
            raise InputError(f"{out} already holds a run (journal.h5): continue it with the same 'slads-eds acquire' "
                             f"command and --resume, choose another --out, or give --overwrite")
        folder = output_folder(out, refuse_run=True, overwrite=args.overwrite)
    mic = HttpMicroscope(args.microscope, n_phases=L, token=token, dwell_s=args.dwell, timeout=args.timeout,
                         outage_timeout=args.outage_timeout,
                         phase_map=None if truth is None else truth.phase_map,
                         labels=None if truth is None else truth.labels)
    mic.close()           # the engine process opens its own connection
    H, W = mic.shape
    settings = {k: v for k, v in vars(args).items() if k not in ("token_file", "command", "quiet", "overwrite")}
    t0 = time.perf_counter()
    with folder:
        (out / ACQUIRE_SETTINGS).write_text(json.dumps({"settings": settings, "microscope": mic.info.to_dict()},
                                                       indent=1))
        print(f"slads-eds: microscope {mic.url} ({H}x{W} grid, {mic.axis.describe()}, dwell {mic.dwell_s:g} s), "
              f"{L} phases, target {100 * args.fraction:g} %, output {out}", file=sys.stderr)
        with Engine() as eng:
            raw = run_with_progress(
                args.quiet, eng.run, "run_slads", specimen=mic, classifier=str(clf_dir), erd_model=str(erd_path),
                config=config, send_maps=False, journal_path=str(out / JOURNAL_NAME), resume=args.resume,
                journal_settings={"microscope": mic.url, "dwell_s": mic.dwell_s})
        wall = time.perf_counter() - t0
        res = RunResult.from_job(
            raw, mode="microscope", config=config, settings=settings, source={"models": str(args.models)},
            classifier_report={**training.get("classifier", {}), "path": str(clf_dir)},
            erd_report={**training.get("erd", {}), "path": str(erd_path)}, seconds=raw.get("seconds", wall),
            ground_truth=None if truth is None else truth.phase_map,
            specimen_labels=None if truth is None else truth.labels,
            microscope={"url": mic.url, "dwell_s": mic.dwell_s, "info": mic.info.to_dict(),
                        "ground_truth_file": args.truth},
            run_folder=out, resumed=bool(args.resume), wall_seconds=wall)
        res.write(out)
        result = res.to_dict()
    rows = [("grid", f"{H} x {W}"), ("sampled", f"{100 * result['sampling_fraction']:.2f} % "
                                                f"({result['n_measured']} spectra, {result['n_replayed']} from the journal)"),
            ("TD SLADS", "n/a (no --truth)" if truth is None else f"{result['td']:.5f}"),
            ("stopped because", result.get("stop_reason", "")), ("seconds", f"{result['wall_seconds']:.1f}")]
    w = max(len(a) for a, _ in rows)
    print(f"\nSLADS-EDS result from {mic.url} (files in {out}):")
    print("\n".join(f"  {a:<{w}}  {b}" for a, b in rows))
    return 0
