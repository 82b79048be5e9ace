"""The stopping rule of a SLADS run, and learning its threshold on training images.

After Godaliyadda et al. (SLADS, 2018): a running average ε_k = (1 - β) ε_{k-1} + β d_k
over the measurements (bias-corrected like an Adam moment estimate, so the first
values are plain averages), with β = 0.001 ((18 - log2 |Ω|) / 2 + 1) for
|Ω| <= 2^18 and 0.001 / ((log2 |Ω| - 18) / 2 + 1) above; the run stops once ε_k < T,
with T learned on training images as the mean ε at the step where their TD first
reached the target TD (:func:`learn_stopping_threshold`).  SLADS averages the error of
the predicted label at the measured pixel, d_k = [x_s ≠ x̂_s].  On phase maps that
quantity does not fall as the map converges -- SLADS keeps measuring on boundaries,
where a single pixel's prediction stays a coin flip (measured on the bundled 2-phase
sample: ε rises from 0.35 to 0.45 while TD falls from 0.1 to 0.01) -- so here d_k is
the *realised* reduction in distortion: the number of pixels whose reconstructed label
changed with the measurement (the measured pixel's own error included).  It falls
steadily with TD and needs no ground truth.

Numpy only (no TensorFlow, no Qt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._validation import InputError

__all__ = ["StoppingRule", "stopping_beta", "learn_stopping_threshold"]


def stopping_beta(n_pixels: int) -> float:
    """β of the stopping rule's running average for a grid of ``n_pixels`` (SLADS)."""
    lg = math.log2(max(2, n_pixels))
    if n_pixels <= 2 ** 18:
        return 0.001 * ((18 - lg) / 2 + 1)
    return 0.001 / ((lg - 18) / 2 + 1)


@dataclass
class StoppingRule:
    """Running average of the pixels relabelled per measurement, against a threshold.

    Parameters
    ----------
    threshold : float
        T: stop when ε < T (pixels per measurement).
    n_pixels : int
        |Ω|, sets β.
    min_fraction : float
        Never stop before this sampling fraction.
    """

    threshold: float
    n_pixels: int
    min_fraction: float = 0.02
    beta: float = field(default=0.0)
    _m: float = 0.0
    _k: int = 0

    def __post_init__(self):
        if not self.beta:
            self.beta = stopping_beta(self.n_pixels)

    @property
    def epsilon(self) -> float:
        """Current ε (bias-corrected running average); inf before any observation."""
        if self._k == 0:
            return float("inf")
        return self._m / (1.0 - (1.0 - self.beta) ** self._k)

    def observe(self, changed_pixels: int, n_measurements: int) -> float:
        """Add ``n_measurements`` measurements that together relabelled ``changed_pixels``
        pixels of the reconstruction (each counts as ``changed / n``).  Returns ε."""
        n = int(n_measurements)
        if n <= 0:
            return self.epsilon
        d = float(changed_pixels) / n
        keep = (1.0 - self.beta) ** n
        self._m = keep * self._m + (1.0 - keep) * d
        self._k += n
        return self.epsilon

    def should_stop(self, fraction: float) -> bool:
        return fraction >= self.min_fraction and self._k > 0 and self.epsilon < self.threshold


def learn_stopping_threshold(label_images, n_phases: int, erd_model, target_td: float = 0.01, *,
                             max_fraction: float = 0.5, k: int = 10, seed: int = 0) -> dict:
    """T of the stopping rule: simulate SLADS on training images (true labels), note ε at
    the first step where TD <= ``target_td`` on each, and average.

    Returns
    -------
    dict with ``threshold`` (T), ``target_td``, ``per_image`` (list of {fraction, epsilon}).

    Raises
    ------
    InputError
        When no training image reaches the target TD below ``max_fraction``.
    """
    from .sampling import Sampler, initial_positions

    per = []
    for i, truth in enumerate(label_images):
        truth = np.asarray(truth)
        H, W = truth.shape
        P = H * W
        s = Sampler((H, W), n_phases, erd_model, k=k, truth=truth)
        init = initial_positions((H, W), 0.01, "halton", seed + i)
        s.update(init, truth[init[:, 0], init[:, 1]])
        rule = StoppingRule(0.0, P)
        batch = max(1, P // 4000)
        flat = truth.reshape(-1)
        s.pop_changes()
        while s.fraction < max_fraction:
            if s.td <= target_td:
                per.append({"fraction": s.fraction, "epsilon": rule.epsilon})
                break
            pos = s.select(batch)
            if len(pos) == 0:
                break
            s.update(pos, flat[pos[:, 0] * W + pos[:, 1]])
            rule.observe(s.pop_changes(), len(pos))
    if not per:
        raise InputError(f"no training image reached TD {target_td} below {100 * max_fraction:g} % "
                         "sampled; the stopping rule cannot be learned for this target")
    return {"threshold": float(np.mean([p["epsilon"] for p in per])), "target_td": float(target_td),
            "per_image": per}
