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

__all__ = ["SamplingConfig", "BASELINES", "UNCERTAINTY"]

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
        From :meth:`check` (and from the constructor of nothing: the dataclass is plain).
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

    def check(self) -> "SamplingConfig":
        """Validate every field; returns ``self``.

        Raises
        ------
        InputError
            A field of the wrong type or outside its range, named as the command line names it.
        """
        f = _number(self.fraction, "--fraction (target sampling fraction)")
        if not 0 < f <= 1:
            raise InputError(f"--fraction must be in (0, 1], got {self.fraction}")
        fi = _number(self.initial_fraction, "initial fraction")
        if not 0 < fi <= 1:
            raise InputError(f"initial fraction must be in (0, 1], got {self.initial_fraction}")
        if self.initial_pattern not in ("halton", "random"):
            raise InputError(f"initial pattern must be 'halton' or 'random', got {self.initial_pattern!r}")
        check_int(self.batch, "--batch", 1)
        if self.batch_mode not in ("top", "pseudo"):
            raise InputError(f"batch mode must be 'top' or 'pseudo', got {self.batch_mode!r}")
        check_int(self.k, "k (neighbours of the reconstruction)", 1, 100)
        check_seed(self.seed, "--seed")
        if self.uncertainty not in UNCERTAINTY:
            raise InputError(f"--uncertainty must be 'hard' or 'soft', got {self.uncertainty!r}")
        b = self.baselines
        if isinstance(b, (str, bytes)) or not all(isinstance(x, str) for x in b):
            raise InputError(f"baselines: expected a sequence of names from {BASELINES}, got {b!r}")
        for x in b:
            if x not in BASELINES:
                raise InputError(f"unknown baseline {x!r} (known: {', '.join(BASELINES)})")
        bf = self.baseline_fractions
        if isinstance(bf, (str, bytes)) or not all(
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
        """A copy with ``changes`` (checked)."""
        return replace(self, **changes).check()

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
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"sampling configuration: unknown keys {unknown}; known: {sorted(names)}")
        kw = dict(d)
        for key in ("baselines", "baseline_fractions"):
            if key in kw and isinstance(kw[key], list):
                kw[key] = tuple(kw[key])
        return cls(**kw).check()

    @classmethod
    def from_settings(cls, settings, **overrides) -> "SamplingConfig":
        """The sampling part of an experiment's settings (any object with the fields'
        names as attributes; ``uncertainty`` None counts as "hard"), with ``overrides``."""
        kw = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        if kw.get("uncertainty") is None:
            kw["uncertainty"] = "hard"
        for key in ("baselines", "baseline_fractions"):
            if key in kw and kw[key] is not None and not isinstance(kw[key], (str, bytes)):
                kw[key] = tuple(kw[key])
        kw.update(overrides)
        return cls(**kw).check()
