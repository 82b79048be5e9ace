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


def train_erd_job(ctx, label_images, n_phases: int, out_path, seed: int = 0, **kwargs) -> dict:
    """Build the training database, fit the ERD model for each c, choose c; save the model."""
    from .erd import train_erd

    def progress(info):
        ctx.checkpoint()
        ctx.progress(info["stage"], info["done"], info["total"],
                     **{k: v for k, v in info.items() if k not in ("stage", "done", "total")})

    model, report = train_erd(label_images, n_phases, seed=seed, progress=progress, **kwargs)
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
    from .erd import LinearERD

    if isinstance(erd_model, (str, Path)):
        return LinearERD.load(erd_model)
    return erd_model


def classify(ctx, classifier, spectra) -> np.ndarray:
    """Labels (n,) of spectra (n, p) with a saved classifier."""
    return _load_classifier(classifier).predict(spectra)


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
              overlap: bool = False) -> dict:
    """Run SLADS on a specimen: measure, classify, reconstruct, select, until the budget.

    With ``overlap``, the next batch is chosen (as pseudo-measurements) while the current
    one is measured and classified in a second thread, as an instrument would run.

    Streams ``frame`` messages (new positions and labels, TD, fraction, rate and, with
    ``send_maps``, the reconstruction and ERD map) at most every ``frame_interval`` s.
    A stop request ends the run gracefully: the result holds what was measured.

    Returns
    -------
    dict
        grid, phases, sampling_fraction, td, td_curve, td_random, td_halton, curves of the
        static scans, misclassification_run, positions (n, 2), labels (n,),
        reconstruction (H, W), mask (H, W), erd (H, W), stop_reason, seconds,
        measurements_per_second.
    """
    from .sampling import Sampler, halton_order, initial_positions, random_order

    t0 = time.perf_counter()
    clf = _load_classifier(classifier)
    erd = _load_erd(erd_model)
    clf.axis.require_compatible(specimen.axis, "specimen spectra")
    L = specimen.n_phases
    if clf.n_phases != L:
        raise InputError(f"the classifier knows {clf.n_phases} phases but the specimen has {L}")
    if not 0 < target_fraction <= 1:
        raise InputError(f"target sampling fraction must be in (0, 1], got {target_fraction}")
    H, W = specimen.shape
    P = H * W
    sampler = Sampler((H, W), L, erd, k=k, truth=specimen.phase_map)
    target = max(1, int(round(target_fraction * P)))
    init = initial_positions((H, W), min(initial_fraction, target_fraction), initial_pattern, seed)[:target]
    init_labels = clf.predict(specimen.measure(init))
    sampler.update(init, init_labels)
    pos_log = [init]
    lab_log = [init_labels]
    curve = [[sampler.fraction, sampler.td]]
    sent = 0
    last = 0.0
    t_loop = time.perf_counter()

    def frame(final=False):
        nonlocal sent, last
        newpos = np.concatenate(pos_log[sent:]) if len(pos_log) > sent else np.zeros((0, 2), np.int64)
        newlab = np.concatenate(lab_log[sent:]) if len(lab_log) > sent else np.zeros(0, np.int16)
        msg = dict(n_measured=sampler.n_measured, fraction=sampler.fraction, td=sampler.td,
                   positions=newpos, labels=newlab, final=final,
                   elapsed=time.perf_counter() - t0,
                   rate=(sampler.n_measured - len(init)) / max(1e-9, time.perf_counter() - t_loop))
        if send_maps:
            msg["reconstruction"] = sampler.reconstruction
            msg["erd"] = sampler.erd_map
        sent = len(pos_log)
        last = time.perf_counter()
        ctx.emit("frame", **msg)

    # static scans at the same budget, through the same classifier and reconstruction
    baseline_curves, baseline_orders = {}, {}
    fr = np.unique(np.clip(np.linspace(min(initial_fraction, target / P), target / P, n_baseline_points),
                           1 / P, 1))
    for i, name in enumerate(baselines):
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
    frame()
    stop_reason = "target fraction reached"

    def acquire(pos):
        return clf.predict(specimen.measure(pos))

    def record(pos, lab):
        sampler.update(pos, lab)
        pos_log.append(pos)
        lab_log.append(lab)
        curve.append([sampler.fraction, sampler.td])
        if time.perf_counter() - last >= frame_interval:
            frame()

    if overlap:
        # Choose the next batch (with pseudo-measurements of the batch in flight) while
        # the current batch is being measured and classified.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="acquire") as pool:
            cur = sampler.select(min(batch, target - sampler.n_measured), "pseudo")
            fut = pool.submit(acquire, cur) if len(cur) else None
            while fut is not None:
                stopping = ctx.checkpoint(graceful=True)
                room = target - sampler.n_measured - len(cur)
                nxt = sampler.select(min(batch, room), "pseudo") if room > 0 and not stopping else None
                record(cur, fut.result())
                if stopping or ctx.stop_requested:
                    if nxt is not None and len(nxt):
                        sampler.cancel(nxt)
                    stop_reason = "stopped by the user"
                    break
                cur = nxt
                fut = pool.submit(acquire, cur) if cur is not None and len(cur) else None
    else:
        while sampler.n_measured < target:
            if ctx.checkpoint(graceful=True):
                stop_reason = "stopped by the user"
                break
            pos = sampler.select(min(batch, target - sampler.n_measured), batch_mode)
            if len(pos) == 0:
                stop_reason = "every pixel measured"
                break
            record(pos, acquire(pos))
    if sampler.n_measured >= P:
        stop_reason = "every pixel measured"
    frame(final=True)
    loop_s = time.perf_counter() - t_loop
    positions = np.concatenate(pos_log)
    labels = np.concatenate(lab_log)
    truth_lab = specimen.labels[positions[:, 0], positions[:, 1]]
    result = {
        "grid": [H, W],
        "phases": int(L),
        "phase_names": list(clf.phase_names),
        "sampling_fraction": sampler.fraction,
        "n_measured": sampler.n_measured,
        "td": sampler.td,
        "td_curve": curve,
        "misclassification_run": float(np.mean(labels != truth_lab)) if len(labels) else 0.0,
        "stop_reason": stop_reason,
        "positions": positions,
        "labels": labels,
        "reconstruction": sampler.reconstruction,
        "mask": sampler.mask,
        "erd": sampler.erd_map,
        "c": float(getattr(erd, "c", float("nan"))),
        "measurements_per_second": (sampler.n_measured - len(init)) / max(loop_s, 1e-9),
    }
    for name, curve_b in baseline_curves.items():
        td_b = curve_b[-1][1]
        if abs(curve_b[-1][0] - sampler.fraction) > 0.5 / P:
            # stopped before the target: a static scan with the same number of spectra
            order = baseline_orders[name]
            td_b = _static_baseline(specimen, clf, order, [sampler.fraction], L, k)[-1][1]
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
