"""Count-aware phase decisions (Poisson likelihood) and label uncertainty through the loop."""

import json

import numpy as np

from napari_slads_eds.config import SamplingConfig
import pytest
from scipy.special import gammaln

from napari_slads_eds import InputError, reconstruct
from napari_slads_eds.acquisition import RunConfig, acquire
from napari_slads_eds.journal import Journal, read_journal
from napari_slads_eds.erd_database import build_training_database
from napari_slads_eds.erd_models import LinearERD
from napari_slads_eds.likelihood import (PoissonPhaseClassifier, calibration_error, classifier_kind,
                                         load_classifier)
from napari_slads_eds.scan_orders import halton_order, initial_positions
from napari_slads_eds.spectra import EnergyAxis, ReferenceSpectra
from napari_slads_eds.uncertainty import (SoftSampler, decide_static, reconstruct_soft, spatial_decision)

AX8 = EnergyAxis(0.0, 1.0, 8)


def _two_phase_model(**kw):
    # 4 bins of 2 channels; phase 1 puts its counts low, phase 2 high; Poisson totals
    shapes = np.array([[0.25, 0.25, 0.25, 0.25],      # ill-spectrum: flat
                       [0.4, 0.4, 0.1, 0.1],
                       [0.1, 0.1, 0.4, 0.4]])
    cm = np.array([[1.0, 1.0], [20.0, 1e9], [40.0, 1e9]])
    return PoissonPhaseClassifier(shapes, cm, AX8, np.array([0, 2, 4, 6, 8]), ["A", "B"], **kw)


def test_posterior_matches_a_hand_computation():
    clf = _two_phase_model(log_prior=np.log([0.001, 0.4995, 0.4995]))
    x = np.array([[3, 2, 1, 0, 4, 0, 1, 1]], float)      # bins: 5, 1, 4, 2 -> N = 12
    b = np.array([5, 1, 4, 2])
    N = 12

    def pois(n, mu):
        return n * np.log(mu) - mu - gammaln(n + 1)

    ll = np.array([b @ np.log([0.25] * 4) - np.log1p(N) - np.log(np.log(1e6)),
                   b @ np.log([0.4, 0.4, 0.1, 0.1]) + pois(N, 20.0),
                   b @ np.log([0.1, 0.1, 0.4, 0.4]) + pois(N, 40.0)])
    z = ll + np.log([0.001, 0.4995, 0.4995])
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert np.allclose(clf.log_likelihood(x)[0], ll)
    assert np.allclose(clf.predict_proba(x)[0], want)
    assert clf.predict(x)[0] == int(np.argmax(want[1:]) + 1)
    # a temperature flattens the same posterior
    hot = _two_phase_model(log_prior=np.log([0.001, 0.4995, 0.4995]), temperature=4.0)
    assert hot.predict_proba(x)[0].max() < want.max()


def test_flat_high_count_spectrum_is_an_ill_spectrum():
    clf = _two_phase_model()
    flat = np.full((1, 8), 500.0)
    assert clf.predict(flat)[0] == 0
    assert clf.predict(np.array([[30, 30, 0, 0, 0, 0, 0, 0.0]]))[0] == 1


def _refs(rng, shapes, level, M, mix=0.0):
    """Poisson spectra of phases with known shapes; ``mix``: each spectrum's shape is a
    random mixture with the other phase of up to that share (boundary pixels)."""
    L = shapes.shape[0]
    out = np.empty((L, M, shapes.shape[1]))
    for l in range(L):
        w = rng.uniform(0, mix, size=(M, 1))
        other = shapes[(l + 1) % L]
        out[l] = rng.poisson(level * ((1 - w) * shapes[l] + w * other))
    return out


def test_trained_classifier_is_calibrated_on_held_apart_spectra():
    rng = np.random.default_rng(1)
    ax = EnergyAxis(0.0, 0.01, 400)
    e = ax.energies
    shapes = np.stack([np.exp(-0.5 * ((e - c) / 0.08) ** 2) + 0.3 for c in (1.5, 1.9)])
    shapes /= shapes.sum(axis=1, keepdims=True)
    train = ReferenceSpectra(_refs(rng, shapes, 15, 400), ax, ("a", "b"))
    clf, rep = PoissonPhaseClassifier.train(train, bin_keV=0.05)
    held = _refs(rng, shapes, 15, 3000)
    x = held.reshape(-1, ax.size)
    y = np.repeat([1, 2], 3000)
    prob = clf.predict_proba(x)
    # ambiguous spectra at 15 counts: a real error rate, and probabilities that say so
    err = np.mean(clf.predict(x) != y)
    assert 0.02 < err < 0.4
    assert calibration_error(prob, y) < 0.03
    assert rep["temperature"] < 2.0 and 0 <= rep["misclassification"] < 0.4
    assert np.array(rep["confusion"]).sum() == rep["n_val"]


def test_temperature_calibrates_mixed_spectra():
    rng = np.random.default_rng(2)
    ax = EnergyAxis(0.0, 0.01, 400)
    e = ax.energies
    shapes = np.stack([np.exp(-0.5 * ((e - c) / 0.08) ** 2) + 0.3 for c in (1.5, 1.9)])
    shapes /= shapes.sum(axis=1, keepdims=True)
    # training spectra of pure phases; calibration and test spectra with mixed boundary pixels
    train = ReferenceSpectra(_refs(rng, shapes, 60, 400), ax, ("a", "b"))
    cal = _refs(rng, shapes, 60, 1500, mix=0.45)
    test = _refs(rng, shapes, 60, 3000, mix=0.45)
    y_cal, y = np.repeat([1, 2], 1500), np.repeat([1, 2], 3000)
    raw, _ = PoissonPhaseClassifier.train(train)
    cald, rep = PoissonPhaseClassifier.train(train, calibration=(cal.reshape(-1, ax.size), y_cal))
    x = test.reshape(-1, ax.size)
    assert rep["temperature"] > raw.temperature
    assert calibration_error(cald.predict_proba(x), y) < calibration_error(raw.predict_proba(x), y)
    # mixed pixels (up to 45 % of the other phase) get their majority phase
    assert np.mean(cald.predict(x) == y) > 0.8


def test_save_load_and_bad_files(tmp_path):
    clf = _two_phase_model(report={"misclassification": 0.1})
    d = clf.save(tmp_path / "clf")
    assert classifier_kind(d) == "poisson"
    # a kind it does not know is named, not taken for the CNN kind
    import json as _json
    import shutil as _shutil

    odd = tmp_path / "odd"
    _shutil.copytree(d, odd)
    meta = _json.loads((odd / "classifier.json").read_text())
    (odd / "classifier.json").write_text(_json.dumps({**meta, "kind": "Poisson"}))
    with pytest.raises(InputError, match="unknown classifier kind 'Poisson'"):
        classifier_kind(odd)
    back = load_classifier(d)
    x = np.random.default_rng(0).poisson(5, size=(7, 8)).astype(float)
    assert np.array_equal(back.predict_proba(x), clf.predict_proba(x))
    assert back.phase_names == ("A", "B")
    with pytest.raises(InputError, match="channels"):
        back.predict(np.zeros((2, 9)))
    with pytest.raises(InputError, match="NaN|negative|finite"):
        back.predict(np.full((1, 8), np.nan))
    (d / "poisson_model.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="poisson_model.npz"):
        load_classifier(d)
    meta = json.loads((d / "classifier.json").read_text())
    meta["phase_names"] = "AB"
    (d / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(InputError):
        PoissonPhaseClassifier.load(d)
    with pytest.raises(InputError, match="not found"):
        load_classifier(tmp_path / "nothing")


def test_spatial_decision_hand_checked():
    prob = np.array([[0.0, 0.6, 0.4],     # weakly phase 1, neighbours all phase 2
                     [0.0, 0.99, 0.01],   # clearly phase 1: keeps it
                     [0.9, 0.05, 0.05],   # ill-spectrum stays ill
                     [0.0, 0.6, 0.4]])    # no neighbours: the spectrum decides
    share = np.array([[0, 1], [0, 1], [0, 1], [0, 0]], float)
    lab, pp = spatial_decision(prob, share, alpha=0.1, gamma=1.0)
    assert lab.tolist() == [2, 1, 0, 1]
    q = (np.array([0, 1]) + 0.1) / 1.2
    want = np.array([0.6, 0.4]) * q / (np.array([0.6, 0.4]) * q).sum()
    assert np.allclose(pp[0], want)
    assert np.allclose(pp.sum(axis=1), 1)
    lab0, _ = spatial_decision(prob, share, gamma=0.0)     # no prior: argmax of the spectrum
    assert lab0.tolist() == [1, 1, 0, 1]
    with pytest.raises(InputError):
        spatial_decision(prob, share[:2])


def test_soft_reconstruction_hand_checked_and_one_hot_equals_weighted_mode():
    # 1x5 row: a confident phase 1 at col 0, two unsure phase-2 measurements at cols 3, 4
    pos = np.array([[0, 0], [0, 3], [0, 4]])
    lab = np.array([1, 2, 2])
    pp = np.array([[1.0, 0.0], [0.45, 0.55], [0.45, 0.55]])
    rec = reconstruct_soft((1, 5), pos, lab, pp, k=3)
    # col 2: votes from col 3 (w 1), col 4 (1/4), col 0 (1/4): phase 1 gets 0.25 + 0.5625 > phase 2
    assert rec.tolist() == [[1, 1, 1, 2, 2]]
    hard = reconstruct((1, 5), pos, lab, 2, k=3)
    assert hard.tolist() == [[1, 1, 2, 2, 2]]
    rng = np.random.default_rng(3)
    P = halton_order((30, 30), 120, 0)
    L = rng.integers(0, 4, size=120)
    oh = np.eye(3)[np.maximum(L, 1) - 1]
    assert np.array_equal(reconstruct_soft((30, 30), P, L, oh, 10), reconstruct((30, 30), P, L, 3, 10))


@pytest.fixture(scope="module")
def erd_model():
    from skimage.data import binary_blobs

    imgs = [binary_blobs(40, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (11, 12)]
    db = build_training_database(imgs, 2, c_values=(4.0,), seed=0)
    return LinearERD.fit(db.features, db.rd[:, 0], 4.0)


def _soft_run(truth, model, *, full, batch=1, mode="top", stop=0.25):
    H, W = truth.shape
    rng = np.random.default_rng(0)
    s = SoftSampler((H, W), 2, model, truth=truth, full_recompute=full)

    def probs(p):
        t = truth[p[:, 0], p[:, 1]]
        conf = rng.uniform(0.5, 1.0, size=t.size)
        out = np.where(t[:, None] == np.array([1, 2])[None, :], conf[:, None], 1 - conf[:, None])
        return out

    init = initial_positions((H, W), 0.02, "halton", 0)
    s.update(init, truth[init[:, 0], init[:, 1]], probs(init))
    picks = []
    while s.fraction < stop:
        p = s.select(batch, mode)
        pr = probs(p)
        s.update(p, pr.argmax(axis=1) + 1, pr)
        picks.append(p)
    return s, np.concatenate(picks)


@pytest.mark.parametrize("batch,mode", [(1, "top"), (4, "top"), (3, "pseudo")])
def test_soft_sampler_local_updates_are_exact(blobs, erd_model, batch, mode):
    a, pa = _soft_run(blobs, erd_model, full=False, batch=batch, mode=mode)
    b, pb = _soft_run(blobs, erd_model, full=True, batch=batch, mode=mode)
    assert len(pa) > 300
    assert np.array_equal(pa, pb)
    assert np.array_equal(a.reconstruction, b.reconstruction)
    assert np.array_equal(a.erd_map, b.erd_map, equal_nan=True)


def test_soft_sampler_votes_and_shares(blobs, erd_model):
    s = SoftSampler(blobs.shape, 2, erd_model, truth=blobs)
    pos = np.array([[5, 5], [5, 9]])
    s.update(pos, [1, 2], np.array([[0.9, 0.1], [0.4, 0.6]]))
    share = s.vote_shares(np.array([5 * 48 + 7]))[0]     # equidistant: votes 0.9+0.4 vs 0.1+0.6
    assert np.allclose(share, [1.3 / 2, 0.7 / 2])
    assert s.reconstruction[5, 7] == 1
    with pytest.raises(InputError):
        s.update(np.array([[1, 1]]), [1], np.ones((2, 2)))


class Ctx:
    def emit(self, *a, **k):
        pass

    stop_requested = False

    def checkpoint(self, graceful=False):
        return False


def test_soft_loop_journal_replays_to_the_same_state(tmp_path, blobs, erd_model):
    """The soft decisions are recomputed from the journal's spectra: a resumed run ends
    in exactly the state of an uninterrupted one."""
    H, W = blobs.shape
    flat = blobs.reshape(-1)
    rng = np.random.default_rng(5)
    noise = rng.uniform(0, 1, size=flat.size)

    def measure(pos):
        f = pos[:, 0] * W + pos[:, 1]
        return np.stack([flat[f].astype(float), noise[f]], axis=1)

    def posterior(sp):
        c = 0.55 + 0.4 * sp[:, 1]
        p1 = np.where(sp[:, 0] == 1, c, 1 - c)
        return np.stack([np.zeros(len(sp)), p1, 1 - p1], axis=1)

    cfg = RunConfig(SamplingConfig(fraction=0.2, uncertainty="soft"), send_maps=False)
    s1 = SoftSampler((H, W), 2, erd_model, truth=blobs)
    j = Journal(tmp_path / "j.h5", 2, {})
    r1 = acquire(Ctx(), s1, measure, None, cfg, journal=j, posterior=posterior)
    j.close()
    assert r1["posteriors"].shape == (len(r1["labels"]), 3)
    s2 = SoftSampler((H, W), 2, erd_model, truth=blobs)
    r2 = acquire(Ctx(), s2, measure, None, cfg, replay=read_journal(tmp_path / "j.h5"), posterior=posterior)
    assert r2["n_replayed"] == len(r1["labels"])
    assert np.array_equal(s1.reconstruction, s2.reconstruction)
    with pytest.raises(InputError, match="posterior"):
        acquire(Ctx(), SoftSampler((H, W), 2, erd_model), measure, None, cfg)


def test_static_decisions_lower_td_on_noisy_labels(blobs):
    """Spatial decisions beat spectrum-only labels when spectra are ambiguous (20 % wrong)."""
    H, W = blobs.shape
    rng = np.random.default_rng(7)
    pos = halton_order((H, W), 500, 0)
    t = blobs[pos[:, 0], pos[:, 1]]
    conf = rng.uniform(0.55, 0.95, size=t.size)
    wrong = rng.uniform(size=t.size) > conf             # calibrated: wrong with prob 1 - conf
    said = np.where(wrong, 3 - t, t)
    p1 = np.where(said == 1, conf, 1 - conf)
    prob = np.stack([np.zeros_like(p1), p1, 1 - p1], axis=1)
    hard = reconstruct((H, W), pos, said, 2)
    lab, pp = decide_static((H, W), pos, prob, 10)
    soft = reconstruct_soft((H, W), pos, lab, pp, 10)
    assert np.mean(lab != t) < 0.8 * np.mean(said != t)
    assert np.mean(soft != blobs) < 0.8 * np.mean(hard != blobs)


def test_poisson_job_on_a_simulated_specimen(tmp_path, sample_dir):
    """The engine job trains the Poisson classifier with the specimen's added Poisson(2)
    background (numpy only, no TensorFlow): phases right, ill-spectra (Poisson(20) per
    channel) found."""
    from napari_slads_eds.training_jobs import train_classifier
    from napari_slads_eds.spectra import bundled_standards, make_reference_spectra
    from napari_slads_eds.specimen import SimulatedSpecimen

    class JobCtx:
        def progress(self, *a, **k):
            pass

    st = bundled_standards()
    refs = make_reference_spectra([st["Si"], st["Fe"]], n_per_phase=12, seed=0)
    rep = train_classifier(JobCtx(), refs, tmp_path / "clf", kind="poisson")
    assert rep["kind"] == "poisson" and rep["misclassification"] == 0
    clf = load_classifier(rep["path"])
    pm = np.ones((16, 16), np.int16)
    pm[:, 8:] = 2
    spec = SimulatedSpecimen(pm, make_reference_spectra([st["Si"], st["Fe"]], n_per_phase=6, seed=9),
                             ill_fraction=0.1, seed=1)
    pos = np.stack(np.divmod(np.arange(256), 16), axis=1)
    lab = clf.predict(spec.measure(pos))
    assert np.array_equal(lab, spec.labels.reshape(-1))
    with pytest.raises(InputError, match="kind"):
        train_classifier(JobCtx(), refs, tmp_path / "x", kind="svm")


def test_bad_models_and_training_input_are_refused(tmp_path):
    clf = _two_phase_model()
    d = clf.save(tmp_path / "clf")
    raw = (d / "poisson_model.npz").read_bytes()
    (d / "poisson_model.npz").write_bytes(raw[: len(raw) // 2])   # truncated zip
    with pytest.raises(InputError, match="poisson_model.npz"):
        load_classifier(d)
    with pytest.raises(InputError, match="temperature"):
        _two_phase_model(temperature=float("inf"))
    refs = ReferenceSpectra(np.random.default_rng(0).poisson(5, size=(2, 6, 8)).astype(float) + 1, AX8, ("a", "b"))
    with pytest.raises(InputError, match="bin_keV"):
        PoissonPhaseClassifier.train(refs, bin_keV=float("nan"))
    with pytest.raises(InputError, match="1..2"):
        PoissonPhaseClassifier.train(refs, bin_keV=1.0, calibration=(np.ones((3, 8)), [1, 2, 7]))
    with pytest.raises(InputError, match="labels"):
        PoissonPhaseClassifier.train(refs, bin_keV=1.0, calibration=(np.ones((3, 8)), [1, 2]))
