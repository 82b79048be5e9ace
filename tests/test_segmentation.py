
import numpy as np
import pytest

from napari_slads_eds import InputError, majority_downsample, read_micrograph, segment_phases, split_regions
from napari_slads_eds.segmentation import Regions, to_grey


def test_bundled_micrographs_segment_into_expected_phase_fractions(sample_dir):
    gold = read_micrograph(sample_dir / "sem_nanoporous_gold_inlens.png")
    assert gold.shape == (691, 1024)
    lab = segment_phases(gold, 2)
    frac = [np.mean(lab == l) for l in (1, 2)]
    assert lab.dtype == np.int16 and set(np.unique(lab)) == {1, 2}
    assert 0.2 < frac[0] < 0.35          # pores about 27 % (PROVENANCE.md)
    glass = read_micrograph(sample_dir / "sem_glass_sand_bubbles_bse.png")
    lab3 = segment_phases(glass, 3)
    f3 = [np.mean(lab3 == l) for l in (1, 2, 3)]
    assert 0.15 < f3[0] < 0.25 and 0.15 < f3[1] < 0.27 and 0.5 < f3[2] < 0.65


def test_labels_ordered_by_brightness():
    img = np.zeros((30, 30))
    img[:, 10:20] = 100
    img[:, 20:] = 200
    lab = segment_phases(img, 3, denoise_size=0, label_smoothing=0)
    assert lab[0, 0] == 1 and lab[0, 15] == 2 and lab[0, 25] == 3


def test_16bit_and_rgb_inputs(tmp_path):
    import imageio.v3 as iio

    base = np.zeros((20, 20), dtype=np.uint16)
    base[:, 10:] = 40000
    iio.imwrite(tmp_path / "a.tif", base)
    g = read_micrograph(tmp_path / "a.tif")
    assert g.max() == 40000
    rgb = np.stack([base.astype(np.uint8) * 0 + (base > 0) * 200] * 3, -1).astype(np.uint8)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    with pytest.warns(UserWarning, match="RGB image converted to grey"):
        g = read_micrograph(tmp_path / "rgb.png")
    assert g.ndim == 2 and segment_phases(g, 2)[0, 15] == 2
    rgba = np.concatenate([rgb, np.full((20, 20, 1), 255, np.uint8)], -1)
    with pytest.warns(UserWarning, match="RGBA"):
        assert to_grey(rgba).shape == (20, 20)


def test_data_bar_crop(sample_dir):
    g = read_micrograph(sample_dir / "sem_nanoporous_gold_inlens.png", crop_bottom=91)
    assert g.shape == (600, 1024)
    with pytest.raises(InputError, match="data-bar"):
        read_micrograph(sample_dir / "sem_nanoporous_gold_inlens.png", crop_bottom=5000)


@pytest.mark.parametrize("img,phases,match", [
    (np.full((10, 10), 7.0), 2, "constant"),
    (np.repeat([[0.0, 1.0]], 10, axis=0), 3, "only 2 grey levels"),
    (np.zeros((0, 5)), 2, "empty"),
    (np.full((5, 5), np.nan), 2, "NaN"),
    (np.zeros((4, 4, 4, 4)), 2, "2-D"),
])
def test_bad_images(img, phases, match):
    with pytest.raises(InputError, match=match):
        segment_phases(img, phases)


def test_not_an_image_file(tmp_path):
    p = tmp_path / "x.png"
    p.write_text("this is not a PNG")
    with pytest.raises(InputError, match="not a readable image"):
        read_micrograph(p)
    with pytest.raises(InputError, match="not found"):
        read_micrograph(tmp_path / "missing.tif")


def test_majority_downsample():
    lab = np.array([[1, 1, 2, 2],
                    [1, 2, 2, 2],
                    [1, 2, 1, 1],
                    [2, 1, 1, 2]])
    assert majority_downsample(lab, 2).tolist() == [[1, 2], [1, 1]]   # 2-2 tie -> lowest label
    assert majority_downsample(lab, 1).tolist() == lab.tolist()
    with pytest.raises(InputError):
        majority_downsample(lab, 0)


def test_regions_do_not_overlap():
    reg = split_regions((691, 1024), 128, factor=2, max_train=4)
    tr, tc, ts = reg.test
    assert ts == 256 and len(reg.train) == 4
    for r, c, s in reg.train:
        assert s == 256
        assert r >= tr + ts or c >= tc + ts or r + s <= tr or c + s <= tc
    img = np.arange(691 * 1024).reshape(691, 1024)
    assert Regions.cut(img, reg.test).shape == (256, 256)
    with pytest.raises(InputError, match="fewer than two"):
        split_regions((300, 300), 128, factor=2)
