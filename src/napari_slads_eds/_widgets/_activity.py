"""napari activity-dock progress for engine jobs (training, sampling runs, replays).

:class:`JobProgress` wraps one :class:`napari.utils.cancelable_progress`, fed by the job's
messages in the GUI thread (the session connects it to the worker's ``yielded`` signal)
and closed when the job ends, however it ends (done, stopped, error, viewer closed).  The
progress bars in the widgets stay; this is napari's own view of the same work, where the
user can also cancel the job (cancel = the widgets' Stop).
"""

from __future__ import annotations

import logging
from typing import Callable

__all__ = ["JobProgress", "STAGE_TITLES"]

log = logging.getLogger(__name__)

#: Readable names of the engine's progress stages.
STAGE_TITLES = {
    "classifier": "classifier epochs",
    "erd-database": "ERD training database",
    "c-search": "c search",
    "stopping-rule": "stopping rule",
    "sampling": "measured positions",
    "sleep": "waiting",
}


class JobProgress:
    """One engine job's progress bar in napari's activity dock.

    Parameters
    ----------
    title : str
        What the job does (e.g. "training the ERD model").
    on_cancel : callable, optional
        Called when the user cancels the bar in the activity dock (the session's ``stop``).

    Attributes
    ----------
    bar : napari.utils.cancelable_progress or None
        None once closed.
    stage : str or None
        The stage of the last progress message (``progress`` messages' ``stage``;
        "sampling" for ``frame`` messages).
    messages : int
        Progress and frame messages received.
    """

    def __init__(self, title: str, on_cancel: Callable | None = None):
        from napari.utils import cancelable_progress

        self.title = str(title)
        self.stage: str | None = None
        self.messages = 0
        self._pending = None
        self._applying = False
        self.bar = cancelable_progress(total=0, desc=f"SLADS-EDS, {self.title}", cancel_callback=on_cancel)

    @property
    def closed(self) -> bool:
        return self.bar is None

    def on_message(self, msg) -> None:
        """Update the bar from one job message: ``{"type": "progress", "stage", "done",
        "total"}`` or ``{"type": "frame", "n_measured", "target"}``; other messages
        (baselines, logs) are ignored.

        napari's activity dock processes pending Qt events while it redraws a bar, so this
        is re-entered with the job's next messages: a re-entrant call only records its
        message, and the outer call applies the newest one when it is done (the bar always
        ends on the last message)."""
        if self.bar is None or not isinstance(msg, dict):
            return
        t = msg.get("type")
        if t == "progress":
            state = (str(msg.get("stage", "")), msg.get("done", 0), msg.get("total", 0))
        elif t == "frame" and "n_measured" in msg:
            state = ("sampling", msg.get("n_measured", 0), msg.get("target", 0))
        else:
            return
        self.messages += 1
        self._pending = state
        if self._applying:
            return
        self._applying = True
        try:
            while self._pending is not None and self.bar is not None:
                state, self._pending = self._pending, None
                self._apply(*state)
        finally:
            self._applying = False

    def _apply(self, stage: str, done, total) -> None:
        bar = self.bar
        try:
            done, total = max(0, int(done)), max(0, int(total or 0))
            if total != bar.total:
                bar.total = total
            bar.n = min(done, total) if total else done
            if stage != self.stage:
                self.stage = stage
                bar.set_description(f"SLADS-EDS, {self.title}: {STAGE_TITLES.get(stage, stage)}")
            bar.update(0)           # emits the value event the activity dock listens to
        except (TypeError, ValueError, RuntimeError) as exc:  # a malformed message, a deleted dock
            log.debug("progress message not shown: %s", exc)

    def close(self) -> None:
        """Remove the bar from the activity dock (idempotent)."""
        bar, self.bar = self.bar, None
        if bar is not None:
            try:
                bar.close()
            except (KeyError, RuntimeError) as exc:   # already removed, or Qt objects deleted
                log.debug("closing the progress bar: %s", exc)
