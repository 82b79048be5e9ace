"""Property-based tests (hypothesis) on random small grids."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_slads_eds import InputError, LinearERD, Sampler, reconstruct, segment_phases

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(img=arrays(np.uint8, st.tuples(st.integers(2, 14), st.integers(2, 14))), L=st.integers(1, 4))
def test_segmentation_labels_are_ordered_by_brightness(img, L):
    try:
        lab = segment_phases(img, L, denoise_size=0, label_smoothing=0)
    except InputError as exc:
        assert np.unique(img).size < L or "phases" in str(exc)
        return
    assert lab.shape == img.shape and lab.dtype == np.int16
    assert lab.min() >= 1 and lab.max() <= L
    order = np.argsort(img, axis=None, kind="stable")
    assert np.all(np.diff(lab.ravel()[order]) >= 0)          # brighter never gets a lower label


@st.composite
def measurements(draw):
    H, W = draw(st.integers(2, 10)), draw(st.integers(2, 10))
    L = draw(st.integers(1, 3))
    n = draw(st.integers(1, H * W))
    flat = draw(st.permutations(range(H * W)))[:n]
    labels = draw(st.lists(st.integers(0, L), min_size=n, max_size=n))
    k = draw(st.integers(1, 12))
    return (H, W), np.stack(np.divmod(np.array(flat), W), 1), np.array(labels), L, k


@SETTINGS
@given(m=measurements())
def test_reconstruction_keeps_measured_phases_and_fills_everything(m):
    shape, pos, lab, L, k = m
    rec = reconstruct(shape, pos, lab, L, k=k)
    assert rec.shape == shape and rec.min() >= 0 and rec.max() <= L
    valid = lab > 0
    assert np.array_equal(rec[pos[valid, 0], pos[valid, 1]], lab[valid])
    if valid.any():
        assert rec.min() >= 1            # every pixel gets a phase once one phase is measured
        assert set(np.unique(rec)) <= set(lab[valid])
    else:
        assert np.all(rec == 0)
    s = Sampler(shape, L, None, k=k)
    s.update(pos, lab)
    assert np.array_equal(s.reconstruction, rec)


@SETTINGS
@given(H=st.integers(3, 12), W=st.integers(3, 12), L=st.integers(1, 3), seed=st.integers(0, 10_000),
       batch=st.integers(1, 4), mode=st.sampled_from(["top", "pseudo"]), k=st.integers(1, 6))
def test_sampler_local_updates_equal_full_recompute(H, W, L, seed, batch, mode, k):
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, L + 1, size=(H, W))
    model = LinearERD(rng.normal(size=28), rng.normal(size=6), rng.uniform(0.5, 2, size=6), 4.0)
    runs = []
    for full in (False, True):
        s = Sampler((H, W), L, model, k=k, truth=truth, full_recompute=full)
        r = np.random.default_rng(seed)
        picks = []
        while s.n_measured < H * W:
            p = s.select(batch, mode)
            assert len(p) and not s.mask[p[:, 0], p[:, 1]].any()
            lab = truth[p[:, 0], p[:, 1]].copy()
            lab[r.random(len(lab)) < 0.15] = 0            # some ill-spectra
            s.update(p, lab)
            picks.append(p)
        runs.append((np.concatenate(picks), s.reconstruction, s.td))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert np.array_equal(runs[0][1], runs[1][1]) and runs[0][2] == runs[1][2]
    assert len(np.unique(runs[0][0][:, 0] * W + runs[0][0][:, 1])) == H * W
