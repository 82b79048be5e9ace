"""End to end through the command line, on a small grid."""

import json
import sys

import numpy as np
import pytest

from napari_slads_eds import InputError
from napari_slads_eds.cli import main
from napari_slads_eds.run_folder import RunResult

RESULT_KEYS = RunResult.json_keys()


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
    # the same keys as every run writes (GUI, replay, microscope: RunResult)
    assert sorted(res) == list(RESULT_KEYS)
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


def _folder_with_run(p):
    p.mkdir(parents=True, exist_ok=True)
    (p / "journal.h5").write_bytes(b"measurements")
    return p


@pytest.mark.parametrize("case,message", [
    ("run --seed -1", "--seed must be an integer in 0..4294967295, got -1"),
    ("run --denoise 100000", "--denoise"),
    ("run --denoise -3", "--denoise"),
    ("run --upsample 50", "--upsample must be an integer in 1..16"),
    ("run --epochs 0", "--epochs must be an integer in 1..10000"),
    ("run --out=FILE", "exists and is not a folder"),
    ("run --out=FILE/sub", "cannot create the folder"),
    ("run --out=", "an output folder is needed"),
    ("run --out=LOCKED", "in use by another slads-eds process"),
    ("demo --out=RUN", "already holds a run"),
    ("replay --out=RUN", "already holds a run"),
    ("replay --smooth nan", "--smooth"),
    ("replay --seed -1", "--seed must be"),
    ("reproduce --only 2-phase-128 bogus", "unknown experiment(s) ['bogus']"),
    ("reproduce --seed -2", "--seed must be"),
    ("export CORRUPT", "not a readable run file (corrupt or truncated?)"),
    ("export TEXT", "this file is not one"),
    ("export UNFINISHED", "the run has not finished"),
])
def test_cli_bad_input_gives_clear_error(tmp_path, sample_dir, capsys, case, message):
    """Bad options and unusable folders are refused before any work, with exit status 2."""
    import os

    img = str(sample_dir / "sem_nanoporous_gold_inlens.png")
    (tmp_path / "FILE").write_text("a file")
    _folder_with_run(tmp_path / "RUN")
    (tmp_path / "LOCKED").mkdir()
    (tmp_path / "LOCKED" / ".slads-eds.lock").write_text(str(os.getppid()))   # a live process
    (tmp_path / "CORRUPT.npz").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "TEXT.npz").write_text("hello")
    _folder_with_run(tmp_path / "UNFINISHED")
    cmd, *rest = case.split(" ", 1)
    opts = rest[0].split(" ") if rest else []
    out = [o for o in opts if o.startswith("--out=")]
    opts = [o for o in opts if not o.startswith("--out=")]
    out = out[0][6:] if out else "o"
    out = str(tmp_path / out) if out else ""
    base = {"run": ["run", "--image", img, "--phases", "2", "--size", "32", "--out", out],
            "demo": ["demo", "--out", out],
            "replay": ["replay", "--spectrum-image", str(tmp_path / "map.bcf"), "--phases", "2", "--out", out],
            "reproduce": ["reproduce", "--out", out]}
    if cmd == "export":
        target = {"CORRUPT": "CORRUPT.npz", "TEXT": "TEXT.npz", "UNFINISHED": "UNFINISHED"}[opts.pop()]
        argv = ["export", str(tmp_path / target), "--to", str(tmp_path / "x.hspy")]
    else:
        argv = base[cmd] + opts + ["--quiet"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err
    assert (tmp_path / "RUN" / "journal.h5").read_bytes() == b"measurements"
    assert not (tmp_path / "o").exists()                       # refused before a folder was made


def test_output_folder_lock_is_released_and_a_stale_one_taken_over(tmp_path):
    from napari_slads_eds._files import LOCK_NAME, output_folder

    d = tmp_path / "out"
    with output_folder(d) as p:
        assert (p / LOCK_NAME).read_text() == str(__import__("os").getpid())
    assert not (d / LOCK_NAME).exists()
    (d / LOCK_NAME).write_text("999999999")             # a process that does not exist
    with output_folder(d):
        pass
    assert not (d / LOCK_NAME).exists()
    demo = tmp_path / "demo"
    with output_folder(demo, refuse_run=True, demo=True):
        (demo / "journal.h5").write_bytes(b"x")
    with output_folder(demo, refuse_run=True, demo=True):   # an earlier demo may be replaced
        pass
    with pytest.raises(InputError, match="already holds a run"):
        output_folder(demo, refuse_run=True)
