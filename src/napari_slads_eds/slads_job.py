"""The engine's sampling job :func:`run_slads` and the static scans computed beside it.

:func:`run_slads` loads the classifier and the ERD model, builds the sampler, replays or
opens the run's journal and drives the acquisition loop
(:func:`napari_slads_eds.acquisition.acquire`); the static random / Halton scans at the
same budget run in a thread beside it (:class:`_BaselineThread`).  Registered by name in
:mod:`napari_slads_eds.jobs`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from ._validation import InputError, check_int
from .config import SamplingConfig, _sequences_as_tuples

__all__ = ["run_slads", "posterior_of"]


def _load_classifier(classifier):
    from .likelihood import load_classifier

    if isinstance(classifier, (str, Path)):
        return load_classifier(classifier)
    return classifier


def posterior_of(clf):
    """``spectra (n, p) -> posterior (n, L + 1)`` over {ill-spectrum, phases} of a classifier:
    the Poisson classifier's calibrated posterior, or for the CNN its softmax with the
    detector's decision as a hard ill-spectrum column."""
    if hasattr(clf, "predict_proba"):
        return clf.predict_proba

    def cnn_posterior(spectra):
        lab, _, prob = clf.predict_with_details(spectra)
        ill = (np.asarray(lab) == 0)[:, None].astype(np.float64)
        return np.hstack([ill, (1.0 - ill) * np.asarray(prob, np.float64)])

    return cnn_posterior


def _load_erd(erd_model):
    from .erd_models import load_erd_model

    if isinstance(erd_model, (str, Path)):
        return load_erd_model(erd_model)
    return erd_model


def _check_journal_is_this_run(path, journal: dict, specimen, cfg, k: int, L: int) -> None:
    """Refuse a journal written by another run: its grid, phases, k, seed and pattern must be
    this run's, and its first spectra must be what this specimen measures there (a simulated
    specimen is deterministic per pixel), or the resumed run could not match the original;
    and its spectra must be counts of the specimen's length."""
    sp = journal["spectrum"]
    if sp.ndim != 2 or sp.shape[1] != specimen.axis.size:
        raise InputError(f"{path}: the journal's spectra have {sp.shape[-1]} channels, the run's "
                         f"specimen {specimen.axis.size}; is this journal from another run?")
    if not np.isfinite(sp).all() or (sp < 0).any():
        raise InputError(f"{path}: the journal holds spectra with NaN, inf or negative counts (corrupt journal)")
    js = journal.get("settings") or {}
    run = js.get("run") or {}
    H, W = specimen.shape
    mine = {"grid": [H, W], "phases": L, "k": k, "seed": cfg.sampling.seed, "initial_pattern": cfg.sampling.initial_pattern,
            "initial_fraction": cfg.sampling.initial_fraction, "batch": cfg.sampling.batch,
            "batch_mode": cfg.sampling.batch_mode}
    theirs = {"grid": js.get("grid"), "phases": js.get("phases"), "k": js.get("k"),
              **{key: run.get(key) for key in ("seed", "initial_pattern", "initial_fraction", "batch", "batch_mode")}}
    differ = [f"{key} {theirs[key]!r} (this run: {mine[key]!r})" for key in mine
              if theirs[key] is not None and (list(theirs[key]) if key == "grid" else theirs[key]) != mine[key]]
    if differ:
        raise InputError(f"{path} is from another run: {', '.join(differ)}; resume needs this run's own journal")
    pos = journal["position"][:16]
    if np.any(pos < 0) or np.any(pos[:, 0] >= H) or np.any(pos[:, 1] >= W):
        raise InputError(f"{path} is from another run: positions outside the {H}x{W} grid")
    if getattr(specimen, "deterministic", True):
        again = np.asarray(specimen.measure(pos), np.float32)
        if not np.array_equal(again, np.asarray(journal["spectrum"][:16], np.float32)):
            raise InputError(f"{path} is from another run: its spectra are not this run's specimen's "
                             f"at the same positions; resume needs this run's own journal")


class _ScansCancelled(Exception):
    """The static scans were cancelled (the SLADS run stopped early)."""


def _static_baseline(specimen, clf, order: np.ndarray, fractions, n_phases: int, k: int, cfg=None,
                     cancelled=None):
    """TD of a static scan measuring ``order`` prefixes, classified and reconstructed
    (with ``cfg.sampling.soft``: spatial decisions that see all other
    measurements of the prefix, and probability votes, as the SLADS run).
    ``cancelled()``, if given, is asked between chunks; True raises :class:`_ScansCancelled`."""
    from .reconstruction import reconstruct

    def check():
        if cancelled is not None and cancelled():
            raise _ScansCancelled()

    H, W = specimen.shape
    n_max = int(round(max(fractions) * H * W))
    pos = order[:n_max]
    soft = cfg is not None and cfg.sampling.soft
    post = posterior_of(clf) if soft else None
    labels = np.empty(len(pos), dtype=np.int16)
    prob = np.empty((len(pos), n_phases + 1)) if soft else None
    for a in range(0, len(pos), 4096):
        check()
        sp = specimen.measure(pos[a:a + 4096])
        if soft:
            prob[a:a + 4096] = post(sp)
        else:
            labels[a:a + 4096] = clf.predict(sp)
    truth = specimen.phase_map
    curve = []
    for f in fractions:
        check()
        n = int(round(f * H * W))
        if soft:
            from .uncertainty import decide_static, reconstruct_soft

            lab, pp = decide_static((H, W), pos[:n], prob[:n], k, alpha=cfg.prior_alpha, gamma=cfg.final_gamma)
            rec = reconstruct_soft((H, W), pos[:n], lab, pp, k)
        else:
            rec = reconstruct((H, W), pos[:n], labels[:n], n_phases, k)
        curve.append([float(n / (H * W)), float(np.mean(rec != truth))])
    return curve


class _BaselineThread:
    """The static scans of :func:`run_slads`, computed in a thread beside the SLADS loop.

    Emits a ``baseline`` message (name, curve) per scan as it finishes, in the order of
    ``orders``; :meth:`finish` waits for them and raises what the thread raised.
    """

    def __init__(self, ctx, specimen, clf, orders: dict, fractions, n_phases: int, k: int, cfg):
        self.curves: dict = {}
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._args = (specimen, clf, fractions, n_phases, k, cfg)
        self._ctx, self._orders = ctx, orders
        self._thread = None
        if orders:
            self._thread = threading.Thread(target=self._run, name="static-baselines", daemon=True)

    def start(self) -> None:
        """Start the scans (once; later calls do nothing)."""
        if self._thread is not None and self._thread.ident is None:
            self._thread.start()

    def context(self, ctx):
        """``ctx`` for the SLADS loop: its first ``frame`` message starts the scans, so that
        they do not slow the first live frame (measuring them holds the GIL in parts)."""
        return _StartOnFrame(ctx, self.start)

    def _run(self) -> None:
        specimen, clf, fractions, n_phases, k, cfg = self._args
        try:
            for name, order in self._orders.items():
                if self._cancel.is_set():
                    return
                self.curves[name] = _static_baseline(specimen, clf, order, fractions, n_phases, k, cfg,
                                                     cancelled=self._cancel.is_set)
                self._ctx.emit("baseline", name=name, curve=self.curves[name])
        except _ScansCancelled:
            return
        except BaseException as exc:       # re-raised in the job's thread by finish()
            self._error = exc

    def finish(self, cancel: bool = False) -> None:
        """Wait for the scans (``cancel``: stop them within a chunk of spectra, raise nothing;
        :attr:`curves` then holds the scans that were complete)."""
        if self._thread is None:
            return
        if cancel:
            self._cancel.set()
            if self._thread.ident is None:       # never started: nothing to wait for
                return
        self.start()                # a run that sent no frame (replayed whole from a journal)
        self._thread.join()
        if self._error is not None and not cancel:
            raise self._error


class _StartOnFrame:
    """A job context that calls ``on_frame()`` after each ``frame`` message it emits."""

    def __init__(self, ctx, on_frame):
        self._ctx, self._on_frame = ctx, on_frame

    def emit(self, type_: str, **payload) -> None:
        self._ctx.emit(type_, **payload)
        if type_ == "frame":
            self._on_frame()

    def __getattr__(self, name):
        return getattr(self._ctx, name)


#: Keywords of :func:`run_slads` that name a :class:`SamplingConfig` field differently.
_SAMPLING_ALIASES = {"target_fraction": "fraction"}


def _sampling_config(config, sampling: dict) -> SamplingConfig:
    """``config``, or the :class:`SamplingConfig` of a script's keywords (``uncertainty``
    None = hard labels, ``baselines`` None = none)."""
    if config is not None:
        if sampling:
            raise InputError(f"run_slads: give the sampling settings as config or as keywords, not both "
                             f"(got config and {sorted(sampling)})")
        if not isinstance(config, SamplingConfig):
            raise InputError(f"run_slads: config must be a SamplingConfig, got {type(config).__name__}")
        return config                      # (checked when it was made: it is frozen)
    names = {f.name for f in fields(SamplingConfig)}
    kw = {_SAMPLING_ALIASES.get(key, key): v for key, v in sampling.items()}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise InputError(f"run_slads: unknown keywords {unknown}")
    if "uncertainty" in kw and kw["uncertainty"] is None:
        kw["uncertainty"] = "hard"
    if "baselines" in kw and kw["baselines"] is None:
        kw["baselines"] = ()
    return SamplingConfig(**_sequences_as_tuples(kw))


def run_slads(ctx, specimen, classifier, erd_model, *, config: SamplingConfig | None = None,
              send_maps: bool = True, n_baseline_points: int = 12, stop_threshold: float | None = None,
              stop_min_fraction: float = 0.02, journal_path=None, resume: bool = False,
              journal_settings: dict | None = None, prior_alpha: float | None = None,
              prior_gamma: float | None = None, final_gamma: float | None = None,
              erd_uncertainty_weight: float = 0.0, **sampling) -> dict:
    """Run SLADS on a specimen: measure, classify, reconstruct, select, until the budget
    (or the stopping rule, or a stop request; the result says which).

    With ``overlap``, the next batch is chosen (as pseudo-measurements) while the current
    one is measured and classified in a second thread, as an instrument would run.
    With ``journal_path``, every measured batch (positions, spectra, labels) is appended
    to that HDF5 journal before it is used; with ``resume`` the journal's measurements are
    replayed first (nothing is measured twice) and the run continues from there.

    With ``uncertainty="soft"``, measured labels are spatial decisions from the spectra's
    posteriors and the phase probabilities vote in the reconstruction
    (:mod:`napari_slads_eds.uncertainty`), for SLADS and the static scans alike;
    ``erd_uncertainty_weight`` β > 0 raises the ERD where the votes are split
    (:meth:`~napari_slads_eds.uncertainty.SoftSampler._predict`).

    Streams ``baseline`` messages (static random / Halton scans through the same
    classifier and reconstruction, computed in a thread beside the run, so they may arrive
    after the first frames) and ``frame`` messages (new positions and labels, TD,
    fraction, rate and, with ``send_maps``, the reconstruction and ERD map) at most every
    ``frame_interval`` s.

    Parameters
    ----------
    specimen : Specimen
        What is measured (:class:`napari_slads_eds.specimen.Specimen`).
    classifier, erd_model : path
        A classifier folder and an ERD model file.
    config : SamplingConfig
        How the run samples, passed whole from the CLI, the GUI or a script.  Scripts may
        give its fields as keywords instead (``target_fraction`` for ``fraction``, or any
        other field name, e.g. ``batch=4``); not both.
    send_maps, stop_threshold, stop_min_fraction, prior_alpha, prior_gamma, final_gamma
        As :class:`~napari_slads_eds.acquisition.RunConfig`.
    n_baseline_points : int
        Points of each static scan's TD curve (>= 2).
    journal_path, resume, journal_settings
        The HDF5 journal, whether to replay it first, and what else it records.

    Returns
    -------
    dict
        grid, phases, sampling_fraction, td, td_curve, td_random, td_halton, curves of the
        static scans, misclassification_run, positions (n, 2), labels (n,),
        reconstruction (H, W), mask (H, W), erd (H, W), stop_reason, seconds,
        measurements_per_second, n_replayed.

    Raises
    ------
    InputError
        Both ``config`` and sampling keywords, unknown keywords, invalid settings, a
        classifier of another energy axis or phase count, a journal of another run.
    """
    from .acquisition import RunConfig, acquire
    from .journal import Journal, read_journal
    from .sampling import Sampler, halton_order, random_order

    t0 = time.perf_counter()
    if callable(getattr(specimen, "attach_context", None)):
        specimen.attach_context(ctx)      # a microscope reports outages and honours stop while it waits
    clf = _load_classifier(classifier)
    erd = _load_erd(erd_model)
    clf.axis.require_compatible(specimen.axis, "specimen spectra")
    L = specimen.n_phases
    if clf.n_phases != L:
        raise InputError(f"the classifier knows {clf.n_phases} phases but the specimen has {L}")
    config = _sampling_config(config, sampling)
    cfg = RunConfig(config, send_maps=send_maps, stop_threshold=stop_threshold,
                    stop_min_fraction=stop_min_fraction,
                    # None: RunConfig's defaults (napari_slads_eds.uncertainty's constants)
                    **{k: v for k, v in (("prior_alpha", prior_alpha), ("prior_gamma", prior_gamma),
                                         ("final_gamma", final_gamma)) if v is not None}).check()
    k, seed, target_fraction = config.k, config.seed, config.fraction
    initial_fraction, baselines, baseline_fractions = config.initial_fraction, config.baselines, config.baseline_fractions
    H, W = specimen.shape
    P = H * W
    truth = getattr(specimen, "phase_map", None)
    if cfg.sampling.soft:
        from .uncertainty import SoftSampler

        sampler = SoftSampler((H, W), L, erd, k=k, truth=truth, uncertainty_weight=erd_uncertainty_weight)
    else:
        sampler = Sampler((H, W), L, erd, k=k, truth=truth)
    target = max(1, int(round(target_fraction * P)))
    # a journal to resume from is read first, so that a bad one is reported at once
    replay = read_journal(journal_path) if journal_path is not None and resume else None
    if replay is not None and len(replay["position"]):
        _check_journal_is_this_run(journal_path, replay, specimen, cfg, k, L)

    n_baseline_points = check_int(n_baseline_points, "n_baseline_points (points of a static scan's curve)", 2)
    # static scans at the same budget, through the same classifier and reconstruction, in a
    # thread beside the run, started by its first frame: the first live frame does not wait
    # for them (1-2 s at 128x128).
    # The specimen gives the same spectrum for a pixel whenever it is measured, so the run's
    # numbers do not depend on when the scans are measured.
    baseline_orders = {}
    fr = np.linspace(min(initial_fraction, target / P), target / P, n_baseline_points)
    fr = np.unique(np.clip(np.concatenate([fr, [f for f in baseline_fractions if f <= target / P]]), 1 / P, 1))
    for name in (baselines if truth is not None else ()):
        if name == "random":
            baseline_orders[name] = random_order((H, W), seed + 1)
        elif name == "halton":
            baseline_orders[name] = halton_order((H, W), target, seed + 1)
        else:
            raise InputError(f"unknown baseline {name!r} (random or halton)")
    baseline_thread = _BaselineThread(ctx, specimen, clf, baseline_orders, fr, L, k, cfg)

    journal = None
    if journal_path is not None:
        if resume:
            journal = Journal.append_to(journal_path, replay)
        else:
            settings = dict(journal_settings or {})
            settings.update({"run": cfg.to_dict(), "k": k, "grid": [H, W], "phases": L})
            journal = Journal(journal_path, specimen.axis.size, settings)
    try:
        core = acquire(baseline_thread.context(ctx), sampler, specimen.measure, clf.predict, cfg, journal=journal, replay=replay,
                       posterior=posterior_of(clf) if cfg.sampling.soft else None)
    except BaseException:
        baseline_thread.finish(cancel=True)
        raise
    finally:
        if journal is not None:
            journal.close()
    # a run that ended before its target (stop, stopping rule) does not wait for the static
    # scans to its target: they are cut, and each is scored at the fraction reached below
    early = sampler.n_measured < target
    baseline_thread.finish(cancel=early)
    positions, labels = core["positions"], core["labels"]
    recon, td = sampler.reconstruction, sampler.td
    refined = {}
    if cfg.sampling.soft and core.get("posteriors") is not None and len(labels):
        # final phase decisions with every measurement's neighbours (later ones too), as the
        # static scans get them; the in-loop labels stay in the journal
        from .uncertainty import decide_static, reconstruct_soft

        lab_f, pp_f = decide_static((H, W), positions, core["posteriors"], k, alpha=cfg.prior_alpha,
                                    gamma=cfg.final_gamma, vote_prob=core["decided_probabilities"])
        recon = reconstruct_soft((H, W), positions, lab_f, pp_f, k)
        if truth is not None:
            td = float(np.mean(recon != truth))
        refined = {"labels_in_loop": labels, "td_in_loop": sampler.td, "posteriors": core["posteriors"],
                   "decided_probabilities": core["decided_probabilities"]}
        labels = lab_f
    truth_lab = specimen.labels[positions[:, 0], positions[:, 1]] if hasattr(specimen, "labels") else None
    result = {
        "grid": [H, W],
        "phases": int(L),
        "phase_names": list(clf.phase_names),
        "sampling_fraction": sampler.fraction,
        "n_measured": sampler.n_measured,
        "n_replayed": core["n_replayed"],
        "td": td,
        "td_curve": core["td_curve"],
        "misclassification_run": (float(np.mean(labels != truth_lab))
                                  if truth_lab is not None and len(labels) else None),
        "stop_reason": core["stop_reason"],
        "stop_threshold": core["stop_threshold"],
        "epsilon": core["epsilon"],
        "positions": positions,
        "labels": labels,
        "reconstruction": recon,
        "mask": sampler.mask,
        "erd": sampler.erd_map,
        "c": float(getattr(erd, "c", float("nan"))),
        "classifier_kind": getattr(clf, "kind", "cnn"),
        "uncertainty": config.uncertainty,
        **refined,
        "measurements_per_second": (sampler.n_measured - core["n_replayed"]) / max(core["seconds"], 1e-9),
    }
    for name, order in baseline_orders.items():
        curve_b = [p for p in baseline_thread.curves.get(name, []) if p[0] <= sampler.fraction + 0.5 / P]
        if not curve_b or abs(curve_b[-1][0] - sampler.fraction) > 0.5 / P:
            # stopped before the target: a static scan with the same number of spectra
            curve_b.append(_static_baseline(specimen, clf, order, [sampler.fraction], L, k, cfg)[-1])
        result[f"td_{name}"] = curve_b[-1][1]
        result[f"td_curve_{name}"] = curve_b
    result["seconds"] = time.perf_counter() - t0
    return result
