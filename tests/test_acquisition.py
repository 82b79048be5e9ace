"""The acquisition loop without TensorFlow: true labels stand in for the classifier."""

import numpy as np

from napari_slads_eds.config import SamplingConfig
import pytest

from napari_slads_eds import Sampler
from napari_slads_eds.acquisition import RunConfig, acquire
from napari_slads_eds.journal import Journal, read_journal
from napari_slads_eds.stopping import StoppingRule, learn_stopping_threshold, stopping_beta
from napari_slads_eds.erd_database import build_training_database
from napari_slads_eds.erd_models import LinearERD


class Ctx:
    def __init__(self, stop_after=None):
        self.frames, self.stop_after = [], stop_after

    def emit(self, type_, **m):
        if type_ == "frame":
            self.frames.append(m)

    @property
    def stop_requested(self):
        return self.stop_after is not None and self.frames and self.frames[-1]["n_measured"] >= self.stop_after

    def checkpoint(self, graceful=False):
        return bool(self.stop_requested)


@pytest.fixture(scope="module")
def model():
    from skimage.data import binary_blobs

    imgs = [binary_blobs(48, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (21, 22)]
    db = build_training_database(imgs, 2, c_values=(8.0,), seed=0)
    return LinearERD.fit(db.features, db.rd[:, 0], 8.0), imgs


def _labeller(truth):
    flat = truth.reshape(-1).astype(np.float32)
    W = truth.shape[1]
    return (lambda pos: flat[pos[:, 0] * W + pos[:, 1]][:, None]), (lambda s: s[:, 0].astype(np.int16))


def test_stopping_rule_average_and_beta():
    assert stopping_beta(128 * 128) == pytest.approx(0.003)
    assert stopping_beta(1024 * 1024) == pytest.approx(0.0005)
    r = StoppingRule(threshold=2.0, n_pixels=128 * 128, min_fraction=0.02)
    assert r.epsilon == float("inf") and not r.should_stop(0.5)
    r.observe(10, 1)
    assert r.epsilon == pytest.approx(10.0)          # bias-corrected: first value is the mean
    r.observe(0, 1)
    assert r.epsilon == pytest.approx(5.0, rel=0.01)
    for _ in range(3000):
        r.observe(1, 1)
    assert r.epsilon == pytest.approx(1.0, abs=0.01)
    assert r.should_stop(0.05) and not r.should_stop(0.01)


def test_loop_stops_by_rule_near_the_target_td(model, blobs):
    erd, imgs = model
    learned = learn_stopping_threshold(imgs, 2, erd, 0.01)
    assert learned["threshold"] > 0 and len(learned["per_image"]) == 2
    s = Sampler(blobs.shape, 2, erd, truth=blobs)
    measure, classify = _labeller(blobs)
    out = acquire(Ctx(), s, measure, classify, RunConfig(SamplingConfig(fraction=0.6), stop_threshold=learned["threshold"]))
    assert out["stop_reason"].startswith("stopping rule")
    curve = np.asarray(out["td_curve"])
    s2 = Sampler(blobs.shape, 2, erd, truth=blobs)
    full = np.asarray(acquire(Ctx(), s2, measure, classify, RunConfig(SamplingConfig(fraction=0.6)))["td_curve"])
    first = full[np.argmax(full[:, 1] <= 0.01), 0]
    assert abs(curve[-1, 0] - first) < 0.08
    assert curve[-1, 0] < 0.6


def test_journal_replay_without_tensorflow(model, blobs, tmp_path):
    erd, _ = model
    measure, classify = _labeller(blobs)
    cfg = RunConfig(SamplingConfig(fraction=0.3, batch=3))
    ref = acquire(Ctx(), Sampler(blobs.shape, 2, erd, truth=blobs), measure, classify, cfg)
    j = Journal(tmp_path / "journal.h5", 1, {"x": 1})
    part = acquire(Ctx(stop_after=200), Sampler(blobs.shape, 2, erd, truth=blobs), measure, classify, cfg,
                   journal=j)
    j.close()
    assert part["stop_reason"] == "stopped by the user"
    rec = read_journal(tmp_path / "journal.h5")
    assert len(rec["label"]) == len(part["labels"])
    j2 = Journal.append_to(tmp_path / "journal.h5")
    rest = acquire(Ctx(), Sampler(blobs.shape, 2, erd, truth=blobs), measure, classify, cfg, journal=j2,
                   replay=rec)
    j2.close()
    assert rest["n_replayed"] == len(rec["label"])
    assert np.array_equal(rest["positions"], ref["positions"])
    assert rest["td_curve"] == ref["td_curve"]


def test_overlap_sends_the_next_batch_before_classifying_and_keeps_it_at_a_stop(model, blobs):
    """With overlap, batch k + 1 reaches the instrument before batch k is classified (the
    instrument does not wait for that work); the selections are those of the loop without
    the early send; a batch already sent when the user stops is measured and kept."""
    import threading

    erd, _ = model
    measure_truth, classify_truth = _labeller(blobs)
    cond = threading.Condition()
    state = {"measures": 0, "classified": 0, "waited_in_vain": 0}

    def measure(pos):
        with cond:
            state["measures"] += 1
            cond.notify_all()
        return measure_truth(pos)

    def classify(spectra):
        # classification i (0 = the initial pattern) is of measurement i; the early send means
        # measurement i + 1 has started by now, except after the last batch
        i = state["classified"]
        state["classified"] += 1
        if i >= 1 and state["waited_in_vain"] < 3:
            with cond:
                if not cond.wait_for(lambda: state["measures"] >= i + 2, timeout=1.0):
                    state["waited_in_vain"] += 1
        return classify_truth(spectra)

    cfg = RunConfig(SamplingConfig(fraction=0.2, batch=3, batch_mode="pseudo", overlap=True, seed=4, frame_interval=0.0), send_maps=False)
    s = Sampler(blobs.shape, 2, erd, truth=blobs)
    out = acquire(Ctx(), s, measure, classify, cfg)
    assert state["classified"] > 20
    assert state["waited_in_vain"] <= 1            # only the last batch has no successor
    # the same selections as an overlap run with an instrument that answers at once
    s_ref = Sampler(blobs.shape, 2, erd, truth=blobs)
    ref = acquire(Ctx(), s_ref, measure_truth, classify_truth, cfg)
    assert np.array_equal(out["positions"], ref["positions"]) and out["td_curve"] == ref["td_curve"]

    # a stop while a batch is at the instrument: that batch is measured and kept
    measured = []

    def measure_log(pos):
        measured.append(np.asarray(pos).copy())
        return measure_truth(pos)

    s2 = Sampler(blobs.shape, 2, erd, truth=blobs)
    out2 = acquire(Ctx(stop_after=int(0.05 * blobs.size)), s2, measure_log, classify_truth, cfg)
    assert out2["stop_reason"] == "stopped by the user"
    sent = np.concatenate(measured)
    assert len(sent) == len(out2["positions"]) == s2.n_measured < int(0.2 * blobs.size)
    assert {tuple(p) for p in sent} == {tuple(p) for p in out2["positions"]}
