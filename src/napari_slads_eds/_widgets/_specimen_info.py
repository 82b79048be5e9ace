"""The simulated specimen as the widgets keep it: :class:`SpecimenInfo` in the ground-truth
layer's metadata (:data:`SPECIMEN_KEY`, read back by :func:`specimen_info`), and the mask
of a run's measured positions (:func:`measured_mask`).

Plain data (no Qt, no engine); the per-viewer session and its engine jobs are in
:mod:`._session`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SpecimenInfo", "specimen_info", "SPECIMEN_KEY", "measured_mask"]

#: Key of the :class:`SpecimenInfo` in the ground-truth layer's ``metadata``.
SPECIMEN_KEY = "slads_eds_specimen"


@dataclass
class SpecimenInfo:
    """What the simulated-object widget made, kept in the ground-truth layer's metadata.

    Attributes
    ----------
    specimen : SimulatedSpecimen
        The test object (N x N grid, spectra made on demand).
    train_references : ReferenceSpectra
        Reference spectra for the classifier (24 per phase: half train, half validation),
        different realisations from the specimen's 12 per phase.
    train_maps : list of ndarray
        Training phase maps at grid resolution: regions of the phase layer that do not
        overlap the test region (may be empty in "whole layer" mode).
    factor : int
        Phase-layer pixels per grid pixel (majority-vote down-sampling).
    test_region : (row, col, side) or None
        Test region in phase-layer pixels (None: the whole layer).
    train_regions : list of (row, col, side)
    source : str
        Name of the phase layer.
    settings : dict
        ill_fraction, counts_per_spectrum, seed, reference spectrum files.
    """

    specimen: Any
    train_references: Any
    train_maps: list = field(default_factory=list)
    factor: int = 1
    test_region: tuple | None = None
    train_regions: list = field(default_factory=list)
    source: str = ""
    settings: dict = field(default_factory=dict)

    @property
    def n_phases(self) -> int:
        return int(self.specimen.n_phases)

    @property
    def phase_names(self) -> tuple:
        return tuple(self.specimen.references.phase_names)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.specimen.shape)


def specimen_info(layer) -> SpecimenInfo | None:
    """The :class:`SpecimenInfo` of a ground-truth layer, or None."""
    if layer is None:
        return None
    info = getattr(layer, "metadata", {}).get(SPECIMEN_KEY)
    return info if isinstance(info, SpecimenInfo) else None


def measured_mask(shape, positions) -> np.ndarray:
    """uint8 mask (H, W), 1 at ``positions`` (n, 2)."""
    m = np.zeros(shape, dtype=np.uint8)
    p = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    m[p[:, 0], p[:, 1]] = 1
    return m
