"""The main job, end to end: micrograph -> phases -> simulated specimen -> trained models
-> SLADS run -> result files.  Used by the command line; the napari widgets call the
same pieces one by one.

Everything here runs in the calling (GUI or CLI) process and imports neither TensorFlow
nor Qt; training and the sampling loop run in the engine process.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._validation import InputError, check_int
from .config import RunSettings
from .orchestrator import finish, sample, train_models
from .run_folder import read_run_folder, write_run_folder
from .segmentation import (Regions, majority_downsample, read_micrograph, segment_phases,
                           split_regions)
from .spectra import (ReferenceSpectra, bundled_standards, default_standards_for,
                      make_reference_spectra, read_spectrum)
from .specimen import SimulatedSpecimen

__all__ = ["RunSettings", "Experiment", "prepare_experiment", "run_experiment", "resume_experiment"]

#: Limits of the micrograph preparation (beyond them a run would only exhaust memory).
MAX_UPSAMPLED_PIXELS = 64 * 2**20
#: Smallest training label map (after down-sampling) the ERD training database uses.
MIN_TRAIN_MAP = 16


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


def run_experiment(exp: Experiment, out_dir, *, engine=None, on_message=None) -> dict:
    """Train the classifier and the ERD model, run SLADS and the static baselines, write
    the results to ``out_dir`` and return the result dictionary (as in result.json, plus
    arrays: :meth:`RunResult.to_dict`).

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
    s = exp.settings
    t0 = time.perf_counter()
    own = engine is None
    eng = engine or Engine()
    try:
        clf_report, erd_report = train_models(
            eng, out, references=exp.train_references, label_images=exp.train_maps, n_phases=exp.n_phases,
            seed=s.seed, k=s.k, fraction=s.fraction, classifier_kind=s.classifier,
            classifier_options={"epochs": s.epochs} if s.epochs and s.classifier == "cnn" else None,
            stop_td=s.stop_td, regressor=s.erd, on_message=on_message)
        write_run_folder(out, exp.specimen, s, clf_report, erd_report, source=exp.source,
                         n_phases=exp.n_phases, seconds_training=time.perf_counter() - t0)
        raw = _sample(eng, exp.specimen, out, s, erd_report, on_message, resume=False)
    finally:
        if own:
            eng.close()
    return _finish(raw, out, clf_report, erd_report, s, exp.source, exp.specimen, time.perf_counter() - t0)


def resume_experiment(out_dir, *, engine=None, on_message=None) -> dict:
    """Continue a stopped or crashed run in ``out_dir`` from its journal.

    The journal's measurements are replayed (no spectrum is measured again) and the run
    continues with the selections an uninterrupted run would have made; the results are
    written as by :func:`run_experiment`.  A replay's folder is continued by
    :func:`napari_slads_eds.replay.resume_replay`.

    Raises
    ------
    InputError
        The folder is not a resumable run (missing settings, specimen, models or journal),
        or one of its files is corrupt.
    """
    from .engine import Engine

    run = read_run_folder(out_dir)
    if run.mode != "run":
        raise InputError(f"{run.path} holds a {run.mode}: continue it with 'slads-eds resume {run.path}'")
    out, s = run.path, run.settings
    t0 = time.perf_counter()
    own = engine is None
    eng = engine or Engine()
    try:
        raw = _sample(eng, run.specimen, out, s, run.erd_report, on_message, resume=True)
    finally:
        if own:
            eng.close()
    return _finish(raw, out, run.classifier_report, run.erd_report, s, run.source, run.specimen,
                   run.seconds_training + time.perf_counter() - t0, resumed=True)


def _sample(eng, specimen, out: Path, s: RunSettings, erd_report: dict, cb, *, resume: bool) -> dict:
    return sample(eng, specimen, out, s.sampling, erd_report, resume=resume, stop_td=s.stop_td,
                  journal_settings={"settings": asdict(s)}, on_message=cb)


def _finish(raw, out, clf_report, erd_report, s: RunSettings, source, specimen, seconds,
            resumed: bool = False) -> dict:
    return finish(raw, out, mode="run", config=s.sampling, settings=asdict(s), source=source,
                  classifier_report=clf_report, erd_report=erd_report, seconds=seconds,
                  ground_truth=specimen.phase_map, specimen_labels=specimen.labels, resumed=resumed).to_dict()
