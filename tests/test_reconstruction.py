import numpy as np
import pytest

from napari_slads_eds import InputError, reconstruct
from napari_slads_eds.reconstruction import BIG_D2, knn_exact, weighted_mode


def test_measured_pixels_keep_their_label():
    pos = np.array([[0, 0], [0, 4], [4, 0], [4, 4], [2, 2]])
    lab = np.array([1, 1, 1, 1, 2])
    rec = reconstruct((5, 5), pos, lab, 2, k=4)
    assert rec[2, 2] == 2          # outvoted by its 4 neighbours, but measured
    assert rec[0, 0] == 1


def test_weighted_mode_by_inverse_square_distance():
    # pixel (0, 2): label 2 at distance 1 (weight 1) vs two label-1 points at distance 2
    # (weights 1/4 + 1/4 = 1/2): label 2 wins
    pos = np.array([[0, 0], [0, 3], [0, 4]])
    lab = np.array([1, 2, 1])
    rec = reconstruct((1, 5), pos, lab, 2, k=3)
    assert rec[0, 2] == 2
    # pixel (0, 1): label 1 at d=1 (1), label 2 at d=2 (1/4), label 1 at d=3: label 1
    assert rec[0, 1] == 1


def test_tie_goes_to_lowest_label():
    pos = np.array([[0, 0], [0, 2]])
    rec = reconstruct((1, 3), pos, np.array([2, 1]), 2, k=2)
    assert rec[0, 1] == 1
    rec = reconstruct((1, 3), pos, np.array([1, 2]), 2, k=2)
    assert rec[0, 1] == 1


def test_k_larger_than_measured_count_uses_all():
    pos = np.array([[0, 0], [3, 3]])
    rec = reconstruct((4, 4), pos, np.array([1, 2]), 2, k=10)
    assert rec[0, 1] == 1 and rec[3, 2] == 2
    assert set(np.unique(rec)) == {1, 2}


def test_ill_spectra_do_not_vote():
    pos = np.array([[0, 0], [0, 1], [0, 4]])
    rec = reconstruct((1, 5), pos, np.array([0, 0, 2]), 2, k=3)
    # the two ill-spectra next to (0,2) are ignored; every pixel is reconstructed as phase 2
    assert np.all(rec == 2)


def test_nothing_valid_measured_gives_zero():
    rec = reconstruct((3, 3), np.array([[1, 1]]), np.array([0]), 2)
    assert np.all(rec == 0)


def test_knn_ties_ordered_by_point_index():
    pts = np.array([[0, 2], [2, 0], [0, 0], [2, 2]])   # all at d2 = 2 from (1, 1)
    idx, d2 = knn_exact(pts, np.array([[1, 1]]), 3)
    assert idx.tolist() == [[0, 1, 2]]
    assert d2.tolist() == [[2, 2, 2]]
    idx, d2 = knn_exact(pts[:2], np.array([[1, 1]]), 3)
    assert idx[0, 2] == -1 and d2[0, 2] == BIG_D2


def test_knn_exact_against_brute_force():
    rng = np.random.default_rng(1)
    # many equal distances on a small integer grid
    pts = np.unique(rng.integers(0, 12, size=(60, 2)), axis=0)
    pts = pts[rng.permutation(len(pts))]
    q = np.stack(np.divmod(np.arange(144), 12), 1)
    idx, d2 = knn_exact(pts, q, 10)
    for i, p in enumerate(q):
        dd = ((pts - p) ** 2).sum(1)
        o = np.lexsort((np.arange(len(pts)), dd))[:10]
        assert idx[i].tolist() == o.tolist()
        assert d2[i].tolist() == dd[o].tolist()


def test_weighted_mode_missing_neighbours():
    lab = np.array([[1, -1], [-1, -1]])
    d2 = np.array([[4, BIG_D2], [BIG_D2, BIG_D2]])
    assert weighted_mode(lab, d2, 2).tolist() == [1, 0]


@pytest.mark.parametrize("bad,match", [
    (dict(positions=np.array([[0, 0], [0, 0]]), labels=np.array([1, 1])), "more than once"),
    (dict(positions=np.array([[0, 9]]), labels=np.array([1])), "outside"),
    (dict(positions=np.array([[0, 0]]), labels=np.array([3])), "0..2"),
    (dict(positions=np.array([[0, 0]]), labels=np.array([1, 2])), "labels"),
])
def test_bad_input(bad, match):
    with pytest.raises(InputError, match=match):
        reconstruct((3, 3), bad["positions"], bad["labels"], 2)
