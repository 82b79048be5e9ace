"""Small file helpers shared by the readers and writers: safe ``.npz`` reading and
JSON conversion.  No pickle anywhere: ``np.load(..., allow_pickle=False)``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._validation import InputError

__all__ = ["read_npz", "jsonable", "output_folder", "OutputFolder"]


def read_npz(path, required=(), what: str = ".npz file") -> dict:
    """All arrays of an ``.npz`` file, loaded without pickle.

    Parameters
    ----------
    path : path
    required : sequence of str
        Entries that must be present.
    what : str
        What the file is, for the error messages ("run file", "specimen file", ...).

    Raises
    ------
    InputError
        Missing file, a file numpy cannot read (corrupt, truncated, or holding pickled
        objects), or missing entries; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as exc:
        raise npz_error(p, what, exc) from exc
    missing = [k for k in required if k not in d]
    if missing:
        raise InputError(f"{p}: missing entries {missing}; is this the right kind of file ({what})?")
    return d


def npz_error(path, what: str, exc: Exception) -> InputError:
    """The error for an ``.npz`` file numpy could not load: "not an .npz file" when it is no
    zip archive at all (numpy then speaks of pickled data, which misleads), else corrupt."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if head[:2] != b"PK":
        return InputError(f"{path}: not a {what}: an .npz file is a zip archive, this file is not one")
    return InputError(f"{path}: not a readable {what} (corrupt or truncated?): {exc}")


def jsonable(o):
    """``o`` with numpy scalars/arrays, paths and energy axes turned into JSON types."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict") and callable(o.to_dict):
        return jsonable(o.to_dict())
    return o


def write_json_atomic(path, obj) -> Path:
    """Write ``jsonable(obj)`` to ``path`` through a temporary file and an atomic rename
    (a reader never sees a half-written file).  Returns the path."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=1))
    tmp.replace(path)
    return path


#: The acquisition journal of a run folder (:mod:`napari_slads_eds.acquisition`).
JOURNAL_NAME = "journal.h5"
#: A folder holding this file is a run of ``slads-eds demo``, which the next demo may replace.
DEMO_MARKER = ".slads-eds-demo"
LOCK_NAME = ".slads-eds.lock"


class OutputFolder:
    """An output folder claimed by one process: created, checked writable, locked.

    Use as a context manager (see :func:`output_folder`); the lock file
    ``.slads-eds.lock`` (holding the process id) is removed on exit. A lock left by a
    process that no longer runs is taken over.
    """

    def __init__(self, path: Path, created: bool = False):
        self.path = path
        self._lock = path / LOCK_NAME
        self.created = created      # made by output_folder: removed again if a failed command left it empty

    def _acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self._lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid > 0 and pid != os.getpid() and _alive(pid):
                    raise InputError(f"{self.path} is in use by another slads-eds process (pid {pid}); "
                                     f"wait for it to end or choose another output folder") from None
                self._lock.unlink(missing_ok=True)      # stale: that process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise InputError(f"{self.path}: cannot take the lock file {LOCK_NAME}")

    def __enter__(self) -> Path:
        self._acquire()
        return self.path

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if self._lock.read_text().strip() == str(os.getpid()):
                self._lock.unlink()
        except OSError:
            pass
        if exc_type is not None and self.created:
            try:
                self.path.rmdir()       # only if empty: nothing was written before the failure
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def output_folder(path, *, what: str = "--out", refuse_run: bool = False, overwrite: bool = False,
                  demo: bool = False) -> OutputFolder:
    """Create (if needed) and check an output folder before any work is done.

    Parameters
    ----------
    path : str or Path
    what : str
        How the user gave it, for the messages ("--out").
    refuse_run : bool
        Refuse a folder that already holds a run (``journal.h5``): its measurements would be
        lost. ``overwrite=True`` allows it; so does ``demo=True`` when the run there is an
        earlier demo.
    demo : bool
        The folder is a demo's: mark it so the next demo may replace it.

    Returns
    -------
    OutputFolder
        Enter it (``with``) to lock the folder for this process.

    Raises
    ------
    InputError
        An empty path, a path that is a file or lies below a file, a folder that cannot be
        created or written, a folder holding a run (``refuse_run``), or one in use by
        another slads-eds process (on entering).
    """
    if path is None or str(path).strip() == "":
        raise InputError(f"{what}: an output folder is needed, got an empty path")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {p}: exists and is not a folder")
    created = not p.exists()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what} {p}: cannot create the folder ({exc.strerror or exc})") from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p}: the folder is not writable")
    if refuse_run and (p / JOURNAL_NAME).exists() and not overwrite:
        if not (demo and (p / DEMO_MARKER).exists()):
            raise InputError(f"{p} already holds a run (journal.h5): continue it with "
                             f"'slads-eds resume {p}', choose another {what}, or give --overwrite")
    if demo:
        (p / DEMO_MARKER).touch()
    return OutputFolder(p, created=created)
