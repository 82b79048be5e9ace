import numpy as np
import pytest

from napari_slads_eds import InputError, LinearERD, Sampler, reconstruct
from napari_slads_eds.erd import (TrainingDatabase, build_training_database, rd_approximation,
                                  rd_approximation_bruteforce, train_erd)


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
