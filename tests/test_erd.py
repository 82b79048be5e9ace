import numpy as np
import pytest

from napari_slads_eds import InputError, LinearERD, Sampler, reconstruct
from napari_slads_eds.erd import train_erd
from napari_slads_eds.erd_database import (TrainingDatabase, build_training_database, rd_approximation,
                                           rd_approximation_bruteforce)


def _measured(truth, frac, seed=0):
    H, W = truth.shape
    rng = np.random.default_rng(seed)
    flat = rng.choice(H * W, int(frac * H * W), replace=False)
    s = Sampler((H, W), 2, None, truth=truth)
    s.update(np.stack(np.divmod(flat, W), 1), truth.reshape(-1)[flat])
    return s, flat


@pytest.mark.parametrize("c", [2.0, 4.0, 8.0, 32.0])
def test_rd_approximation_equals_direct_sum(blobs, c):
    s, _ = _measured(blobs, 0.05)
    err = s.reconstruction != blobs
    un = np.flatnonzero(~s.mask.ravel())[::7]
    d1 = s.nearest_d2(un)
    fast = rd_approximation(err, un, d1, c)
    slow = rd_approximation_bruteforce(err, un, d1, c)
    assert np.allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert fast.max() > 0


def test_rd_approximation_tracks_true_rd():
    """Eqs. 7-9 against brute-force RD (measure s, reconstruct, count the improvement)."""
    from scipy.stats import pearsonr
    from skimage.data import binary_blobs

    truth = binary_blobs(32, blob_size_fraction=0.3, rng=3).astype(np.int16) + 1
    s, flat = _measured(truth, 0.1)
    rec = s.reconstruction
    d0 = np.count_nonzero(rec != truth)
    pos = np.stack(np.divmod(flat, 32), 1)
    un = np.flatnonzero(~s.mask.ravel())
    true_rd = []
    for p in un:
        pp = np.vstack([pos, divmod(int(p), 32)])
        rr = reconstruct((32, 32), pp, truth.reshape(-1)[np.append(flat, p)], 2)
        true_rd.append(d0 - np.count_nonzero(rr != truth))
    approx = rd_approximation(rec != truth, un, s.nearest_d2(un), 8.0)
    r, _ = pearsonr(approx, true_rd)
    assert r > 0.3
    # the pixels with the largest approximate RD improve the reconstruction on average
    top = np.argsort(-approx)[:30]
    assert np.mean(np.asarray(true_rd)[top]) > np.mean(true_rd) + 0.5


def test_database_and_linear_model_roundtrip(tmp_path, blobs):
    db = build_training_database([blobs], 2, c_values=(2.0, 8.0), densities=(0.02, 0.2, 0.6),
                                 max_rows_per_mask=500, seed=1)
    assert db.features.shape[1] == 6 and db.rd.shape == (len(db.features), 2)
    assert set(np.unique(db.density)) == {0.02, 0.2, 0.6}
    db.save(tmp_path / "db.npz")
    db2 = TrainingDatabase.load(tmp_path / "db.npz")
    assert np.array_equal(db2.rd, db.rd)
    m = LinearERD.fit(db.features, db.rd[:, 1], 8.0)
    pred = m.predict(db.features)
    assert np.corrcoef(pred, db.rd[:, 1])[0, 1] > 0.5
    m.save(tmp_path / "erd.npz")
    m2 = LinearERD.load(tmp_path / "erd.npz")
    assert m2.c == 8.0 and np.array_equal(m2.predict(db.features), pred)
    # bit-identical however many rows are evaluated together
    assert np.array_equal(m.predict(db.features[5:6]), pred[5:6])


def test_corrupt_model_files(tmp_path):
    p = tmp_path / "erd.npz"
    p.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="erd.npz"):
        LinearERD.load(p)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(InputError, match="missing entries"):
        LinearERD.load(tmp_path / "other.npz")


def test_train_erd_chooses_c_by_td_area(blobs):
    from skimage.data import binary_blobs

    imgs = [binary_blobs(40, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (1, 2)]
    seen = []
    model, rep = train_erd(imgs, 2, c_values=(2.0, 16.0), densities=(0.02, 0.1, 0.4),
                           c_search_fraction=0.15, progress=seen.append)
    assert rep["c"] in (2.0, 16.0) and model.c == rep["c"]
    assert rep["c_search"][rep["c"]] == min(rep["c_search"].values())
    assert any(m["stage"] == "c-search" for m in seen) and any(m["stage"] == "erd-database" for m in seen)
    with pytest.raises(InputError):
        train_erd([np.full((10, 10), 5)], 2)


def test_mlp_erd_is_deterministic_and_roundtrips(tmp_path, blobs):
    from napari_slads_eds.erd_models import MLPERD, load_erd_model

    rng = np.random.default_rng(0)
    w = [rng.normal(size=(6, 8)), rng.normal(size=8), rng.normal(size=(8, 4)), rng.normal(size=4),
         rng.normal(size=(4, 1)), rng.normal(size=1)]
    m = MLPERD(w, np.zeros(6), np.ones(6), 2.0, 4.0)
    f = rng.normal(size=(300, 6))
    h = np.maximum(f @ w[0] + w[1], 0)
    h = np.maximum(h @ w[2] + w[3], 0)
    ref = (h @ w[4] + w[5])[:, 0] * 2.0
    out = m.predict(f)
    assert np.allclose(out, ref, rtol=1e-12)
    assert np.array_equal(m.predict(f[7:9]), out[7:9])       # bit-identical in any batch
    m.save(tmp_path / "mlp.npz")
    m2 = load_erd_model(tmp_path / "mlp.npz")
    assert isinstance(m2, MLPERD) and np.array_equal(m2.predict(f), out)
    with pytest.raises(InputError, match="do not chain"):
        MLPERD([np.ones((5, 3)), np.ones(3), np.ones((3, 1)), np.ones(1)], np.zeros(6), np.ones(6), 1.0, 2.0)


def test_sampler_with_mlp_local_equals_full(blobs):
    from napari_slads_eds.erd_models import MLPERD
    from napari_slads_eds.scan_orders import initial_positions

    rng = np.random.default_rng(1)
    db = build_training_database([blobs], 2, c_values=(8.0,), densities=(0.02, 0.2), seed=1)
    lin = LinearERD.fit(db.features, db.rd[:, 0], 8.0)
    w = [rng.normal(size=(6, 8)) * 0.3, rng.normal(size=8) * 0.1, rng.normal(size=(8, 1)), np.zeros(1)]
    mlp = MLPERD(w, lin.mean, lin.scale, 1.0, 8.0)
    picks = []
    for full in (False, True):
        s = Sampler(blobs.shape, 2, mlp, truth=blobs, full_recompute=full)
        init = initial_positions(blobs.shape, 0.02, "halton", 0)
        s.update(init, blobs[init[:, 0], init[:, 1]])
        sel = []
        for _ in range(150):
            p = s.select(1)
            s.update(p, blobs[p[:, 0], p[:, 1]])
            sel.append(p[0])
        picks.append(np.array(sel))
    assert np.array_equal(picks[0], picks[1])
