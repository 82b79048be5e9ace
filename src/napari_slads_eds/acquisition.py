"""The acquisition loop of a SLADS run (:func:`acquire`) and its settings (:class:`RunConfig`).

Numpy/h5py only (no TensorFlow, no Qt): the spectrum classifier comes in as a plain
``classify(spectra) -> labels`` callable, so the same loop runs inside the engine process
(with the Keras classifier) and in tests (with any labelling function).

The loop appends every measured batch to the run's journal
(:mod:`napari_slads_eds.journal`), or replays one to resume, and stops at the budget, on
a stop request or by the learned stopping rule (:mod:`napari_slads_eds.stopping`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ._validation import InputError
from .config import SamplingConfig
from .journal import JOURNAL_NAME, Journal, read_journal
from .stopping import StoppingRule
from .uncertainty import DEFAULT_ALPHA, DEFAULT_GAMMA, DEFAULT_LOOP_GAMMA

# JOURNAL_NAME and read_journal are re-exported from journal: _widgets/sampling.py and the
# benchmarks import them from here
__all__ = ["RunConfig", "acquire", "JOURNAL_NAME", "read_journal"]


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
