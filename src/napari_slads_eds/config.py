"""The sampling configuration: one frozen dataclass that says how a SLADS run samples.

:class:`SamplingConfig` is built once -- by the command line (``slads-eds run``/``replay``
options), the napari Run tab, or a script -- and passed whole to the engine job
``run_slads`` (:func:`napari_slads_eds.jobs.run_slads`), which hands it to the acquisition
loop (:class:`napari_slads_eds.acquisition.RunConfig` nests it).  The experiment settings
(:class:`~napari_slads_eds.pipeline.RunSettings` of a simulated run,
:class:`~napari_slads_eds.replay.ReplaySettings` of a replay) describe what is sampled and
how the models are trained; their ``sampling`` property is this config, and their checks of
the sampling fields are :meth:`SamplingConfig.check`.

Plain Python and numpy only (no Qt, no TensorFlow).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ._validation import InputError, check_int, check_seed

__all__ = ["SamplingConfig", "RunSettings", "BASELINES", "UNCERTAINTY", "MAX_DENOISE", "MAX_UPSAMPLE"]

#: Limits of the micrograph preparation (beyond them a run would only exhaust memory).
MAX_DENOISE = 63
MAX_UPSAMPLE = 16

#: Static scans a run can be compared with (same dose, same classifier and reconstruction).
BASELINES = ("random", "halton")
#: Label handling: the paper's hard labels, or spatial decisions with probability votes.
UNCERTAINTY = ("hard", "soft")


def _number(v, name: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not np.isfinite(v):
        raise InputError(f"{name} must be a finite number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class SamplingConfig:
    """How a SLADS run samples (the same for a simulated object, a replayed map and a
    microscope).

    Attributes
    ----------
    fraction : float
        Target sampling fraction in (0, 1] (measured pixels / grid pixels).
    initial_fraction : float
        Fraction measured first in a fixed pattern (the paper: 1 %).
    initial_pattern : {"halton", "random"}
    batch : int
        Positions chosen per step (1 = pointwise SLADS, the paper).
    batch_mode : {"top", "pseudo"}
        A batch is the ``batch`` largest ERD values, or chosen one by one with
        pseudo-measurements (the reconstruction's label) in between.
    overlap : bool
        Choose the next batch while the current one is measured.
    k : int
        Neighbours of the reconstruction (the paper: 10).
    seed : int
        Seed of the initial pattern and the static scans, 0..2**32-1.
    uncertainty : {"hard", "soft"}
        The paper's hard labels, or spatial phase decisions and probability votes
        (:mod:`napari_slads_eds.uncertainty`).
    baselines : tuple of str
        Static scans run beside SLADS at the same dose (:data:`BASELINES`); they need a
        ground truth and are skipped without one.
    baseline_fractions : tuple of float
        Extra sampling fractions in (0, 1] at which the static scans are scored.
    frame_interval : float
        Seconds between live frames sent to a display (>= 0; 0: every step).

    Raises
    ------
    InputError
        A field of the wrong type or outside its range (:meth:`check`, run by the
        constructor).
    """

    fraction: float = 0.15
    initial_fraction: float = 0.01
    initial_pattern: str = "halton"
    batch: int = 1
    batch_mode: str = "top"
    overlap: bool = False
    k: int = 10
    seed: int = 0
    uncertainty: str = "hard"
    baselines: tuple = BASELINES
    baseline_fractions: tuple = ()
    frame_interval: float = 0.25

    def __post_init__(self):
        self.check()

    def check(self) -> "SamplingConfig":
        """Validate every field (the constructor does); returns ``self``.

        Raises
        ------
        InputError
            A field of the wrong type or outside its range, named as the command line names it.
        """
        f = _number(self.fraction, "--fraction")
        if not 0 < f <= 1:
            raise InputError(f"--fraction must be in (0, 1], got {self.fraction}")
        fi = _number(self.initial_fraction, "initial fraction")
        if not 0 < fi <= 1:
            raise InputError(f"initial fraction must be in (0, 1], got {self.initial_fraction}")
        if self.initial_pattern not in ("halton", "random"):
            raise InputError(f"initial pattern must be 'halton' or 'random', got {self.initial_pattern!r}")
        check_int(self.batch, "--batch", 1)
        if not isinstance(self.overlap, (bool, np.bool_)):
            # a hand-edited "overlap": "false" would be true
            raise InputError(f"overlap must be true or false, got {self.overlap!r}")
        if self.batch_mode not in ("top", "pseudo"):
            raise InputError(f"batch mode must be 'top' or 'pseudo', got {self.batch_mode!r}")
        check_int(self.k, "k (neighbours of the reconstruction)", 1, 100)
        check_seed(self.seed, "--seed")
        if self.uncertainty not in UNCERTAINTY:
            raise InputError(f"--uncertainty must be 'hard' or 'soft', got {self.uncertainty!r}")
        b = self.baselines
        if not isinstance(b, (list, tuple)) or not all(isinstance(x, str) for x in b):
            raise InputError(f"baselines: expected a sequence of names from {BASELINES}, got {b!r}")
        for x in b:
            if x not in BASELINES:
                raise InputError(f"unknown baseline {x!r} (known: {', '.join(BASELINES)})")
        bf = self.baseline_fractions
        if not isinstance(bf, (list, tuple, np.ndarray)) or not all(
                isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))
                and 0 < x <= 1 for x in bf):
            raise InputError(f"baseline fractions must be numbers in (0, 1], got {bf!r}")
        fr = _number(self.frame_interval, "frame interval (s)")
        if fr < 0:
            raise InputError(f"frame interval must be >= 0 s, got {self.frame_interval}")
        return self

    @property
    def soft(self) -> bool:
        """True with ``uncertainty="soft"``."""
        return self.uncertainty == "soft"

    def replace(self, **changes) -> "SamplingConfig":
        """A copy with ``changes`` (checked).

        Raises
        ------
        InputError
            An unknown field, or an invalid value.
        """
        _refuse_unknown(changes, "fields")
        return replace(self, **changes)          # (checked by the constructor)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        d["baseline_fractions"] = [float(x) for x in self.baseline_fractions]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingConfig":
        """The config of :meth:`to_dict` (unknown keys are an error, missing ones default).

        Raises
        ------
        InputError
            Not a dict, unknown keys, or invalid values.
        """
        if not isinstance(d, dict):
            raise InputError(f"sampling configuration: expected a dict, got {type(d).__name__}")
        _refuse_unknown(d, "keys")
        return cls(**_sequences_as_tuples(d))

    @classmethod
    def from_settings(cls, settings, **overrides) -> "SamplingConfig":
        """The sampling part of an experiment's settings (any object with the fields'
        names as attributes; ``uncertainty`` None counts as "hard"), with ``overrides``."""
        kw = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        if kw.get("uncertainty") is None:
            kw["uncertainty"] = "hard"
        _refuse_unknown(overrides, "fields")
        kw.update(overrides)
        return cls(**_sequences_as_tuples(kw))


def _refuse_unknown(names, what: str) -> None:
    """InputError naming the entries of ``names`` that are no :class:`SamplingConfig` field."""
    known = sorted(f.name for f in fields(SamplingConfig))
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise InputError(f"sampling configuration: unknown {what} {unknown}; known: {known}")


def _sequences_as_tuples(kw: dict) -> dict:
    """``kw`` with ``baselines`` and ``baseline_fractions`` given as lists or arrays (JSON,
    a form) made tuples; anything else is left for :meth:`SamplingConfig.check` to name."""
    kw = dict(kw)
    for key in ("baselines", "baseline_fractions"):
        if isinstance(kw.get(key), (list, tuple, np.ndarray)):
            kw[key] = tuple(kw[key])
    return kw


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

    @property
    def sampling(self) -> SamplingConfig:
        """The run's :class:`SamplingConfig` (its sampling fields; the static scans
        random and Halton)."""
        return SamplingConfig.from_settings(self)

    def check(self) -> "RunSettings":
        """Validate every setting (the sampling ones by :meth:`SamplingConfig.check`);
        returns ``self``.

        Raises
        ------
        InputError
            A setting of the wrong type or outside its range, named as the CLI names it.
        """
        from .erd import ERD_CHOICES

        # types first (a hand-edited run_settings.json may hold "0.15" or 2.5): the checks
        # below then compare numbers
        check_int(self.size, "--size", 8)
        check_int(self.downsample, "--downsample", 1)
        for name, v in (("--ill-fraction", self.ill_fraction), ("counts per spectrum", self.counts_per_spectrum),
                        ("the stopping rule's target TD", 0.5 if self.stop_td is None else self.stop_td),
                        ("noise_lambda", self.noise_lambda), ("ill_lambda", self.ill_lambda)):
            _number(v, name)
        self.sampling  # noqa: B018  (checks fraction, pattern, batch, k, seed, baselines ...)
        check_int(self.upsample, "--upsample", 1, MAX_UPSAMPLE)
        check_int(self.max_train_regions, "max_train_regions (training regions)", 1)
        if not 0 <= self.ill_fraction < 1:
            raise InputError(f"--ill-fraction must be in [0, 1), got {self.ill_fraction}")
        if not self.counts_per_spectrum > 0:
            raise InputError(f"counts per spectrum must be > 0, got {self.counts_per_spectrum}")
        for name, v in (("noise_lambda", self.noise_lambda), ("ill_lambda", self.ill_lambda)):
            if v < 0:
                raise InputError(f"{name} (Poisson mean) must be >= 0, got {v}")
        if self.erd not in ERD_CHOICES:
            raise InputError(f"the ERD model must be one of {', '.join(map(repr, ERD_CHOICES))}, got {self.erd!r}")
        if self.stop_td is not None and not 0 < self.stop_td < 1:
            raise InputError(f"the stopping rule's target TD must be in (0, 1), got {self.stop_td}")
        if self.classifier not in ("cnn", "poisson"):
            raise InputError(f"--classifier-kind must be 'cnn' or 'poisson', got {self.classifier!r}")
        check_int(self.denoise, "--denoise (median filter size in pixels; 0 or 1: none)", 0, MAX_DENOISE)
        check_int(self.crop_bottom, "--crop-bottom", 0)
        if self.epochs is not None:
            check_int(self.epochs, "--epochs", 1, 10000)
        return self
