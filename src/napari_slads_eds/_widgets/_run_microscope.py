"""The Run tab's Microscope source: connect to a spot-spectrum server (``/v1/info``),
check it against the classifier, and start ``run_slads`` on it
(:class:`~napari_slads_eds.microscope.HttpMicroscope`), as ``slads-eds acquire`` does.
A mixin of :class:`~napari_slads_eds._widgets.sampling.SamplingWidget`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from .._validation import InputError
from ..config import RunSettings
from ..run_folder import SETTINGS_FILE
from ._common import run_in_thread, user_action
from ._run_common import CONNECT_TIMEOUT, MICROSCOPE_TRUTH_LAYER, _sampling_fields, runs_base


@dataclass
class MicroscopeRun:
    """What a run on a microscope samples; it stands where a simulated object's
    :class:`~._session.SpecimenInfo` stands in a simulated run.

    Attributes
    ----------
    specimen : HttpMicroscope
        The client the engine measures through (pickled into the engine process, which
        opens its own connection); ``phase_map``/``labels`` when a ground truth was given.
    truth_file : str or None
        The ground-truth specimen file (then the run reports TD).
    """

    specimen: object
    truth_file: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.specimen.shape)

    @property
    def n_phases(self) -> int:
        return int(self.specimen.n_phases)

    @property
    def has_truth(self) -> bool:
        return getattr(self.specimen, "phase_map", None) is not None


def _microscope_of_folder(folder) -> dict | None:
    """The ``source["microscope"]`` entry (url, dwell_s, info) of a run folder's
    ``run_settings.json``: the folder holds a run on a microscope.  None otherwise (also
    for a folder without a readable settings file)."""
    import json

    try:
        meta = json.loads((Path(folder) / SETTINGS_FILE).read_text())
        mic = (meta.get("source") or {}).get("microscope")
    except (OSError, ValueError, AttributeError):
        return None
    return mic if isinstance(mic, dict) else None


def _acquire_command(folder, mic: dict) -> str:
    """The ``slads-eds acquire … --resume`` command line that continues the microscope run
    in ``folder`` (its settings from ``run_settings.json``), quoted for a status line."""
    import json
    import shlex

    try:
        st = json.loads((Path(folder) / SETTINGS_FILE).read_text()).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        st = {}
    f = shlex.quote(str(folder))
    parts = ["slads-eds acquire", f"--microscope {mic.get('url', 'URL')}", f"--models {f}", f"--out {f}"]
    # the options whose value is not the command's default
    for key, opt, default in (("fraction", "--fraction", 0.15), ("initial_fraction", "--initial-fraction", 0.01),
                              ("initial_pattern", "--initial", "halton"), ("seed", "--seed", 0),
                              ("batch", "--batch", 1), ("batch_mode", "--batch-mode", "top")):
        if key in st and st[key] != default:
            parts.append(f"{opt} {st[key]}")
    if st.get("overlap"):
        parts.append("--overlap")
    if isinstance(mic.get("dwell_s"), (int, float)):
        parts.append(f"--dwell {mic['dwell_s']:g}")
    parts += ["[--token-file FILE]", "--resume"]
    return "'" + " ".join(parts) + "'"


class MicroscopeSourceMixin:
    """Connect / Start on a microscope (methods of the Run tab)."""

    @user_action("Microscope")
    def connect_microscope(self, start: bool = True):
        """Read the microscope's ``/v1/info`` in a thread and check it against the classifier
        (if one is loaded); the status line shows its grid, energy axis and dwell time, or
        why it cannot be used.  Returns the worker (unstarted with start=False)."""
        return self._connect(then_start=False, start=start)

    def _connect(self, then_start: bool, start: bool = True):
        from ..microscope import check_microscope_for_classifier, check_url, read_microscope_info

        if self.connect_worker is not None:
            raise InputError("still reading the microscope's /v1/info: wait a moment")
        url = check_url(self.url_edit.text(), "microscope URL")
        token = self.token_edit.text().strip() or None
        dwell = self.mic_dwell_spin.value() or None
        truth_path = self.truth_edit.text().strip() or None
        s = self.session
        clf = s.classifier_path          # its classifier.json: energy axis and phases

        def work():        # in a thread: httpx and file reading only
            info = read_microscope_info(url, token=token, timeout=CONNECT_TIMEOUT)
            truth = None
            if truth_path:
                from ..server import load_served_specimen

                try:
                    truth = load_served_specimen(Path(truth_path).expanduser())
                except InputError as exc:
                    raise InputError(f"ground truth: {str(exc).replace('--specimen ', '')}") from None
            return info, truth, check_microscope_for_classifier(info, clf, dwell_s=dwell, truth=truth)

        def done(out):
            self.connect_worker = None
            info, truth, dwell_s = out
            self.microscope_info = info
            self._update_start()
            if then_start:
                self.start_microscope_run(url, token, info, dwell_s, truth, truth_path)
                return
            text = f"microscope at {url}: {info.describe(dwell_s)}."
            if clf is None:
                text += "  Load or train a classifier (step 3) to check its energy axis, then Start."
            elif s.erd_path is None:
                text += "  Its energy axis fits the classifier; load or train an ERD model (step 3), then Start."
            else:
                text += "  Its energy axis fits the classifier: Start runs SLADS on it."
            self._status(text)

        def failed(exc):
            self.connect_worker = None
            self.microscope_info = None
            self._status(f"Microscope: {exc}", error=True)
            self._update_start()

        self._status(f"reading {url}/v1/info…")
        self.connect_worker = run_in_thread(work, on_done=done, on_error=failed, title="Microscope", start=start)
        self._update_start()
        return self.connect_worker

    @user_action("Sampling run")
    def start_microscope_run(self, url: str, token, info, dwell_s: float, truth=None, truth_file=None):
        """Start ``run_slads`` on the microscope at ``url`` whose ``/v1/info`` was read
        (``info``, checked against the classifier; :meth:`connect_microscope`), as
        ``slads-eds acquire`` runs it: the session's classifier and ERD model (copied into
        the run folder), the journal in the run folder, no static baselines, the overlap of
        the Overlap box.  ``truth`` (a specimen of the microscope's grid), when given, makes
        the run report TD.  Returns the engine worker (started)."""
        from ..microscope import HttpMicroscope

        s = self.session
        self._require_models()
        self._require_idle()
        names = s.classifier_phases()
        if not names:
            raise InputError("the classifier's description names no phases: load the classifier again")
        L = len(names)
        mic = HttpMicroscope(url, n_phases=L, token=token, dwell_s=dwell_s, info=info,
                             phase_map=None if truth is None else truth.phase_map,
                             labels=None if truth is None else truth.labels)
        self._warn_erd_phases(L, "the classifier", "the specimen's")
        p = self.parameters()
        self._warn_initial(p)
        H, W = mic.shape
        settings = RunSettings(size=int(max(H, W, 8)), downsample=1, **_sampling_fields(p),
                               erd="mlp" if s.erd_report.get("regressor") == "mlp" else "linear").check()
        source = {"gui": True, "microscope": {"url": mic.url, "dwell_s": mic.dwell_s, "info": info.to_dict()},
                  "grid": [H, W], "ground_truth_file": truth_file, "classifier": str(s.classifier_path),
                  "erd_model": str(s.erd_path)}
        run, write_folder = self._new_run(None, settings, source, L)
        gt = self._show_microscope_truth(truth) if truth is not None else None
        return self._launch(gt, MicroscopeRun(mic, truth_file), p, run, True, prepare=write_folder,
                            journal_settings={"microscope": mic.url, "dwell_s": mic.dwell_s})

    def _show_microscope_truth(self, truth):
        """The Labels layer :data:`MICROSCOPE_TRUTH_LAYER` showing a microscope run's ground
        truth (label 0 at ill-spectrum pixels); not a simulated object of step 2."""
        layer = next((l for l in self.viewer.layers if l.name == MICROSCOPE_TRUTH_LAYER), None)
        if layer is None:
            layer = self.viewer.add_labels(truth.labels.copy(), name=MICROSCOPE_TRUTH_LAYER)
        else:
            layer.data = truth.labels.copy()
            layer.scale, layer.translate = (1.0, 1.0), (0.0, 0.0)
        return layer

    def _choose_truth(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Ground truth: the specimen the microscope serves",
                                              str(runs_base()), "Specimen (*.npz)")
        if path:
            self.truth_edit.setText(path)
