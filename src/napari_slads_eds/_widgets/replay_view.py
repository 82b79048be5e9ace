"""Step through a finished run: the measurement mask, reconstruction and ERD map after the
first k measurements, for any k, as lazy (dask) stacks over the measurement index.

napari shows a stack of shape (n + 1, H, W) with a dims slider over its first axis; only the
step on screen is computed (a dask chunk per step), so nothing is copied per step:

* mask at step k: ``rank < k``, with ``rank[r, c]`` the index of (r, c) in the run's
  measurement order (one int32 map for the whole run);
* reconstruction and ERD at step k: a :class:`~napari_slads_eds.sampling.Sampler` given the
  first k measured positions and labels (about 0.1 s on a 128 x 128 grid; the last steps
  shown are cached);
* the static Halton and random scans of the same budget (the run's comparison scans, seed
  + 1 as in the ``run_slads`` job): masks of their first k positions, again from a rank map.

numpy, scipy and dask only (no Qt, no TensorFlow).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._validation import InputError, check_positions
from ..sampling import Sampler, halton_order, random_order

__all__ = ["RunReplay", "STATIC_ORDERS"]

#: Static scans shown beside the run: name -> order of positions (shape, n, seed) -> (n, 2).
STATIC_ORDERS = {
    "Halton": lambda shape, n, seed: halton_order(shape, n, seed),
    "random": lambda shape, n, seed: random_order(shape, seed)[:n],
}


def _rank_map(shape, positions) -> np.ndarray:
    """int32 (H, W): the index of each pixel in ``positions``; INT32_MAX where never measured."""
    H, W = shape
    rank = np.full(H * W, np.iinfo(np.int32).max, dtype=np.int32)
    p = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    rank[p[:, 0] * W + p[:, 1]] = np.arange(p.shape[0], dtype=np.int32)
    return rank.reshape(H, W)


class RunReplay:
    """The states of a finished run after its first k measurements, k = 0..n.

    Parameters
    ----------
    shape : (H, W)
        Grid shape.
    positions : array_like, shape (n, 2), int
        The measured (row, col) positions in measurement order (the run's ``positions``, the
        journal's ``position``).
    labels : array_like, shape (n,), int in 0..L
        Their measured labels (0 = ill-spectrum).
    n_phases : int
        L.
    erd_model : LinearERD or MLPERD, optional
        The run's ERD model (numpy only); without one, :meth:`erd` gives zeros.
    seed : int
        The run's seed: the static scans use ``seed + 1``, as the run's comparison scans do.
    cache : int
        Steps whose reconstruction and ERD map are kept.

    Raises
    ------
    InputError
        Positions outside the grid or repeated, or a label count that does not match.
    """

    def __init__(self, shape, positions, labels, n_phases: int, erd_model=None, *, seed: int = 0,
                 cache: int = 16):
        self.shape = (int(shape[0]), int(shape[1]))
        self.positions = check_positions(positions, self.shape)
        self.labels = np.asarray(labels, dtype=np.int16).reshape(-1)
        if self.labels.shape[0] != self.positions.shape[0]:
            raise InputError(f"replay: {self.positions.shape[0]} positions but {self.labels.shape[0]} labels")
        H, W = self.shape
        flat = self.positions[:, 0] * W + self.positions[:, 1]
        if np.unique(flat).size != flat.size:
            raise InputError("replay: a position is measured twice")
        self.n = int(self.positions.shape[0])
        self.n_phases = int(n_phases)
        self.erd_model = erd_model
        self.rank = _rank_map(self.shape, self.positions)
        self.static_positions = {name: np.asarray(order(self.shape, self.n, int(seed) + 1)).reshape(-1, 2)
                                 for name, order in STATIC_ORDERS.items()}
        self.static_rank = {name: _rank_map(self.shape, p) for name, p in self.static_positions.items()}
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = max(1, int(cache))
        self.computed = 0          # sampler states built (for tests and benchmarks)

    @property
    def steps(self) -> int:
        """Number of steps, n + 1 (k = 0..n)."""
        return self.n + 1

    def _k(self, k) -> int:
        k = int(k)
        if not 0 <= k <= self.n:
            raise InputError(f"replay step must be in 0..{self.n}, got {k}")
        return k

    def mask(self, k: int, scan: str = "SLADS") -> np.ndarray:
        """uint8 (H, W): 1 at the first k positions of the run (``scan="SLADS"``) or of a
        static scan ("Halton", "random")."""
        k = self._k(k)
        rank = self.rank if scan == "SLADS" else self.static_rank[scan]
        return (rank < k).astype(np.uint8)

    def _state(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = self._k(k)
        hit = self._cache.get(k)
        if hit is not None:
            self._cache.move_to_end(k)
            return hit
        s = Sampler(self.shape, self.n_phases, self.erd_model)
        if k:
            s.update(self.positions[:k], self.labels[:k])
        recon = s.reconstruction.astype(np.int16, copy=True)
        if self.erd_model is not None and k:
            erd = np.nan_to_num(np.asarray(s.erd_map, dtype=np.float32), nan=0.0, neginf=0.0, posinf=0.0)
            np.maximum(erd, 0, out=erd)
        else:
            erd = np.zeros(self.shape, dtype=np.float32)
        self.computed += 1
        self._cache[k] = (recon, erd)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return recon, erd

    def reconstruction(self, k: int) -> np.ndarray:
        """int16 (H, W): the reconstruction from the first k measurements (0 before any)."""
        return self._state(k)[0]

    def erd(self, k: int) -> np.ndarray:
        """float32 (H, W): the ERD map after the first k measurements, 0 at measured pixels."""
        return self._state(k)[1]

    def erd_scaled(self, k: int) -> np.ndarray:
        """float32 (H, W): the ERD map of step k divided by its 99.5th percentile (of the
        positive values) and clipped to 0..1, so that every step is readable with one
        contrast (the ERD shrinks by orders of magnitude during a run)."""
        e = self.erd(k)
        pos = e[e > 0]
        if not pos.size:
            return np.zeros_like(e)
        return np.clip(e / np.float32(np.percentile(pos, 99.5)), 0, 1).astype(np.float32)

    def lazy(self, kind: str, scan: str = "SLADS", scaled: bool = False):
        """A dask array (n + 1, H, W) of ``kind`` ("mask", "reconstruction" or "erd"; the
        ERD with ``scaled``: :meth:`erd_scaled`) over the measurement index, one chunk per
        step, computed only when a step is shown."""
        import dask.array as da

        fn, dtype = {"mask": (lambda k: self.mask(k, scan), np.uint8),
                     "reconstruction": (self.reconstruction, np.int16),
                     "erd": (self.erd_scaled if scaled else self.erd, np.float32)}[kind]
        H, W = self.shape

        def block(b):
            return fn(int(b[0]))[None]

        return da.arange(self.steps, chunks=1).map_blocks(
            block, new_axis=[1, 2], chunks=((1,) * self.steps, (H,), (W,)), dtype=dtype,
            meta=np.empty((0, 0, 0), dtype=dtype))
