import numpy as np
import pytest

from napari_slads_eds import InputError, Sampler, initial_positions, reconstruct, total_distortion
from napari_slads_eds.erd_database import build_training_database
from napari_slads_eds.erd_models import LinearERD
from napari_slads_eds.scan_orders import halton_order, random_order


@pytest.fixture(scope="module")
def erd_model():
    from skimage.data import binary_blobs

    imgs = [binary_blobs(40, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (11, 12)]
    db = build_training_database(imgs, 2, c_values=(4.0,), seed=0)
    return LinearERD.fit(db.features, db.rd[:, 0], 4.0)


def _run(truth, model, *, full, batch=1, mode="top", ill_every=0, stop=0.3, seed=0):
    H, W = truth.shape
    s = Sampler((H, W), 2, model, truth=truth, full_recompute=full)
    init = initial_positions((H, W), 0.01, "halton", seed)
    s.update(init, truth[init[:, 0], init[:, 1]])
    picks = []
    step = 0
    while s.fraction < stop:
        p = s.select(batch, mode)
        lab = truth[p[:, 0], p[:, 1]].copy()
        if ill_every:
            lab[(np.arange(len(lab)) + step) % ill_every == 0] = 0   # some ill-spectra
        step += len(lab)
        s.update(p, lab)
        picks.append(p)
    return s, np.concatenate(picks)


@pytest.mark.parametrize("batch,mode,ill", [(1, "top", 0), (1, "top", 7), (5, "top", 0), (4, "pseudo", 5)])
def test_local_updates_select_exactly_as_full_recompute(blobs, erd_model, batch, mode, ill):
    s_local, p_local = _run(blobs, erd_model, full=False, batch=batch, mode=mode, ill_every=ill)
    s_full, p_full = _run(blobs, erd_model, full=True, batch=batch, mode=mode, ill_every=ill)
    assert len(p_local) > 500
    assert np.array_equal(p_local, p_full)
    assert np.array_equal(s_local.reconstruction, s_full.reconstruction)
    assert np.array_equal(s_local.erd_map, s_full.erd_map, equal_nan=True)
    assert s_local.td == s_full.td


def test_state_matches_independent_reconstruction_and_td(blobs, erd_model):
    s, _ = _run(blobs, erd_model, full=False, ill_every=9)
    pos = s.positions
    lab = s.measured_labels[pos[:, 0], pos[:, 1]]
    rec = reconstruct(blobs.shape, pos, lab, 2)
    assert np.array_equal(rec, s.reconstruction)
    assert s.td == pytest.approx(total_distortion(blobs, rec))
    assert np.array_equal(s.mask, s.measured_labels >= 0)


def test_slads_beats_random_on_blobs(blobs, erd_model):
    s, _ = _run(blobs, erd_model, full=False, stop=0.2)
    n = s.n_measured
    order = random_order(blobs.shape, 3)[:n]
    td_random = total_distortion(blobs, reconstruct(blobs.shape, order, blobs[order[:, 0], order[:, 1]], 2))
    assert s.td < 0.75 * td_random


def test_pseudo_selection_keeps_picks_in_flight(blobs, erd_model):
    s, _ = _run(blobs, erd_model, full=False, stop=0.05)
    n0, mask0 = s.n_measured, s.mask
    p = s.select(8, "pseudo")
    assert len(np.unique(p[:, 0] * 100 + p[:, 1])) == 8
    assert s.n_measured == n0 and np.array_equal(s.mask, mask0) and s.n_pending == 8
    assert np.all(np.isnan(s.erd_map[p[:, 0], p[:, 1]]))
    q = s.select(8, "top")                      # in-flight pixels are never chosen again
    assert not set(map(tuple, q)) & set(map(tuple, p))
    s.update(p, blobs[p[:, 0], p[:, 1]])
    assert s.n_pending == 0 and s.n_measured == n0 + 8


def _overlapped(truth, model, full, ill_every=4, stop=0.3):
    """Choose batch i+1 while batch i is in flight, then measure batch i (some labels
    differ from the pseudo labels, some are ill-spectra)."""
    H, W = truth.shape
    s = Sampler((H, W), 2, model, truth=truth, full_recompute=full)
    init = initial_positions((H, W), 0.01, "random", 2)
    s.update(init, truth[init[:, 0], init[:, 1]])
    picks, in_flight, step = [], s.select(6, "pseudo"), 0
    while s.fraction < stop:
        nxt = s.select(6, "pseudo")
        lab = truth[in_flight[:, 0], in_flight[:, 1]].copy()
        lab[(np.arange(len(lab)) + step) % ill_every == 0] = 0
        step += 1
        s.update(in_flight, lab)
        picks.append(in_flight)
        in_flight = nxt
    s.update(in_flight, truth[in_flight[:, 0], in_flight[:, 1]])
    picks.append(in_flight)
    return s, np.concatenate(picks)


def test_overlapped_batches_local_equals_full_recompute(blobs, erd_model):
    a, pa = _overlapped(blobs, erd_model, full=False)
    b, pb = _overlapped(blobs, erd_model, full=True)
    assert len(pa) > 500
    assert np.array_equal(pa, pb)
    assert np.array_equal(a.reconstruction, b.reconstruction)
    assert np.array_equal(a.erd_map, b.erd_map, equal_nan=True)
    assert a.td == b.td
    # and the state equals an independent reconstruction of what was measured
    pos = a.positions
    lab = a.measured_labels[pos[:, 0], pos[:, 1]]
    assert a.n_pending == 0 and (lab == 0).sum() > 50
    assert np.array_equal(reconstruct(blobs.shape, pos, lab, 2), a.reconstruction)


def test_runs_to_100_percent_without_failing(erd_model):
    truth = np.ones((8, 8), dtype=np.int16)
    truth[:, 4:] = 2
    s = Sampler((8, 8), 2, erd_model, truth=truth)
    while True:
        p = s.select(7)
        if len(p) == 0:
            break
        s.update(p, truth[p[:, 0], p[:, 1]])
    assert s.fraction == 1.0 and s.td == 0.0
    assert np.all(np.isnan(s.erd_map))
    assert s.select(3).shape == (0, 2)


def test_select_without_model_and_bad_updates():
    s = Sampler((4, 4), 2, None)
    with pytest.raises(InputError, match="ERD model"):
        s.select()
    s.update([[0, 0]], [1])
    with pytest.raises(InputError, match="unmeasured"):
        s.update([[0, 0]], [2])
    with pytest.raises(InputError, match="0..2"):
        s.update([[1, 1]], [5])
    with pytest.raises(InputError, match="truth"):
        Sampler((4, 4), 2, None, truth=np.ones((3, 3), dtype=int))


def test_initial_patterns():
    h = halton_order((50, 50), 25, seed=1)
    assert h.shape == (25, 2) and len(np.unique(h[:, 0] * 50 + h[:, 1])) == 25
    r = initial_positions((50, 50), 0.01, "random", seed=1)
    assert r.shape == (25, 2)
    assert np.array_equal(initial_positions((50, 50), 0.01, "halton", 4), initial_positions((50, 50), 0.01, "halton", 4))
    full = halton_order((6, 6), 36, seed=0)
    assert len(np.unique(full[:, 0] * 6 + full[:, 1])) == 36
    with pytest.raises(InputError):
        initial_positions((10, 10), 0.0)
    with pytest.raises(InputError):
        initial_positions((10, 10), 0.1, "sobol-ish")


@pytest.mark.parametrize("full", [False, True])
def test_cancel_in_flight_restores_the_state(blobs, erd_model, full):
    s, _ = _run(blobs, erd_model, full=full, stop=0.05)
    before = (s.reconstruction, s.erd_map, s.td, s.n_measured)
    p = s.select(6, "pseudo")
    s.cancel(p)
    assert s.n_pending == 0
    assert np.array_equal(before[0], s.reconstruction)
    assert np.array_equal(before[1], s.erd_map, equal_nan=True)
    assert before[2:] == (s.td, s.n_measured)
    assert np.array_equal(s.select(6, "pseudo"), p)      # the same choice again
    with pytest.raises(InputError, match="in flight"):
        s.cancel([[0, 0]] if not s.mask[0, 0] else [[1, 1]])


@pytest.fixture(scope="module")
def rich_erd_model():
    """The linear ERD on the 11 rich features (issue 12)."""
    from skimage.data import binary_blobs

    imgs = [binary_blobs(40, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (11, 12)]
    db = build_training_database(imgs, 2, c_values=(4.0,), seed=0, n_features=11)
    return LinearERD.fit(db.features, db.rd[:, 0], 4.0)


@pytest.mark.parametrize("batch,mode,ill", [(1, "top", 0), (1, "top", 7), (5, "top", 0), (4, "pseudo", 5)])
def test_rich_features_local_updates_exact(blobs, rich_erd_model, batch, mode, ill):
    """The rich features read only a pixel's neighbour list and reconstruction, so the
    local updates stay exact with them."""
    assert rich_erd_model.n_features == 11
    s_local, p_local = _run(blobs, rich_erd_model, full=False, batch=batch, mode=mode, ill_every=ill)
    s_full, p_full = _run(blobs, rich_erd_model, full=True, batch=batch, mode=mode, ill_every=ill)
    assert len(p_local) > 500
    assert np.array_equal(p_local, p_full)
    assert np.array_equal(s_local.reconstruction, s_full.reconstruction)
    assert np.array_equal(s_local.erd_map, s_full.erd_map, equal_nan=True)


def test_rich_overlapped_batches_local_equals_full_recompute(blobs, rich_erd_model):
    a, pa = _overlapped(blobs, rich_erd_model, full=False)
    b, pb = _overlapped(blobs, rich_erd_model, full=True)
    assert np.array_equal(pa, pb)
    assert np.array_equal(a.erd_map, b.erd_map, equal_nan=True)


def test_update_box_holds_every_change(blobs, erd_model):
    """Sampler.update_box bounds every pixel whose reconstruction or ERD an update changes."""
    s, _ = _run(blobs, erd_model, full=False, stop=0.05)
    for _ in range(30):
        p = s.select(1)
        f = int(p[0, 0] * blobs.shape[1] + p[0, 1])
        rl, rh, cl, ch = s.update_box([f])
        rec0, erd0 = s.reconstruction, s.erd_map
        s.update(p, blobs[p[:, 0], p[:, 1]])
        changed = (rec0 != s.reconstruction) | ~np.isclose(erd0, s.erd_map, equal_nan=True)
        inside = np.zeros_like(changed)
        inside[rl:rh, cl:ch] = True
        assert changed.any() and not (changed & ~inside).any()
