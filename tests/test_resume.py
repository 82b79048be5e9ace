"""A run never loses a measurement: journal, kill -9 of the engine, resume."""

import os
import signal

import h5py
import numpy as np
import pytest

from napari_slads_eds import Engine, EngineError, InputError
from napari_slads_eds.journal import JOURNAL_NAME, Journal, read_journal
from napari_slads_eds.pipeline import RunSettings, prepare_experiment, resume_experiment, run_experiment

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SETTINGS = dict(size=40, downsample=4, fraction=0.25, seed=3, epochs=3)


@pytest.fixture(scope="module")
def experiment(sample_dir):
    return prepare_experiment(sample_dir / "sem_nanoporous_gold_inlens.png", 2, RunSettings(**SETTINGS))


@pytest.fixture(scope="module")
def uninterrupted(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return run_experiment(experiment, out), out


def test_sigkill_mid_run_then_resume_loses_nothing(experiment, uninterrupted, tmp_path):
    ref, _ = uninterrupted
    out = tmp_path / "killed"
    eng = Engine()
    seen = {"n": 0}

    def on_message(m):
        if m.get("type") == "frame":
            seen["n"] = m["n_measured"]
            if m["n_measured"] >= 150:
                os.kill(eng.pid, signal.SIGKILL)

    with pytest.raises(EngineError, match="ended unexpectedly"):
        run_experiment(experiment, out, engine=eng, on_message=on_message)
    eng.close()
    j = read_journal(out / JOURNAL_NAME)
    n_journal = len(j["label"])
    assert n_journal >= seen["n"] >= 150                # everything reported measured is on disk
    assert n_journal < ref["n_measured"]
    # the journal's spectra are the specimen's spectra at those positions
    assert np.array_equal(j["spectrum"], experiment.specimen.measure(j["position"]))

    res = resume_experiment(out)
    assert res["n_replayed"] == n_journal
    assert np.array_equal(res["positions"], ref["positions"])     # identical selections, same order
    assert np.array_equal(res["mask"], ref["mask"])
    assert res["td"] == ref["td"]
    # 0 measured spectra lost: every measured position has its spectrum in the journal
    j2 = read_journal(out / JOURNAL_NAME)
    assert len(j2["label"]) == res["n_measured"]
    assert np.array_equal(j2["position"], res["positions"])
    assert np.array_equal(j2["position"][:n_journal], j["position"])


def test_stopped_run_resumes_to_the_budget(experiment, uninterrupted, tmp_path):
    ref, _ = uninterrupted
    out = tmp_path / "stopped"
    eng = Engine()

    def on_message(m):
        if m.get("type") == "frame" and m["n_measured"] >= 120:
            eng.request_stop()

    res1 = run_experiment(experiment, out, engine=eng, on_message=on_message)
    assert res1["stop_reason"] == "stopped by the user"
    res2 = resume_experiment(out, engine=eng)
    eng.close()
    assert res2["stop_reason"] == "target fraction reached"
    assert np.array_equal(res2["positions"], ref["positions"])


def test_resume_refuses_what_is_not_a_run(tmp_path, uninterrupted):
    with pytest.raises(InputError, match="cannot be resumed"):
        resume_experiment(tmp_path)
    _, out = uninterrupted
    bad = tmp_path / "bad.h5"
    bad.write_bytes((out / JOURNAL_NAME).read_bytes()[:300])
    with pytest.raises(InputError, match="bad.h5"):
        read_journal(bad)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not a napari-slads-eds journal"):
        read_journal(tmp_path / "other.h5")


def test_resume_refuses_a_journal_of_another_spectrum_length(uninterrupted, tmp_path):
    import shutil

    _, out = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "run.npz").unlink()
    j = read_journal(out / JOURNAL_NAME)
    (run / JOURNAL_NAME).unlink()
    bad = Journal(run / JOURNAL_NAME, 100, j["settings"])
    bad.append(j["position"][:30], j["label"][:30], j["spectrum"][:30, :100], 0.1)
    bad.close()
    before = (run / JOURNAL_NAME).read_bytes()
    with pytest.raises((InputError, EngineError), match="100 channels, the run's specimen 2048"):
        resume_experiment(run)
    assert (run / JOURNAL_NAME).read_bytes() == before          # the journal is left as it was


@pytest.mark.parametrize("change,message", [
    ("seed", r"is from another run: seed 4 \(this run: 3\)"),
    ("grid", r"is from another run: grid \[32, 32\]"),
    ("spectra", "its spectra are not this run's specimen's"),
])
def test_resume_refuses_a_journal_of_another_run(uninterrupted, tmp_path, change, message):
    import copy
    import shutil

    _, out = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "run.npz").unlink()
    j = read_journal(out / JOURNAL_NAME)
    settings = copy.deepcopy(j["settings"])
    spectra = j["spectrum"][:40].copy()
    if change == "seed":
        settings["run"]["seed"] = 4
    elif change == "grid":
        settings["grid"] = [32, 32]
    else:
        spectra = spectra[::-1].copy()
    (run / JOURNAL_NAME).unlink()
    foreign = Journal(run / JOURNAL_NAME, spectra.shape[1], settings)
    foreign.append(j["position"][:40], j["label"][:40], spectra, 0.1)
    foreign.close()
    before = (run / JOURNAL_NAME).read_bytes()
    with pytest.raises((InputError, EngineError), match=message):
        resume_experiment(run)
    assert (run / JOURNAL_NAME).read_bytes() == before


@pytest.mark.parametrize("edit,message", [
    (lambda m, t: m.update(n_phases="two"), "n_phases must be an integer"),
    (lambda m, t: m.update(n_phases=5), "n_phases is 5 but the specimen has 2 phases"),
    (lambda m, t: m["settings"].update(seed=-1), "--seed must be"),
    (lambda m, t: t["erd"].pop("c"), "incomplete training report"),
])
def test_hand_edited_run_folders_are_refused_before_sampling(uninterrupted, tmp_path, edit, message):
    import json
    import shutil

    from napari_slads_eds.run_folder import SETTINGS_FILE, TRAINING_FILE, read_run_folder

    _, out = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(out, run)
    meta = json.loads((run / SETTINGS_FILE).read_text())
    training = json.loads((run / TRAINING_FILE).read_text())
    edit(meta, training)
    (run / SETTINGS_FILE).write_text(json.dumps(meta))
    (run / TRAINING_FILE).write_text(json.dumps(training))
    with pytest.raises(InputError, match=message):
        read_run_folder(run)


def test_journal_roundtrip(tmp_path):
    j = Journal(tmp_path / JOURNAL_NAME, 5, {"seed": 1})
    j.append([[0, 1], [2, 3]], [1, 0], np.ones((2, 5)), 0.5)
    j.append([[4, 4]], [2], np.full((1, 5), 7.0), 1.0)
    j.close()
    d = read_journal(tmp_path / JOURNAL_NAME)
    assert d["settings"] == {"seed": 1}
    assert d["position"].tolist() == [[0, 1], [2, 3], [4, 4]]
    assert d["label"].tolist() == [1, 0, 2] and d["batch"].tolist() == [0, 0, 1]
    assert d["spectrum"][2].tolist() == [7.0] * 5
    k = Journal.append_to(tmp_path / JOURNAL_NAME)
    k.append([[5, 5]], [1], np.zeros((1, 5)), 2.0)
    k.close()
    d = read_journal(tmp_path / JOURNAL_NAME)
    assert d["batch"].tolist() == [0, 0, 1, 2] and len(d["label"]) == 4


def test_export_of_a_run_folder_carries_the_journal_spectra(experiment, uninterrupted, tmp_path):
    from napari_slads_eds.export import export_run, load_any_run, load_export

    ref, out = uninterrupted
    run = load_any_run(out)
    assert run["spectra"].shape == (ref["n_measured"], 2048)
    assert run["energy_axis"] == experiment.specimen.axis
    assert np.array_equal(run["spectra"], experiment.specimen.measure(ref["positions"]))
    f = export_run(run, tmp_path / "run.hspy", spectra=run["spectra"], axis=run["energy_axis"])
    back = load_export(f)
    assert np.array_equal(back["spectra"], run["spectra"]) and back["energy_axis"] == run["energy_axis"]
