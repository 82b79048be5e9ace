"""The Run tab's replay of a finished run in the order it was sampled (a slider over the
journal), and its export as a movie.  A mixin of
:class:`~napari_slads_eds._widgets.sampling.SamplingWidget`."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from .._validation import InputError
from ..run_folder import JOURNAL_FILE as JOURNAL_NAME
from ..run_folder import read_run_folder
from ._common import user_action
from ._session import specimen_info
from ._run_common import LIVE_LAYERS, REPLAY_KEY, _Run, runs_base
from ._run_microscope import MicroscopeRun, _microscope_of_folder


class ReplayMixin:
    """Replay slider and movie export (methods of the Run tab)."""

    @user_action("Replay")
    def replay(self):
        """Step through the finished run: the mask, reconstruction and ERD layers become
        stacks over the measurement index (lazy: a step is computed when shown), with a
        napari dims slider "measurement"; the static Halton and random scans of the same
        budget are added beside them.  Returns the :class:`~.replay_view.RunReplay`."""
        from ..erd_models import load_erd_model
        from .replay_view import RunReplay

        r = self._replay_source if self._replay_source is not None else self.result
        if r is None or not len(r.get("positions", ())):
            raise InputError("no finished run to replay: run SLADS first (Start), or 'Replay folder…'")
        if self.session.busy:
            raise InputError("wait for the engine to finish before replaying")
        model_path = Path(self.run.erd_report.get("path", "")) if self.run is not None else None
        if model_path is None or not model_path.is_file():
            model_path = self.session.erd_path
        model = load_erd_model(model_path) if model_path is not None and Path(model_path).is_file() else None
        seed = int(self.run.settings.seed) if self.run is not None else 0
        rep = RunReplay(r["grid"], r["positions"], r["labels"], int(r["phases"]), model, seed=seed)
        self._end_replay()
        self.replay_data = rep
        if isinstance(self._info, MicroscopeRun):
            gt = self._run_truth if self._run_truth is not None and self._run_truth in self.viewer.layers else None
        else:
            gt = next((l for l in self.viewer.layers if specimen_info(l) is self._info), None)
        present = [l for l in self.viewer.layers]
        if any(not any(self.layers.get(k) is l for l in present) for k in LIVE_LAYERS):
            if gt is None and not isinstance(self._info, MicroscopeRun):
                # the live layers were deleted: they can be made again over the ground truth
                raise InputError("the run's ground truth is no longer in the viewer: use 'Replay folder…' "
                                 "with its run folder")
            self._prepare_layers(gt, self._info)
        kw = {"scale": tuple(self.layers["mask"].scale[-2:]), "translate": tuple(self.layers["mask"].translate[-2:])}
        self.layers["mask"].data = rep.lazy("mask")
        self.layers["reconstruction"].data = rep.lazy("reconstruction")
        erd = self.layers["erd"]
        erd.data = rep.lazy("erd", scaled=True)      # the ERD shrinks as the run goes on: scaled per step
        erd.contrast_limits = (0.0, 1.0)
        self._pending_erd = None
        for name in rep.static_rank:
            layer = self.viewer.add_image(rep.lazy("mask", name), name=f"{name} (same budget)", colormap="gray",
                                          contrast_limits=(0, 1), metadata={REPLAY_KEY: name}, **kw)
            self.layers[f"static {name}"] = layer
        dims = self.viewer.dims
        labels = list(dims.axis_labels)
        labels[0] = "measurement"
        dims.axis_labels = labels
        dims.set_point(0, rep.n)
        dims.events.point.connect(self._on_replay_step)
        if self.focus_check.isChecked():
            self.show_run(gt)
        self._on_replay_step()
        self.movie_button.setEnabled(True)
        return rep

    @user_action("Export movie")
    def export_movie(self, path=None, frames: int = 48, fps: int = 8, scale_factor: float | None = None):
        """Write the replay, step 0 to the last measurement in ``frames`` frames, as a movie
        of the canvas (``.mp4``, ``.gif``, …; napari-animation).  Returns the path."""
        if self.replay_data is None:
            raise InputError("replay a run first ('Replay the sampling order')")
        try:
            from napari_animation import Animation
        except ImportError as exc:
            raise InputError("exporting a movie needs napari-animation: pip install 'napari-slads-eds[movie]'") from exc
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the replay as a movie", "slads_replay.mp4",
                                                  "Movies (*.mp4 *.gif *.mov)")
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() not in (".mp4", ".gif", ".mov", ".avi", ".mkv"):
            raise InputError(f"movie file: expected .mp4, .gif, .mov, .avi or .mkv, got {path.name!r}")
        frames = max(2, int(frames))
        rep, dims = self.replay_data, self.viewer.dims
        anim = Animation(self.viewer)
        dims.set_point(0, 0)
        anim.capture_keyframe(steps=1)
        dims.set_point(0, rep.n)
        anim.capture_keyframe(steps=frames - 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        anim.animate(str(path), fps=int(fps), canvas_only=True, scale_factor=scale_factor)
        self._status(f"replay written to {path} ({frames} frames)")
        return path

    @user_action("Replay a run folder")
    def replay_folder(self, folder=None):
        """Replay the run in ``folder`` (a run folder of this widget or ``slads-eds run``,
        finished or not): its ground truth is shown as ``ground truth (<folder>)`` and its
        journal's measurements can be stepped through as after a run.  Returns the
        :class:`~.replay_view.RunReplay`."""
        from ..journal import read_journal

        if self.session.busy:
            raise InputError("wait for the engine to finish before replaying")
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Replay a run: choose its run folder (with journal.h5)",
                                                      str(runs_base()))
            if not folder:
                return None
        if _microscope_of_folder(folder) is not None:
            raise InputError(f"{folder} is a run on a microscope, which 'Replay folder…' cannot replay yet: "
                             "'Replay the sampling order' replays it right after the run")
        rf = read_run_folder(folder)
        j = read_journal(rf.path / JOURNAL_NAME)
        if not len(j["label"]):
            raise InputError(f"{rf.path / JOURNAL_NAME}: no measurement in the journal, nothing to replay")
        gt, info = self._show_run_specimen(rf)
        self._end_replay()
        self._info = info
        self.run = _Run(rf.path, rf.settings, rf.source, rf.classifier_report, rf.erd_report, resumed=True)
        self.specimen_combo.set_layer(gt)
        self._prepare_layers(gt, info)
        self._replay_source = {"grid": list(info.shape), "positions": j["position"], "labels": j["label"],
                               "phases": info.n_phases}
        self.result = None
        return self.replay()

    def replay_step(self) -> int:
        """The measurement index the slider shows (k: the first k measurements)."""
        return int(round(self.viewer.dims.point[0])) if self.viewer.dims.ndim > 2 else 0

    def _on_replay_step(self, event=None) -> None:
        rep = self.replay_data
        if rep is None:
            return
        k = min(max(self.replay_step(), 0), rep.n)
        H, W = rep.shape
        self.session.plot("td").mark_fraction(k / (H * W))
        self._status(f"replay: the first {k} of {rep.n} measurements ({100 * k / (H * W):.2f} %); drag the "
                     f"'measurement' slider under the canvas")

    def _end_replay(self) -> None:
        """Leave the replay: the static scan layers go, the live layers become 2-D again."""
        if self.replay_data is None:
            return
        self.replay_data = None
        try:
            self.viewer.dims.events.point.disconnect(self._on_replay_step)
        except (TypeError, ValueError, RuntimeError):
            pass
        for key in [k for k in self.layers if k.startswith("static ")]:
            layer = self.layers.pop(key)
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.session.plot("td").mark_fraction(None)
