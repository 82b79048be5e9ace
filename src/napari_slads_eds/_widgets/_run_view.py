"""The Run tab's live view and results: the live layers (mask, reconstruction, ERD), the
frames and baselines the engine sends, and the finished run's result
(:class:`~napari_slads_eds.run_folder.RunResult`) written into its run folder.  A mixin of
:class:`~napari_slads_eds._widgets.sampling.SamplingWidget`."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog

from .._files import jsonable
from .._reader import RESULT_KEY
from .._validation import InputError
from ..run_folder import JOURNAL_FILE as JOURNAL_NAME
from ..run_folder import RESULT_ARRAYS, RunResult
from ._common import run_in_thread, set_progress, show_message, user_action, zoom_to_layers
from ._session import SPECIMEN_KEY, SpecimenInfo, specimen_info
from ._run_common import LIVE_KEY, LIVE_LAYERS, _duration, _show_name, time_left
from ._run_microscope import MicroscopeRun, _acquire_command


class LiveViewMixin:
    """Live layers, frames and results (methods of the Run tab)."""

    def _show_run_specimen(self, rf):
        """Add (or update) the Labels layer ``ground truth (<folder>)`` holding a resumed run's
        specimen, placed over its region of the micrograph as far as the run folder says."""
        from .specimen import GROUND_TRUTH_LAYER, spectrum_picker

        src, st = rf.source or {}, rf.settings
        spec = rf.specimen
        region = src.get("test_region")
        if src.get("layer_scale") and src.get("layer_translate"):        # a GUI run
            kw = {"scale": tuple(src["layer_scale"]), "translate": tuple(src["layer_translate"])}
            factor = int(src.get("downsample", st.downsample))
        else:                                                            # slads-eds run
            d, u = float(st.downsample), float(max(1, st.upsample))
            r0, c0 = (region[:2] if region else (0, 0))
            kw = {"scale": (d / u, d / u), "translate": ((r0 + d / 2) / u - 0.5, (c0 + d / 2) / u - 0.5)}
            factor = int(st.downsample)
        info = SpecimenInfo(specimen=spec, train_references=None, train_maps=[], factor=factor,
                            test_region=tuple(region) if region else None,
                            train_regions=[tuple(r) for r in src.get("train_regions") or []],
                            source=str(src.get("phase_layer") or src.get("image") or rf.path),
                            settings=dict(src.get("specimen") or {
                                "ill_fraction": st.ill_fraction, "counts_per_spectrum": st.counts_per_spectrum,
                                "seed": spec.seed, "grid": list(spec.shape), "downsample": factor}))
        name = f"{GROUND_TRUTH_LAYER} ({rf.path.name})"
        layer = next((l for l in self.viewer.layers if l.name == name and specimen_info(l) is not None), None)
        if layer is None:
            layer = self.viewer.add_labels(spec.labels.copy(), name=name, metadata={SPECIMEN_KEY: info}, **kw)
        else:
            layer.data = spec.labels.copy()
            layer.scale, layer.translate = kw["scale"], kw["translate"]
            layer.metadata = {**layer.metadata, SPECIMEN_KEY: info}
        if spectrum_picker not in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.append(spectrum_picker)
        return layer, info

    def _prepare_layers(self, gt, info) -> None:
        """The live layers (made, or reset to zeros) on the run's grid ``info.shape``, placed
        over the ground-truth layer ``gt`` (None: at the origin, one pixel per grid point)."""
        H, W = info.shape
        kw = ({"scale": tuple(gt.scale), "translate": tuple(gt.translate)} if gt is not None
              else {"scale": (1.0, 1.0), "translate": (0.0, 0.0)})
        self.mask = np.zeros((H, W), dtype=np.uint8)
        fresh = {"mask": self.mask, "reconstruction": np.zeros((H, W), dtype=np.int16),
                 "erd": np.zeros((H, W), dtype=np.float32)}
        for key, name in LIVE_LAYERS.items():
            layer = next((l for l in self.viewer.layers if l.metadata.get(LIVE_KEY) == key), None)
            if layer is not None and tuple(layer.data.shape[-2:]) != (H, W):
                self.viewer.layers.remove(layer)
                layer = None
            if layer is None:
                meta = {LIVE_KEY: key}
                if key == "mask":
                    layer = self.viewer.add_image(fresh[key], name=name, colormap="gray", contrast_limits=(0, 1),
                                                  blending="additive", metadata=meta, **kw)
                elif key == "reconstruction":
                    layer = self.viewer.add_labels(fresh[key], name=name, metadata=meta, opacity=0.8, **kw)
                else:
                    layer = self.viewer.add_image(fresh[key], name=name, colormap="magma", contrast_limits=(0, 1),
                                                  metadata=meta, visible=False, **kw)
            else:
                layer.data = fresh[key]
                layer.scale, layer.translate = kw["scale"], kw["translate"]
            self.layers[key] = layer
        # measured points on top, then the reconstruction, the ERD map below
        order = [self.layers["erd"], self.layers["reconstruction"], self.layers["mask"]]
        for layer in order:
            idx = self.viewer.layers.index(layer)
            self.viewer.layers.move(idx, len(self.viewer.layers))

    def show_run(self, gt=None) -> list:
        """Show the run: the ground truth and the live layers visible (every other layer is
        hidden, not deleted; :meth:`show_all_layers` shows them again), side by side in grid
        view (ground truth, ERD / reconstruction, mask), zoomed to fill the canvas.
        Returns the visible layers."""
        v = self.viewer
        if gt is None:
            gt = self._run_truth if isinstance(self._info, MicroscopeRun) else self.specimen_combo.layer()
        live = [self.layers[k] for k in ("erd", "reconstruction", "mask", "static Halton", "static random")
                if k in self.layers]
        shown = ([gt] if gt is not None else []) + live
        for layer in v.layers:
            if layer.visible and not any(layer is l for l in shown):
                layer.visible = False
                self.hidden_by_run.append(layer)
        for layer in shown:
            layer.visible = True
        # bottom to top: ground truth, ERD, reconstruction, mask (the overlay order when the
        # grid is off); the grid, reversed, puts the ground truth top left
        for layer in shown:
            v.layers.move(v.layers.index(layer), len(v.layers))
            _show_name(layer)
        grid = v.canvas.grid        # stride 1: the lowest visible layer top left
        grid.stride, grid.shape, grid.enabled = 1, (-1, -1), True
        zoom_to_layers(v, shown)
        return shown

    def _refit(self, layers) -> None:
        try:
            zoom_to_layers(self.viewer, [l for l in layers if l in self.viewer.layers])
        except RuntimeError:      # the viewer closed meanwhile
            pass

    def show_all_layers(self) -> None:
        """Show the layers :meth:`show_run` hid, and leave the grid view."""
        for layer in self.layers.values():
            _show_name(layer, False)
        for layer in self.hidden_by_run:
            if layer in self.viewer.layers:
                layer.visible = True
        self.hidden_by_run = []
        self.viewer.canvas.grid.enabled = False
        self.viewer.fit_to_view()

    # ------------------------------------------------------------------ replay

    def _on_message(self, msg: dict) -> None:
        if self.busy_indicator.active:
            self.busy_indicator.stop()
        t = msg.get("type")
        if t == "frame":
            self._apply_frame(msg)
        elif t == "baseline":      # computed beside the run: arrives after the first frames
            self.session.plot("td").set_baseline(msg["name"], msg["curve"])
        elif t == "log" and isinstance(self._info, MicroscopeRun):
            # the microscope's outages: "not answering …; the run is paused", "is back after …"
            self._status(str(msg.get("text", "")), error="not answering" in str(msg.get("text", "")))

    def _apply_frame(self, msg: dict) -> None:
        """Take one frame: the measured positions always go into the mask array; the layers,
        plot and status line are redrawn at most every ``_display_gap`` seconds (see
        :attr:`display_budget`), always for the final frame."""
        self.frames += 1
        pos = np.asarray(msg["positions"], dtype=np.int64).reshape(-1, 2)
        if pos.size:
            self.mask[pos[:, 0], pos[:, 1]] = 1
        self.n_measured = int(msg["n_measured"])
        self.session.plot("td").append(msg["fraction"], msg.get("td"))   # redraws at most 1/s
        now = time.perf_counter()
        if not msg.get("final") and now < self._next_display:
            self._undisplayed = msg
            return
        self._display(msg)
        # the GUI's CPU time (this process: Qt, OpenGL, this thread and the relay) since the
        # previous display, mostly that display's repaint, sets the gap to the next one
        cpu = time.process_time()
        if self._cpu_mark is not None:
            used = cpu - self._cpu_mark
            self._display_gap = min(5.0, max(self._params.frame_interval, used / self.display_budget))
        self._cpu_mark = cpu
        self._next_display = now + self._display_gap

    def _display(self, msg: dict) -> None:
        self.displayed_frames += 1
        self._undisplayed = None
        self.layers["mask"].refresh()
        if "reconstruction" in msg:
            self.layers["reconstruction"].data = msg["reconstruction"]
        if "erd" in msg:
            self._show_erd(msg["erd"])
        set_progress(self.progress, min(self.n_measured, self._target))
        rate = float(msg.get("rate") or 0.0)
        now = time.perf_counter()
        if self._rate_mark is None:
            self._rate_mark = (now, self.n_measured)
        left = time_left(*self._rate_mark, now, self.n_measured, self._target)
        td = msg.get("td")
        self._status(
            f"measured {self.n_measured} of {self._target} ({100 * msg['fraction']:.2f} %)"
            + (f" · TD {td:.4f}" if td is not None else " · TD n/a")
            + f" · {rate:.0f} measurements/s"
            + (f" · about {left:.0f} s left" if left is not None and not msg.get("final") else ""))

    def _show_erd(self, erd) -> None:
        """Show an ERD map (NaN at measured pixels -> 0).  While the layer is hidden the map
        is only kept, and shown when the layer is made visible (no repaint for a hidden layer)."""
        layer = self.layers["erd"]
        self._pending_erd = erd
        if not layer.visible:
            if id(layer) not in self._lazy_layers:
                layer.events.visible.connect(self._on_erd_visible)
                self._lazy_layers.add(id(layer))
            return
        e = np.nan_to_num(np.asarray(erd, dtype=np.float32), nan=0.0)
        np.maximum(e, 0, out=e)
        pos = e[e > 0]
        hi = float(np.percentile(pos, 99.5)) if pos.size else 1.0
        layer.data = e
        layer.contrast_limits = (0.0, max(hi, 1e-9))
        self._pending_erd = None

    def _on_erd_visible(self, event=None) -> None:
        layer = self.layers.get("erd")
        if layer is not None and layer.visible and self._pending_erd is not None:
            self._show_erd(self._pending_erd)

    def _on_done(self, outcome) -> None:
        self.busy_indicator.stop()
        self.pause_button.setText("Pause")
        self.last_run_wall = time.perf_counter() - self._t_start
        if outcome.status == "done":
            r = outcome.result
            self.mask[...] = np.asarray(r["mask"], dtype=np.uint8)
            self.layers["mask"].refresh()
            self.layers["reconstruction"].data = np.asarray(r["reconstruction"])
            self._show_erd(r["erd"])
            self.n_measured = int(r["n_measured"])
            set_progress(self.progress, min(self.n_measured, self.progress.maximum()))
            td = self.session.plot("td")
            if r.get("td") is not None:        # (a microscope run without ground truth has no TD)
                td.set_curve(r["td_curve"])
            for name in ("random", "halton"):
                if f"td_curve_{name}" in r:
                    td.set_baseline(name, r[f"td_curve_{name}"])
            self.result = self._full_result(r)
            # the run's summary on its reconstruction layer: File > Save Selected Layers (the
            # plugin's writer) then writes the whole result, not only the maps
            self.layers["reconstruction"].metadata[RESULT_KEY] = jsonable(
                {k: v for k, v in self.result.items() if k not in RESULT_ARRAYS})
            summary = self._summary(self.result)
            if r.get("n_replayed"):
                summary = f"resumed ({r['n_replayed']} measurements replayed from the journal); " + summary
            if r.get("stop_reason") == "stopped by the user":
                if isinstance(self._info, MicroscopeRun):
                    mic = (self.run.source or {}).get("microscope") or {}
                    summary += f"  {_acquire_command(self.run.folder, mic)} continues it to the target."
                else:
                    summary += "  'Resume from journal…' continues it to the target."
            self._status(summary + "  Writing the results into the run folder…")
            self._write_results(self.result, summary)
            self._on_busy(self.session.busy)
        elif outcome.status == "cancelled":
            self._status(f"stopped at {self.n_measured} measurements (no result)." + self._resume_hint(outcome))
        elif outcome.status == "error":
            self._status(f"the run failed: {str(outcome.error).rstrip('.')}." + self._resume_hint(outcome),
                         error=True)
        self.run_finished.emit(str(outcome.status))

    def _resume_hint(self, outcome) -> str:
        """After a run ended without a result: how to continue it (unless its folder has no
        journal, or the engine refused the input, e.g. a corrupt journal)."""
        if self.run is None or not (self.run.folder / JOURNAL_NAME).is_file():
            return ""
        if isinstance(self._info, MicroscopeRun):
            # (also after the microscope's errors, e.g. an outage longer than its timeout)
            mic = (self.run.source or {}).get("microscope") or {}
            return (f"  Every measured spectrum is in the journal: {_acquire_command(self.run.folder, mic)} "
                    "continues the run.")
        if getattr(outcome.error, "kind", None) == "input" or isinstance(outcome.error, InputError):
            return ""
        return "  Every measured spectrum is in the journal: 'Resume from journal…' continues the run."

    def _write_results(self, result: dict, summary: str) -> None:
        """Write the finished run into its run folder (in a worker thread: the TD plot and the
        compressed files take a moment on large grids)."""
        from ..results import write_run

        run = self.run
        folder = run.folder

        def done(files):
            if self.run is run:       # not replaced by a newer run meanwhile
                self.saved_to = folder
                self._status(f"{summary}  Results written into the run folder.")

        self.write_worker = run_in_thread(lambda: write_run(result, folder), on_done=done,
                                          title="Writing the run's results")

    def _full_result(self, r: dict) -> dict:
        """The job's result as every run writes it (:meth:`RunResult.from_job`: models,
        settings with this display's, ground truth, microscope)."""
        info, run = self._info, self.run
        microscope = None
        if isinstance(info, MicroscopeRun):
            mic = info.specimen
            microscope = {"url": mic.url, "dwell_s": mic.dwell_s, "info": mic.info.to_dict(),
                          "ground_truth_file": info.truth_file}
        # a microscope run has a ground truth only when a specimen file was given
        return RunResult.from_job(
            r, mode="microscope" if microscope else "run", config=run.config or run.settings.sampling,
            settings={**asdict(run.settings), **run.gui}, source=run.source,
            classifier_report=run.classifier_report, erd_report=run.erd_report, seconds=r.get("seconds", 0.0),
            ground_truth=getattr(info.specimen, "phase_map", None),
            specimen_labels=getattr(info.specimen, "labels", None), microscope=microscope,
            run_folder=run.folder, resumed=run.resumed, wall_seconds=self.last_run_wall).to_dict()

    def _summary(self, r: dict) -> str:
        H, W = r["grid"]
        dwell = float((self.run.gui if self.run is not None else {}).get("dwell_time_s", self.dwell_spin.value()))
        used, full = r["n_measured"] * dwell, H * W * dwell
        static = [f"{name} {r[key]:.4f}" for name, key in (("static random", "td_random"), ("Halton", "td_halton"))
                  if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
        beam = (f"{_duration(used)} instead of {_duration(full)} for the full map" if r["n_measured"] < H * W
                else f"{_duration(used)}, as for the full map")
        td = r.get("td")
        td_text = (f"TD {td:.4f}" if isinstance(td, (int, float)) and np.isfinite(td)
                   else "TD n/a (no ground truth)")
        return (f"{r.get('stop_reason', 'done')}: {r['n_measured']} measured "
                f"({100 * r['sampling_fraction']:.2f} %), {td_text}"
                + (f" ({', '.join(static)})" if static else "") + "; "
                f"{r.get('measurements_per_second', 0):.0f} measurements/s, {r.get('seconds', 0):.1f} s.  "
                f"Beam time at {dwell:g} s per spectrum: {beam}.")

    @user_action("Save run")
    def save(self, folder=None):
        """Write the finished run (result.json, reconstruction, mask, TD curve, run.npz)."""
        from ..results import write_run

        if self.result is None:
            raise InputError("no finished run to save")
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the run into a folder")
            if not folder:
                return None
        files = write_run(self.result, Path(folder))
        show_message("info", f"run saved to {folder} ({', '.join(files)})")
        return files

    # ------------------------------------------------------------------ display
