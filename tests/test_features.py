import math

import numpy as np

from napari_slads_eds.features import density_radius, poly2, slads_features
from napari_slads_eds.reconstruction import knn_exact


def _features_at(shape, pts, labels, recon, pix, k=3):
    H, W = shape
    q = np.stack(np.divmod(pix, W), 1)
    idx, d2 = knn_exact(pts, q, k)
    return slads_features(pix, idx, d2, labels, recon.reshape(-1), shape, density_radius(H * W))


def test_features_hand_checked():
    shape = (5, 5)
    pts = np.array([[2, 0], [2, 4], [0, 2]])
    labels = np.array([1, 2, 1])
    recon = np.ones(shape, dtype=np.int16)
    recon[:, 3:] = 2
    pix = np.array([2 * 5 + 2])             # the centre, reconstructed 1
    f = _features_at(shape, pts, labels, recon, pix)[0]
    # neighbours: (0,2) d2=4 label 1, (2,0) d2=4 label 1, (2,4) d2=4 label 2 -> equal weights
    assert math.isclose(f[0], 1 / 3)
    assert math.isclose(f[1], math.sqrt(1 / 3))
    assert f[2] == 2.0
    rc = density_radius(25)
    assert rc == 1.0
    assert math.isclose(f[3], (1 + math.pi) / 1)       # nobody within r_c = 1
    assert f[4] == 1.0      # recon[2,1]=1 != recon[2,3]=2
    assert f[5] == 0.0      # recon[1,2] == recon[3,2]


def test_gradient_features_match_numpy_gradient():
    rng = np.random.default_rng(0)
    recon = rng.integers(1, 4, size=(7, 9)).astype(np.int16)
    pts = np.array([[0, 0], [6, 8]])
    pix = np.arange(63)
    f = _features_at((7, 9), pts, np.array([1, 2]), recon, pix, k=2)
    gr, gc = np.gradient(recon.astype(float))
    assert np.array_equal(f[:, 4], (gc != 0).ravel().astype(float))
    assert np.array_equal(f[:, 5], (gr != 0).ravel().astype(float))


def test_poly2_terms():
    f = np.arange(1, 7, dtype=float)[None, :]
    p = poly2(f)[0]
    assert p.shape == (28,)
    assert p[0] == 1 and np.array_equal(p[1:7], f[0])
    assert sorted(p[7:].tolist()) == sorted(a * b for i, a in enumerate(f[0]) for b in f[0][i:])


def test_rich_features_against_direct_computation():
    """f6..f10 of rich_features, computed by hand from the k neighbours of each pixel."""
    from napari_slads_eds.features import rich_features

    rng = np.random.default_rng(4)
    shape, k, L = (20, 20), 6, 3
    H, W = shape
    flat = rng.choice(H * W, 40, replace=False)
    pts = np.stack(np.divmod(flat, W), 1)
    labels = rng.integers(1, L + 1, size=40)
    recon = rng.integers(1, L + 1, size=shape).astype(np.int16)
    pix = np.setdiff1d(np.arange(H * W), flat)
    idx, d2 = knn_exact(pts, np.stack(np.divmod(pix, W), 1), k)
    f = rich_features(pix, idx, d2, labels, recon.reshape(-1), shape, density_radius(H * W), L)
    base = slads_features(pix, idx, d2, labels, recon.reshape(-1), shape, density_radius(H * W))
    assert f.shape == (pix.size, 11)
    assert np.array_equal(f[:, :6], base)
    for n in range(0, pix.size, 37):
        lab, dd = labels[idx[n]], d2[n].astype(float)
        w = 1 / dd
        w /= w.sum()
        p = np.array([w[lab == lv].sum() for lv in range(1, L + 1)])
        assert math.isclose(f[n, 6], math.sqrt(dd.max()))
        assert math.isclose(f[n, 7], np.sqrt(dd).mean())
        assert math.isclose(f[n, 8], -sum(q * math.log(q) for q in p if q > 0), abs_tol=1e-12)
        assert f[n, 9] == len(set(lab.tolist()))
        other = np.flatnonzero(lab != recon.reshape(-1)[pix[n]])
        want = math.sqrt(dd[other[0]]) if other.size else 2 * math.sqrt(dd.max())
        assert math.isclose(f[n, 10], want)
    # entropy is zero exactly where every neighbour has the same label
    assert np.all((f[:, 8] < 1e-12) == (f[:, 9] == 1))


def test_poly2_of_rich_features_has_78_terms():
    f = np.random.default_rng(0).normal(size=(5, 11))
    p = poly2(f)
    assert p.shape == (5, 78)
    assert np.allclose(p[:, 12], f[:, 0] ** 2) and np.allclose(p[:, 13], f[:, 0] * f[:, 1])
