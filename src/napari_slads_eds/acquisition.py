"""The acquisition loop of a SLADS run, its on-disk journal and the stopping rule.

Numpy/h5py only (no TensorFlow, no Qt): the spectrum classifier comes in as a plain
``classify(spectra) -> labels`` callable, so the same loop runs inside the engine process
(with the Keras classifier) and in tests (with any labelling function).

Journal
    Every measured position with its spectrum, label, batch number and time is appended
    to an HDF5 file (``journal.h5`` in the run's folder) as it arrives and flushed after
    every batch, with the run's settings and seeds.  The file is written in HDF5's
    single-writer/multiple-reader mode, which keeps it readable up to the last flush even
    when the process is killed.  :func:`read_journal` reads it back (no pickle);
    a run resumes by replaying the journal into a fresh sampler (no spectrum is measured
    twice) and continues with exactly the selections an uninterrupted run would make.

Stopping rule
    After Godaliyadda et al. (SLADS, 2018): a running average ε_k = (1 - β) ε_{k-1} + β d_k
    over the measurements (bias-corrected like an Adam moment estimate, so the first
    values are plain averages), with β = 0.001 ((18 - log2 |Ω|) / 2 + 1) for
    |Ω| <= 2^18 and 0.001 / ((log2 |Ω| - 18) / 2 + 1) above; the run stops once ε_k < T,
    with T learned on training images as the mean ε at the step where their TD first
    reached the target TD (:func:`learn_stopping_threshold`).  SLADS averages the error of
    the predicted label at the measured pixel, d_k = [x_s ≠ x̂_s].  On phase maps that
    quantity does not fall as the map converges -- SLADS keeps measuring on boundaries,
    where a single pixel's prediction stays a coin flip (measured on the bundled 2-phase
    sample: ε rises from 0.35 to 0.45 while TD falls from 0.1 to 0.01) -- so here d_k is
    the *realised* reduction in distortion: the number of pixels whose reconstructed label
    changed with the measurement (the measured pixel's own error included).  It falls
    steadily with TD and needs no ground truth.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._files import JOURNAL_NAME
from ._validation import InputError
from .config import SamplingConfig
from .uncertainty import DEFAULT_ALPHA, DEFAULT_GAMMA, DEFAULT_LOOP_GAMMA

__all__ = ["Journal", "read_journal", "StoppingRule", "stopping_beta", "learn_stopping_threshold",
           "JOURNAL_NAME", "RunConfig", "acquire"]

_FORMAT = "napari-slads-eds acquisition journal"
_RECORD = np.dtype([("row", "<i4"), ("col", "<i4"), ("label", "<i2"), ("batch", "<i4"), ("time", "<f8")])


# ----------------------------------------------------------------------------- journal

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


# ------------------------------------------------------------------------ stopping rule

def stopping_beta(n_pixels: int) -> float:
    """β of the stopping rule's running average for a grid of ``n_pixels`` (SLADS)."""
    lg = math.log2(max(2, n_pixels))
    if n_pixels <= 2 ** 18:
        return 0.001 * ((18 - lg) / 2 + 1)
    return 0.001 / ((lg - 18) / 2 + 1)


@dataclass
class StoppingRule:
    """Running average of the pixels relabelled per measurement, against a threshold.

    Parameters
    ----------
    threshold : float
        T: stop when ε < T (pixels per measurement).
    n_pixels : int
        |Ω|, sets β.
    min_fraction : float
        Never stop before this sampling fraction.
    """

    threshold: float
    n_pixels: int
    min_fraction: float = 0.02
    beta: float = field(default=0.0)
    _m: float = 0.0
    _k: int = 0

    def __post_init__(self):
        if not self.beta:
            self.beta = stopping_beta(self.n_pixels)

    @property
    def epsilon(self) -> float:
        """Current ε (bias-corrected running average); inf before any observation."""
        if self._k == 0:
            return float("inf")
        return self._m / (1.0 - (1.0 - self.beta) ** self._k)

    def observe(self, changed_pixels: int, n_measurements: int) -> float:
        """Add ``n_measurements`` measurements that together relabelled ``changed_pixels``
        pixels of the reconstruction (each counts as ``changed / n``).  Returns ε."""
        n = int(n_measurements)
        if n <= 0:
            return self.epsilon
        d = float(changed_pixels) / n
        keep = (1.0 - self.beta) ** n
        self._m = keep * self._m + (1.0 - keep) * d
        self._k += n
        return self.epsilon

    def should_stop(self, fraction: float) -> bool:
        return fraction >= self.min_fraction and self._k > 0 and self.epsilon < self.threshold


def learn_stopping_threshold(label_images, n_phases: int, erd_model, target_td: float = 0.01, *,
                             max_fraction: float = 0.5, k: int = 10, seed: int = 0) -> dict:
    """T of the stopping rule: simulate SLADS on training images (true labels), note ε at
    the first step where TD <= ``target_td`` on each, and average.

    Returns
    -------
    dict with ``threshold`` (T), ``target_td``, ``per_image`` (list of {fraction, epsilon}).

    Raises
    ------
    InputError
        When no training image reaches the target TD below ``max_fraction``.
    """
    from .sampling import Sampler, initial_positions

    per = []
    for i, truth in enumerate(label_images):
        truth = np.asarray(truth)
        H, W = truth.shape
        P = H * W
        s = Sampler((H, W), n_phases, erd_model, k=k, truth=truth)
        init = initial_positions((H, W), 0.01, "halton", seed + i)
        s.update(init, truth[init[:, 0], init[:, 1]])
        rule = StoppingRule(0.0, P)
        batch = max(1, P // 4000)
        flat = truth.reshape(-1)
        s.pop_changes()
        while s.fraction < max_fraction:
            if s.td <= target_td:
                per.append({"fraction": s.fraction, "epsilon": rule.epsilon})
                break
            pos = s.select(batch)
            if len(pos) == 0:
                break
            s.update(pos, flat[pos[:, 0] * W + pos[:, 1]])
            rule.observe(s.pop_changes(), len(pos))
    if not per:
        raise InputError(f"no training image reached TD {target_td} below {100 * max_fraction:g} % "
                         "sampled; the stopping rule cannot be learned for this target")
    return {"threshold": float(np.mean([p["epsilon"] for p in per])), "target_td": float(target_td),
            "per_image": per}


# --------------------------------------------------------------------------- the loop

@dataclass(frozen=True)
class RunConfig:
    """Settings of the acquisition loop (see :func:`acquire`): the run's
    :class:`~napari_slads_eds.config.SamplingConfig` and what only the loop needs.

    Attributes
    ----------
    sampling : SamplingConfig
        Target and initial fractions, pattern, batch, overlap, seed, uncertainty, frame
        interval.
    send_maps : bool
        Frames carry the reconstruction and the ERD map (for a live display).
    stop_threshold : float or None
        T of the learned stopping rule; None: the budget only.
    stop_min_fraction : float
        The stopping rule is not applied below this sampling fraction.
    prior_alpha, prior_gamma, final_gamma : float
        Spatial phase decisions with ``sampling.uncertainty == "soft"``
        (:mod:`napari_slads_eds.uncertainty`): floor alpha, prior weight in the loop and
        in the final decisions (and the static scans).
    """

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    send_maps: bool = True
    stop_threshold: float | None = None
    stop_min_fraction: float = 0.02
    prior_alpha: float = DEFAULT_ALPHA
    prior_gamma: float = DEFAULT_LOOP_GAMMA
    final_gamma: float = DEFAULT_GAMMA

    def check(self) -> "RunConfig":
        """Validate; returns ``self``.

        Raises
        ------
        InputError
            Invalid sampling configuration or decision parameters.
        """
        if not isinstance(self.sampling, SamplingConfig):
            raise InputError(f"RunConfig.sampling must be a SamplingConfig, got {type(self.sampling).__name__}")
        self.sampling.check()
        if not (self.prior_alpha > 0 and self.prior_gamma >= 0 and self.final_gamma >= 0):
            raise InputError(f"prior alpha must be > 0 and gamma >= 0, got {self.prior_alpha}, {self.prior_gamma}")
        return self

    def to_dict(self) -> dict:
        """Flat JSON-ready dict, as journals store it (``target_fraction`` is the sampling
        ``fraction``; ``uncertainty`` None for hard labels, as journals of earlier versions)."""
        d = self.sampling.to_dict()
        d["target_fraction"] = d.pop("fraction")
        d["uncertainty"] = "soft" if self.sampling.soft else None
        d.update(send_maps=self.send_maps, stop_threshold=self.stop_threshold,
                 stop_min_fraction=self.stop_min_fraction, prior_alpha=self.prior_alpha,
                 prior_gamma=self.prior_gamma, final_gamma=self.final_gamma)
        return d


def acquire(ctx, sampler, measure, classify, config: RunConfig, *, journal: Journal | None = None,
            replay: dict | None = None, posterior=None) -> dict:
    """Run the SLADS acquisition loop until the budget, the stopping rule or a stop request.

    Parameters
    ----------
    ctx : JobContext-like
        ``emit``, ``checkpoint(graceful=True)``, ``stop_requested``.
    sampler : Sampler
        A fresh sampler (nothing measured).
    measure : callable(positions (n, 2)) -> spectra (n, p)
    classify : callable(spectra (n, p)) -> labels (n,) in 0..L
    config : RunConfig
    journal : Journal, optional
        Every measured batch is appended (and flushed) before it is used.
    replay : dict, optional
        A journal read by :func:`read_journal`: its measurements are fed to the sampler in
        their original batches, without measuring, before the loop continues.
    posterior : callable(spectra (n, p)) -> (n, L + 1), optional
        With ``config.uncertainty == "soft"`` (and a
        :class:`~napari_slads_eds.uncertainty.SoftSampler`): each spectrum's posterior over
        {ill-spectrum, phases}; the label is then the spatial decision
        (:func:`~napari_slads_eds.uncertainty.spatial_decision`) against the sampler's
        votes at the pixel, taken in the loop's thread, and the phase probabilities vote
        in the reconstruction.  ``classify`` is not used then.

    Returns
    -------
    dict with positions, labels, td_curve, stop_reason, n_replayed, seconds, epsilon and
    (soft) posteriors (n, L + 1) of the measured spectra and decided_probabilities (n, L) of
    the in-loop decisions, in measurement order.
    """
    cfg = config.check()
    H, W = sampler.shape
    P = H * W
    t0 = time.perf_counter()
    target = max(1, int(round(cfg.sampling.fraction * P)))
    pos_log: list[np.ndarray] = []
    lab_log: list[np.ndarray] = []
    curve: list[list] = []
    rule = StoppingRule(cfg.stop_threshold, P, cfg.stop_min_fraction) if cfg.stop_threshold is not None else None
    state = {"sent": 0, "last": 0.0}
    n_replayed = 0

    def frame(final=False):
        s = state["sent"]
        newpos = np.concatenate(pos_log[s:]) if len(pos_log) > s else np.zeros((0, 2), np.int64)
        newlab = np.concatenate(lab_log[s:]) if len(lab_log) > s else np.zeros(0, np.int16)
        el = time.perf_counter() - t0
        msg = dict(n_measured=sampler.n_measured, target=target, fraction=sampler.fraction, td=sampler.td,
                   positions=newpos, labels=newlab, final=final, elapsed=el,
                   rate=(sampler.n_measured - n_replayed) / max(1e-9, el),
                   epsilon=None if rule is None else rule.epsilon)
        if cfg.send_maps:
            msg["reconstruction"] = sampler.reconstruction
            msg["erd"] = sampler.erd_map
        state["sent"] = len(pos_log)
        state["last"] = time.perf_counter()
        ctx.emit("frame", **msg)

    soft = cfg.sampling.soft
    if soft and (posterior is None or not hasattr(sampler, "vote_shares")):
        raise InputError("uncertainty 'soft' needs a posterior function and a SoftSampler")

    def decide(pos, lab_or_prob, known_labels=None):
        """(labels, phase probabilities or None) of a measured batch, in the loop's thread."""
        if not soft:
            return lab_or_prob, None
        from .uncertainty import spatial_decision

        flat = pos[:, 0] * W + pos[:, 1]
        lab, pp = spatial_decision(lab_or_prob, sampler.vote_shares(flat), alpha=cfg.prior_alpha,
                                   gamma=cfg.prior_gamma)
        return (lab if known_labels is None else np.asarray(known_labels, np.int16)), pp

    def record(pos, lab, spectra=None, *, log=True, observe=True, prob=None):
        if journal is not None and spectra is not None:
            journal.append(pos, lab, spectra, time.perf_counter() - t0)
        if prob is not None:
            sampler.update(pos, lab, prob)
        else:
            sampler.update(pos, lab)
        changed = sampler.pop_changes()   # includes the changes made by pseudo-measurements
        if rule is not None and observe:
            rule.observe(changed, len(pos))
        pos_log.append(pos)
        lab_log.append(np.asarray(lab, dtype=np.int16))
        curve.append([sampler.fraction, sampler.td])
        if log and time.perf_counter() - state["last"] >= cfg.sampling.frame_interval:
            frame()

    def classified(spectra):
        return (posterior(spectra) if soft else classify(spectra)), spectra

    def measure_classify(pos):
        return classified(measure(pos))

    post_log: list[np.ndarray] = []     # spectrum posteriors (n, L + 1)
    dec_log: list[np.ndarray] = []      # phase probabilities of the in-loop decisions (n, L)

    def measure_record(pos, done=None, **kw):
        out, spectra = done if done is not None else measure_classify(pos)
        lab, pp = decide(pos, out)
        if soft:
            post_log.append(np.asarray(out, np.float64))
            dec_log.append(pp)
        record(pos, lab, spectra, prob=pp, **kw)

    # 1. replay a journal, or measure the initial pattern
    if replay is not None and len(replay["label"]):
        b = replay["batch"]
        cuts = np.flatnonzero(np.diff(b)) + 1
        spec = np.split(replay["spectrum"], cuts) if soft else [None] * (len(cuts) + 1)
        for i, (pos, lab, sp) in enumerate(zip(np.split(replay["position"], cuts), np.split(replay["label"], cuts),
                                               spec)):
            # soft: the decision is recomputed from the journal's spectra (it is deterministic),
            # for the phase probabilities; the journal's labels are kept
            pp = None
            if soft:
                post_log.append(np.asarray(posterior(sp), np.float64))
                pp = decide(pos, post_log[-1], known_labels=lab)[1]
                dec_log.append(pp)
            record(pos, lab, log=False, observe=i > 0, prob=pp)   # batch 0 is the initial pattern
        n_replayed = sampler.n_measured
    else:
        from .sampling import initial_positions

        ctx.checkpoint()   # a job paused (or stopped) before it began measures nothing meanwhile
        init = initial_positions((H, W), min(cfg.sampling.initial_fraction, cfg.sampling.fraction),
                                 cfg.sampling.initial_pattern, cfg.sampling.seed)[:target]
        measure_record(init, log=False, observe=False)
    sampler.pop_changes()
    frame()

    # 2. the loop
    stop_reason = "target fraction reached"

    def stop_by_rule() -> bool:
        return rule is not None and rule.should_stop(sampler.fraction)

    if stop_by_rule():
        stop_reason = "stopping rule: new measurements hardly change the reconstruction any more"
    elif cfg.sampling.overlap:
        from concurrent.futures import ThreadPoolExecutor

        # The measuring thread only measures.  While batch k is measured, batch k + 1 is
        # chosen (pseudo-measurements at k's positions); as soon as k's spectra arrive,
        # k + 1 goes to the instrument, and only then is k classified, journaled and
        # recorded: the instrument does not wait for that work.  The sampler sees the same
        # sequence of selections and updates as without the early send (same results).  A
        # batch already sent when the run stops (user, stopping rule) is measured and kept.
        with ThreadPoolExecutor(1, thread_name_prefix="acquire") as pool:
            cur = sampler.select(min(cfg.sampling.batch, target - sampler.n_measured), "pseudo")
            fut = pool.submit(measure, cur) if len(cur) else None
            while fut is not None:
                stopping = ctx.checkpoint(graceful=True)
                room = target - sampler.n_measured - len(cur)
                nxt = sampler.select(min(cfg.sampling.batch, room), "pseudo") if room > 0 and not stopping else None
                spectra = fut.result()
                fut = None
                if nxt is not None and len(nxt):
                    if ctx.stop_requested:
                        sampler.cancel(nxt)
                    else:
                        fut = pool.submit(measure, nxt)
                measure_record(cur, classified(spectra))
                done_by_rule = stop_by_rule()
                if stopping or ctx.stop_requested or done_by_rule:
                    if fut is not None:          # already at the instrument: measured, so kept
                        measure_record(nxt, classified(fut.result()))
                    stop_reason = ("stopping rule: new measurements hardly change the reconstruction any more"
                                   if done_by_rule and not stopping else "stopped by the user")
                    break
                cur = nxt
    else:
        while sampler.n_measured < target:
            if ctx.checkpoint(graceful=True):
                stop_reason = "stopped by the user"
                break
            pos = sampler.select(min(cfg.sampling.batch, target - sampler.n_measured), cfg.sampling.batch_mode)
            if len(pos) == 0:
                break
            measure_record(pos)
            if stop_by_rule():
                stop_reason = "stopping rule: new measurements hardly change the reconstruction any more"
                break
    if sampler.n_measured >= P:
        stop_reason = "every pixel measured"
    frame(final=True)
    return {
        "positions": np.concatenate(pos_log) if pos_log else np.zeros((0, 2), np.int64),
        "labels": np.concatenate(lab_log) if lab_log else np.zeros(0, np.int16),
        "td_curve": curve,
        "stop_reason": stop_reason,
        "n_replayed": n_replayed,
        "seconds": time.perf_counter() - t0,
        "epsilon": None if rule is None else rule.epsilon,
        "stop_threshold": cfg.stop_threshold,
        "posteriors": np.concatenate(post_log) if post_log else None,
        "decided_probabilities": np.concatenate(dec_log) if dec_log else None,
    }
