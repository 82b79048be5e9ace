"""Replay of a fully acquired spectrum image: how SLADS would have done on a real map.

This module holds the replay's settings, its preparation (:func:`prepare_replay`) and its
run (:func:`run_replay`, :func:`resume_replay`; the orchestrator of every run).  The
specimen is :class:`napari_slads_eds.specimen.ReplaySpecimen`; the ground truth and the
training data come from :mod:`napari_slads_eds.replay_truth`; the command is
:mod:`napari_slads_eds.cli.replay`.

A :class:`ReplaySpecimen` serves ``measure(positions)`` from an acquired map
``counts[row, col, channel]`` with the interface of
:class:`~napari_slads_eds.specimen.SimulatedSpecimen` (``shape``, ``n_phases``, ``axis``,
``phase_map``, ``labels``, ``references``), so the engine's ``run_slads`` job runs on it
unchanged.  Shorter dwell times are emulated by **binomial thinning**: if a channel holds
``N ~ Poisson(λ)`` counts, keeping each count with probability ``d`` gives
``Binomial(N, d) ~ Poisson(d λ)``, exactly the counts of a ``d`` times shorter dwell.  The
thinning of a pixel is drawn from a generator seeded by ``(seed, pixel index)``, so a pixel
always gives the same spectrum whenever it is measured.

Ground truth, classifier and ERD training (what is trained on what)
--------------------------------------------------------------------
The classifier and the ERD model must not be trained on the data they are tested on, and
a real map is small (the shared Bruker map is 75 × 100 pixels of about 22 counts).

* **Ground truth** (used only to score TD): clustering of the full map (default) --
  spectra smoothed spatially by a Gaussian of ``smooth`` pixels, binned to 10 channels,
  normalised per pixel, square-rooted, PCA to 5 components, k-means (scipy ``kmeans2``,
  k-means++ with restarts); phases ordered by the mean of the BSE image when the file
  has one (else by mean total counts), darkest first -- or the labels a trained
  classifier gives the full map (``truth="classifier"``), ill-spectra filled by the
  nearest phase label.
* **Classifier training: count splitting.**  The counts are split per pixel into two
  independent Poisson shares (binomial thinning again): a *training share* (fraction
  ``train_share``, default 0.2) and a *measurement share* (the rest).  The replayed
  measurements come only from the measurement share; the classifier learns only from
  the training share: per phase, the mean spectrum of its training-share pixels gives the
  spectral shape, and the training spectra are Poisson draws of that shape at the count
  level of a measurement (training share mean counts rescaled to the measured dwell,
  times a log-normal spread of 25 %).  Because the two shares are independent Poisson
  counts, the classifier has never seen a single count it later classifies -- the
  situation of a microscopist who acquired a short training map first.  The price: the
  replayed measurements carry ``1 - train_share`` (80 %) of the acquired dose at most.
* **ERD model**: trained on *other* label images: by default the bundled BSE micrograph
  of glass, sand grains and bubbles, segmented into L phases and majority-down-sampled
  4× (features of a few to a few tens of pixels, like the grains of the map), or the
  micrographs given with ``train``.  Never the map's own BSE image or labels.

The command ``slads-eds replay`` runs all of it and writes the run folder of ``slads-eds
run`` (:mod:`napari_slads_eds.run_folder`: ``result.json`` with the same keys) plus ``DIR/run.hspy`` and ``DIR/run_export.npz`` (:mod:`napari_slads_eds.export`).

Nothing here imports TensorFlow; training and sampling run in the engine process.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ._validation import InputError, check_int
from .config import SamplingConfig
from .eds_io import SpectrumImage, read_spectrum_image, spectrum_image_from_layer, to_axis
# the replayed specimen and the map's ground truth and training data live in their own
# modules; their names stay importable from here
from .replay_truth import (cluster_phases, electron_image_labels, electron_image_name, erd_training_images,
                           fill_ill, phase_training_spectra, split_counts)
from .specimen import ReplaySpecimen, thin_counts
from .spectra import EnergyAxis, ReferenceSpectra

__all__ = [
    "ReplaySpecimen",
    "ReplaySettings",
    "ReplayExperiment",
    "thin_counts",
    "split_counts",
    "cluster_phases",
    "phase_training_spectra",
    "erd_training_images",
    "prepare_replay",
    "run_replay",
    "spectrum_image_from_layer",
]

# ----------------------------------------------------------------------------- experiment

#: How a run folder records a training micrograph that was given as an array.
TRAIN_ARRAY = "<array>"


@dataclass
class ReplaySettings:
    """Settings of a replay experiment.

    Attributes
    ----------
    fraction : float
        Target sampling fraction (0, 1].
    seed : int
    truth : {"cluster", "classifier"}
        Ground truth from clustering the full map, or from ``classifier`` on the full map.
    classifier : str, optional
        A trained classifier folder: used for the run (and for ``truth="classifier"``)
        instead of training one on the training share.
    smooth : float
        Gaussian sigma (pixels) of the clustering.
    train_share : float in (0, 1)
        Fraction of the counts set aside (count splitting) to train the classifier;
        ignored (0) with ``classifier``.
    dwell : float, optional
        Emulated dwell time as a fraction of the acquired one (default and maximum:
        ``1 - train_share``).
    n_per_phase : int
        Training spectra per phase (half train, half validate).
    epochs : int, optional
        CNN epochs (default 12).
    train : list of str, optional
        Micrographs for the ERD model (default: the bundled glass BSE micrograph).
    erd_downsample : int
    initial_fraction, initial_pattern, batch, batch_mode, k
        As :class:`~napari_slads_eds.pipeline.RunSettings`.
    c_values : tuple of float, optional
        Candidates for the ERD's c (default: :data:`napari_slads_eds.erd.C_CANDIDATES`).
    classifier_kind : {"poisson", "cnn"}
        Trained on the training share: the count-aware Poisson likelihood classifier
        (default, chosen by benchmarks/bench_real_maps.py) or the paper's NNR + CNN.
    uncertainty : {"soft", None}
        "soft": spatial phase decisions and probability votes
        (:mod:`napari_slads_eds.uncertainty`; default); None: the paper's hard labels.
    erd_training : {"auto", "micrograph", "electron-image", "both"}
        Label images the ERD model learns from: the bundled (or ``train``) micrographs;
        the map's own electron (BSE) image segmented into L phases (an SEM takes it in
        seconds before any EDS; the ground truth stays the spectra); or both.  "auto"
        (default): the electron image when the map carries one and no ``train`` is given,
        else the micrographs.
    default_calibration : (offset_keV, scale_keV), optional
        Assumed, with a warning, for a map without energy calibration.
    """

    fraction: float = 0.2
    seed: int = 0
    truth: str = "cluster"
    classifier: str | None = None
    smooth: float = 1.0
    train_share: float = 0.2
    dwell: float | None = None
    n_per_phase: int = 600
    epochs: int | None = None
    train: list | None = None
    erd_downsample: int = 4
    initial_fraction: float = 0.01
    initial_pattern: str = "halton"
    batch: int = 1
    batch_mode: str = "top"
    k: int = 10
    c_values: tuple | None = None
    classifier_kind: str = "poisson"
    uncertainty: str | None = "soft"
    erd_training: str = "auto"
    default_calibration: tuple | None = None

    @property
    def sampling(self) -> SamplingConfig:
        """The replay's :class:`~napari_slads_eds.config.SamplingConfig` (its sampling
        fields; ``uncertainty`` None = "hard")."""
        return SamplingConfig.from_settings(self)

    def check(self) -> "ReplaySettings":
        """Validate (the sampling fields by :meth:`SamplingConfig.check`); returns ``self``.

        Raises
        ------
        InputError
            A setting outside its range, named as the CLI names it.
        """
        from .config import _number

        if self.uncertainty not in (None, "soft"):
            raise InputError(f"--uncertainty must be 'soft' or 'hard', got {self.uncertainty!r}")
        self.sampling  # noqa: B018  (fraction, seed, pattern, batch, batch mode, k)
        # types first (a hand-edited run_settings.json of a replay may hold "1.0" or [..]):
        # the range checks below then compare numbers
        _number(self.smooth, "--smooth (Gaussian sigma in pixels)")
        _number(self.train_share, "--train-share")
        if self.dwell is not None:
            _number(self.dwell, "--dwell")
        check_int(self.n_per_phase, "n_per_phase (training spectra per phase)", 4)
        check_int(self.erd_downsample, "erd_downsample", 1)
        if self.classifier is not None and not isinstance(self.classifier, (str, Path)):
            raise InputError(f"--classifier must be a classifier folder, got {self.classifier!r}")
        if self.train is not None and (isinstance(self.train, (str, bytes)) or not isinstance(
                self.train, (list, tuple)) or not all(isinstance(t, (str, Path)) or (
                    isinstance(t, np.ndarray) and t.ndim == 2) for t in self.train)):
            raise InputError(f"--train must be a list of micrograph files (or 2-D images), got {self.train!r}")
        for name, v, n in (("c_values (candidates for the ERD's c)", self.c_values, None),
                           ("--calibration (offset and scale in keV)", self.default_calibration, 2)):
            if v is None:
                continue
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or (n and len(v) != n) \
                    or not v:
                raise InputError(f"{name} must be a list of {n or 'some'} numbers, got {v!r}")
            for x in v:
                _number(x, name)
        if self.default_calibration is not None and not self.default_calibration[1] > 0:
            raise InputError(f"--calibration: the energy scale (keV per channel) must be > 0, "
                             f"got {self.default_calibration[1]}")
        if self.truth not in ("cluster", "classifier"):
            raise InputError(f"--truth must be 'cluster' or 'classifier', got {self.truth!r}")
        if self.truth == "classifier" and not self.classifier:
            raise InputError("--truth classifier needs --classifier DIR (a trained classifier)")
        if not self.classifier and not 0 < self.train_share < 1:
            raise InputError(f"--train-share must be in (0, 1), got {self.train_share}")
        limit = 1.0 if self.classifier else 1.0 - self.train_share
        if self.dwell is not None and not 0 < self.dwell <= limit + 1e-12:
            raise InputError(f"--dwell must be in (0, {limit:g}] (the counts not set aside for "
                             f"training), got {self.dwell}")
        if self.n_per_phase < 4:
            raise InputError(f"n_per_phase must be >= 4, got {self.n_per_phase}")
        if not 0 <= self.smooth <= 50:   # NaN fails too
            raise InputError(f"--smooth (Gaussian sigma in pixels) must be in 0..50, got {self.smooth}")
        if self.epochs is not None:
            check_int(self.epochs, "--epochs", 1, 10000)
        if self.classifier_kind not in ("poisson", "cnn"):
            raise InputError(f"--classifier-kind must be 'poisson' or 'cnn', got {self.classifier_kind!r}")
        if self.erd_training not in ("auto", "micrograph", "electron-image", "both"):
            raise InputError(f"--erd-training must be auto, micrograph, electron-image or both, "
                             f"got {self.erd_training!r}")
        return self


@dataclass
class ReplayExperiment:
    """Everything a replay run needs, prepared in the calling process."""

    settings: ReplaySettings
    n_phases: int
    image: SpectrumImage
    truth: np.ndarray                        # (H, W) labels 1..L
    specimen: ReplaySpecimen
    train_references: ReferenceSpectra | None
    erd_images: list
    source: dict = field(default_factory=dict)


def _classify_full_map(engine, classifier, si: SpectrumImage, axis: EnergyAxis) -> np.ndarray:
    H, W = si.shape
    flat = si.counts.reshape(H * W, -1)
    spectra = np.asarray(to_axis(flat, si.axis, axis, beam_energy_keV=si.beam_energy_keV,
                                 what="spectrum image"), np.float32)
    lab = engine.run("classify", classifier=str(classifier), spectra=spectra)
    return fill_ill(np.asarray(lab).reshape(H, W))


def _classifier_meta(path) -> tuple[EnergyAxis, list, dict]:
    """Energy axis, phase names and training report of the classifier folder ``path``."""
    p = Path(path) / "classifier.json"
    try:
        meta = json.loads(p.read_text())
        return EnergyAxis.from_dict(meta["axis"]), list(meta.get("phase_names", [])), dict(meta.get("report") or {})
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{p}: not a readable classifier description ({exc})") from exc


def prepare_replay(spectrum_image, n_phases: int, settings: ReplaySettings | None = None, *,
                   engine=None) -> ReplayExperiment:
    """Read a map, find the ground truth, split the counts, build the specimen.

    Parameters
    ----------
    spectrum_image : path or SpectrumImage
    n_phases : int
        L >= 1.
    settings : ReplaySettings
    engine : Engine, optional
        Needed only for ``truth="classifier"`` (one is started and closed otherwise).

    Raises
    ------
    InputError
        Unreadable file, not a map, bad settings, a phase without pixels.
    """
    s = (settings or ReplaySettings()).check()
    L = check_int(n_phases, "--phases", 1, 255)
    si = (spectrum_image if isinstance(spectrum_image, SpectrumImage)
          else read_spectrum_image(spectrum_image, default_calibration=s.default_calibration))
    counts = np.asarray(si.counts)
    if not np.issubdtype(counts.dtype, np.integer):
        if not np.all(counts == np.round(counts)):
            raise InputError("replay needs integer counts (a map of measured X-ray counts)")
        counts = counts.astype(np.int64)
    H, W = si.shape
    if H * W < 64:
        raise InputError(f"the map has only {H}x{W} pixels; replay needs at least 64")
    bse = None
    for key in ("BSE", "bse"):
        if key in si.images:
            bse = np.asarray(si.images[key], np.float64)
    # the map's absolute path: resume_replay reads it again, from whatever folder it is started in
    file = (str(Path(spectrum_image).resolve()) if isinstance(spectrum_image, (str, Path))
            else si.metadata.get("file", si.name))
    source = {"spectrum_image": file, "map_shape": [H, W],
              "energy_axis": si.axis.to_dict(), "beam_energy_keV": si.beam_energy_keV,
              "mean_counts_per_pixel": float(counts.sum() / (H * W)), "truth": s.truth}
    axis = si.axis
    if s.classifier:
        axis, names, _ = _classifier_meta(s.classifier)
        if len(names) != L:
            raise InputError(f"the classifier knows {len(names)} phases, --phases is {L}")
    if s.truth == "cluster":
        truth = cluster_phases(counts, si.axis, L, smooth=s.smooth, order_image=bse,
                               max_energy_keV=si.beam_energy_keV, seed=s.seed)
        source["truth_order"] = "BSE brightness" if bse is not None else "total counts"
    else:
        from .engine import Engine

        own = engine is None
        eng = engine or Engine()
        try:
            truth = _classify_full_map(eng, s.classifier, si, axis)
        finally:
            if own:
                eng.close()
        if np.unique(truth).size < L:
            warnings.warn("the classifier finds fewer phases in the map than --phases", UserWarning,
                          stacklevel=2)
    source["truth_fractions"] = [float(np.mean(truth == l)) for l in range(1, L + 1)]
    refs = None
    if s.classifier:
        measure_counts, share = counts, 0.0
    else:
        share = float(s.train_share)
        train_counts, measure_counts = split_counts(counts, share, seed=s.seed)
    dwell = s.dwell if s.dwell is not None else 1.0 - share
    thin = dwell / (1.0 - share)
    if not s.classifier:
        refs = phase_training_spectra(train_counts, truth, L, si.axis, axis, count_scale=dwell / share,
                                      n_per_phase=s.n_per_phase, beam_energy_keV=si.beam_energy_keV,
                                      seed=s.seed)
    specimen = ReplaySpecimen(measure_counts, si.axis, truth, n_phases=L, axis=axis,
                              dwell_fraction=min(1.0, thin), beam_energy_keV=si.beam_energy_keV,
                              seed=s.seed, references=refs)
    source.update({"train_share": share, "dwell_fraction": float(dwell),
                   "mean_counts_per_measurement": float(measure_counts.sum() / (H * W) * min(1.0, thin))})
    erd_imgs, names = [], []
    how = s.erd_training
    if how == "auto":
        how = "electron-image" if si.images and not s.train else "micrograph"
    source["erd_training_mode"] = how
    if how in ("micrograph", "both"):
        erd_imgs += erd_training_images(L, s.train, downsample=s.erd_downsample)
        names += [str(t) for t in s.train] if s.train else ["bundled sem_glass_sand_bubbles_bse.png"]
    if how in ("electron-image", "both"):
        erd_imgs.append(electron_image_labels(si, L))
        names.append(f"the map's own electron image ({electron_image_name(si)}), segmented into {L} phases")
    source["erd_training"] = names
    source["erd_training_shapes"] = [list(t.shape) for t in erd_imgs]
    return ReplayExperiment(s, L, si, truth, specimen, refs, erd_imgs, source)


def replay_job(ctx, experiment, out_dir, export: bool = True) -> dict:
    """Engine job ``replay`` (the napari widget's real-map replay): :func:`run_replay` inside
    the engine process, the classifier and ERD training and the run called directly,
    streaming progress and ``frame`` messages with the maps.  Writes ``out_dir`` as
    ``slads-eds replay`` does and returns its result."""
    from .jobs import resolve
    from .orchestrator import InProcessEngine

    return run_replay(experiment, out_dir, engine=InProcessEngine(ctx, resolve), export=export, send_maps=True)


def run_replay(exp: ReplayExperiment, out_dir, *, engine=None, on_message=None, export: bool = True,
               baseline_fractions=(), send_maps: bool = False, resume_from=None) -> dict:
    """Train (classifier on the training share, ERD on other label images), run SLADS and
    the static baselines on the replayed map, write the results.

    The run folder ``out_dir`` is that of ``slads-eds run`` (:mod:`napari_slads_eds.run_folder`,
    mode "replay": settings, models, journal, ``result.json`` with the same keys as every
    run); with ``export`` also ``run.hspy`` and ``run_export.npz``
    (:func:`napari_slads_eds.export.export_run`).  A stopped replay continues with
    :func:`resume_replay` (which passes the folder it read as ``resume_from``, a
    :class:`~napari_slads_eds.run_folder.RunFolder`: its models are used and its journal is
    replayed first).

    Returns
    -------
    dict
        The result (:meth:`RunResult.to_dict`: as result.json, plus arrays).
    """
    from .engine import Engine
    from .orchestrator import finish, sample, train_classifier, train_erd
    from .run_folder import write_run_folder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = exp.settings
    config = s.sampling.replace(baseline_fractions=tuple(baseline_fractions))
    resume = resume_from is not None
    t0 = time.perf_counter()
    own = engine is None
    eng = engine or Engine()
    cb = on_message or (lambda m: None)
    try:
        if resume:
            rf = resume_from
            clf_report, erd_report, t_train = rf.classifier_report, rf.erd_report, rf.seconds_training
        else:
            if s.classifier:
                clf_report = _classifier_meta(s.classifier)[2]
            else:
                opts = {"noise_lambda": 0.0, "n_noisy": 1, "n_noisy_val": 1}
                if s.classifier_kind == "cnn" and s.epochs:
                    opts["epochs"] = s.epochs
                clf_report = train_classifier(eng, out, references=exp.train_references, seed=s.seed,
                                              kind=s.classifier_kind, options=opts, on_message=cb)
            erd_report = train_erd(eng, out, label_images=exp.erd_images, n_phases=exp.n_phases, seed=s.seed,
                                   k=s.k, fraction=s.fraction, c_values=s.c_values, on_message=cb)
            t_train = time.perf_counter() - t0
            # (micrographs given as arrays are recorded by name only: a resume does not retrain)
            recorded = replace(s, train=None if s.train is None else
                               [str(t) if isinstance(t, (str, Path)) else TRAIN_ARRAY for t in s.train])
            write_run_folder(out, None, recorded, clf_report, erd_report, clf_dir=s.classifier or None,
                             source=exp.source, n_phases=exp.n_phases, seconds_training=t_train, mode="replay")
        raw = sample(eng, exp.specimen, out, config, erd_report, resume=resume, send_maps=send_maps,
                     journal_settings={"replay": {"spectrum_image": str(exp.source.get("spectrum_image", ""))}},
                     on_message=cb)
    finally:
        if own:
            eng.close()
    # dose = total dwell time (in units of the acquired map's dwell per pixel), not the
    # number of positions
    result = finish(raw, out, mode="replay", config=config, settings={**asdict(s), "n_phases": exp.n_phases},
                    source=exp.source, classifier_report=clf_report, erd_report=erd_report,
                    seconds=(t_train if resume else 0.0) + time.perf_counter() - t0, ground_truth=exp.truth,
                    specimen_labels=exp.specimen.labels, dwell_per_position=float(exp.source["dwell_fraction"]),
                    resumed=resume).to_dict()
    if export:
        from .export import export_run

        spectra = exp.specimen.measure(result["positions"])
        for name in ("run.hspy", "run_export.npz"):
            export_run(result, out / name, spectra=spectra, axis=exp.specimen.axis,
                       beam_energy_keV=exp.image.beam_energy_keV, pixel_size=exp.image.pixel_size,
                       pixel_units=exp.image.pixel_units)
    return result


def resume_replay(out_dir, *, engine=None, on_message=None, export: bool = True) -> dict:
    """Continue a stopped or crashed replay in ``out_dir`` from its journal: the map is read
    again from the file its ``run_settings.json`` names, the specimen rebuilt with the same
    settings and seed (the journal's first spectra are checked against it), the journal
    replayed and the run continued with the models in ``out_dir``.

    Raises
    ------
    InputError
        Not a replay's run folder, the map file missing, or a journal of another run.
    """
    from .run_folder import CLASSIFIER_DIR, read_run_folder

    rf = read_run_folder(out_dir)
    if rf.mode != "replay":
        raise InputError(f"{rf.path} holds a {rf.mode}, not a replay")
    d = dict(rf.settings)
    d.pop("n_phases", None)
    for key in ("c_values", "default_calibration"):
        if isinstance(d.get(key), list):
            d[key] = tuple(d[key])
    if isinstance(d.get("train"), list) and TRAIN_ARRAY in d["train"]:
        d["train"] = None          # only the ERD training used them, and a resume does not retrain
    try:
        s = ReplaySettings(**d)
    except TypeError as exc:
        raise InputError(f"{rf.path}: invalid replay settings ({exc})") from exc
    if s.classifier:                       # the run folder's copy of the classifier it was given
        s = replace(s, classifier=str(rf.path / CLASSIFIER_DIR))
    path = rf.source.get("spectrum_image")
    if not isinstance(path, str) or not path or not Path(path).is_file():
        raise InputError(f"{rf.path} cannot be resumed: the map it replays ({path or 'unknown'}) is not there")
    exp = prepare_replay(path, rf.n_phases, s, engine=engine)
    # (extra static-scan fractions a script gave the first run are not recorded: none here)
    return run_replay(exp, rf.path, engine=engine, on_message=on_message, export=export, resume_from=rf)
