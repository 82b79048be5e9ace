"""Jobs that run inside the engine process (see :mod:`napari_slads_eds.engine`): the registry.

Each job is ``fn(ctx, **kwargs) -> result`` where ``ctx`` is a
:class:`~napari_slads_eds.engine.JobContext`; the engine resolves a job by its name in
:data:`JOBS` (:func:`resolve`).  The jobs live with their work: training in
:mod:`napari_slads_eds.training_jobs`, the sampling run in
:mod:`napari_slads_eds.slads_job`, the replay in :mod:`napari_slads_eds.replay`; the small
ones are here.  Only the jobs (and what they import lazily) touch TensorFlow, through
:mod:`napari_slads_eds.classifier`.  Results are plain Python/numpy objects so that they
cross the process boundary by value.
"""

from __future__ import annotations

import importlib
import time

import numpy as np

from ._validation import InputError
# posterior_of is re-exported: the benchmarks import it from here
from .slads_job import _load_classifier, posterior_of, run_slads
from .training_jobs import train_classifier, train_erd_job

__all__ = ["JOBS", "resolve", "train_classifier", "train_erd_job", "run_slads", "classify", "posterior_of"]


def classify(ctx, classifier, spectra) -> np.ndarray:
    """Labels (n,) of spectra (n, p) with a saved classifier."""
    return _load_classifier(classifier).predict(spectra)


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
    # jobs that live with the code they drive, imported by name when first used (the replay
    # module also starts engines of its own, so a static import here would be a cycle)
    "replay": "napari_slads_eds.replay:replay_job",
    "classify": classify,
    "call": call,
}


def resolve(name: str):
    """The job function registered as ``name``."""
    try:
        job = JOBS[name]
    except KeyError:
        raise InputError(f"unknown engine job {name!r}; known: {sorted(JOBS)}") from None
    if isinstance(job, str):
        mod, _, fn = job.partition(":")
        job = JOBS[name] = getattr(importlib.import_module(mod), fn)
    return job
