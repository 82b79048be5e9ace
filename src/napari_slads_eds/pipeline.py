"""The main job, end to end: micrograph -> phases -> simulated specimen -> trained models
-> SLADS run -> result files.  Used by the command line; the napari widgets call the
same pieces one by one.

Everything here runs in the calling (GUI or CLI) process and imports neither TensorFlow
nor Qt; training and the sampling loop run in the engine process.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._files import write_json_atomic
from ._validation import InputError, check_int, check_seed
from .erd import ERD_CHOICES
from .segmentation import (Regions, majority_downsample, read_micrograph, segment_phases,
                           split_regions)
from .spectra import (ReferenceSpectra, bundled_standards, default_standards_for,
                      make_reference_spectra, read_spectrum)
from .specimen import SimulatedSpecimen

__all__ = ["RunSettings", "Experiment", "prepare_experiment", "run_experiment", "resume_experiment",
           "RESULT_KEYS", "RunFolder", "write_run_folder", "read_run_folder", "sampling_job_kwargs"]

#: Limits of the micrograph preparation (beyond them a run would only exhaust memory).
MAX_DENOISE = 63
MAX_UPSAMPLE = 16
MAX_UPSAMPLED_PIXELS = 64 * 2**20
#: Smallest training label map (after down-sampling) the ERD training database uses.
MIN_TRAIN_MAP = 16

#: Keys every result.json has.
RESULT_KEYS = ("grid", "phases", "sampling_fraction", "td", "td_curve", "td_random", "td_halton",
               "misclassification", "c", "seconds")


@dataclass
class RunSettings:
    """Settings of a simulated SLADS experiment (defaults: the paper's 2-phase case).

    Attributes
    ----------
    size : int
        N of the N×N sampling grid.
    downsample : int
        Micrograph pixels per grid pixel (majority vote).
    fraction : float
        Target sampling fraction (0, 1].
    seed : int
    initial_fraction : float
        Initial measurements (1 %).
    initial_pattern : {"halton", "random"}
    batch : int
        Positions chosen per step (1 = pointwise).
    batch_mode : {"top", "pseudo"}
    ill_fraction : float
        Fraction of ill-spectrum pixels in the simulated specimen.
    counts_per_spectrum : float
        Expected counts of a reference spectrum (about 7.5k in the paper).
    noise_lambda, ill_lambda : float
        Poisson λ of the added noise (2) and of ill-spectra (20).
    denoise : int
        Median filter size before segmentation.
    crop_bottom : int
        Data-bar rows removed from the micrograph.
    k : int
        Neighbours of the reconstruction.
    epochs : int or None
        Classifier training epochs (None: the classifier's default).
    overlap : bool
        Choose the next batch while the current one is measured (pseudo-measurements).
    stop_td : float or None
        Target TD of the learned stopping rule; None: stop at ``fraction`` only.
    upsample : int
        Interpolate the micrograph this many times finer before segmenting (the same
        object imaged at a higher resolution; for grids larger than the micrograph).
    erd : {"linear", "rich", "mlp"}
        ERD regressor: least squares on polynomial SLADS features (the paper), the same on
        the 11 rich features (issue 12), or an MLP (SLADS-Net).
    baseline_fractions : tuple of float
        Extra sampling fractions at which the static scans are evaluated.
    classifier : {"cnn", "poisson"}
        The paper's NNR + CNN (default on simulated objects of long-dwell spectra) or the
        count-aware Poisson likelihood classifier (:mod:`napari_slads_eds.likelihood`).
    uncertainty : {"hard", "soft"}
        The paper's hard labels, or spatial phase decisions and probability votes
        (:mod:`napari_slads_eds.uncertainty`).
    """

    size: int = 128
    downsample: int = 2
    fraction: float = 0.15
    seed: int = 0
    initial_fraction: float = 0.01
    initial_pattern: str = "halton"
    batch: int = 1
    batch_mode: str = "top"
    ill_fraction: float = 0.01
    counts_per_spectrum: float = 7500.0
    noise_lambda: float = 2.0
    ill_lambda: float = 20.0
    denoise: int = 5
    crop_bottom: int = 0
    k: int = 10
    epochs: int | None = None
    max_train_regions: int = 4
    overlap: bool = False
    stop_td: float | None = None
    upsample: int = 1
    erd: str = "linear"
    baseline_fractions: tuple = ()
    classifier: str = "cnn"
    uncertainty: str = "hard"

    def check(self) -> "RunSettings":
        # types first (a hand-edited run_settings.json may hold "0.15" or 2.5): the checks
        # below then compare numbers
        check_int(self.size, "--size", 8)
        check_int(self.downsample, "--downsample", 1)
        check_int(self.batch, "--batch", 1)
        for name, v in (("--fraction", self.fraction), ("initial fraction", self.initial_fraction),
                        ("--ill-fraction", self.ill_fraction),
                        ("counts per spectrum", self.counts_per_spectrum),
                        ("the stopping rule's target TD", 0.5 if self.stop_td is None else self.stop_td)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(v):
                raise InputError(f"{name} must be a finite number, got {v!r}")
        bf = self.baseline_fractions
        if isinstance(bf, (str, bytes)) or not all(
                isinstance(f, (int, float, np.integer, np.floating)) and not isinstance(f, (bool, np.bool_))
                and 0 < f <= 1 for f in bf):
            raise InputError(f"baseline fractions must be numbers in (0, 1], got {bf!r}")
        if self.size < 8:
            raise InputError(f"--size must be >= 8, got {self.size}")
        if self.downsample < 1:
            raise InputError(f"--downsample must be >= 1, got {self.downsample}")
        if not 0 < self.fraction <= 1:
            raise InputError(f"--fraction must be in (0, 1], got {self.fraction}")
        if not 0 < self.initial_fraction <= 1:
            raise InputError(f"initial fraction must be in (0, 1], got {self.initial_fraction}")
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.initial_pattern not in ("halton", "random"):
            raise InputError(f"initial pattern must be 'halton' or 'random', got {self.initial_pattern!r}")
        if int(self.upsample) < 1:
            raise InputError(f"upsample must be >= 1, got {self.upsample}")
        if self.erd not in ERD_CHOICES:
            raise InputError(f"the ERD model must be one of {', '.join(map(repr, ERD_CHOICES))}, got {self.erd!r}")
        if self.stop_td is not None and not 0 < self.stop_td < 1:
            raise InputError(f"the stopping rule's target TD must be in (0, 1), got {self.stop_td}")
        if self.batch_mode not in ("top", "pseudo"):
            raise InputError(f"batch mode must be 'top' or 'pseudo', got {self.batch_mode!r}")
        if self.classifier not in ("cnn", "poisson"):
            raise InputError(f"--classifier-kind must be 'cnn' or 'poisson', got {self.classifier!r}")
        if self.uncertainty not in ("hard", "soft"):
            raise InputError(f"--uncertainty must be 'hard' or 'soft', got {self.uncertainty!r}")
        check_seed(self.seed, "--seed")
        check_int(self.denoise, "--denoise (median filter size in pixels; 0 or 1: none)", 0, MAX_DENOISE)
        check_int(self.upsample, "--upsample", 1, MAX_UPSAMPLE)
        check_int(self.k, "k (neighbours of the reconstruction)", 1, 100)
        check_int(self.crop_bottom, "--crop-bottom", 0)
        if self.epochs is not None:
            check_int(self.epochs, "--epochs", 1, 10000)
        return self


@dataclass
class Experiment:
    """Everything a run needs, prepared in the calling process."""

    settings: RunSettings
    n_phases: int
    test_map: np.ndarray                 # (N, N) labels 1..L
    train_maps: list                     # list of (n, n) labels 1..L
    specimen: SimulatedSpecimen
    train_references: ReferenceSpectra   # spectra for the classifier (train/validation halves)
    source: dict = field(default_factory=dict)


def _references(n_phases: int, spectra, s: RunSettings):
    if spectra:
        if len(spectra) != n_phases:
            raise InputError(f"--spectra: expected one spectrum file per phase ({n_phases}), got {len(spectra)}")
        stds = [read_spectrum(p) for p in spectra]
    else:
        paths = bundled_standards()
        stds = [read_spectrum(paths[name]) for name in default_standards_for(n_phases)]
    # 24 per phase for training/validation, 12 different ones for the test object (paper 3.2)
    refs = make_reference_spectra(stds, n_per_phase=36, counts_per_spectrum=s.counts_per_spectrum,
                                  seed=s.seed)
    return refs.split(24)


def prepare_experiment(image, n_phases: int, settings: RunSettings | None = None, *, train=None,
                       spectra=None) -> Experiment:
    """Segment a micrograph, cut the test and training regions, build the specimen.

    Parameters
    ----------
    image : path or ndarray (H, W)
        The micrograph the test object is made from.
    n_phases : int
        L.
    settings : RunSettings
    train : sequence of paths or arrays, optional
        Training micrographs; default: regions of ``image`` that do not overlap the test
        region.
    spectra : sequence of paths, optional
        One standard spectrum (EMSA/MSA) per phase, darkest phase first; default: the
        bundled NIST standards.

    Raises
    ------
    InputError
        Unreadable image, too small for the test and training regions, bad settings.
    """
    s = (settings or RunSettings()).check()
    L = check_int(n_phases, "--phases", 1, 255)

    def load(x, name):
        if isinstance(x, (str, Path)):
            g = read_micrograph(x, crop_bottom=s.crop_bottom)
        else:
            from .segmentation import to_grey
            g = to_grey(x, name=name)
        if s.upsample > 1:
            from skimage.transform import rescale

            n_px = g.shape[0] * g.shape[1] * int(s.upsample) ** 2
            if n_px > MAX_UPSAMPLED_PIXELS:
                u = int(s.upsample)
                raise InputError(f"--upsample {u} would make a {g.shape[0] * u}x{g.shape[1] * u} image "
                                 f"({n_px / 1e6:.0f} Mpixel); at most {MAX_UPSAMPLED_PIXELS / 1e6:.0f} Mpixel "
                                 f"are supported: use a smaller --upsample")
            g = rescale(g, int(s.upsample), order=1, preserve_range=True, anti_aliasing=False)
        return g

    train_refs, test_refs = _references(L, spectra, s)   # fails fast on missing spectra
    img = load(image, "micrograph")
    labels = segment_phases(img, L, denoise_size=s.denoise)
    side = s.size * s.downsample
    source = {"image": str(image) if isinstance(image, (str, Path)) else "array",
              "micrograph_shape": list(img.shape)}
    if train:
        if img.shape[0] < side or img.shape[1] < side:
            raise InputError(f"the micrograph ({img.shape[0]}x{img.shape[1]}) is smaller than the "
                             f"{side}x{side} test region (size {s.size} x downsample {s.downsample})")
        test_map = majority_downsample(labels[:side, :side], s.downsample)
        train_maps = []
        for i, t in enumerate(train):
            tl = majority_downsample(segment_phases(load(t, f"training image {i}"), L, denoise_size=s.denoise),
                                     s.downsample)
            if min(tl.shape) < MIN_TRAIN_MAP:
                raise InputError(f"training image {t if isinstance(t, (str, Path)) else i}: {tl.shape[0]}x{tl.shape[1]} "
                                 f"after down-sampling by {s.downsample}; at least {MIN_TRAIN_MAP}x{MIN_TRAIN_MAP} "
                                 f"is needed (a larger image or a smaller --downsample)")
            train_maps.append(tl)
        source["test_region"] = [0, 0, side]
        source["train"] = [str(t) if isinstance(t, (str, Path)) else "array" for t in train]
    else:
        reg = split_regions(img.shape, s.size, factor=s.downsample, max_train=s.max_train_regions)
        test_map = majority_downsample(Regions.cut(labels, reg.test), s.downsample)
        train_maps = [majority_downsample(Regions.cut(labels, r), s.downsample) for r in reg.train]
        source["test_region"] = list(reg.test)
        source["train_regions"] = [list(r) for r in reg.train]
    present = np.unique(test_map)
    if present.size < L:
        missing = sorted(set(range(1, L + 1)) - set(present.tolist()))
        source["phases_missing_in_test_region"] = missing
    specimen = SimulatedSpecimen(test_map, test_refs, ill_fraction=s.ill_fraction,
                                 noise_lambda=s.noise_lambda, ill_lambda=s.ill_lambda, seed=s.seed)
    return Experiment(s, L, test_map, train_maps, specimen, train_refs, source)


#: Files of a run folder that make it resumable.
SETTINGS_FILE = "run_settings.json"
SPECIMEN_FILE = "specimen.npz"
TRAINING_FILE = "models/training.json"
CLASSIFIER_DIR = "models/classifier"
ERD_FILE = "models/erd_model.npz"


@dataclass
class RunFolder:
    """A run folder as :func:`read_run_folder` finds it (everything a resume needs)."""

    path: Path
    settings: RunSettings
    n_phases: int
    source: dict
    classifier_report: dict
    erd_report: dict
    specimen: SimulatedSpecimen
    seconds_training: float = 0.0

    @property
    def classifier_path(self) -> Path:
        return self.path / CLASSIFIER_DIR

    @property
    def erd_path(self) -> Path:
        return self.path / ERD_FILE


def write_run_folder(out_dir, specimen, settings: RunSettings, clf_report: dict, erd_report: dict, *,
                     clf_dir=None, erd_path=None, source: dict | None = None, n_phases: int | None = None,
                     seconds_training: float = 0.0) -> Path:
    """Write what a run folder holds before sampling starts, which makes the run resumable
    (:func:`resume_experiment`): the models, ``models/training.json`` (the classifier's and
    the ERD model's reports), the specimen and ``run_settings.json``.

    Parameters
    ----------
    out_dir : path
    specimen : SimulatedSpecimen or None
        None for a run on a microscope (no ``specimen.npz``; ``n_phases`` is then needed).
    settings : RunSettings
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

    Returns
    -------
    Path of the folder.
    """
    import shutil

    from .specimen import save_specimen

    if specimen is None and n_phases is None:
        raise InputError("write_run_folder: a run without a specimen needs n_phases")
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
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
    write_json_atomic(out / SETTINGS_FILE, {"settings": asdict(settings.check()),
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
    from .acquisition import JOURNAL_NAME
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

    require((SETTINGS_FILE, SPECIMEN_FILE, TRAINING_FILE, ERD_FILE, f"{CLASSIFIER_DIR}/classifier.json",
             JOURNAL_NAME))
    meta = _read_json(out / SETTINGS_FILE)
    # the classifier's kind (its classifier.json) says which model files it has
    require([f"{CLASSIFIER_DIR}/{n}" for n in classifier_files(out / CLASSIFIER_DIR)])
    training = _read_json(out / TRAINING_FILE)
    try:
        s = RunSettings(**meta["settings"]).check()
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{out / SETTINGS_FILE}: incomplete or invalid run settings ({exc})") from exc
    try:
        clf_report, erd_report = dict(training["classifier"]), dict(training["erd"])
        float(erd_report["c"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{out / TRAINING_FILE}: incomplete training report (needs classifier and "
                         f"erd with its c; missing or invalid {exc})") from exc
    specimen = load_specimen(out / SPECIMEN_FILE)
    L = check_int(meta.get("n_phases") or specimen.n_phases, f"{out / SETTINGS_FILE}: n_phases", 1, 255)
    if L != specimen.n_phases:
        raise InputError(f"{out / SETTINGS_FILE}: n_phases is {L} but the specimen has {specimen.n_phases} phases")
    try:
        seconds = float(meta.get("seconds_training", 0.0))
    except (TypeError, ValueError):
        seconds = 0.0
    return RunFolder(out, s, L, meta.get("source", {}), clf_report, erd_report, specimen, seconds)


def sampling_job_kwargs(out_dir, settings: RunSettings, erd_report: dict, *, resume: bool) -> dict:
    """Arguments of the engine job ``run_slads`` for the run in ``out_dir``: its models,
    its journal (``resume``: replay it first) and the settings (``send_maps`` False)."""
    from .acquisition import JOURNAL_NAME

    out = Path(out_dir)
    s = settings
    stop = erd_report.get("stopping") or {}
    return dict(classifier=str(out / CLASSIFIER_DIR), erd_model=str(out / ERD_FILE),
                stop_threshold=stop.get("threshold") if s.stop_td is not None else None,
                journal_path=str(out / JOURNAL_NAME), resume=resume,
                journal_settings={"settings": asdict(s)}, **_run_kwargs(s))


def _run_kwargs(s: RunSettings) -> dict:
    return dict(target_fraction=s.fraction, initial_fraction=s.initial_fraction,
                initial_pattern=s.initial_pattern, batch=s.batch, batch_mode=s.batch_mode,
                overlap=s.overlap, k=s.k, seed=s.seed, send_maps=False,
                baseline_fractions=tuple(s.baseline_fractions),
                uncertainty="soft" if s.uncertainty == "soft" else None)


def run_experiment(exp: Experiment, out_dir, *, engine=None, on_message=None) -> dict:
    """Train the classifier and the ERD model, run SLADS and the static baselines, write
    the results to ``out_dir`` and return the result dictionary (as in result.json, plus
    arrays).

    Before the run starts, ``out_dir`` receives the specimen, the settings and the trained
    models; during the run every measured batch goes to ``out_dir/journal.h5``, so a
    stopped or crashed run continues with :func:`resume_experiment`.

    Parameters
    ----------
    exp : Experiment
    out_dir : path
    engine : Engine, optional
        A running engine to use (one is started and closed otherwise).
    on_message : callable(dict), optional
        Receives every engine message, with ``"stage"`` set for progress displays.
    """
    from .engine import Engine

    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    s = exp.settings
    t0 = time.perf_counter()
    own = engine is None
    eng = engine or Engine()
    cb = on_message or (lambda m: None)
    try:
        clf_report = eng.run("train_classifier", on_message=cb, references=exp.train_references,
                             out_dir=str(out / CLASSIFIER_DIR), seed=s.seed, kind=s.classifier,
                             **({"epochs": s.epochs} if s.epochs and s.classifier == "cnn" else {}))
        erd_report = eng.run("train_erd", on_message=cb, label_images=exp.train_maps,
                             n_phases=exp.n_phases, out_path=str(out / ERD_FILE),
                             seed=s.seed, k=s.k, c_search_fraction=max(0.05, min(s.fraction, 0.3)),
                             stop_td=s.stop_td, regressor=s.erd)
        write_run_folder(out, exp.specimen, s, clf_report, erd_report, source=exp.source,
                         n_phases=exp.n_phases, seconds_training=time.perf_counter() - t0)
        result = _sample(eng, exp.specimen, out, s, erd_report, cb, resume=False)
    finally:
        if own:
            eng.close()
    return _finish(result, out, clf_report, erd_report, s, exp.source, exp.specimen, time.perf_counter() - t0)


def resume_experiment(out_dir, *, engine=None, on_message=None) -> dict:
    """Continue a stopped or crashed run in ``out_dir`` from its journal.

    The journal's measurements are replayed (no spectrum is measured again) and the run
    continues with the selections an uninterrupted run would have made; the results are
    written as by :func:`run_experiment`.

    Raises
    ------
    InputError
        The folder is not a resumable run (missing settings, specimen, models or journal),
        or one of its files is corrupt.
    """
    from .engine import Engine

    run = read_run_folder(out_dir)
    out, s = run.path, run.settings
    t0 = time.perf_counter()
    own = engine is None
    eng = engine or Engine()
    try:
        result = _sample(eng, run.specimen, out, s, run.erd_report, on_message or (lambda m: None), resume=True)
    finally:
        if own:
            eng.close()
    return _finish(result, out, run.classifier_report, run.erd_report, s, run.source, run.specimen,
                   run.seconds_training + time.perf_counter() - t0)


def _sample(eng, specimen, out: Path, s: RunSettings, erd_report: dict, cb, *, resume: bool) -> dict:
    return eng.run("run_slads", on_message=cb, specimen=specimen,
                   **sampling_job_kwargs(out, s, erd_report, resume=resume))


def _finish(result, out, clf_report, erd_report, s, source, specimen, seconds) -> dict:
    from .results import write_run

    result["misclassification"] = clf_report["misclassification"]
    result["classifier"] = {k: clf_report[k] for k in ("misclassification", "confusion", "threshold",
                                                      "n_train", "n_val", "seconds") if k in clf_report}
    result["erd_model"] = {k: erd_report[k] for k in ("c", "c_search", "rows", "seconds", "stopping")
                           if k in erd_report}
    result["c"] = erd_report["c"]
    result["seconds"] = seconds
    result["settings"] = asdict(s)
    result["source"] = source
    result["ground_truth"] = specimen.phase_map
    result["specimen_labels"] = specimen.labels
    write_run(result, out)
    return result


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON (corrupt or truncated?): {exc}") from exc
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d
