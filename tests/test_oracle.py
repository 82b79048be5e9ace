import numpy as np
import pytest

from napari_slads_eds import InputError, Sampler, reconstruct
from napari_slads_eds.erd_database import rd_approximation
from napari_slads_eds.metrics import total_distortion
from napari_slads_eds.oracle import oracle_td_curve, rd_map
from napari_slads_eds.scan_orders import halton_order


def test_rd_map_equals_rd_approximation(blobs):
    H, W = blobs.shape
    rng = np.random.default_rng(1)
    flat = rng.choice(H * W, 120, replace=False)
    s = Sampler((H, W), 2, None, truth=blobs)
    s.update(np.stack(np.divmod(flat, W), 1), blobs.reshape(-1)[flat])
    un = s.unmeasured()
    d1 = s.nearest_d2(np.arange(H * W)).reshape(H, W)
    m = rd_map(s.error_image(), d1, s.mask, 4.0)
    ref = rd_approximation(s.error_image(), un, d1.reshape(-1)[un], 4.0)
    assert np.allclose(m.reshape(-1)[un], ref, rtol=1e-12, atol=1e-12)
    assert np.all(np.isneginf(m[s.mask])) and ref.max() > 0


@pytest.mark.parametrize("batch,c", [(1, 4.0), (3, 2.0), (1, 16.0)])
def test_local_rd_updates_equal_full_recompute(blobs, batch, c):
    a = oracle_td_curve(blobs, 2, c=c, stop_fraction=0.2, batch=batch)
    b = oracle_td_curve(blobs, 2, c=c, stop_fraction=0.2, batch=batch, full_recompute=True)
    assert len(a[1]) > 100 // batch
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_oracle_td_is_the_true_td_and_beats_halton(blobs):
    H, W = blobs.shape
    fr, td = oracle_td_curve(blobs, 2, c=4.0, stop_fraction=0.15)
    n = int(round(0.15 * H * W))
    assert fr[-1] == pytest.approx(n / (H * W))
    p = halton_order(blobs.shape, n, 0)
    td_halton = total_distortion(blobs, reconstruct(blobs.shape, p, blobs[p[:, 0], p[:, 1]], 2))
    assert td[-1] < 0.5 * td_halton
    assert np.all(np.diff(fr) > 0)


def test_oracle_measures_ill_spectra_as_given(blobs):
    lab = blobs.copy()
    lab[::5, ::5] = 0
    fr, td = oracle_td_curve(blobs, 2, c=4.0, stop_fraction=0.1, measured_labels=lab)
    assert 0 <= td[-1] < td[0]


@pytest.mark.parametrize("kw,msg", [({"c": 0.0}, "c values"), ({"stop_fraction": 1.5}, "stop fraction"),
                                    ({"batch": 0}, "batch"), ({"measured_labels": np.ones((3, 3))}, "shape")])
def test_oracle_bad_input(blobs, kw, msg):
    args = {"c": 4.0, "stop_fraction": 0.1, **kw}
    with pytest.raises(InputError, match=msg):
        oracle_td_curve(blobs, 2, **args)
