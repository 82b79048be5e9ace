"""The run folder: its layout, what makes a run resumable, and the run's result.

One module owns the file names of a run folder (``DIR``), for ``slads-eds run``/``demo``/
``replay``, the napari Run tab and ``slads-eds acquire``:

=========================  =============================================================
``run_settings.json``      mode (run, replay, microscope), the experiment's settings,
                           L, the source (micrograph, regions, map file), training time
``specimen.npz``           the simulated object (runs only; a replay rebuilds its specimen
                           from the map file)
``models/classifier/``     the spectrum classifier (``classifier.json`` + model files)
``models/erd_model.npz``   the ERD model
``models/training.json``   the classifier's and the ERD model's training reports
``journal.h5``             every measured batch, written before it is used (resume)
``result.json``            the :class:`RunResult` (same keys for every kind of run)
``run.npz``, images        :func:`napari_slads_eds.results.write_run`
=========================  =============================================================

No Qt, no TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ._files import JOURNAL_NAME, write_json_atomic
from ._validation import InputError, check_grid_shape, check_int
from .config import RunSettings, SamplingConfig
from .results import RESULT_ARRAYS, RESULT_FILE, RUN_FILE, write_run

__all__ = ["SETTINGS_FILE", "SPECIMEN_FILE", "TRAINING_FILE", "CLASSIFIER_DIR", "ERD_FILE", "MODELS_DIR",
           "JOURNAL_FILE", "RESULT_FILE", "RUN_FILE", "RESULT_ARRAYS", "MODES", "RunFolder", "write_run_folder",
           "read_run_folder", "read_mode", "sampling_job_kwargs", "read_json"]

SETTINGS_FILE = "run_settings.json"
SPECIMEN_FILE = "specimen.npz"
MODELS_DIR = "models"
TRAINING_FILE = f"{MODELS_DIR}/training.json"
CLASSIFIER_DIR = f"{MODELS_DIR}/classifier"
ERD_FILE = f"{MODELS_DIR}/erd_model.npz"
JOURNAL_FILE = JOURNAL_NAME
#: Kinds of run a folder holds: a simulated object, a replayed spectrum image, a microscope.
MODES = ("run", "replay", "microscope")


@dataclass
class RunFolder:
    """A run folder as :func:`read_run_folder` finds it (everything a resume needs).

    ``settings`` is a :class:`~napari_slads_eds.config.RunSettings` for a simulated run
    (``mode`` "run", ``specimen`` its :class:`~napari_slads_eds.specimen.SimulatedSpecimen`)
    and the replay settings as a dict for a replay (``mode`` "replay", ``specimen`` None:
    :func:`napari_slads_eds.replay.resume_replay` rebuilds it from the map).
    """

    path: Path
    settings: RunSettings
    n_phases: int
    source: dict
    classifier_report: dict
    erd_report: dict
    specimen: object
    seconds_training: float = 0.0
    mode: str = "run"

    @property
    def classifier_path(self) -> Path:
        return self.path / CLASSIFIER_DIR

    @property
    def erd_path(self) -> Path:
        return self.path / ERD_FILE


def write_run_folder(out_dir, specimen, settings, clf_report: dict, erd_report: dict, *,
                     clf_dir=None, erd_path=None, source: dict | None = None, n_phases: int | None = None,
                     seconds_training: float = 0.0, mode: str = "run") -> Path:
    """Write what a run folder holds before sampling starts, which makes the run resumable
    (:func:`resume_experiment`): the models, ``models/training.json`` (the classifier's and
    the ERD model's reports), the specimen and ``run_settings.json``.

    Parameters
    ----------
    out_dir : path
    specimen : SimulatedSpecimen or None
        None for a run on a microscope or a replay (no ``specimen.npz``; ``n_phases`` is
        then needed).
    settings : RunSettings or ReplaySettings
        Any settings dataclass with ``check()``; written as a dict.
    clf_report, erd_report : dict
        Training reports of the classifier and the ERD model.
    clf_dir, erd_path : path, optional
        A classifier folder and an ERD model file to copy into ``models/`` (None: they are
        there already, as when :func:`run_experiment` trains them in place).  The reports'
        ``"path"`` then names the copies.
    source : dict, optional
        Where the specimen came from (micrograph, regions, ...).
    n_phases : int, optional
        L (default: the specimen's).
    mode : {"run", "replay", "microscope"}
        What the folder holds (:data:`MODES`).

    Returns
    -------
    Path of the folder.
    """
    import shutil

    from .specimen import save_specimen

    if mode not in MODES:
        raise InputError(f"write_run_folder: mode must be one of {MODES}, got {mode!r}")
    if specimen is None and n_phases is None:
        raise InputError("write_run_folder: a run without a specimen needs n_phases")
    if n_phases is not None:
        n_phases = check_int(n_phases, "write_run_folder: n_phases", 1, 255)
    if not callable(getattr(settings, "check", None)):
        raise InputError(f"write_run_folder: settings must be RunSettings or ReplaySettings, got "
                         f"{type(settings).__name__}")
    settings.check()                       # bad settings before any file is written
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"write_run_folder: {out} exists and is not a folder")
    (out / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    clf_report, erd_report = dict(clf_report or {}), dict(erd_report or {})
    if clf_dir is not None:
        src, dst = Path(clf_dir), out / CLASSIFIER_DIR
        if not dst.exists() or src.resolve() != dst.resolve():
            from .likelihood import check_classifier_folder

            names = check_classifier_folder(src)
            dst.mkdir(parents=True, exist_ok=True)
            for name in names:
                shutil.copy2(src / name, dst / name)
        clf_report["path"] = str(dst)
    if erd_path is not None:
        src, dst = Path(erd_path), out / ERD_FILE
        if not src.is_file():
            raise InputError(f"ERD model file not found: {src}")
        if not dst.exists() or src.resolve() != dst.resolve():
            shutil.copy2(src, dst)
        erd_report["path"] = str(dst)
    write_json_atomic(out / TRAINING_FILE, {"classifier": clf_report, "erd": erd_report})
    if specimen is not None:
        save_specimen(specimen, out / SPECIMEN_FILE)
    write_json_atomic(out / SETTINGS_FILE, {"mode": mode, "settings": asdict(settings),
                                       "n_phases": int(n_phases if n_phases is not None else specimen.n_phases),
                                       "source": source or {}, "seconds_training": float(seconds_training)})
    return out


def read_run_folder(out_dir) -> RunFolder:
    """Read a run folder written by :func:`write_run_folder` (and journaled by the run).

    Raises
    ------
    InputError
        The folder is not a resumable run (missing settings, specimen, models or journal),
        or one of its files is corrupt.
    """
    from .specimen import load_specimen

    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out} cannot be resumed: not a folder")
    from .likelihood import classifier_files

    def require(names):
        for name in names:
            if not (out / name).is_file():
                raise InputError(f"{out} cannot be resumed: {name} is missing (was it started with slads-eds "
                                 "run/demo or the napari plugin, and did training finish?)")

    require((SETTINGS_FILE, TRAINING_FILE, ERD_FILE, f"{CLASSIFIER_DIR}/classifier.json", JOURNAL_NAME))
    meta = read_json(out / SETTINGS_FILE)
    mode = _mode_of(meta)
    if not isinstance(meta.get("source", {}), dict):
        raise InputError(f"{out / SETTINGS_FILE}: 'source' must be a JSON object (where the specimen came "
                         f"from), got {meta['source']!r:.80}")
    if mode not in ("run", "replay"):
        raise InputError(f"{out} holds a {mode!r} run, which is not resumed from here "
                         "(a microscope run continues with slads-eds acquire --resume)")
    if mode == "run":
        require((SPECIMEN_FILE,))
    # the classifier's kind (its classifier.json) says which model files it has
    require([f"{CLASSIFIER_DIR}/{n}" for n in classifier_files(out / CLASSIFIER_DIR)])
    training = read_json(out / TRAINING_FILE)
    try:
        s = RunSettings(**meta["settings"]).check() if mode == "run" else dict(meta["settings"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{out / SETTINGS_FILE}: incomplete or invalid run settings ({exc})") from exc
    try:
        clf_report, erd_report = dict(training["classifier"]), dict(training["erd"])
        float(erd_report["c"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{out / TRAINING_FILE}: incomplete training report (needs classifier and "
                         f"erd with its c; missing or invalid {exc})") from exc
    specimen = load_specimen(out / SPECIMEN_FILE) if mode == "run" else None
    L = check_int(meta.get("n_phases") or getattr(specimen, "n_phases", None), f"{out / SETTINGS_FILE}: n_phases",
                  1, 255)
    if specimen is not None and L != specimen.n_phases:
        raise InputError(f"{out / SETTINGS_FILE}: n_phases is {L} but the specimen has {specimen.n_phases} phases")
    try:
        seconds = float(meta.get("seconds_training", 0.0))
    except (TypeError, ValueError):
        seconds = 0.0
    return RunFolder(out, s, L, meta.get("source", {}), clf_report, erd_report, specimen, seconds, mode)


def read_mode(out_dir) -> str:
    """What a run folder holds: "run", "replay" or "microscope" ("run" for folders written
    before the mode was recorded).

    Raises
    ------
    InputError
        No ``run_settings.json``, or an unreadable one.
    """
    p = Path(out_dir) / SETTINGS_FILE
    if not p.is_file():
        raise InputError(f"{Path(out_dir)} is not a run folder: {SETTINGS_FILE} is missing (a run stopped before "
                         "its sampling began has nothing to resume: start it again)")
    return _mode_of(read_json(p))


def _mode_of(meta: dict) -> str:
    """The mode ``run_settings.json`` (``meta``) records; folders written before the mode
    was recorded: "microscope" when their source names one, else "run"."""
    source = meta.get("source")
    if meta.get("mode") is None and isinstance(source, dict) and source.get("microscope"):
        return "microscope"
    return str(meta.get("mode", "run"))


def sampling_job_kwargs(out_dir, config: SamplingConfig, erd_report: dict, *, resume: bool,
                        stop_td: float | None = None, journal_settings: dict | None = None,
                        send_maps: bool = False) -> dict:
    """Arguments of the engine job ``run_slads`` for the run in ``out_dir``: its models,
    its journal (``resume``: replay it first), the whole sampling ``config`` and, with
    ``stop_td``, the learned stopping rule's threshold from ``erd_report``; ``send_maps``
    for a live display."""
    out = Path(out_dir)
    stop = erd_report.get("stopping") if isinstance(erd_report, dict) else None
    stop = stop if isinstance(stop, dict) else {}
    return dict(classifier=str(out / CLASSIFIER_DIR), erd_model=str(out / ERD_FILE),
                stop_threshold=stop.get("threshold") if stop_td is not None else None,
                journal_path=str(out / JOURNAL_FILE), resume=resume,
                journal_settings=dict(journal_settings or {}), config=config, send_maps=send_maps)


def read_json(path) -> dict:
    """A JSON object from ``path``.

    Raises
    ------
    InputError
        Unreadable, not JSON, or not an object.
    """
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON (corrupt or truncated?): {exc}") from exc
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


# ----------------------------------------------------------------------------- the result

#: Training-report entries a result keeps.
_CLASSIFIER_KEYS = ("kind", "misclassification", "confusion", "threshold", "n_train", "n_val", "seconds", "path")
_ERD_KEYS = ("c", "c_search", "rows", "seconds", "regressor", "stopping", "path")


@dataclass
class RunResult:
    """The result of one SLADS run, the same for every kind of run (simulated object,
    replayed map, microscope) and every caller (``slads-eds``, the napari Run tab, a script):
    ``result.json`` holds every field that is not an array, so the three write the same keys.

    Attributes
    ----------
    mode : {"run", "replay", "microscope"}
    grid : [H, W]
    phases : int
        L.
    phase_names : list of str
    sampling_fraction : float
        Measured pixels / (H * W).
    n_measured, n_replayed : int
        Measurements in all, and those replayed from the journal by a resume.
    td : float
        Total distortion (fraction of wrong pixels, paper eq. 2) of the final reconstruction;
        NaN without a ground truth (a microscope run without its specimen).
    td_curve : list of [fraction, TD]
    td_random, td_halton : float or None
        TD of the static scans at the same dose (None: not run).
    td_curve_random, td_curve_halton : list of [fraction, TD] or None
    td_in_loop : float or None
        With soft labels: the TD of the in-loop decisions (before the final ones).
    misclassification : float
        The classifier's validation misclassification.
    misclassification_run : float or None
        Fraction of measured spectra whose label differs from the specimen's.
    stop_reason : str
    stop_threshold, epsilon : float or None
        The learned stopping rule's threshold and its last value.
    c : float
        The ERD's c (paper eq. 9).
    classifier_kind, uncertainty : str
    measurements_per_second : float
    seconds : float
        Sampling, plus training where the call trained the models.
    wall_seconds : float or None
        Start to end as the caller saw it (the GUI: including the engine start).
    classifier, erd_model : dict
        Their training reports (misclassification, confusion, c, c_search, path, ...).
    settings : dict
        The experiment's settings (:class:`~napari_slads_eds.config.RunSettings`, the
        replay's, or the microscope run's) and, from the GUI, its display settings.
    sampling : dict
        :meth:`SamplingConfig.to_dict` of the run.
    source : dict
        Where the specimen came from.
    dose : dict
        ``dwell_per_position`` (in units of a full-raster pixel's dwell), ``total_dwell``,
        ``fraction_of_full_raster``.
    microscope : dict or None
        URL, dwell (s) and ``/v1/info`` of a microscope run.
    run_folder : str or None
    resumed : bool
    positions : ndarray (n, 2) int
    labels : ndarray (n,) int, 0..L
    reconstruction, mask, erd : ndarray (H, W)
        Phase labels (int), measurement mask (bool), ERD map (float).
    ground_truth, specimen_labels : ndarray (H, W) or None
    posteriors, labels_in_loop, decided_probabilities : ndarray or None
        Soft labels only.
    """

    mode: str
    grid: list
    phases: int
    phase_names: list
    sampling_fraction: float
    n_measured: int
    n_replayed: int
    td: float
    td_curve: list
    td_random: float | None
    td_curve_random: list | None
    td_halton: float | None
    td_curve_halton: list | None
    td_in_loop: float | None
    misclassification: float
    misclassification_run: float | None
    stop_reason: str
    stop_threshold: float | None
    epsilon: float | None
    c: float
    classifier_kind: str
    uncertainty: str
    measurements_per_second: float
    seconds: float
    wall_seconds: float | None
    classifier: dict
    erd_model: dict
    settings: dict
    sampling: dict
    source: dict
    dose: dict
    microscope: dict | None
    run_folder: str | None
    resumed: bool
    positions: object = None
    labels: object = None
    reconstruction: object = None
    mask: object = None
    erd: object = None
    ground_truth: object = None
    specimen_labels: object = None
    posteriors: object = None
    labels_in_loop: object = None
    decided_probabilities: object = None

    @classmethod
    def json_keys(cls) -> tuple:
        """The keys of every ``result.json`` (sorted)."""
        from dataclasses import fields

        return tuple(sorted(f.name for f in fields(cls) if f.name not in RESULT_ARRAYS))

    @classmethod
    def from_job(cls, raw: dict, *, mode: str, config: SamplingConfig, settings: dict, source: dict,
                 classifier_report: dict, erd_report: dict, seconds: float, ground_truth=None,
                 specimen_labels=None, dwell_per_position: float = 1.0, microscope: dict | None = None,
                 run_folder=None, resumed: bool = False, wall_seconds: float | None = None) -> "RunResult":
        """The result of the engine job ``run_slads`` (``raw``) with the run's context.

        Parameters
        ----------
        raw : dict
            What :func:`napari_slads_eds.jobs.run_slads` returned.
        mode : {"run", "replay", "microscope"}
        config : SamplingConfig
        settings, source : dict
        classifier_report, erd_report : dict
            Training reports (the entries in ``_CLASSIFIER_KEYS``/``_ERD_KEYS`` are kept).
        seconds : float
        ground_truth, specimen_labels : ndarray (H, W), optional
        dwell_per_position : float
            Dwell of one measurement in units of the full raster's (a replay's emulated
            dwell; 1 otherwise).
        microscope, run_folder, resumed, wall_seconds
            See the attributes.

        Raises
        ------
        InputError
            An unknown ``mode``, or ``raw`` without the job's entries.
        """
        if mode not in MODES:
            raise InputError(f"RunResult: mode must be one of {MODES}, got {mode!r}")
        if not isinstance(raw, dict):
            raise InputError(f"RunResult: the job's result must be a dict, got {type(raw).__name__}")
        if isinstance(config, dict):
            config = SamplingConfig.from_dict(config)
        if not isinstance(config, SamplingConfig):
            raise InputError(f"RunResult: config must be a SamplingConfig, got {type(config).__name__}")
        for name, d in (("settings", settings), ("source", source), ("classifier_report", classifier_report),
                        ("erd_report", erd_report)):
            if d is not None and not isinstance(d, dict):
                raise InputError(f"RunResult: {name} must be a dict, got {type(d).__name__}")
        settings, classifier_report, erd_report = settings or {}, classifier_report or {}, erd_report or {}
        try:
            check_grid_shape(raw["grid"])
        except KeyError as exc:
            raise InputError(f"RunResult: the job's result lacks {exc}") from exc
        except InputError as exc:
            raise InputError(f"RunResult: the job's result has a bad grid: {exc}") from exc
        try:
            H, W = (int(x) for x in raw["grid"])
            n = int(raw["n_measured"])
            td = raw.get("td")
            d = float(dwell_per_position)
            return cls(
                mode=mode, grid=[H, W], phases=int(raw["phases"]), phase_names=list(raw.get("phase_names") or []),
                sampling_fraction=float(raw["sampling_fraction"]), n_measured=n,
                n_replayed=int(raw.get("n_replayed") or 0),
                td=float("nan") if td is None else float(td), td_curve=list(raw.get("td_curve") or []),
                td_random=raw.get("td_random"), td_curve_random=raw.get("td_curve_random"),
                td_halton=raw.get("td_halton"), td_curve_halton=raw.get("td_curve_halton"),
                td_in_loop=raw.get("td_in_loop"),
                misclassification=float(classifier_report.get("misclassification", float("nan"))),
                misclassification_run=raw.get("misclassification_run"), stop_reason=str(raw.get("stop_reason", "")),
                stop_threshold=raw.get("stop_threshold"), epsilon=raw.get("epsilon"),
                c=float(erd_report.get("c", raw.get("c", float("nan")))),
                classifier_kind=str(raw.get("classifier_kind", classifier_report.get("kind", "cnn"))),
                uncertainty=str(raw.get("uncertainty", config.uncertainty)),
                measurements_per_second=float(raw.get("measurements_per_second", 0.0)), seconds=float(seconds),
                wall_seconds=None if wall_seconds is None else float(wall_seconds),
                classifier={k: classifier_report[k] for k in _CLASSIFIER_KEYS if k in classifier_report},
                erd_model={k: erd_report[k] for k in _ERD_KEYS if k in erd_report},
                settings=dict(settings), sampling=config.to_dict(), source=dict(source or {}),
                dose={"dwell_per_position": d, "total_dwell": d * n, "fraction_of_full_raster": d * n / (H * W)},
                microscope=microscope, run_folder=None if run_folder is None else str(run_folder),
                resumed=bool(resumed),
                **{k: raw.get(k) for k in RESULT_ARRAYS if k not in ("ground_truth", "specimen_labels")},
                ground_truth=ground_truth, specimen_labels=specimen_labels)
        except KeyError as exc:
            raise InputError(f"RunResult: the job's result lacks {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise InputError(f"RunResult: an entry of the job's result or dwell_per_position is not a number "
                             f"({exc})") from exc

    def to_dict(self) -> dict:
        """Every field, arrays included (the dict :func:`napari_slads_eds.results.write_run`
        writes and the display code reads)."""
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(self)}

    def write(self, out_dir) -> dict:
        """Write ``result.json``, ``run.npz`` and the images into ``out_dir``
        (:func:`napari_slads_eds.results.write_run`); returns name -> path."""
        return write_run(self.to_dict(), out_dir)
