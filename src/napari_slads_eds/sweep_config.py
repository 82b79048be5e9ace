"""The settings of a sweep and its plan: :class:`SweepConfig`, the micrograph list, the tasks.

Owns what a sweep *is* before anything runs: the file and folder names of its output
folder, the validated settings (:class:`SweepConfig`; which of them are axes a resumed
sweep may extend), the expansion of ``--images`` globs and the list of tasks with their
stable ids (:func:`plan_tasks`), and the name of a TD column of the table.  Pure Python,
no numpy beyond what the settings need; imported by the client and the workers alike.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from ._validation import InputError, check_int, check_seed

__all__ = ["SweepConfig", "expand_images", "plan_tasks", "STRATEGIES", "TABLE_FILE", "CSV_FILE",
           "SUMMARY_FILE", "CONFIG_FILE", "ROWS_DIR", "MODELS_DIR", "CURVE_POINTS", "AXES"]

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
            from .erd_database import check_c_values

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

def _td_column(f: float) -> str:
    """The table column of the TD at sampling fraction ``f``."""
    return f"td_{f:g}"
