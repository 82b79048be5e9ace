"""End to end through the command line, on a small grid."""

import json
import sys

import numpy as np
import pytest

from napari_slads_eds.cli import main
from napari_slads_eds.pipeline import RESULT_KEYS


@pytest.mark.engine
@pytest.mark.slow
def test_run_end_to_end_small_grid(tmp_path, sample_dir, capsys):
    out = tmp_path / "out"
    rc = main(["run", "--image", str(sample_dir / "sem_nanoporous_gold_inlens.png"), "--phases", "2",
               "--size", "40", "--downsample", "4", "--fraction", "0.2", "--epochs", "3", "--seed", "1",
               "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "TD SLADS" in printed and "TD random" in printed
    res = json.loads((out / "result.json").read_text())
    for k in RESULT_KEYS:
        assert k in res, k
    assert res["grid"] == [40, 40] and res["phases"] == 2
    assert res["sampling_fraction"] == pytest.approx(0.2, abs=1 / 1600)
    assert res["td_curve"][0][0] == pytest.approx(0.01, abs=1 / 1600)
    assert res["td_curve"][-1] == [res["sampling_fraction"], res["td"]]
    assert res["td"] < res["td_random"]
    assert res["misclassification"] <= 0.01
    assert res["c"] in (2, 4, 8, 16, 32)
    # never trained on the test region
    test = res["source"]["test_region"]
    for r, c, s in res["source"]["train_regions"]:
        assert r >= test[0] + test[2] or c >= test[1] + test[2] or r + s <= test[0] or c + s <= test[1]
    for f in ("reconstruction.tif", "reconstruction.png", "mask.png", "td_curve.png", "run.npz",
              "models/erd_model.npz", "models/classifier/cnn.keras"):
        assert (out / f).is_file(), f
    from napari_slads_eds import load_run

    run = load_run(out)
    assert run["mask"].sum() == res["n_measured"]
    assert run["reconstruction"].shape == (40, 40)
    import imageio.v3 as iio

    png = iio.imread(out / "mask.png")            # viewing copy: 40 px grid -> 12x12 squares
    assert png.shape == (480, 480)
    np.testing.assert_array_equal(png[::12, ::12] > 0, run["mask"])
    assert np.mean(run["reconstruction"] != run["ground_truth"]) == pytest.approx(res["td"])
    assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("args,message", [
    (["--image", "{tmp}/notanimage.png", "--phases", "2"], "not a readable image"),
    (["--image", "{tmp}/constant.png", "--phases", "2"], "constant"),
    (["--image", "{sample}/sem_nanoporous_gold_inlens.png", "--phases", "2", "--size", "600"], "fewer than two"),
    (["--image", "{sample}/sem_nanoporous_gold_inlens.png", "--phases", "2", "--fraction", "1.5"], "fraction"),
    (["--image", "{sample}/sem_nanoporous_gold_inlens.png", "--phases", "7"], "no default reference spectra"),
])
def test_run_bad_input_gives_clear_error(tmp_path, sample_dir, capsys, args, message):
    import imageio.v3 as iio

    (tmp_path / "notanimage.png").write_text("hello")
    iio.imwrite(tmp_path / "constant.png", np.full((300, 300), 77, np.uint8))
    args = [a.format(tmp=tmp_path, sample=sample_dir) for a in args]
    rc = main(["run", *args, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_run_refuses_to_overwrite_a_run(tmp_path, sample_dir, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "journal.h5").write_bytes(b"measurements")
    rc = main(["run", "--image", str(sample_dir / "sem_nanoporous_gold_inlens.png"), "--phases", "2",
               "--out", str(out), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "slads-eds resume" in err
    assert (out / "journal.h5").read_bytes() == b"measurements"
