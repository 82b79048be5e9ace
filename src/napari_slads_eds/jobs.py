"""Jobs that run inside the engine process (see :mod:`napari_slads_eds.engine`).

Each job is ``fn(ctx, **kwargs) -> result`` where ``ctx`` is a
:class:`~napari_slads_eds.engine.JobContext`.  Only this module (and what it imports
lazily) touches TensorFlow, through :mod:`napari_slads_eds.classifier`.  Results are
plain Python/numpy objects so that they cross the process boundary by value.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np

from ._validation import InputError
from .engine import JobCancelled

__all__ = ["JOBS", "resolve", "train_classifier", "train_erd_job", "run_slads", "classify"]


def train_classifier(ctx, references, out_dir, seed: int = 0, **train_kwargs) -> dict:
    """Train the NNR detector and the CNN on ``references`` and save them to ``out_dir``.

    Returns the training report (misclassification, confusion matrix, threshold, ...)
    with ``"path"`` added.
    """
    from .classifier import SpectrumClassifier, TrainingCancelled

    def progress(info):
        ctx.emit("progress", stage="classifier", done=int(info.get("epoch", 0)),
                 total=int(info.get("epochs", 0)), **{k: v for k, v in info.items()
                                                      if k not in ("epoch", "epochs", "stage")})

    try:
        clf, report = SpectrumClassifier.train(references, seed=seed, progress=progress,
                                               should_stop=lambda: ctx.stop_requested, **train_kwargs)
    except TrainingCancelled:
        raise JobCancelled() from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clf.save(out)
    report = dict(report)
    report["path"] = str(out)
    return report


def train_erd_job(ctx, label_images, n_phases: int, out_path, seed: int = 0, stop_td: float | None = None,
                  **kwargs) -> dict:
    """Build the training database, fit the ERD model for each c, choose c; save the model.

    With ``stop_td``, also learn the threshold of the stopping rule for that target TD
    on the training images (``report["stopping"]``)."""
    from .acquisition import learn_stopping_threshold
    from .erd import train_erd

    def progress(info):
        ctx.checkpoint()
        ctx.progress(info["stage"], info["done"], info["total"],
                     **{k: v for k, v in info.items() if k not in ("stage", "done", "total")})

    if kwargs.get("regressor") == "mlp":
        from .erd_keras import fit_mlp

        kwargs["mlp_fitter"] = fit_mlp
    model, report = train_erd(label_images, n_phases, seed=seed, progress=progress, **kwargs)
    if stop_td is not None:
        ctx.progress("stopping-rule", 0, 1)
        report["stopping"] = learn_stopping_threshold(label_images, n_phases, model, stop_td,
                                                      k=kwargs.get("k", 10), seed=seed)
        model.meta["stopping"] = report["stopping"]
        ctx.progress("stopping-rule", 1, 1)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    report = dict(report)
    report["path"] = str(out)
    report["c_search"] = {str(k): v for k, v in report["c_search"].items()}
    return report


def _load_classifier(classifier):
    from .classifier import SpectrumClassifier

    if isinstance(classifier, (str, Path)):
        return SpectrumClassifier.load(classifier)
    return classifier


def _load_erd(erd_model):
    from .erd import load_erd_model

    if isinstance(erd_model, (str, Path)):
        return load_erd_model(erd_model)
    return erd_model


def classify(ctx, classifier, spectra) -> np.ndarray:
    """Labels (n,) of spectra (n, p) with a saved classifier."""
    return _load_classifier(classifier).predict(spectra)


def _check_journal_is_this_run(path, journal: dict, specimen, cfg, k: int, L: int) -> None:
    """Refuse a journal written by another run: its grid, phases, k, seed and pattern must be
    this run's, and its first spectra must be what this specimen measures there (a simulated
    specimen is deterministic per pixel), or the resumed run could not match the original;
    and its spectra must be counts of the specimen's length."""
    sp = journal["spectrum"]
    if sp.ndim != 2 or sp.shape[1] != specimen.axis.size:
        raise InputError(f"{path}: the journal's spectra have {sp.shape[-1]} channels, the run's "
                         f"specimen {specimen.axis.size}; is this journal from another run?")
    if not np.isfinite(sp).all() or (sp < 0).any():
        raise InputError(f"{path}: the journal holds spectra with NaN, inf or negative counts (corrupt journal)")
    js = journal.get("settings") or {}
    run = js.get("run") or {}
    H, W = specimen.shape
    mine = {"grid": [H, W], "phases": L, "k": k, "seed": cfg.seed, "initial_pattern": cfg.initial_pattern,
            "initial_fraction": cfg.initial_fraction, "batch": cfg.batch, "batch_mode": cfg.batch_mode}
    theirs = {"grid": js.get("grid"), "phases": js.get("phases"), "k": js.get("k"),
              **{key: run.get(key) for key in ("seed", "initial_pattern", "initial_fraction", "batch", "batch_mode")}}
    differ = [f"{key} {theirs[key]!r} (this run: {mine[key]!r})" for key in mine
              if theirs[key] is not None and (list(theirs[key]) if key == "grid" else theirs[key]) != mine[key]]
    if differ:
        raise InputError(f"{path} is from another run: {', '.join(differ)}; resume needs this run's own journal")
    pos = journal["position"][:16]
    if np.any(pos < 0) or np.any(pos[:, 0] >= H) or np.any(pos[:, 1] >= W):
        raise InputError(f"{path} is from another run: positions outside the {H}x{W} grid")
    if getattr(specimen, "deterministic", True):
        again = np.asarray(specimen.measure(pos), np.float32)
        if not np.array_equal(again, np.asarray(journal["spectrum"][:16], np.float32)):
            raise InputError(f"{path} is from another run: its spectra are not this run's specimen's "
                             f"at the same positions; resume needs this run's own journal")


def _static_baseline(specimen, clf, order: np.ndarray, fractions, n_phases: int, k: int):
    """TD of a static scan measuring ``order`` prefixes, classified and reconstructed."""
    from .reconstruction import reconstruct

    H, W = specimen.shape
    n_max = int(round(max(fractions) * H * W))
    pos = order[:n_max]
    labels = np.empty(len(pos), dtype=np.int16)
    for a in range(0, len(pos), 4096):
        labels[a:a + 4096] = clf.predict(specimen.measure(pos[a:a + 4096]))
    truth = specimen.phase_map
    curve = []
    for f in fractions:
        n = int(round(f * H * W))
        rec = reconstruct((H, W), pos[:n], labels[:n], n_phases, k)
        curve.append([float(n / (H * W)), float(np.mean(rec != truth))])
    return curve


def run_slads(ctx, specimen, classifier, erd_model, *, target_fraction: float = 0.15,
              initial_fraction: float = 0.01, initial_pattern: str = "halton", batch: int = 1,
              batch_mode: str = "top", k: int = 10, seed: int = 0, frame_interval: float = 0.25,
              send_maps: bool = True, baselines=("random", "halton"), n_baseline_points: int = 12,
              overlap: bool = False, stop_threshold: float | None = None, stop_min_fraction: float = 0.02,
              journal_path=None, resume: bool = False, journal_settings: dict | None = None,
              baseline_fractions=()) -> dict:
    """Run SLADS on a specimen: measure, classify, reconstruct, select, until the budget
    (or the stopping rule, or a stop request; the result says which).

    With ``overlap``, the next batch is chosen (as pseudo-measurements) while the current
    one is measured and classified in a second thread, as an instrument would run.
    With ``journal_path``, every measured batch (positions, spectra, labels) is appended
    to that HDF5 journal before it is used; with ``resume`` the journal's measurements are
    replayed first (nothing is measured twice) and the run continues from there.

    Streams ``baseline`` messages (static random / Halton scans through the same
    classifier and reconstruction), then ``frame`` messages (new positions and labels, TD,
    fraction, rate and, with ``send_maps``, the reconstruction and ERD map) at most every
    ``frame_interval`` s.

    Returns
    -------
    dict
        grid, phases, sampling_fraction, td, td_curve, td_random, td_halton, curves of the
        static scans, misclassification_run, positions (n, 2), labels (n,),
        reconstruction (H, W), mask (H, W), erd (H, W), stop_reason, seconds,
        measurements_per_second, n_replayed.
    """
    from .acquisition import Journal, RunConfig, acquire, read_journal
    from .sampling import Sampler, halton_order, random_order

    t0 = time.perf_counter()
    if callable(getattr(specimen, "attach_context", None)):
        specimen.attach_context(ctx)      # a microscope reports outages and honours stop while it waits
    clf = _load_classifier(classifier)
    erd = _load_erd(erd_model)
    clf.axis.require_compatible(specimen.axis, "specimen spectra")
    L = specimen.n_phases
    if clf.n_phases != L:
        raise InputError(f"the classifier knows {clf.n_phases} phases but the specimen has {L}")
    cfg = RunConfig(target_fraction=target_fraction, initial_fraction=initial_fraction,
                    initial_pattern=initial_pattern, batch=batch, batch_mode=batch_mode, overlap=overlap,
                    seed=seed, frame_interval=frame_interval, send_maps=send_maps,
                    stop_threshold=stop_threshold, stop_min_fraction=stop_min_fraction).check()
    H, W = specimen.shape
    P = H * W
    truth = getattr(specimen, "phase_map", None)
    sampler = Sampler((H, W), L, erd, k=k, truth=truth)
    target = max(1, int(round(target_fraction * P)))
    # a journal to resume from is read first, so that a bad one is reported at once
    replay = read_journal(journal_path) if journal_path is not None and resume else None
    if replay is not None and len(replay["position"]):
        _check_journal_is_this_run(journal_path, replay, specimen, cfg, k, L)

    # static scans at the same budget, through the same classifier and reconstruction
    baseline_curves, baseline_orders = {}, {}
    fr = np.linspace(min(initial_fraction, target / P), target / P, n_baseline_points)
    fr = np.unique(np.clip(np.concatenate([fr, [f for f in baseline_fractions if f <= target / P]]), 1 / P, 1))
    for i, name in enumerate(baselines if truth is not None else ()):
        ctx.checkpoint()
        ctx.progress("baseline", i, len(baselines), baseline=name)
        if name == "random":
            order = random_order((H, W), seed + 1)
        elif name == "halton":
            order = halton_order((H, W), target, seed + 1)
        else:
            raise InputError(f"unknown baseline {name!r} (random or halton)")
        baseline_orders[name] = order
        baseline_curves[name] = _static_baseline(specimen, clf, order, fr, L, k)
        ctx.emit("baseline", name=name, curve=baseline_curves[name])
        ctx.progress("baseline", i + 1, len(baselines), baseline=name)

    journal = None
    if journal_path is not None:
        if resume:
            journal = Journal.append_to(journal_path, replay)
        else:
            settings = dict(journal_settings or {})
            settings.update({"run": cfg.to_dict(), "k": k, "grid": [H, W], "phases": L})
            journal = Journal(journal_path, specimen.axis.size, settings)
    try:
        core = acquire(ctx, sampler, specimen.measure, clf.predict, cfg, journal=journal, replay=replay)
    finally:
        if journal is not None:
            journal.close()
    positions, labels = core["positions"], core["labels"]
    truth_lab = specimen.labels[positions[:, 0], positions[:, 1]] if hasattr(specimen, "labels") else None
    result = {
        "grid": [H, W],
        "phases": int(L),
        "phase_names": list(clf.phase_names),
        "sampling_fraction": sampler.fraction,
        "n_measured": sampler.n_measured,
        "n_replayed": core["n_replayed"],
        "td": sampler.td,
        "td_curve": core["td_curve"],
        "misclassification_run": (float(np.mean(labels != truth_lab))
                                  if truth_lab is not None and len(labels) else None),
        "stop_reason": core["stop_reason"],
        "stop_threshold": core["stop_threshold"],
        "epsilon": core["epsilon"],
        "positions": positions,
        "labels": labels,
        "reconstruction": sampler.reconstruction,
        "mask": sampler.mask,
        "erd": sampler.erd_map,
        "c": float(getattr(erd, "c", float("nan"))),
        "measurements_per_second": (sampler.n_measured - core["n_replayed"]) / max(core["seconds"], 1e-9),
    }
    for name, curve_b in baseline_curves.items():
        td_b = curve_b[-1][1]
        if abs(curve_b[-1][0] - sampler.fraction) > 0.5 / P:
            # stopped before the target: a static scan with the same number of spectra
            td_b = _static_baseline(specimen, clf, baseline_orders[name], [sampler.fraction], L, k)[-1][1]
        result[f"td_{name}"] = td_b
        result[f"td_curve_{name}"] = curve_b
    result["seconds"] = time.perf_counter() - t0
    return result


def call(ctx, target: str, kwargs: dict | None = None):
    """Call ``module:function`` with ``kwargs`` (for tests and scripts)."""
    mod, _, fn = target.partition(":")
    return getattr(importlib.import_module(mod), fn)(**(kwargs or {}))


def engine_info(ctx) -> dict:
    """Versions and process id of the engine (imports TensorFlow)."""
    import os
    import sys

    import keras
    import tensorflow as tf

    return {"pid": os.getpid(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": sys.version.split()[0], "tensorflow_loaded": "tensorflow" in sys.modules}


def sleep_steps(ctx, steps: int = 100, dt: float = 0.01) -> int:
    """A test job: ``steps`` checkpoints of ``dt`` seconds; returns the steps done."""
    done = 0
    for i in range(steps):
        if ctx.checkpoint(graceful=True):
            break
        time.sleep(dt)
        done += 1
        ctx.progress("sleep", done, steps)
    return done


JOBS = {
    "engine_info": engine_info,
    "sleep_steps": sleep_steps,
    "train_classifier": train_classifier,
    "train_erd": train_erd_job,
    "run_slads": run_slads,
    "classify": classify,
    "call": call,
}


def resolve(name: str):
    """The job function registered as ``name``."""
    try:
        return JOBS[name]
    except KeyError:
        raise InputError(f"unknown engine job {name!r}; known: {sorted(JOBS)}") from None
