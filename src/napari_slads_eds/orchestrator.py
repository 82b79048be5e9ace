"""The middle of every SLADS job, written once: train the classifier and the ERD model
into a run folder, run the engine job ``run_slads`` on a specimen with its journal, and
turn the job's output into a :class:`~napari_slads_eds.run_folder.RunResult`.

Used by ``slads-eds run``/``demo``/``resume`` (:mod:`napari_slads_eds.pipeline`),
``slads-eds replay`` and the napari replay (:mod:`napari_slads_eds.replay`); the napari
Run tab starts the same ``run_slads`` job with :func:`sampling_job_kwargs` and builds its
result with :meth:`RunResult.from_job`, so every caller writes the same ``result.json``.

Runs in the calling process (GUI or CLI) and imports neither TensorFlow nor Qt; ``engine``
is an :class:`~napari_slads_eds.engine.Engine` (or, inside the engine process, an object
with the same ``run(name, on_message=..., **kwargs)``).
"""

from __future__ import annotations

from pathlib import Path

from .config import SamplingConfig
from .run_folder import CLASSIFIER_DIR, ERD_FILE, RunResult, sampling_job_kwargs

__all__ = ["train_models", "train_classifier", "train_erd", "sample", "finish", "InProcessEngine"]


def _quiet(msg) -> None:
    pass


def train_models(engine, out_dir, *, references, label_images, n_phases: int, seed: int, k: int,
                 fraction: float, classifier_kind: str = "cnn", classifier_options: dict | None = None,
                 stop_td: float | None = None, regressor: str = "linear", c_values=None,
                 on_message=None) -> tuple[dict, dict]:
    """Train the spectrum classifier into ``out_dir/models/classifier`` and the ERD model
    into ``out_dir/models/erd_model.npz`` (engine jobs ``train_classifier`` and
    ``train_erd``).

    Parameters
    ----------
    engine : Engine
    out_dir : path
    references : ReferenceSpectra
        Training (and validation) spectra of the L phases.
    label_images : list of ndarray (h, w) int
        Label images (1..L) of the ERD training database (paper section 2.2).
    n_phases : int
    seed, k : int
    fraction : float
        The run's target sampling fraction; the ERD's c is searched at
        ``clip(fraction, 0.05, 0.3)``.
    classifier_kind : {"cnn", "poisson"}
    classifier_options : dict, optional
        Further arguments of the classifier training (epochs, noise_lambda, ...).
    stop_td : float, optional
        Learn the stopping rule for this TD.
    regressor : {"linear", "rich", "mlp"}
    c_values : sequence of float, optional
        Candidates for c (default: :data:`napari_slads_eds.erd.C_CANDIDATES`).
    on_message : callable(dict), optional

    Returns
    -------
    (classifier_report, erd_report) : dict, dict
        Their ``"path"`` names the files written.
    """
    clf_report = train_classifier(engine, out_dir, references=references, seed=seed, kind=classifier_kind,
                                  options=classifier_options, on_message=on_message)
    erd_report = train_erd(engine, out_dir, label_images=label_images, n_phases=n_phases, seed=seed, k=k,
                           fraction=fraction, stop_td=stop_td, regressor=regressor, c_values=c_values,
                           on_message=on_message)
    return clf_report, erd_report


def train_classifier(engine, out_dir, *, references, seed: int, kind: str = "cnn", options: dict | None = None,
                     on_message=None) -> dict:
    """Engine job ``train_classifier`` into ``out_dir/models/classifier`` (see
    :func:`train_models`); returns its report."""
    return engine.run("train_classifier", on_message=on_message or _quiet, references=references,
                      out_dir=str(Path(out_dir) / CLASSIFIER_DIR), seed=seed, kind=kind, **dict(options or {}))


def train_erd(engine, out_dir, *, label_images, n_phases: int, seed: int, k: int, fraction: float,
              stop_td: float | None = None, regressor: str = "linear", c_values=None, on_message=None) -> dict:
    """Engine job ``train_erd`` into ``out_dir/models/erd_model.npz`` (see
    :func:`train_models`); returns its report."""
    erd_kw = {"c_values": tuple(c_values)} if c_values else {}
    return engine.run("train_erd", on_message=on_message or _quiet, label_images=label_images,
                      n_phases=n_phases, out_path=str(Path(out_dir) / ERD_FILE), seed=seed, k=k,
                      c_search_fraction=max(0.05, min(fraction, 0.3)), stop_td=stop_td, regressor=regressor,
                      **erd_kw)


def sample(engine, specimen, out_dir, config: SamplingConfig, erd_report: dict, *, resume: bool,
           stop_td: float | None = None, journal_settings: dict | None = None, send_maps: bool = False,
           on_message=None) -> dict:
    """Run the engine job ``run_slads`` on ``specimen`` with the models and the journal of
    the run folder ``out_dir`` (``resume``: replay the journal first).

    Returns
    -------
    dict
        The job's output (see :func:`napari_slads_eds.jobs.run_slads`).
    """
    kw = sampling_job_kwargs(out_dir, config, erd_report, resume=resume, stop_td=stop_td,
                             journal_settings=journal_settings, send_maps=send_maps)
    return engine.run("run_slads", on_message=on_message or _quiet, specimen=specimen, **kw)


def finish(raw: dict, out_dir, **context) -> RunResult:
    """:meth:`RunResult.from_job` (``context``: its keywords) written into ``out_dir``."""
    result = RunResult.from_job(raw, run_folder=out_dir, **context)
    result.write(out_dir)
    return result


class InProcessEngine:
    """``engine.run(name, **kwargs)`` calling the jobs directly, for code that already runs
    inside the engine process (the ``replay`` job: :func:`run_replay` there)."""

    def __init__(self, ctx, resolve):
        self.ctx = ctx
        self.resolve = resolve          # job name -> function (jobs.resolve; passed in, no import cycle)

    def run(self, name, on_message=None, **kwargs):
        return self.resolve(name)(self.ctx, **kwargs)

    def close(self) -> None:
        pass
