"""The engine's training jobs: the spectrum classifier and the ERD model.

Each job is ``fn(ctx, **kwargs) -> result`` (see :mod:`napari_slads_eds.jobs`, which
registers them by name).  TensorFlow is imported lazily, through
:mod:`napari_slads_eds.classifier` and :mod:`napari_slads_eds.erd_keras`, so only the
engine process loads it.  Results are plain Python/numpy objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._validation import InputError

__all__ = ["train_classifier", "train_erd_job"]


def train_classifier(ctx, references, out_dir, seed: int = 0, kind: str = "cnn", **train_kwargs) -> dict:
    """Train a spectrum classifier on ``references`` and save it to ``out_dir``.

    ``kind``: ``"cnn"``, the paper's NNR detector + 1-D CNN (TensorFlow), or
    ``"poisson"``, the count-aware likelihood classifier
    (:class:`~napari_slads_eds.likelihood.PoissonPhaseClassifier`, numpy only).

    Returns the training report (misclassification, confusion matrix, threshold, ...)
    with ``"path"`` and ``"kind"`` added.
    """
    if kind not in ("cnn", "poisson"):
        raise InputError(f"classifier kind must be 'cnn' or 'poisson', got {kind!r}")
    if kind == "poisson":
        from .likelihood import PoissonPhaseClassifier

        ctx.progress("classifier", 0, 1)
        keep = {k: v for k, v in train_kwargs.items() if k in ("bin_keV", "calibration", "pseudo_counts")}
        lam = float(train_kwargs.get("noise_lambda", 2.0))
        if lam > 0:
            # the specimen adds Poisson(λ) counts per channel to every spectrum (SPEC 3.1): the
            # phase shapes must carry that background too; copies of one reference stay together,
            # so the train/validation halves keep apart
            from .spectra import ReferenceSpectra

            S = np.asarray(references.spectra, np.float64)
            n = int(min(8, max(1, train_kwargs.get("n_noisy", 8))))
            rng = np.random.default_rng([int(seed), 0x9A1])
            aug = S[:, :, None, :] + rng.poisson(lam, size=S.shape[:2] + (n, S.shape[2]))
            references = ReferenceSpectra(aug.reshape(S.shape[0], -1, S.shape[2]), references.axis,
                                          references.phase_names)
        clf, report = PoissonPhaseClassifier.train(references, seed=seed, **keep)
        ctx.progress("classifier", 1, 1)
        out = Path(out_dir)
        clf.save(out)
        report = dict(report)
        report["path"] = str(out)
        return report
    from .classifier import SpectrumClassifier, TrainingCancelled

    def progress(info):
        ctx.emit("progress", stage="classifier", done=int(info.get("epoch", 0)),
                 total=int(info.get("epochs", 0)), **{k: v for k, v in info.items()
                                                      if k not in ("epoch", "epochs", "stage")})

    try:
        clf, report = SpectrumClassifier.train(references, seed=seed, progress=progress,
                                               should_stop=lambda: ctx.stop_requested, **train_kwargs)
    except TrainingCancelled:
        # training stopped because a stop was requested: the context raises the engine's
        # JobCancelled (jobs do not import the engine, which imports them)
        ctx.checkpoint()
        raise
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clf.save(out)
    report = dict(report)
    report["path"] = str(out)
    report["kind"] = "cnn"
    return report


def train_erd_job(ctx, label_images, n_phases: int, out_path, seed: int = 0, stop_td: float | None = None,
                  **kwargs) -> dict:
    """Build the training database, fit the ERD model for each c, choose c; save the model.

    With ``stop_td``, also learn the threshold of the stopping rule for that target TD
    on the training images (``report["stopping"]``)."""
    from .stopping import learn_stopping_threshold
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
