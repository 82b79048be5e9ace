"""The napari reader in a real viewer: exported runs, spectrum images and spectra open as
layers through the plugin (no TensorFlow in this process)."""

import sys

import numpy as np
import pytest

from napari_slads_eds.export import export_run
from napari_slads_eds.spectra import EnergyAxis, bundled_standards

pytestmark = pytest.mark.gui


def test_viewer_opens_runs_maps_and_spectra_with_the_plugin(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    H, W = 10, 12
    pos = np.array([[0, 0], [3, 4], [9, 11]])
    rec = np.ones((H, W), np.int16)
    rec[:, 6:] = 2
    mask = np.zeros((H, W), bool)
    mask[pos[:, 0], pos[:, 1]] = True
    result = {"grid": [H, W], "phases": 2, "td": 0.1, "td_curve": [[0.01, 0.2], [0.025, 0.1]],
              "positions": pos, "labels": np.array([1, 1, 2], np.int16), "reconstruction": rec,
              "mask": mask, "ground_truth": rec}
    axis = EnergyAxis(0.0, 0.02, 64)
    f = export_run(result, tmp_path / "run.hspy", spectra=np.ones((3, 64), np.float32), axis=axis)
    layers = viewer.open(str(f), plugin="napari-slads-eds")
    assert [type(layer).__name__ for layer in layers] == ["Labels", "Labels", "Image", "Points"]
    np.testing.assert_array_equal(layers[0].data, rec)
    assert layers[3].metadata["spectra"].shape == (3, 64)

    counts = np.random.default_rng(0).poisson(1.0, size=(6, 7, 32)).astype(np.uint8)
    m = tmp_path / "map.npz"
    np.savez(m, counts=counts, energy_offset_keV=0.0, energy_scale_keV=0.01)
    img, cube = viewer.open(str(m), plugin="napari-slads-eds")
    np.testing.assert_allclose(img.data, counts.sum(2))
    assert img.metadata["spectra"].shape == (6, 7, 32)
    assert cube.data.shape == (32, 6, 7) and tuple(cube.axis_labels) == ("energy", "y", "x")

    spec = viewer.open(str(bundled_standards()["Si"]), plugin="napari-slads-eds")
    assert type(spec[0]).__name__ == "Shapes"
    assert "tensorflow" not in sys.modules


def test_plain_images_are_left_to_napari(make_napari_viewer, tmp_path):
    from skimage.io import imsave

    viewer = make_napari_viewer()
    rgb = np.zeros((40, 41, 3), np.uint8)
    rgb[..., 0] = 200                      # a red image: the plugin used to grey it
    png = tmp_path / "photo.png"
    imsave(png, rgb, check_contrast=False)
    # plugin=None: napari picks among the readers that claim the file, as File > Open does
    # (with two claimants, napari's and ours, it would have to ask)
    (layer,) = viewer.open(str(png), plugin=None)
    assert layer.rgb and layer.data.shape == (40, 41, 3)
    assert layer.metadata.get("kind") != "micrograph"        # napari's reader, not ours
    with pytest.raises(ValueError, match="not a compatible reader"):
        viewer.open(str(png), plugin="napari-slads-eds")
    # EDS files still open through the plugin without naming it
    (spec,) = viewer.open(str(bundled_standards()["Si"]), plugin=None)
    assert spec.metadata["kind"] == "eds_spectrum"
