"""The on-disk journal of a SLADS run: every measurement appended to HDF5 as it arrives.

Every measured position with its spectrum, label, batch number and time is appended to
an HDF5 file (``journal.h5`` in the run's folder) as it arrives and flushed after every
batch, with the run's settings and seeds.  The file is written in HDF5's
single-writer/multiple-reader mode, which keeps it readable up to the last flush even
when the process is killed.  :func:`read_journal` reads it back (no pickle); a run
resumes by replaying the journal into a fresh sampler
(:func:`napari_slads_eds.acquisition.acquire`; no spectrum is measured twice) and
continues with exactly the selections an uninterrupted run would make.

Numpy/h5py only (no TensorFlow, no Qt).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._files import JOURNAL_NAME
from ._validation import InputError

__all__ = ["Journal", "read_journal", "JOURNAL_NAME"]

_FORMAT = "napari-slads-eds acquisition journal"
_RECORD = np.dtype([("row", "<i4"), ("col", "<i4"), ("label", "<i2"), ("batch", "<i4"), ("time", "<f8")])


class Journal:
    """Append-only record of a run's measurements (HDF5, flushed per batch).

    Parameters
    ----------
    path : path
        The file to create (``journal.h5``).
    n_channels : int
        p, channels per spectrum.
    settings : dict
        JSON-serialisable settings and seeds of the run (stored as an attribute).

    Datasets
    --------
    record (n,): row, col (int32), label (int16), batch (int32), time (float64, seconds
    since the run started); spectrum (n, p) float32 counts (lzf-compressed).
    """

    def __init__(self, path, n_channels: int, settings: dict, *, _file=None):
        import h5py

        self.path = Path(path)
        if _file is not None:
            self._f = _file
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = h5py.File(self.path, "w", libver="latest")
            f.attrs["format"] = _FORMAT
            f.attrs["version"] = 1
            f.attrs["settings"] = json.dumps(settings)
            # one record per measurement; small chunks, because every flush rewrites the last,
            # partly filled chunk
            f.create_dataset("record", (0,), maxshape=(None,), dtype=_RECORD, chunks=(256,))
            # one spectrum per chunk, compressed (counts shrink about 3x with lzf, which is
            # fast and in every h5py build)
            f.create_dataset("spectrum", (0, int(n_channels)), maxshape=(None, int(n_channels)),
                             dtype="float32", chunks=(1, int(n_channels)), compression="lzf",
                             shuffle=True)
            f.swmr_mode = True
            self._f = f
        self.n = int(self._f["record"].shape[0])
        self.n_batches = int(self._f["record"][-1]["batch"]) + 1 if self.n else 0

    @classmethod
    def append_to(cls, path, contents: dict | None = None) -> "Journal":
        """Continue an existing journal (resume).

        A writer that was killed leaves HDF5's "file is being written" flag set, so the
        file is not reopened for writing: its contents are copied batch by batch into a
        new file, which then atomically replaces it and receives the new measurements.
        ``contents``: the journal as :func:`read_journal` returned it, if already read.
        """
        import os

        old = contents if contents is not None else read_journal(path)
        p = Path(path)
        tmp = p.with_name(p.name + ".resume-tmp")
        j = cls(tmp, old["spectrum"].shape[1] if old["spectrum"].ndim == 2 else 1, old["settings"])
        b = old["batch"]
        cuts = np.flatnonzero(np.diff(b)) + 1
        for idx in np.split(np.arange(b.size), cuts):
            if idx.size:
                j.append(old["position"][idx], old["label"][idx], old["spectrum"][idx], float(old["time"][idx[0]]))
        os.replace(tmp, p)
        j.path = p
        return j

    def append(self, positions, labels, spectra, elapsed: float) -> None:
        """Add one batch and flush it to disk."""
        pos = np.asarray(positions, dtype=np.int32).reshape(-1, 2)
        m = pos.shape[0]
        if m == 0:
            return
        a, b = self.n, self.n + m
        f = self._f
        rec = np.empty(m, dtype=_RECORD)
        rec["row"], rec["col"] = pos[:, 0], pos[:, 1]
        rec["label"] = np.asarray(labels, dtype=np.int16).reshape(-1)
        rec["batch"] = self.n_batches
        rec["time"] = float(elapsed)
        # spectra first: a record is only visible once its spectrum is on disk
        f["spectrum"].resize(b, axis=0)
        f["spectrum"][a:b] = np.asarray(spectra, dtype=np.float32)
        f["record"].resize(b, axis=0)
        f["record"][a:b] = rec
        f.flush()
        self.n = b
        self.n_batches += 1

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            finally:
                self._f = None


def read_journal(path) -> dict:
    """Read a journal written by :class:`Journal`.

    Returns
    -------
    dict with ``settings`` (dict), ``position`` (n, 2) int64, ``label`` (n,) int16,
    ``batch`` (n,) int32, ``time`` (n,) float64, ``spectrum`` (n, p) float32.

    Raises
    ------
    InputError
        Missing, truncated or corrupt file, or not a journal.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"journal not found: {p}")
    _check_hdf5_complete(p)
    try:
        try:
            f = h5py.File(p, "r")
        except OSError as exc:
            if "open for write" not in str(exc):
                raise
            # the writer was killed: its "being written" flag is still set; a SWMR reader
            # sees the file as it was at the last flush
            f = h5py.File(p, "r", libver="latest", swmr=True)
        with f:
            if f.attrs.get("format") != _FORMAT:
                raise InputError(f"{p}: not a napari-slads-eds journal")
            out = {"settings": json.loads(f.attrs["settings"])}
            n = min(f["record"].shape[0], f["spectrum"].shape[0])
            rec = f["record"][:n]
            out["spectrum"] = f["spectrum"][:n]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: the journal cannot be read (truncated or corrupt?): {exc}") from exc
    out["position"] = np.stack([rec["row"], rec["col"]], axis=1).astype(np.int64)
    out["label"] = rec["label"].astype(np.int16)
    out["batch"] = rec["batch"].astype(np.int32)
    out["time"] = rec["time"].astype(np.float64)
    return out


def _check_hdf5_complete(p: Path) -> None:
    """Refuse files that are not HDF5 or are shorter than their superblock says (a
    truncated copy), before HDF5 is asked to open them."""
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(48)
    if head[:8] != b"\x89HDF\r\n\x1a\n":
        raise InputError(f"{p}: not an HDF5 journal file")
    if len(head) >= 12 and head[8] in (2, 3):
        so = head[9]
        if so in (4, 8) and len(head) >= 12 + 4 * so:
            eof = int.from_bytes(head[12 + 2 * so: 12 + 3 * so], "little")
            if eof > size:
                raise InputError(f"{p}: the journal is truncated ({size} of {eof} bytes)")
