"""RunReplay: the states of a finished run after its first k measurements (numpy, dask)."""

import numpy as np
import pytest

from napari_slads_eds._validation import InputError
from napari_slads_eds._widgets.replay_view import RunReplay
from napari_slads_eds.erd_models import LinearERD
from napari_slads_eds.reconstruction import reconstruct
from napari_slads_eds.sampling import Sampler
from napari_slads_eds.scan_orders import halton_order, random_order


def _run(shape=(24, 20), n=90, seed=0):
    rng = np.random.default_rng(seed)
    pos = random_order(shape, seed)[:n]
    lab = rng.integers(0, 3, n).astype(np.int16)          # 0: ill-spectra, which do not vote
    model = LinearERD(rng.normal(size=28), np.zeros(6), np.ones(6), c=4.0)
    return pos, lab, model


def test_masks_are_the_first_k_positions_of_each_scan():
    pos, lab, model = _run()
    rep = RunReplay((24, 20), pos, lab, 2, model, seed=5)
    assert rep.steps == 91
    for k in (0, 1, 13, 90):
        m = rep.mask(k)
        assert m.dtype == np.uint8 and m.sum() == k
        assert np.all(m[pos[:k, 0], pos[:k, 1]] == 1)
        h = rep.mask(k, "Halton")
        expected = np.zeros((24, 20), np.uint8)
        hp = halton_order((24, 20), 90, 6)[:k]            # the run's comparison scan: seed + 1
        expected[hp[:, 0], hp[:, 1]] = 1
        np.testing.assert_array_equal(h, expected)
        rp = random_order((24, 20), 6)[:k]
        assert rep.mask(k, "random")[rp[:, 0], rp[:, 1]].all() and rep.mask(k, "random").sum() == k


def test_reconstruction_and_erd_at_step_k_are_those_of_the_first_k_measurements():
    pos, lab, model = _run()
    rep = RunReplay((24, 20), pos, lab, 2, model)
    for k in (0, 5, 47, 90):
        np.testing.assert_array_equal(rep.reconstruction(k), reconstruct((24, 20), pos[:k], lab[:k], 2)
                                      if k else np.zeros((24, 20), np.int16))
        e = rep.erd(k)
        assert e.dtype == np.float32 and e.min() >= 0
        if k:
            s = Sampler((24, 20), 2, model)
            s.update(pos[:k], lab[:k])
            np.testing.assert_allclose(e, np.maximum(np.nan_to_num(s.erd_map, nan=0.0), 0), rtol=1e-6)
            assert np.all(e[pos[:k, 0], pos[:k, 1]] == 0)
            sc = rep.erd_scaled(k)
            assert 0 <= sc.min() and sc.max() == 1 and np.array_equal(sc > 0, e > 0)
    n = rep.computed
    rep.erd(47)                                            # cached
    assert rep.computed == n


def test_lazy_stacks_compute_only_the_steps_asked_for():
    pos, lab, model = _run()
    rep = RunReplay((24, 20), pos, lab, 2, model, cache=4)
    stack = rep.lazy("reconstruction")
    assert stack.shape == (91, 24, 20) and stack.dtype == np.int16 and rep.computed == 0
    np.testing.assert_array_equal(np.asarray(stack[30]), rep.reconstruction(30))
    assert rep.computed == 1
    np.testing.assert_array_equal(np.asarray(rep.lazy("mask", "Halton")[12]), rep.mask(12, "Halton"))
    assert np.asarray(rep.lazy("erd", scaled=True)[60]).max() == 1
    assert rep.computed == 2


def test_bad_input_is_refused():
    pos, lab, model = _run()
    with pytest.raises(InputError, match="positions but"):
        RunReplay((24, 20), pos, lab[:-1], 2, model)
    with pytest.raises(InputError, match="twice"):
        RunReplay((24, 20), np.vstack([pos, pos[:1]]), np.append(lab, 1), 2, model)
    with pytest.raises(InputError):
        RunReplay((24, 20), pos + 100, lab, 2, model)
    rep = RunReplay((24, 20), pos, lab, 2, None)
    assert rep.erd(50).max() == 0                          # without a model: no ERD
    with pytest.raises(InputError, match=r"0\.\.90"):
        rep.mask(91)
