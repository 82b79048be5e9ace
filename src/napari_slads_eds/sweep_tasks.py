"""The work of a sweep on its Dask workers: one task, the model training, the models plugin.

Owns everything that runs inside a worker process: :func:`run_task` (one SLADS run or
static scan on a simulated specimen cut from a micrograph, and its table row), the
per-process caches of reference spectra and test maps, the training of the sweep's
classifier and ERD models (:func:`_train_classifier_task`, :func:`_train_erd_task`),
the binding of a worker to a core of its own (:func:`_pin_to_free_core`), and the worker
plugin that carries the trained models as bytes to every worker (:func:`_models_task`
loads them once per process).  TensorFlow is imported only inside these functions, i.e.
in the workers; importing this module imports neither TensorFlow nor distributed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ._validation import InputError
from .config import SamplingConfig
from .sweep_config import CURVE_POINTS, SweepConfig, _td_column

__all__ = ["run_task"]


class _NullContext:
    """The job context :func:`napari_slads_eds.slads_job.run_slads` expects, for a task that is
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
    from .slads_job import run_slads
    from .scan_orders import halton_order, random_order
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
            config = SamplingConfig(fraction=f_max, initial_pattern=task["initial"], batch=task["batch"],
                                    k=cfg.k, seed=task["seed"], baselines=())
            res = run_slads(_NullContext(), specimen, classifier, erd_models[task["erd"]], config=config,
                            send_maps=False)
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
    from .erd_models import load_erd_model

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