"""The engine: a spawned worker process that runs TensorFlow work (and the sampling loop).

TensorFlow 2.21 exports its bundled LLVM to the whole process, and napari's OpenGL canvas
on Mesa llvmpipe or AMD drivers then crashes (tensorflow#109933).  So TensorFlow is only
ever imported inside this child process, started with the ``spawn`` method.  This module
itself imports neither TensorFlow nor Qt.

The child runs *jobs* (functions in :mod:`napari_slads_eds.jobs`), one at a time, and
streams messages back: ``{"type": "progress" | "frame" | "log", ...}`` while running, then
one ``{"type": "result"}``, ``{"type": "cancelled"}`` or ``{"type": "error"}``.  The parent
can pause, resume and stop the running job, and closes the process within a second.

Example
-------
>>> with Engine() as eng:                                           # doctest: +SKIP
...     result = eng.run("train_classifier", references=refs, out_dir="models",
...                      on_message=print)
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback

__all__ = ["Engine", "EngineError", "JobCancelled", "JobContext", "Job"]


class EngineError(RuntimeError):
    """A job failed inside the engine process (the message carries the reason)."""

    def __init__(self, message: str, kind: str = "error", tb: str = ""):
        super().__init__(message)
        self.kind = kind
        self.remote_traceback = tb


class JobCancelled(Exception):
    """The running job was stopped on request."""


# ----------------------------------------------------------------------------- child side

class JobContext:
    """Handed to every job function in the engine process.

    Jobs call :meth:`progress`/:meth:`emit` to stream messages and :meth:`checkpoint`
    between units of work, which blocks while the run is paused and raises
    :class:`JobCancelled` when a stop was requested (or returns ``True`` with
    ``graceful=True``, so the job can return what it has).
    """

    def __init__(self, job_id: int, out_q, running, stop):
        self.job_id = job_id
        self._out = out_q
        self._running = running
        self._stop = stop

    def emit(self, type_: str, **payload) -> None:
        payload["type"] = type_
        payload["job"] = self.job_id
        self._out.put(payload)

    def progress(self, stage: str, done: int, total: int, **extra) -> None:
        self.emit("progress", stage=stage, done=int(done), total=int(total), **extra)

    def log(self, text: str) -> None:
        self.emit("log", text=str(text))

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def checkpoint(self, graceful: bool = False) -> bool:
        """Wait while paused; on a stop request raise JobCancelled (or return True)."""
        while not self._running.is_set():
            if self._stop.is_set():
                break
            self._running.wait(0.05)
        if self._stop.is_set():
            if graceful:
                return True
            raise JobCancelled()
        return False


def _watch_parent() -> None:
    parent = mp.parent_process()
    while True:
        time.sleep(0.5)
        if parent is not None and not parent.is_alive():
            os._exit(3)


def _start_tensorflow() -> None:
    """Engine start-up: TensorFlow's environment, then TensorFlow imported with fd 2 silenced.

    Runs once in the engine process, before the first job, so that no library module has
    side effects when imported: ``KERAS_BACKEND=tensorflow`` and ``TF_CPP_MIN_LOG_LEVEL=3``
    (unless already set), then ``import tensorflow`` and a first op with the C-level
    stderr on ``/dev/null``: TensorFlow and absl print start-up banners there ("oneDNN
    custom operations are on", "All log messages before absl::InitializeLog()", and with
    the GPU-capable wheel on a machine without CUDA "Could not find cuda drivers").  An
    import error is not raised here: the job that needs TensorFlow imports it again and
    reports the error to the parent.
    """
    import sys

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    saved = devnull = None
    if fd is not None:
        saved = os.dup(fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
    try:
        import tensorflow

        tensorflow.constant(0.0) + 1.0   # first op: the remaining banners print here
    except Exception:
        pass
    finally:
        if fd is not None:
            os.dup2(saved, fd)
            os.close(saved)
            os.close(devnull)


#: Modules a sampling run imports on first use, imported when the engine starts instead
#: (``scipy.stats`` alone takes ~0.8 s): the first live frame of the first run then comes in
#: ~0.3 s instead of ~1.2 s.
_WARM_MODULES = ("scipy.stats.qmc", "napari_slads_eds.sampling", "napari_slads_eds.acquisition",
                 "napari_slads_eds.reconstruction", "napari_slads_eds.features", "napari_slads_eds.erd",
                 "napari_slads_eds.classifier", "napari_slads_eds.likelihood", "napari_slads_eds.uncertainty")


def _warm_imports() -> None:
    import importlib

    for name in _WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:           # the job that needs it reports the error
            pass


def _engine_main(in_q, out_q, running, stop) -> None:
    threading.Thread(target=_watch_parent, daemon=True).start()
    _start_tensorflow()
    from . import jobs

    _warm_imports()
    from ._validation import InputError

    out_q.put({"type": "ready", "pid": os.getpid()})
    while True:
        req = in_q.get()
        if req is None:
            # flush what is queued for the parent, then exit at once: the interpreter's normal
            # shutdown (TensorFlow's teardown) would keep close() waiting for ~0.4 s
            out_q.close()
            out_q.join_thread()
            os._exit(0)
        job_id, name, kwargs = req
        # (stop and running were reset by the parent before it queued the job: a Stop or Pause
        # pressed since then must not be lost)
        ctx = JobContext(job_id, out_q, running, stop)
        try:
            fn = jobs.resolve(name)
            result = fn(ctx, **kwargs)
            out_q.put({"type": "result", "job": job_id, "value": result})
        except JobCancelled:
            out_q.put({"type": "cancelled", "job": job_id})
        except InputError as exc:
            out_q.put({"type": "error", "job": job_id, "kind": "input", "message": str(exc),
                       "traceback": traceback.format_exc()})
        except BaseException as exc:  # report everything to the parent, keep serving
            out_q.put({"type": "error", "job": job_id, "kind": type(exc).__name__,
                       "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


# ---------------------------------------------------------------------------- parent side

class Job:
    """Handle of a submitted job: iterate it for its messages."""

    def __init__(self, engine: "Engine", job_id: int):
        self.engine = engine
        self.id = job_id
        self.done = False
        self.result = None

    def messages(self, poll: float = 0.1):
        """Yield progress/frame/log messages; return when the job ends.

        Raises
        ------
        EngineError
            The job raised (``kind`` "input" for bad input), or the process died.
        JobCancelled
            The job was stopped before it produced a result.
        """
        eng = self.engine
        while not self.done:
            try:
                msg = eng._out.get(timeout=poll)
            except queue.Empty:
                if not eng.is_alive():
                    self.done = True
                    code = eng._proc.exitcode if eng._proc is not None else None
                    raise EngineError(f"the engine process ended unexpectedly (exit code {code})",
                                      kind="died")
                continue
            if msg.get("job") not in (self.id, None):
                continue  # a stale message of an earlier, abandoned job
            t = msg["type"]
            if t == "ready":
                continue
            if t == "result":
                self.done = True
                self.result = msg["value"]
                return
            if t == "cancelled":
                self.done = True
                raise JobCancelled()
            if t == "error":
                self.done = True
                raise EngineError(msg["message"], msg.get("kind", "error"), msg.get("traceback", ""))
            yield msg

    def wait(self, on_message=None):
        """Run to the end, passing messages to ``on_message``; return the job's result."""
        for msg in self.messages():
            if on_message is not None:
                on_message(msg)
        return self.result


class Engine:
    """Owner of one spawned engine process.

    Parameters
    ----------
    start : bool
        Start the process now; it imports TensorFlow at start-up (a few seconds, while
        the parent goes on), then serves jobs.
    """

    _ids = itertools.count(1)

    def __init__(self, start: bool = True):
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._in = self._out = None
        self._running = self._ctx.Event()
        self._stop = self._ctx.Event()
        self._running.set()
        self._lock = threading.Lock()
        if start:
            self.start()

    # lifecycle
    def start(self) -> None:
        if self.is_alive():
            return
        self._in = self._ctx.Queue()
        self._out = self._ctx.Queue()
        self._running.set()
        self._stop.clear()
        self._proc = self._ctx.Process(target=_engine_main, name="slads-eds-engine",
                                       args=(self._in, self._out, self._running, self._stop), daemon=True)
        # The engine runs library code only, so the child need not re-run the user's
        # script: hide the script's path from multiprocessing while it prepares the child
        # (a script without an ``if __name__ == "__main__":`` guard would otherwise start
        # its work again inside the engine).
        import sys

        main = sys.modules.get("__main__")
        hidden = None
        if main is not None and getattr(main, "__spec__", None) is None and hasattr(main, "__file__"):
            hidden = main.__file__
            del main.__file__
        try:
            self._proc.start()
        finally:
            if hidden is not None:
                main.__file__ = hidden

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self, timeout: float = 1.0) -> None:
        """End the engine process within ``timeout`` seconds (stop, then terminate, then kill)."""
        p = self._proc
        if p is None:
            return
        self._stop.set()
        self._running.set()
        if p.is_alive():
            try:
                self._in.put_nowait(None)
            except Exception:
                pass
            p.join(timeout * 0.4)
        if p.is_alive():
            p.terminate()
            p.join(timeout * 0.3)
        if p.is_alive():
            p.kill()
            p.join(timeout * 0.3)
        for q in (self._in, self._out):
            try:
                q.cancel_join_thread()
                q.close()
            except Exception:
                pass
        self._proc = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close(0.3)
        except Exception:
            pass

    # jobs
    def submit(self, name: str, **kwargs) -> Job:
        """Start job ``name`` (see :data:`napari_slads_eds.jobs.JOBS`) with keyword arguments."""
        if not self.is_alive():
            self.start()
        job_id = next(self._ids)
        self._stop.clear()
        self._running.set()
        self._in.put((job_id, name, kwargs))
        return Job(self, job_id)

    def run(self, name: str, on_message=None, **kwargs):
        """Submit a job and wait for its result (messages go to ``on_message``)."""
        return self.submit(name, **kwargs).wait(on_message)

    # control of the running job
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def request_stop(self) -> None:
        """Ask the running job to stop at its next checkpoint (a run returns what it has)."""
        self._stop.set()
        self._running.set()
