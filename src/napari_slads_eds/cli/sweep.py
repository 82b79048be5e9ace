"""``slads-eds sweep``: many runs on Dask (:mod:`napari_slads_eds.sweep`)."""

from __future__ import annotations

from ..sweep import add_sweep_parser, sweep_command

__all__ = ["add_sweep_parser", "sweep_command"]
