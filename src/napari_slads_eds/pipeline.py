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

from ._validation import InputError
from .segmentation import (Regions, majority_downsample, read_micrograph, segment_phases,
                           split_regions)
from .spectra import (ReferenceSpectra, bundled_standards, default_standards_for,
                      make_reference_spectra, read_spectrum)
from .specimen import SimulatedSpecimen

__all__ = ["RunSettings", "Experiment", "prepare_experiment", "run_experiment", "RESULT_KEYS"]

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

    def check(self) -> "RunSettings":
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
        if self.batch_mode not in ("top", "pseudo"):
            raise InputError(f"batch mode must be 'top' or 'pseudo', got {self.batch_mode!r}")
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
    L = int(n_phases)
    if L < 1:
        raise InputError(f"--phases must be >= 1, got {n_phases}")

    def load(x, name):
        if isinstance(x, (str, Path)):
            return read_micrograph(x, crop_bottom=s.crop_bottom)
        from .segmentation import to_grey
        return to_grey(x, name=name)

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
            tl = segment_phases(load(t, f"training image {i}"), L, denoise_size=s.denoise)
            train_maps.append(majority_downsample(tl, s.downsample))
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


def run_experiment(exp: Experiment, out_dir, *, engine=None, on_message=None) -> dict:
    """Train the classifier and the ERD model, run SLADS and the static baselines, write
    the results to ``out_dir`` and return the result dictionary (as in result.json, plus
    arrays).

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
    from .results import write_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = exp.settings
    t0 = time.perf_counter()
    own = engine is None
    eng = engine or Engine()
    cb = on_message or (lambda m: None)
    try:
        clf_report = eng.run("train_classifier", on_message=cb, references=exp.train_references,
                             out_dir=str(out / "models" / "classifier"), seed=s.seed,
                             **({"epochs": s.epochs} if s.epochs else {}))
        erd_report = eng.run("train_erd", on_message=cb, label_images=exp.train_maps,
                             n_phases=exp.n_phases, out_path=str(out / "models" / "erd_model.npz"),
                             seed=s.seed, k=s.k, c_search_fraction=max(0.05, min(s.fraction, 0.3)))
        result = eng.run("run_slads", on_message=cb, specimen=exp.specimen,
                         classifier=clf_report["path"], erd_model=erd_report["path"],
                         target_fraction=s.fraction, initial_fraction=s.initial_fraction,
                         initial_pattern=s.initial_pattern, batch=s.batch, batch_mode=s.batch_mode,
                         k=s.k, seed=s.seed, send_maps=False)
    finally:
        if own:
            eng.close()
    result["misclassification"] = clf_report["misclassification"]
    result["classifier"] = {k: clf_report[k] for k in ("misclassification", "confusion", "threshold",
                                                      "n_train", "n_val", "seconds") if k in clf_report}
    result["erd_model"] = {"c": erd_report["c"], "c_search": erd_report["c_search"], "rows": erd_report["rows"],
                     "seconds": erd_report["seconds"]}
    result["c"] = erd_report["c"]
    result["seconds"] = time.perf_counter() - t0
    result["settings"] = asdict(s)
    result["source"] = exp.source
    result["ground_truth"] = exp.specimen.phase_map
    result["specimen_labels"] = exp.specimen.labels
    write_run(result, out)
    return result


def result_summary(result: dict) -> dict:
    """The scalar part of a result (what result.json holds besides curves)."""
    keep = {}
    for k, v in result.items():
        if isinstance(v, np.ndarray):
            continue
        keep[k] = v
    return json.loads(json.dumps(keep, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
