"""Replay of acquired spectrum images: thinning, count splitting, clustering, the specimen,
an end-to-end replay through the engine on a generated map, and the real Bruker map."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_slads_eds import Engine, InputError
from napari_slads_eds.eds_io import SpectrumImage
from napari_slads_eds.run_folder import RunResult

RESULT_KEYS = RunResult.json_keys()
from napari_slads_eds.replay import (ReplaySettings, ReplaySpecimen, cluster_phases, fill_ill,
                                     phase_training_spectra, prepare_replay, run_replay, split_counts,
                                     thin_counts)
from napari_slads_eds.spectra import EnergyAxis, bundled_standards, default_axis, read_spectrum

from conftest import SHARED_DATA as SHARED  # noqa: E402


def _generated_map(H=24, W=28, counts=60.0, seed=0):
    """Two phases (Si left/blobs, Fe right) with Poisson counts of the real standards' shapes,
    a BSE image (Fe brighter), 256 channels of 80 eV (0-20 keV)."""
    axis = EnergyAxis(0.04, 0.08, 256)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    truth = np.where((xx > W // 2) | ((yy - 6) ** 2 + (xx - 6) ** 2 < 16), 2, 1).astype(np.int16)
    from napari_slads_eds.energy_axes import to_axis

    shapes = []
    for name in ("Si", "Fe"):
        s = read_spectrum(bundled_standards()[name])
        c = to_axis(s.counts, s.axis, axis, beam_energy_keV=15.0)
        shapes.append(c / c.sum())
    mu = np.stack(shapes)[truth - 1] * counts
    cube = rng.poisson(mu).astype(np.uint16)
    bse = np.where(truth == 2, 200.0, 80.0) + rng.normal(0, 5, truth.shape)
    return SpectrumImage(cube, axis, 15.0, 1.0, 1.5, "µm", {"BSE": bse}, "generated"), truth


def test_thinning_is_binomial_reproducible_and_per_pixel():
    rng = np.random.default_rng(0)
    c = rng.poisson(5.0, size=(50, 400))
    a = thin_counts(c, 0.3, seed=7, pixel_ids=np.arange(50))
    assert (a <= c).all() and a.dtype == np.int64
    assert a.sum() / c.sum() == pytest.approx(0.3, abs=0.01)
    # the same pixel gives the same thinned spectrum, whatever else is thinned with it
    b = thin_counts(c[[10, 3]], 0.3, seed=7, pixel_ids=[10, 3])
    np.testing.assert_array_equal(b, a[[10, 3]])
    assert not np.array_equal(thin_counts(c[:1], 0.3, seed=8, pixel_ids=[0]), a[:1])
    np.testing.assert_array_equal(thin_counts(c, 1.0, 0, np.arange(50)), c)
    assert thin_counts(c, 0.0, 0, np.arange(50)).sum() == 0
    with pytest.raises(InputError, match="fraction"):
        thin_counts(c, 1.5, 0, np.arange(50))
    with pytest.raises(InputError, match="integer counts"):
        thin_counts(c + 0.5, 0.5, 0, np.arange(50))


def test_count_splitting_gives_independent_poisson_shares():
    rng = np.random.default_rng(1)
    lam = 4.0
    c = rng.poisson(lam, size=(40, 50, 64))
    first, rest = split_counts(c, 0.25, seed=3)
    np.testing.assert_array_equal(first + rest, c)
    assert first.mean() == pytest.approx(0.25 * lam, rel=0.03)
    assert first.var() == pytest.approx(0.25 * lam, rel=0.05)          # Poisson: var = mean
    assert abs(np.corrcoef(first.ravel(), rest.ravel())[0, 1]) < 0.01   # independent
    with pytest.raises(InputError, match="share"):
        split_counts(c, 1.0)


def test_replay_specimen_interface_and_dwell():
    si, truth = _generated_map()
    sp = ReplaySpecimen(si.counts, si.axis, truth, dwell_fraction=0.5, seed=2, beam_energy_keV=15.0)
    assert sp.shape == truth.shape and sp.n_phases == 2 and sp.axis == si.axis
    np.testing.assert_array_equal(sp.phase_map, truth)
    np.testing.assert_array_equal(sp.labels, truth)
    assert sp.references.spectra.shape == (2, 1, 256)
    pos = np.array([[0, 0], [5, 20], [23, 27]])
    out = sp.measure(pos)
    assert out.shape == (3, 256) and out.dtype == np.float32
    np.testing.assert_array_equal(sp.measure(pos[::-1]), out[::-1])
    full = ReplaySpecimen(si.counts, si.axis, truth).measure(pos)
    np.testing.assert_array_equal(full, si.counts[pos[:, 0], pos[:, 1]])
    allpix = np.stack(np.divmod(np.arange(truth.size), truth.shape[1]), 1)
    ratio = sp.measure(allpix).sum() / si.counts.sum()
    assert ratio == pytest.approx(0.5, abs=0.02)
    # spectra served on another axis (e.g. a classifier's) are rebinned by energy
    other = EnergyAxis(0.0, 0.04, 400)
    sp2 = ReplaySpecimen(si.counts, si.axis, truth, axis=other, beam_energy_keV=15.0)
    assert sp2.measure(pos).shape == (3, 400)
    assert sp2.measure(pos).sum() == pytest.approx(full.sum(), rel=0.02)
    with pytest.raises(InputError, match="outside"):
        sp.measure([[24, 0]])
    with pytest.raises(InputError, match="dwell"):
        ReplaySpecimen(si.counts, si.axis, truth, dwell_fraction=0)
    with pytest.raises(InputError, match="does not match"):
        ReplaySpecimen(si.counts, si.axis, truth[:-1])
    with pytest.raises(InputError, match="integers"):
        ReplaySpecimen(si.counts + 0.5, si.axis, truth)


def test_clustering_finds_the_phases_ordered_by_bse():
    si, truth = _generated_map(counts=20.0)
    lab = cluster_phases(si.counts, si.axis, 2, order_image=si.images["BSE"], smooth=1.0)
    assert lab.dtype == np.int16 and set(np.unique(lab)) == {1, 2}
    assert np.mean(lab == truth) > 0.95
    # reversed order key: labels swap
    lab2 = cluster_phases(si.counts, si.axis, 2, order_image=-si.images["BSE"], smooth=1.0)
    np.testing.assert_array_equal(lab2, 3 - lab)
    assert (cluster_phases(si.counts, si.axis, 1) == 1).all()
    with pytest.raises(InputError, match="number of phases"):
        cluster_phases(si.counts, si.axis, 0)
    np.testing.assert_array_equal(fill_ill(np.array([[2, 0, 0, 1]])), [[2, 2, 1, 1]])


def test_training_spectra_come_from_the_training_share():
    si, truth = _generated_map()
    train, _ = split_counts(si.counts, 0.2, seed=0)
    refs = phase_training_spectra(train, truth, 2, si.axis, si.axis, count_scale=4.0, n_per_phase=50)
    assert refs.spectra.shape == (2, 50, 256)
    # count level of a measurement: 80 % of the map's 60 counts per pixel
    assert refs.spectra.sum(2).mean() == pytest.approx(48, rel=0.15)
    with pytest.raises(InputError, match="no pixels"):
        phase_training_spectra(train, np.ones_like(truth), 2, si.axis, si.axis, count_scale=1.0)


def test_settings_are_checked():
    with pytest.raises(InputError, match="--dwell"):
        ReplaySettings(dwell=0.9, train_share=0.2).check()
    with pytest.raises(InputError, match="needs --classifier"):
        ReplaySettings(truth="classifier").check()
    with pytest.raises(InputError, match="--train-share"):
        ReplaySettings(train_share=0).check()


@pytest.fixture(scope="module")
def engine():
    eng = Engine()
    yield eng
    eng.close()


@pytest.mark.engine
def test_replay_end_to_end_on_a_generated_map(tmp_path, engine):
    si, truth = _generated_map()
    blobs = np.kron(truth, np.ones((3, 3))) * 100.0     # an ERD training "micrograph"
    # the paper's NNR + CNN here (with soft decisions from its softmax); the real map below
    # runs the default Poisson classifier
    s = ReplaySettings(fraction=0.25, epochs=3, n_per_phase=40, train=[blobs], erd_downsample=2,
                       c_values=(4.0, 8.0), classifier_kind="cnn")
    exp = prepare_replay(si, 2, s)
    assert exp.source["truth_fractions"][1] == pytest.approx(np.mean(truth == 2), abs=0.05)
    assert exp.specimen.dwell_fraction == pytest.approx(1.0)   # dwell = 1 - train share
    result = run_replay(exp, tmp_path, engine=engine)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert sorted(saved) == list(RESULT_KEYS)       # the keys of slads-eds run and the GUI
    assert saved["sampling_fraction"] == pytest.approx(0.25, abs=1 / truth.size)
    assert 0 <= saved["td"] <= 1 and saved["mode"] == "replay"
    assert saved["td"] <= saved["td_random"] + 0.05
    assert saved["classifier_kind"] == "cnn" and saved["uncertainty"] == "soft"
    assert result["posteriors"].shape == (result["n_measured"], 3)
    from napari_slads_eds.export import load_export

    back = load_export(tmp_path / "run.hspy")
    assert back["spectra"].shape == (result["n_measured"], 256)
    np.testing.assert_array_equal(back["reconstruction"], result["reconstruction"])
    assert load_export(tmp_path / "run_export.npz")["td"] == saved["td"]
    # ground truth by classifying the full map with a trained classifier, which then also
    # labels the run (no training share set aside: measurements keep the full dwell)
    clf = str(tmp_path / "models" / "classifier")
    s2 = ReplaySettings(fraction=0.1, truth="classifier", classifier=clf, train=[blobs],
                        erd_downsample=2, c_values=(8.0,))
    exp2 = prepare_replay(si, 2, s2, engine=engine)
    assert np.mean(exp2.truth == truth) > 0.9
    assert exp2.source["train_share"] == 0.0 and exp2.specimen.dwell_fraction == 1.0
    r2 = run_replay(exp2, tmp_path / "with_classifier", engine=engine, export=False)
    assert r2["sampling_fraction"] == pytest.approx(0.1, abs=1 / truth.size)
    assert "tensorflow" not in sys.modules


def test_cli_replay_reports_input_errors(tmp_path, capsys):
    from napari_slads_eds.cli import main

    rc = main(["replay", "--spectrum-image", str(tmp_path / "none.bcf"), "--phases", "2",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()          # the folder it made for nothing is gone again
    spec = str(bundled_standards()["Si"])
    assert main(["replay", "--spectrum-image", spec, "--phases", "2", "--out", str(tmp_path / "o")]) == 2


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "eds_map_bruker_P45.bcf").is_file(),
                    reason="shared/data (GPL Bruker test map) not present")
def test_replay_on_the_real_bruker_map(tmp_path, engine):
    """The done-when run, made cheaper: fewer CNN epochs, one 128x128 ERD training tile and
    c fixed at 8 (the full command and its numbers are in docs/replay.md)."""
    from napari_slads_eds.segmentation import read_micrograph
    from napari_slads_eds.spectra import sample_data_dir

    glass = read_micrograph(sample_data_dir() / "sem_glass_sand_bubbles_bse.png")[:512, :512]
    s = ReplaySettings(fraction=0.2, seed=0, epochs=6, train=[glass], c_values=(8.0,))
    exp = prepare_replay(SHARED / "eds_map_bruker_P45.bcf", 2, s)
    assert exp.source["truth_order"] == "BSE brightness"
    assert 0.04 < exp.source["truth_fractions"][1] < 0.12          # the bright minority phase
    run_replay(exp, tmp_path, engine=engine, export=False)
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["grid"] == [75, 100] and r["sampling_fraction"] == pytest.approx(0.2)
    assert r["td"] < r["td_random"]
    assert r["classifier_kind"] == "poisson"
    # count-aware decisions: the in-run misclassification within 2x of the validation figure
    assert r["misclassification_run"] < 2 * r["misclassification"]


def test_replay_ground_truth_and_shares_are_reproducible_from_the_seed():
    si, truth = _generated_map()
    s = ReplaySettings(fraction=0.2, seed=3, n_per_phase=20, train=[np.kron(truth, np.ones((3, 3))) * 100.0],
                       erd_downsample=2)
    a, b = prepare_replay(si, 2, s), prepare_replay(si, 2, s)
    assert np.array_equal(a.truth, b.truth)
    assert np.mean(a.truth == truth) > 0.9
    pos = np.array([[0, 0], [3, 4], [10, 7]])
    assert np.array_equal(a.specimen.measure(pos), b.specimen.measure(pos))
    assert np.array_equal(a.train_references.spectra, b.train_references.spectra)
    c = prepare_replay(si, 2, ReplaySettings(fraction=0.2, seed=4, n_per_phase=20, train=s.train, erd_downsample=2))
    assert not np.array_equal(a.specimen.measure(pos), c.specimen.measure(pos))   # another count split


def test_replay_erd_from_the_maps_electron_image():
    si, truth = _generated_map()
    if not si.images:
        pytest.skip("the generated map has no electron image")
    exp = prepare_replay(si, 2, ReplaySettings(fraction=0.2, n_per_phase=20, erd_training="electron-image"))
    assert len(exp.erd_images) == 1 and exp.erd_images[0].shape == truth.shape
    assert exp.source["erd_training_mode"] == "electron-image"
    with pytest.raises(InputError, match="erd-training"):
        ReplaySettings(erd_training="nope").check()


@pytest.mark.engine
@pytest.mark.slow
def test_a_stopped_replay_resumes_from_its_journal(tmp_path, engine):
    """A replay's run folder is a run folder like any other: cut its journal (as a stop or
    a crash leaves it), and ``slads-eds resume`` continues it to the same selections."""
    import shutil

    import h5py

    from napari_slads_eds.cli import main
    from napari_slads_eds.replay import resume_replay

    si, truth = _generated_map(H=32, W=32)
    path = tmp_path / "map.npz"
    np.savez(path, counts=si.counts, energy_offset_keV=si.axis.offset_keV, energy_scale_keV=si.axis.scale_keV,
             beam_energy_keV=15.0, image_BSE=si.images["BSE"])
    s = ReplaySettings(fraction=0.3, n_per_phase=40, c_values=(8.0,))     # Poisson classifier, ERD on the BSE
    full = tmp_path / "full"
    ref = run_replay(prepare_replay(path, 2, s), full, engine=engine, export=False)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    (cut / "result.json").unlink()
    with h5py.File(cut / "journal.h5", "r+") as f:
        batches = f["record"]["batch"]
        n = int(np.searchsorted(batches, batches[-1] // 2))       # whole batches only
        assert 0 < n < len(batches)
        for name in ("record", "spectrum"):
            f[name].resize(n, axis=0)
    res = resume_replay(cut, engine=engine, export=False)
    assert res["resumed"] and res["n_replayed"] == n and res["mode"] == "replay"
    np.testing.assert_array_equal(res["positions"], ref["positions"])
    assert res["td"] == ref["td"]
    saved = json.loads((cut / "result.json").read_text())
    assert sorted(saved) == list(RESULT_KEYS)
    # the command line dispatches a replay's folder to the replay
    (cut / "result.json").unlink()
    assert main(["resume", str(cut), "--quiet"]) == 0
    assert json.loads((cut / "result.json").read_text())["n_replayed"] == ref["n_measured"]
