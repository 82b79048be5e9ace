"""``slads-eds sweep``: many SLADS and static-scan runs over an image archive, on Dask.

Every (micrograph, strategy, setting, seed) is one task of a dask.distributed cluster: a
local one (processes, one thread each) or an existing scheduler given by its address.
The classifier and the ERD models are trained once per sweep, by tasks on the cluster,
and shipped to the workers as bytes in a worker plugin (so a worker that is restarted
after a crash gets them too); no task retrains them.

TensorFlow is imported only inside the worker processes (the classifier and the MLP ERD
model need it); the client process -- the CLI, a script, the napari GUI -- imports
neither TensorFlow nor Qt.  Workers must be able to import ``napari_slads_eds`` and read
the micrograph paths (on one machine, or on a shared file system).

Output folder::

    DIR/sweep.json          settings of the sweep (a resumed sweep must match them)
    DIR/models/             classifier (3 files) and ERD model(s), trained once
    DIR/rows/<task>.json    one finished task (written as it arrives: what resume skips)
    DIR/results.parquet     the table, one row per task (also results.csv, without curves)
    DIR/summary.md          TD per fraction and strategy, beam time at the target TD
    DIR/td_vs_fraction.png, DIR/beam_time_saved.png

Example
-------
>>> table = sweep(["a.png", "b.png"], 2, fractions=(0.05, 0.1, 0.2),
...               strategies=("slads", "halton", "random"), seeds=(0, 1, 2),
...               out="sweep-out")                                    # doctest: +SKIP
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ._validation import InputError, check_int, check_seed

__all__ = ["SweepConfig", "sweep", "plan_tasks", "run_task", "expand_images", "summarise",
           "add_sweep_parser", "sweep_command",
           "STRATEGIES", "TABLE_FILE", "CSV_FILE", "SUMMARY_FILE"]

#: Sampling strategies: SLADS, and the static scans it is compared against.
STRATEGIES = ("slads", "halton", "random")
TABLE_FILE = "results.parquet"
CSV_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
CONFIG_FILE = "sweep.json"
ROWS_DIR = "rows"
MODELS_DIR = "models"
#: Points of the fine TD curve of every task (for the fraction at which the target TD is reached).
CURVE_POINTS = 40
#: Settings that are sweep axes (a resumed sweep may add values); every other setting must match.
AXES = ("images", "strategies", "erd", "batch", "initial", "seeds")
_FORMAT = "napari-slads-eds sweep"


# ------------------------------------------------------------------------------ settings

@dataclass
class SweepConfig:
    """Settings of a sweep.

    Attributes
    ----------
    images : list of str
        Micrograph paths (globs already expanded, see :func:`expand_images`).
    phases : int
        L, phases of every micrograph (multi-Otsu segmentation).
    fractions : tuple of float
        Sampling fractions (0, 1] at which TD is reported; every task samples to the largest.
    strategies : tuple of str
        Among ``STRATEGIES``: "slads" (dynamic), "halton" and "random" (static scans).
    erd : tuple of str
        ERD models of the SLADS tasks ("linear", "mlp"); one model of each kind per sweep.
    batch : tuple of int
        Positions chosen per SLADS step (1 = pointwise).
    initial : tuple of str
        Initial 1 % pattern of the SLADS tasks ("halton", "random").
    seeds : tuple of int
        Seeds of the simulated specimen (noise, ill-spectra), the initial pattern and the
        static random scan.
    size : int
        N of the N x N grid cut from every micrograph.
    downsample : int
        Micrograph pixels per grid pixel (majority vote).
    model_seed : int
        Seed of the reference spectra and of the training of the classifier and ERD models.
    epochs : int or None
        CNN training epochs of the classifier (None: the classifier's default).
    target_td : float
        TD the facility needs; the summary reports the beam time at which it is reached.
    dwell : float
        Dwell time per spectrum (s), for the beam time (dose) columns.
    train : list of str
        Training micrographs of the ERD model; empty: the regions of the sweep's
        micrographs that do not overlap their test regions.
    max_train_regions : int
        Training regions per micrograph.
    k : int
        Neighbours of the reconstruction.
    ill_fraction : float
        Fraction of ill-spectrum pixels of the simulated specimens.
    denoise : int
        Median filter size before segmentation.
    crop_bottom : int
        Data-bar rows removed from every micrograph.
    c_values : tuple of float
        Candidates for the ERD model's c (empty: the default 2, 4, 8, 16, 32).
    classifier_options : dict
        Further keyword arguments of :meth:`SpectrumClassifier.train` (``n_noisy``,
        ``detector_epochs``, ...), e.g. for a quick test.
    """

    images: list = field(default_factory=list)
    phases: int = 2
    fractions: tuple = (0.05, 0.1, 0.2)
    strategies: tuple = STRATEGIES
    erd: tuple = ("linear",)
    batch: tuple = (1,)
    initial: tuple = ("halton",)
    seeds: tuple = (0,)
    size: int = 64
    downsample: int = 2
    model_seed: int = 0
    epochs: int | None = None
    target_td: float = 0.01
    dwell: float = 1.0
    train: list = field(default_factory=list)
    max_train_regions: int = 1
    k: int = 10
    ill_fraction: float = 0.01
    denoise: int = 5
    crop_bottom: int = 0
    c_values: tuple = ()
    classifier_options: dict = field(default_factory=dict)

    def check(self) -> "SweepConfig":
        """Validate and normalise (sorted, de-duplicated axes) in place; return self.

        Raises
        ------
        InputError
            An empty or unknown axis value, fractions outside (0, 1], bad numbers.
        """
        if not self.images:
            raise InputError("--images: at least one micrograph is needed")
        self.images = [str(p) for p in self.images]
        self.train = [str(p) for p in (self.train or [])]
        self.phases = check_int(self.phases, "--phases", 2, 255)
        try:
            fr = sorted({float(f) for f in self.fractions})
        except (TypeError, ValueError) as exc:
            raise InputError(f"--fractions must be numbers in (0, 1], got {self.fractions!r}") from exc
        if not fr or not all(0 < f <= 1 for f in fr):
            raise InputError(f"--fractions must be one or more numbers in (0, 1], got {self.fractions!r}")
        self.fractions = tuple(fr)
        self.strategies = _axis(self.strategies, "--strategies", STRATEGIES)
        self.erd = _axis(self.erd, "--erd", ("linear", "mlp"))
        self.initial = _axis(self.initial, "--initial", ("halton", "random"))
        self.batch = tuple(sorted({check_int(b, "--batch", 1, 1 << 20) for b in self.batch}))
        self.seeds = tuple(sorted({check_seed(s, "--seeds") for s in self.seeds}))
        if not self.batch or not self.seeds:
            raise InputError("--batch and --seeds need at least one value each")
        self.size = check_int(self.size, "--size", 8, 4096)
        self.downsample = check_int(self.downsample, "--downsample", 1, 64)
        self.model_seed = check_seed(self.model_seed, "--model-seed")
        if self.epochs is not None:
            self.epochs = check_int(self.epochs, "--epochs", 1, 10000)
        if not (isinstance(self.target_td, (int, float)) and 0 < self.target_td < 1):
            raise InputError(f"--target-td must be in (0, 1), got {self.target_td!r}")
        if not (isinstance(self.dwell, (int, float)) and math.isfinite(self.dwell) and self.dwell > 0):
            raise InputError(f"--dwell (seconds per spectrum) must be > 0, got {self.dwell!r}")
        self.max_train_regions = check_int(self.max_train_regions, "max_train_regions", 1, 64)
        self.k = check_int(self.k, "k (neighbours of the reconstruction)", 1, 100)
        if not 0 <= self.ill_fraction < 1:
            raise InputError(f"ill_fraction must be in [0, 1), got {self.ill_fraction}")
        self.denoise = check_int(self.denoise, "--denoise", 0, 63)
        self.crop_bottom = check_int(self.crop_bottom, "--crop-bottom", 0)
        if self.c_values:
            from .erd import check_c_values

            self.c_values = tuple(float(c) for c in check_c_values(self.c_values))
        allowed = {"n_noisy", "n_noisy_val", "n_ill_val", "detector_epochs", "batch_size", "learning_rate"}
        if not isinstance(self.classifier_options, dict) or set(self.classifier_options) - allowed:
            raise InputError(f"classifier_options: expected a dict with keys among {sorted(allowed)}, "
                             f"got {self.classifier_options!r}")
        return self

    def fixed(self) -> dict:
        """The settings that are not sweep axes (a resumed sweep must have the same)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in AXES}


def _axis(values, name: str, allowed) -> tuple:
    vals = [str(v) for v in (values or ())]
    bad = [v for v in vals if v not in allowed]
    if bad or not vals:
        raise InputError(f"{name}: expected one or more of {', '.join(allowed)}, got {vals or 'nothing'}")
    return tuple(v for v in allowed if v in vals)


def expand_images(patterns) -> list[str]:
    """Micrograph paths from paths and glob patterns (``*``, ``?``, ``[...]``, ``**``).

    A pattern matching no file is an error; a plain path is kept as it is even when it
    does not exist (its task then fails with the reason and the sweep goes on).

    Raises
    ------
    InputError
        No patterns, or a glob pattern that matches nothing.
    """
    out: list[str] = []
    for p in patterns or ():
        p = str(p)
        if any(ch in p for ch in "*?["):
            hits = sorted(h for h in _glob.glob(p, recursive=True) if Path(h).is_file())
            if not hits:
                raise InputError(f"--images: the pattern {p!r} matches no file")
            out.extend(hits)
        else:
            out.append(p)
    if not out:
        raise InputError("--images: at least one micrograph is needed")
    return list(dict.fromkeys(str(Path(p).resolve()) if Path(p).exists() else p for p in out))


# ---------------------------------------------------------------------------------- tasks

def plan_tasks(cfg: SweepConfig) -> list[dict]:
    """Every task of the sweep, in table order.

    A SLADS task exists for every (image, ERD kind, batch, initial pattern, seed), a static
    scan task for every (image, strategy, seed); the settings that do not apply to a static
    scan are "-" (batch 0).

    Returns
    -------
    list of dict
        ``id`` (stable across runs of the same settings: what resume matches), ``image``,
        ``strategy``, ``erd``, ``batch``, ``initial``, ``seed``.
    """
    fixed = json.dumps(cfg.fixed(), sort_keys=True, default=str)
    tasks = []
    for image in cfg.images:
        for strategy in cfg.strategies:
            combos = ([(e, b, i) for e in cfg.erd for b in cfg.batch for i in cfg.initial]
                      if strategy == "slads" else [("-", 0, "-")])
            for erd, batch, initial in combos:
                for seed in cfg.seeds:
                    t = {"image": image, "strategy": strategy, "erd": erd, "batch": int(batch),
                         "initial": initial, "seed": int(seed)}
                    key = json.dumps(t, sort_keys=True) + fixed
                    t["id"] = f"{Path(image).stem}-{strategy}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
                    tasks.append(t)
    return tasks


class _NullContext:
    """The job context :func:`napari_slads_eds.jobs.run_slads` expects, for a task that is
    never paused or stopped (Dask cancels a task by discarding it)."""

    stop_requested = False

    def emit(self, *args, **kwargs):
        pass

    def progress(self, *args, **kwargs):
        pass

    def log(self, *args, **kwargs):
        pass

    def checkpoint(self, graceful: bool = False) -> bool:
        return False


#: Per worker process: reference spectra and test maps of recent tasks (each task of an
#: image would otherwise segment the whole micrograph again).
_CACHE: dict = {}
_CACHE_SIZE = 64


def _cached(key, make):
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = make()
    return _CACHE[key]


def _references(cfg: SweepConfig):
    """(train, test) reference spectra of the sweep (bundled standards, ``model_seed``)."""
    from .pipeline import RunSettings, _references as refs

    return _cached(("refs", cfg.phases, cfg.model_seed),
                   lambda: refs(cfg.phases, None, RunSettings(seed=cfg.model_seed)))


def _segmented(path: str, cfg: SweepConfig):
    """(labels of the whole micrograph, regions) or InputError."""
    from .segmentation import read_micrograph, segment_phases, split_regions

    img = read_micrograph(path, crop_bottom=cfg.crop_bottom)
    labels = segment_phases(img, cfg.phases, denoise_size=cfg.denoise)
    reg = split_regions(img.shape, cfg.size, factor=cfg.downsample, max_train=cfg.max_train_regions)
    return labels, reg


def _test_map(path: str, cfg: SweepConfig) -> np.ndarray:
    """The (N, N) test label map of a micrograph.

    Raises
    ------
    InputError
        Unreadable micrograph, too small for a test and a training region, or a test region
        that shows fewer than 2 phases (nothing to sample).
    """
    from .segmentation import Regions, majority_downsample

    def make():
        labels, reg = _segmented(path, cfg)
        return majority_downsample(Regions.cut(labels, reg.test), cfg.downsample)

    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = None
    test = _cached(("test", path, stamp, cfg.phases, cfg.size, cfg.downsample, cfg.denoise, cfg.crop_bottom,
                    cfg.max_train_regions), make).copy()
    present = np.unique(test)
    if present.size < 2:
        raise InputError(f"{path}: too few phases: the {cfg.size}x{cfg.size} test region shows only "
                         f"phase {present.tolist()} of {cfg.phases} after segmentation (a uniform "
                         f"image, or a region without contrast)")
    return test


def _td_curve(shape, positions, labels, truth, fractions, n_phases: int, k: int) -> list:
    """TD (eq. 19) of the reconstruction from the first round(f * |Ω|) measurements, per f."""
    from .reconstruction import reconstruct

    H, W = shape
    out = []
    for f in fractions:
        n = min(len(positions), max(1, int(round(f * H * W))))
        rec = reconstruct((H, W), positions[:n], labels[:n], n_phases, k)
        out.append(float(np.mean(rec != truth)))
    return out


def run_task(task: dict, cfg: SweepConfig, classifier, erd_models: dict) -> dict:
    """Run one task of the sweep and return its table row (never raises for bad input).

    Parameters
    ----------
    task : dict
        One entry of :func:`plan_tasks`.
    cfg : SweepConfig
    classifier : SpectrumClassifier
        The sweep's trained classifier (spectrum -> label 0..L).
    erd_models : dict
        ERD kind -> trained ERD model.

    Returns
    -------
    dict
        The task's settings; ``status`` "ok" or "error" (with ``error``, the reason);
        ``td_<f>`` TD at every sampling fraction f; ``fraction_at_target`` (first point of
        the fine curve with TD <= target, NaN if not reached); ``spectra`` measured and
        ``beam_s`` (spectra x dwell, s) at the largest fraction; ``misclassification_run``;
        ``curve_fraction``, ``curve_td`` (the fine curve); ``seconds``; ``worker``.
    """
    from . import jobs
    from .sampling import halton_order, random_order
    from .specimen import SimulatedSpecimen

    t0 = time.perf_counter()
    row = {k: task[k] for k in ("id", "image", "strategy", "erd", "batch", "initial", "seed")}
    row.update(status="ok", error="", grid=cfg.size, phases=cfg.phases, worker=_worker_name())
    try:
        truth = _test_map(task["image"], cfg)
        H, W = truth.shape
        P = H * W
        _, test_refs = _references(cfg)
        specimen = SimulatedSpecimen(truth, test_refs, ill_fraction=cfg.ill_fraction, seed=task["seed"])
        f_max = max(cfg.fractions)
        n_max = max(1, int(round(f_max * P)))
        if task["strategy"] == "slads":
            res = jobs.run_slads(_NullContext(), specimen, classifier, erd_models[task["erd"]],
                                 target_fraction=f_max, initial_pattern=task["initial"],
                                 batch=task["batch"], k=cfg.k, seed=task["seed"], send_maps=False,
                                 baselines=())
            pos, lab = np.asarray(res["positions"]), np.asarray(res["labels"])
        else:
            order = (halton_order((H, W), n_max, task["seed"]) if task["strategy"] == "halton"
                     else random_order((H, W), task["seed"])[:n_max])
            pos = np.asarray(order[:n_max])
            lab = np.concatenate([classifier.predict(specimen.measure(pos[a:a + 4096]))
                                  for a in range(0, len(pos), 4096)]).astype(np.int16)
        fine = np.unique(np.concatenate([np.linspace(1.0 / P, f_max, CURVE_POINTS), cfg.fractions]))
        curve = _td_curve((H, W), pos, lab, truth, fine, cfg.phases, cfg.k)
        for f in cfg.fractions:
            row[_td_column(f)] = curve[int(np.searchsorted(fine, f))]
        hit = [f for f, td in zip(fine, curve) if td <= cfg.target_td]
        row["fraction_at_target"] = float(hit[0]) if hit else float("nan")
        row["spectra"] = int(len(pos))
        row["beam_s"] = float(len(pos) * cfg.dwell)
        truth_lab = specimen.labels[pos[:, 0], pos[:, 1]]
        row["misclassification_run"] = float(np.mean(lab != truth_lab))
        row["curve_fraction"] = [float(f) for f in fine]
        row["curve_td"] = curve
    except Exception as exc:          # a failing task is a row with its reason; the sweep goes on
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
        for f in cfg.fractions:
            row[_td_column(f)] = float("nan")
        row.update(fraction_at_target=float("nan"), spectra=0, beam_s=0.0,
                   misclassification_run=float("nan"), curve_fraction=[], curve_td=[])
    row["seconds"] = time.perf_counter() - t0
    return row


def _td_column(f: float) -> str:
    return f"td_{f:g}"


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


# ------------------------------------------------------------------- models (on workers)

def _training_maps(cfg: SweepConfig) -> tuple[list, list]:
    """ERD training label maps (regions never overlapping a test region) and the images
    skipped with their reason."""
    from .segmentation import Regions, majority_downsample

    maps, skipped = [], []
    for path in (cfg.train or cfg.images):
        try:
            labels, reg = _segmented(path, cfg)
        except Exception as exc:
            skipped.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        regions = [reg.test, *reg.train] if cfg.train else reg.train
        maps.extend(majority_downsample(Regions.cut(labels, r), cfg.downsample) for r in regions)
    return maps, skipped


def _train_classifier_task(cfg: SweepConfig, pin: bool = True) -> dict:
    """Train the classifier on the sweep's training reference spectra (on a worker).

    Returns ``{"files": {name: bytes}, "report": dict}`` (the three files of
    :meth:`SpectrumClassifier.save`)."""
    if pin:
        _pin_to_free_core()
    from .classifier import SpectrumClassifier

    train_refs, _ = _references(cfg)
    clf, report = SpectrumClassifier.train(train_refs, seed=cfg.model_seed, **cfg.classifier_options,
                                           **({"epochs": cfg.epochs} if cfg.epochs else {}))
    with tempfile.TemporaryDirectory() as d:
        clf.save(d)
        files = {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}
    return {"files": files, "report": _plain(report)}


def _train_erd_task(cfg: SweepConfig, kind: str, pin: bool = True) -> dict:
    """Train one ERD model (``kind`` "linear" or "mlp") on the training maps (on a worker).

    Returns ``{"bytes": npz file, "report": dict}``.

    Raises
    ------
    InputError
        No micrograph gives a training region.
    """
    from .erd import train_erd

    if pin:
        _pin_to_free_core()
    maps, skipped = _training_maps(cfg)
    if not maps:
        raise InputError("no micrograph gives an ERD training region: " + "; ".join(skipped))
    kwargs = {"c_values": cfg.c_values} if cfg.c_values else {}
    if kind == "mlp":
        from .erd_keras import fit_mlp

        kwargs["mlp_fitter"] = fit_mlp
    model, report = train_erd(maps, cfg.phases, seed=cfg.model_seed, k=cfg.k,
                              c_search_fraction=max(0.05, min(max(cfg.fractions), 0.3)),
                              regressor=kind, **kwargs)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "erd.npz"
        model.save(p)
        data = p.read_bytes()
    report = _plain(report)
    report.update(n_maps=len(maps), skipped=skipped)
    return {"bytes": data, "report": report}


def _plain(obj):
    from ._files import jsonable

    return json.loads(json.dumps(jsonable(obj), default=str))


#: The core this worker process holds (its lock file stays open while the process lives).
_PINNED: dict = {}


def _pin_to_free_core() -> int | None:
    """Bind this worker process to one CPU core that no other sweep worker on this host holds.

    A task is numpy, scipy (cKDTree queries with ``workers=-1``) and TensorFlow (its own
    thread pools) and would spread over every core; with one worker process per core they
    then contend, and 2 workers run no faster than 1.  Each worker takes the first free
    core by an exclusive ``flock`` on ``<tmp>/slads-eds-sweep-cores/core-<i>.lock``, which
    the kernel releases when the process ends (a restarted worker takes it again).  Called
    before TensorFlow is imported, so that TensorFlow sizes its pools to the one core.  With
    every core taken the process is left unbound.

    Returns
    -------
    int or None
        The core, or None (not bound: no free core, or no ``sched_setaffinity``).
    """
    if "core" in _PINNED:
        return _PINNED["core"]
    _PINNED["core"] = None
    if not hasattr(os, "sched_setaffinity"):
        return None
    import fcntl

    d = Path(tempfile.gettempdir()) / "slads-eds-sweep-cores"
    d.mkdir(exist_ok=True)
    for core in sorted(os.sched_getaffinity(0)):
        f = open(d / f"core-{core}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        os.sched_setaffinity(0, {core})
        _PINNED.update(core=core, file=f)
        return core
    return None


#: Models loaded on this worker process: digest -> (classifier, {kind: ERD model}).
_LOADED: dict = {}


class _ModelsPlugin:
    """Worker plugin carrying the sweep's trained models as bytes to every worker,
    including workers that join or restart later; tasks load them once per process."""

    def __init__(self, name: str, models: dict):
        self.name = name
        self.models = models

    def setup(self, worker=None):
        pass

    def teardown(self, worker=None):
        pass


def _models_task(task: dict, cfg: SweepConfig, plugin_name: str, pin: bool = True) -> dict:
    """The Dask task: load the sweep's models (once per worker process), run the task."""
    from distributed import get_worker

    if pin:
        _pin_to_free_core()
    if plugin_name not in _LOADED:
        models = get_worker().plugins[plugin_name].models
        _LOADED.clear()
        _LOADED[plugin_name] = _load_models(models)
    clf, erds = _LOADED[plugin_name]
    return run_task(task, cfg, clf, erds)


def _load_models(models: dict):
    from .engine import _start_tensorflow

    _start_tensorflow()        # as in the engine: TF's environment, its start-up banners silenced
    from .classifier import SpectrumClassifier
    from .erd import load_erd_model

    with tempfile.TemporaryDirectory() as d:
        cdir = Path(d) / "classifier"
        cdir.mkdir()
        for name, data in models["classifier"].items():
            (cdir / name).write_bytes(data)
        clf = SpectrumClassifier.load(cdir)
        erds = {}
        for kind, data in models["erd"].items():
            p = Path(d) / f"erd_{kind}.npz"
            p.write_bytes(data)
            erds[kind] = load_erd_model(p)
    return clf, erds


# ------------------------------------------------------------------------ client side

def _read_models(out: Path, cfg: SweepConfig) -> tuple[dict, dict]:
    """Models already in DIR/models: ({"classifier": files, "erd": {kind: bytes}}, reports)."""
    mdir = out / MODELS_DIR
    models, reports = {"classifier": {}, "erd": {}}, {}
    if (mdir / "reports.json").is_file():
        reports = json.loads((mdir / "reports.json").read_text())
    cdir = mdir / "classifier"
    names = ("classifier.json", "detector.keras", "cnn.keras")
    if all((cdir / n).is_file() for n in names):
        models["classifier"] = {n: (cdir / n).read_bytes() for n in names}
    for kind in cfg.erd:
        p = mdir / f"erd_{kind}.npz"
        if p.is_file():
            models["erd"][kind] = p.read_bytes()
    return models, reports


def _write_models(out: Path, models: dict, reports: dict) -> None:
    mdir = out / MODELS_DIR
    (mdir / "classifier").mkdir(parents=True, exist_ok=True)
    for name, data in models["classifier"].items():
        _atomic_write(mdir / "classifier" / name, data)
    for kind, data in models["erd"].items():
        _atomic_write(mdir / f"erd_{kind}.npz", data)
    _atomic_write(mdir / "reports.json", json.dumps(reports, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _check_config(out: Path, cfg: SweepConfig) -> None:
    p = out / CONFIG_FILE
    if p.is_file():
        try:
            old = json.loads(p.read_text())
            old_fixed = old["fixed"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{p}: not a sweep settings file ({exc}); choose another --out") from exc
        new = json.loads(json.dumps(cfg.fixed(), default=str))
        differ = [f"{k} {old_fixed.get(k)!r} (now {new[k]!r})" for k in new if old_fixed.get(k) != new[k]]
        if differ:
            raise InputError(f"{out} holds a sweep with other settings: {', '.join(differ)}; "
                             f"its finished rows and models would not fit: use those settings or another --out")
    elif any(out.iterdir()) and not (out / ROWS_DIR).is_dir():
        names = {q.name for q in out.iterdir()} - {".slads-eds.lock"}
        if names:
            raise InputError(f"{out} is not empty and holds no sweep; choose an empty or new --out")
    _atomic_write(p, json.dumps({"format": _FORMAT, "fixed": cfg.fixed(), "axes": {a: getattr(cfg, a) for a in AXES}},
                                indent=1, default=str).encode())


def _finished_rows(out: Path, tasks: list) -> dict:
    rows = {}
    want = {t["id"] for t in tasks}
    for p in (out / ROWS_DIR).glob("*.json"):
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError):
            continue                        # a torn file (killed while writing): run it again
        if isinstance(r, dict) and r.get("id") in want:
            rows[r["id"]] = r
    return rows


def _json_row(row: dict) -> bytes:
    def fix(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({k: ([fix(x) for x in v] if isinstance(v, list) else fix(v)) for k, v in row.items()}).encode()


class _Cluster:
    """A dask.distributed client: on ``scheduler`` (an address or a Client), or on a new
    local cluster of ``workers`` processes with one thread each."""

    def __init__(self, scheduler=None, workers: int | None = None, log=None):
        from distributed import Client, LocalCluster

        self.own_client = self.cluster = self._hidden = None
        if scheduler is not None and not isinstance(scheduler, str):
            self.client = scheduler
        elif scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise InputError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc})") from exc
            self.own_client = self.client
        else:
            n = workers or max(1, min(os.cpu_count() or 1, len(os.sched_getaffinity(0))))
            try:
                import bokeh  # noqa: F401  (the dashboard needs it)
                dash = "127.0.0.1:0"
            except ImportError:
                dash = None
            # The workers run library code only: hide the calling script from multiprocessing's
            # spawn while the cluster lives (it starts workers again after a crash), so that a
            # script without an ``if __name__ == "__main__":`` guard is not run again in them.
            main = sys.modules.get("__main__")
            if main is not None and getattr(main, "__spec__", None) is None and hasattr(main, "__file__"):
                self._hidden = (main, main.__file__)
                del main.__file__
            try:
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=dash)
                self.client = self.own_client = Client(self.cluster)
            except BaseException:
                self.close()
                raise
        if log is not None:
            info = self.client.scheduler_info(n_workers=-1) if "n_workers" in _params(self.client.scheduler_info) \
                else self.client.scheduler_info()
            n_workers = len(info.get("workers", {}))
            link = None
            try:
                link = self.client.dashboard_link if info.get("services", {}).get("dashboard") else None
            except Exception:
                link = None
            log(f"Dask scheduler {self.client.scheduler.address}, {n_workers} worker(s)"
                + (f"; dashboard {link}" if link else "; no dashboard (install bokeh for one)"))

    def close(self):
        if self.own_client is not None:
            self.own_client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self._hidden is not None:
            self._hidden[0].__file__ = self._hidden[1]
            self._hidden = None


def _params(fn) -> set:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def sweep(images, phases: int, *, out, fractions=(0.05, 0.1, 0.2), strategies=STRATEGIES,
          erd=("linear",), batch=(1,), initial=("halton",), seeds=(0,), size: int = 64,
          downsample: int = 2, scheduler=None, workers: int | None = None, target_td: float = 0.01,
          dwell: float = 1.0, train=(), model_seed: int = 0, epochs: int | None = None,
          progress: bool = False, log=None, pin_cores: bool = True, **settings):
    """Run a sweep of SLADS and static scans over micrographs on Dask; return the table.

    Every (micrograph, strategy, setting, seed) is a Dask task; finished tasks are written
    to ``out/rows`` as they arrive, so an interrupted sweep started again with the same
    settings runs only what is missing (and reuses the models in ``out/models``).

    Parameters
    ----------
    images : sequence of str or Path
        Micrographs (PNG/TIFF, grey 8/16-bit) or glob patterns.
    phases : int
        L, phases of every micrograph.
    out : path
        Output folder (see the module docstring).
    fractions : sequence of float
        Sampling fractions in (0, 1] at which TD is reported.
    strategies : sequence of {"slads", "halton", "random"}
    erd : sequence of {"linear", "mlp"}
    batch : sequence of int
    initial : sequence of {"halton", "random"}
    seeds : sequence of int
    size, downsample : int
        Grid N and micrograph pixels per grid pixel.
    scheduler : str or distributed.Client, optional
        Address of a running Dask scheduler (``tcp://host:8786``) or a client; None: a
        local cluster of ``workers`` processes (default: one per core), one thread each.
    workers : int, optional
    target_td : float
        TD the summary reports the beam time for.
    dwell : float
        Seconds per spectrum (beam time columns).
    train : sequence of path
        ERD training micrographs (default: the non-test regions of ``images``).
    model_seed : int
        Seed of the reference spectra and of the model training.
    epochs : int, optional
        Classifier CNN epochs.
    progress : bool
        Show a progress bar (tasks done / total, time left) on stderr.
    log : callable(str), optional
        Receives status lines (cluster, training, ...).
    pin_cores : bool
        Bind every worker process to a core of its own (see :func:`_pin_to_free_core`);
        False: tasks may spread over all cores (numbers are the same either way).
    **settings
        Other :class:`SweepConfig` fields (``max_train_regions``, ``k``, ``ill_fraction``,
        ``denoise``, ``crop_bottom``).

    Returns
    -------
    pandas.DataFrame
        One row per task, in plan order (see :func:`run_task` for the columns).

    Raises
    ------
    InputError
        Bad settings, an output folder that holds a sweep with other fixed settings (or
        other files), an unreachable scheduler, no ERD training region.
    """
    from ._files import output_folder

    log = log or (lambda text: None)
    cfg = SweepConfig(images=expand_images(images), phases=phases, fractions=tuple(fractions),
                      strategies=tuple(strategies), erd=tuple(erd), batch=tuple(batch),
                      initial=tuple(initial), seeds=tuple(seeds), size=size, downsample=downsample,
                      target_td=target_td, dwell=dwell, train=list(train or ()), model_seed=model_seed,
                      epochs=epochs, **settings).check()
    if "slads" not in cfg.strategies:
        cfg.erd = cfg.erd[:1]
    folder = output_folder(out)
    with folder as o:
        _check_config(o, cfg)
        (o / ROWS_DIR).mkdir(exist_ok=True)
        tasks = plan_tasks(cfg)
        rows = _finished_rows(o, tasks)
        todo = [t for t in tasks if t["id"] not in rows]
        log(f"sweep: {len(tasks)} tasks ({len(rows)} finished earlier, {len(todo)} to run), "
            f"{len(cfg.images)} image(s), output {o}")
        t0 = time.perf_counter()
        if todo:
            cl = _Cluster(scheduler, workers, log)
            try:
                _run_todo(cl.client, o, cfg, todo, rows, progress, log, pin_cores)
            finally:
                cl.close()
        table = _table(cfg, tasks, rows)
        _write_outputs(o, cfg, table, time.perf_counter() - t0)
    return table


def _run_todo(client, out: Path, cfg: SweepConfig, todo: list, rows: dict, progress: bool, log,
              pin: bool = True) -> None:
    from distributed import as_completed

    models, reports = _read_models(out, cfg)
    need_clf = not models["classifier"]
    need_erd = [k for k in cfg.erd if k not in models["erd"]] if "slads" in cfg.strategies else []
    if need_clf or need_erd:
        log("training " + ", ".join((["classifier"] if need_clf else []) + [f"ERD model ({k})" for k in need_erd])
            + " on the cluster (once for the whole sweep)")
        t = time.perf_counter()
        futs = {}
        if need_clf:
            futs["classifier"] = client.submit(_train_classifier_task, cfg, pin, pure=False)
        for k in need_erd:
            futs[f"erd:{k}"] = client.submit(_train_erd_task, cfg, k, pin, pure=False)
        done = client.gather(list(futs.values()))
        for name, res in zip(futs, done):
            if name == "classifier":
                models["classifier"] = res["files"]
                reports["classifier"] = res["report"]
            else:
                kind = name.split(":", 1)[1]
                models["erd"][kind] = res["bytes"]
                reports[f"erd_{kind}"] = res["report"]
        _write_models(out, models, reports)
        m = reports.get("classifier", {}).get("misclassification", float("nan"))
        log(f"models trained in {time.perf_counter() - t:.1f} s (classifier misclassification {m:.4f})")
        if m > 0.05:
            log(f"warning: the classifier misclassifies {100 * m:.0f} % of its validation spectra; "
                f"the phase maps can be no better than their labels (more --epochs?)")
    digest = hashlib.sha1(b"".join(models["classifier"][n] for n in sorted(models["classifier"]))
                          + b"".join(models["erd"][k] for k in sorted(models["erd"]))).hexdigest()[:16]
    plugin_name = f"slads-eds-sweep-models-{digest}"
    client.register_plugin(_make_plugin(plugin_name, models), name=plugin_name)
    # longest tasks first (SLADS one point per step, then batched SLADS, then static scans), so
    # that the last tasks, which leave a worker idle while another finishes, are short ones
    futures = [client.submit(_models_task, t, cfg, plugin_name, pin, key=f"sweep-{t['id']}-{digest}",
                             pure=False, priority=_task_priority(t)) for t in todo]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo) + len(rows), initial=len(rows), desc="sweep tasks", unit="task",
                   file=sys.stderr, dynamic_ncols=True)
    try:
        for fut in as_completed(futures):
            row = fut.result()
            _atomic_write(out / ROWS_DIR / f"{row['id']}.json", _json_row(row))
            rows[row["id"]] = json.loads(_json_row(row))
            if bar is not None:
                bar.update(1)
                if row["status"] != "ok":
                    bar.write(f"task {row['id']} failed: {row['error']}")
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if bar is not None:
            bar.close()


def _task_priority(task: dict) -> int:
    """Dask priority of a task (higher runs first): its expected cost relative to the others.
    A SLADS run one position per step does a selection per spectrum (slowest); batched
    SLADS a selection per batch; a static scan none."""
    if task["strategy"] != "slads":
        return 0
    return 2 if int(task["batch"]) <= 1 else 1


def _make_plugin(name: str, models: dict):
    return _plugin_class()(name, models)


def _plugin_class():
    """The worker plugin class (a ``distributed.WorkerPlugin``), made on first use so that
    importing this module does not import distributed; module ``__getattr__`` finds it
    by name, so it pickles by reference."""
    cls = globals().get("_SweepModelsPlugin")
    if cls is None:
        from distributed import WorkerPlugin

        cls = type("_SweepModelsPlugin", (_ModelsPlugin, WorkerPlugin), {"__module__": __name__})
        globals()["_SweepModelsPlugin"] = cls
    return cls


def __getattr__(name):
    if name == "_SweepModelsPlugin":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -------------------------------------------------------------------- table and summary

def _table(cfg: SweepConfig, tasks: list, rows: dict):
    import pandas as pd

    recs = []
    for t in tasks:
        r = dict(rows[t["id"]])
        for k, v in list(r.items()):
            if v is None and k not in ("curve_fraction", "curve_td"):
                r[k] = float("nan")
        recs.append(r)
    df = pd.DataFrame.from_records(recs)
    cols = (["id", "image", "strategy", "erd", "batch", "initial", "seed", "status", "error", "grid", "phases"]
            + [_td_column(f) for f in cfg.fractions]
            + ["fraction_at_target", "spectra", "beam_s", "misclassification_run", "seconds", "worker",
               "curve_fraction", "curve_td"])
    for c in cols:
        if c not in df:
            df[c] = float("nan")
    df = df[cols]
    df["batch"] = df["batch"].astype("int64")
    df["seed"] = df["seed"].astype("int64")
    df["spectra"] = df["spectra"].astype("int64")
    return df


def _write_outputs(out: Path, cfg: SweepConfig, table, seconds: float) -> None:
    table.to_parquet(out / TABLE_FILE, index=False)
    table.drop(columns=["curve_fraction", "curve_td"]).to_csv(out / CSV_FILE, index=False)
    rp = out / MODELS_DIR / "reports.json"
    reports = json.loads(rp.read_text()) if rp.is_file() else {}
    text = summarise(table, cfg, seconds=seconds,
                     misclassification=reports.get("classifier", {}).get("misclassification"))
    _atomic_write(out / SUMMARY_FILE, text.encode())
    _plots(out, table, cfg)


def _setting(r) -> str:
    if r["strategy"] != "slads":
        return str(r["strategy"])
    return f"slads ({r['erd']}, batch {int(r['batch'])}, initial {r['initial']})"


def summarise(table, cfg: SweepConfig, *, seconds: float | None = None,
              misclassification: float | None = None) -> str:
    """The sweep's ``summary.md``: per strategy and setting, TD at every fraction (mean over
    images and seeds, with the spread of the per-image means), and the sampling fraction
    and beam time at which the target TD is reached, against a raster scan and Halton.

    Parameters
    ----------
    table : pandas.DataFrame
        The sweep's table (:func:`sweep`).
    cfg : SweepConfig
    seconds : float, optional
        Wall time of this invocation, for the header.
    misclassification : float, optional
        The classifier's validation misclassification (a warning above 5 %).
    """
    df = table.copy()
    ok = df[df["status"] == "ok"].copy()
    ok["setting"] = ok.apply(_setting, axis=1) if len(ok) else []
    P = cfg.size * cfg.size
    raster_s = P * cfg.dwell
    lines = [f"# SLADS-EDS sweep", "",
             f"{len(df)} tasks ({len(ok)} ok, {len(df) - len(ok)} failed) over {df['image'].nunique()} "
             f"micrograph(s), {cfg.phases} phases, {cfg.size}x{cfg.size} grid (downsample {cfg.downsample}), "
             f"seeds {list(cfg.seeds)}; dwell {cfg.dwell:g} s per spectrum, so a full raster map takes "
             f"{raster_s:g} s of beam time." + (f" Wall time of this run: {seconds:.1f} s." if seconds else ""),
             ""]
    if misclassification is not None:
        lines += [f"Classifier: {100 * misclassification:.2f} % of its validation spectra misclassified."
                  + (" **Warning: above 5 %; the phase maps can be no better than their labels (more "
                     "--epochs?), so these TDs say more about the classifier than about the sampling.**"
                     if misclassification > 0.05 else ""), ""]
    lines += ["## TD per sampling fraction", "",
             "Mean TD over images and seeds; in brackets the lowest and highest mean of one image.", ""]
    fr = [_td_column(f) for f in cfg.fractions]
    lines.append("| strategy | tasks | " + " | ".join(f"TD at {100 * f:g} %" for f in cfg.fractions) + " |")
    lines.append("|---|---|" + "---|" * len(fr))
    order = list(dict.fromkeys(ok["setting"])) if len(ok) else []
    for s in order:
        g = ok[ok["setting"] == s]
        per_img = g.groupby("image")[fr].mean()
        cells = [f"{g[c].mean():.4f} [{per_img[c].min():.4f}–{per_img[c].max():.4f}]" for c in fr]
        lines.append(f"| {s} | {len(g)} | " + " | ".join(cells) + " |")
    lines += ["", f"## Beam time to reach TD ≤ {cfg.target_td:g}", "",
              f"Fraction sampled when TD first reaches {cfg.target_td:g} on a {CURVE_POINTS}-point curve up to "
              f"{100 * max(cfg.fractions):g} % (median over the tasks that reach it), the beam time per map "
              f"and what it saves against a full raster scan ({raster_s:g} s) and against Halton.", "",
              "| strategy | reached | median fraction | beam time (s) | saved vs raster | saved vs Halton |",
              "|---|---|---|---|---|---|"]
    halton = ok[ok["strategy"] == "halton"]["fraction_at_target"].dropna()
    f_halton = float(halton.median()) if len(halton) else float("nan")
    for s in order:
        g = ok[ok["setting"] == s]["fraction_at_target"]
        reached = g.dropna()
        if len(reached):
            f = float(reached.median())
            t = f * P * cfg.dwell
            vs_h = (f"{(f_halton - f) * P * cfg.dwell:.0f} s ({100 * (1 - f / f_halton):.0f} %)"
                    if math.isfinite(f_halton) else "n/a (Halton does not reach it)")
            lines.append(f"| {s} | {len(reached)}/{len(g)} | {100 * f:.1f} % | {t:.0f} | "
                         f"{raster_s - t:.0f} s ({100 * (1 - f):.0f} %) | {vs_h} |")
        else:
            lines.append(f"| {s} | 0/{len(g)} | > {100 * max(cfg.fractions):g} % | – | – | – |")
    failed = df[df["status"] != "ok"]
    if len(failed):
        lines += ["", "## Failed tasks", "", "| task | error |", "|---|---|"]
        lines += [f"| {r['id']} | {str(r['error']).replace('|', '/')} |" for _, r in failed.iterrows()]
    lines += ["", "Plots: `td_vs_fraction.png`, `beam_time_saved.png`; the table: "
              f"`{TABLE_FILE}` (`{CSV_FILE}` without the curves).", ""]
    return "\n".join(lines)


def _plots(out: Path, table, cfg: SweepConfig) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"].copy()
    if not len(ok):
        return
    ok["setting"] = ok.apply(_setting, axis=1)
    fr = [_td_column(f) for f in cfg.fractions]
    x = 100 * np.asarray(cfg.fractions)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for s in dict.fromkeys(ok["setting"]):
        per_img = ok[ok["setting"] == s].groupby("image")[fr].mean()
        ax.plot(x, per_img.median().to_numpy(), marker="o", label=s)
        ax.fill_between(x, per_img.min().to_numpy(), per_img.max().to_numpy(), alpha=0.2)
    ax.axhline(cfg.target_td, color="grey", ls=":", lw=1, label=f"target TD {cfg.target_td:g}")
    ax.set_yscale("symlog", linthresh=1.0 / (cfg.size * cfg.size))   # TD 0 (no wrong pixel) shows
    ax.set_ylim(bottom=0)
    ax.set_xlabel("sampling fraction (%)")
    ax.set_ylabel("TD (fraction of wrong pixels)")
    ax.set_title(f"TD vs fraction: median over {ok['image'].nunique()} image(s), band = image range")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "td_vs_fraction.png")
    plt.close(fig)

    P = cfg.size * cfg.size
    names, saved = [], []
    for s in dict.fromkeys(ok["setting"]):
        f = ok[ok["setting"] == s]["fraction_at_target"].dropna()
        names.append(s)
        saved.append(100 * (1 - float(f.median())) if len(f) else 0.0)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.barh(names, saved, color="tab:green")
    ax.set_xlabel(f"beam time saved vs raster at TD ≤ {cfg.target_td:g} (%; 0 = not reached)")
    ax.set_xlim(0, 100)
    ax.set_title(f"{cfg.size}x{cfg.size} grid, {P * cfg.dwell:g} s per raster map")
    fig.tight_layout()
    fig.savefig(out / "beam_time_saved.png")
    plt.close(fig)


# ---------------------------------------------------------------------------- command line

def add_sweep_parser(sub) -> None:
    """Register ``slads-eds sweep`` on the CLI's sub-parsers."""
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
    if args.workers is not None:
        check_int(args.workers, "--workers", 1, 1024)
    log = (lambda text: None) if args.quiet else (lambda text: print(f"slads-eds: {text}", file=sys.stderr))
    table = sweep(args.images, args.phases, out=args.out, fractions=args.fractions,
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
