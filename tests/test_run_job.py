"""The sampling run inside the engine process: frames, overlap, graceful stop."""

import numpy as np
import pytest

from napari_slads_eds import Engine, EngineError, SimulatedSpecimen
from napari_slads_eds.erd_database import build_training_database
from napari_slads_eds.erd_models import LinearERD
from napari_slads_eds.pipeline import RunSettings, _references

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from skimage.data import binary_blobs

    tmp = tmp_path_factory.mktemp("runjob")
    train_refs, test_refs = _references(2, None, RunSettings())
    imgs = [binary_blobs(48, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (1, 2)]
    db = build_training_database(imgs, 2, c_values=(8.0,), seed=0)
    LinearERD.fit(db.features, db.rd[:, 0], 8.0).save(tmp / "erd.npz")
    truth = binary_blobs(48, blob_size_fraction=0.25, rng=7).astype(np.int16) + 1
    spec = SimulatedSpecimen(truth, test_refs, ill_fraction=0.02, seed=3)
    eng = Engine()
    eng.run("train_classifier", references=train_refs, out_dir=str(tmp / "clf"), seed=0, epochs=3)
    yield eng, spec, str(tmp / "clf"), str(tmp / "erd.npz")
    eng.close()


def _run(setup, **kw):
    eng, spec, clf, erd = setup
    frames, baselines = [], []
    job = eng.submit("run_slads", specimen=spec, classifier=clf, erd_model=erd, frame_interval=0.0, **kw)
    for m in job.messages():
        (frames if m["type"] == "frame" else baselines if m["type"] == "baseline" else []).append(m)
    return job.result, frames, baselines


def test_run_streams_frames_and_baselines(setup):
    res, frames, baselines = _run(setup, target_fraction=0.2, batch=4)
    assert [b["name"] for b in baselines] == ["random", "halton"]
    assert frames[-1]["final"] and frames[-1]["n_measured"] == res["n_measured"]
    # the frames' new positions add up to every measured position, in order
    pos = np.concatenate([f["positions"] for f in frames])
    assert np.array_equal(pos, res["positions"])
    assert frames[0]["reconstruction"].shape == (48, 48) and frames[0]["erd"].dtype == np.float32
    assert res["sampling_fraction"] == pytest.approx(0.2, abs=1 / 2304)
    assert res["td"] < res["td_random"] and res["td_halton"] is not None
    assert res["stop_reason"] == "target fraction reached"
    assert res["misclassification_run"] < 0.02


def test_overlapped_run_measures_the_budget(setup):
    res, frames, _ = _run(setup, target_fraction=0.2, batch=8, overlap=True, baselines=())
    assert res["n_measured"] == round(0.2 * 48 * 48)
    assert len(np.unique(res["positions"][:, 0] * 48 + res["positions"][:, 1])) == res["n_measured"]
    assert res["td"] < 0.1


def test_stop_returns_what_was_measured(setup):
    eng, spec, clf, erd = setup
    job = eng.submit("run_slads", specimen=spec, classifier=clf, erd_model=erd, target_fraction=0.9,
                     frame_interval=0.0, baselines=())
    for m in job.messages():
        if m["type"] == "frame" and m["n_measured"] > 120:
            eng.request_stop()
    res = job.result
    assert res["stop_reason"] == "stopped by the user"
    assert 120 < res["n_measured"] < 0.9 * 48 * 48
    assert res["mask"].sum() == res["n_measured"]


def test_a_stop_cuts_the_static_scans_at_the_fraction_reached(setup):
    """The static scans run beside the loop; a stop does not wait for them to reach the
    target: each is scored at the fraction SLADS reached, and its curve ends there."""
    eng, spec, clf, erd = setup
    job = eng.submit("run_slads", specimen=spec, classifier=clf, erd_model=erd, target_fraction=0.9,
                     frame_interval=0.0)
    for m in job.messages():
        if m["type"] == "frame" and m["n_measured"] > 120:
            eng.request_stop()
    res = job.result
    assert res["stop_reason"] == "stopped by the user" and res["sampling_fraction"] < 0.5
    for name in ("random", "halton"):
        curve = np.asarray(res[f"td_curve_{name}"])
        assert curve[-1, 0] == pytest.approx(res["sampling_fraction"], abs=0.5 / 2304)
        assert np.all(curve[:, 0] <= res["sampling_fraction"] + 0.5 / 2304)
        assert res[f"td_{name}"] == curve[-1, 1] and 0 <= res[f"td_{name}"] <= 1


def test_bad_baseline_arguments_are_refused_before_sampling(setup):
    eng, spec, clf, erd = setup
    for kw, match in (({"baselines": "random"}, "sequence of names"), ({"baselines": ("sobol",)}, "unknown baseline"),
                      ({"n_baseline_points": 0}, "n_baseline_points")):
        with pytest.raises(EngineError, match=match):
            _run(setup, target_fraction=0.05, **kw)
    res, _, baselines = _run(setup, target_fraction=0.05, baselines=None)     # None: no static scans
    assert baselines == [] and "td_random" not in res


def test_run_with_mismatched_classifier_is_a_clear_error(setup, tmp_path):
    from napari_slads_eds.spectra import EnergyAxis, ReferenceSpectra

    eng, spec, clf, erd = setup
    refs = ReferenceSpectra(np.ones((2, 2, 100)), EnergyAxis(0.0, 0.01, 100), ("a", "b"))
    other = SimulatedSpecimen(spec.phase_map, refs)
    with pytest.raises(EngineError, match="energy axis") as ei:
        eng.run("run_slads", specimen=other, classifier=clf, erd_model=erd)
    assert ei.value.kind == "input"


def test_mlp_erd_trains_in_engine_and_samples(setup, tmp_path):
    from skimage.data import binary_blobs

    from napari_slads_eds.erd_models import MLPERD, load_erd_model

    eng, spec, clf, _ = setup
    imgs = [binary_blobs(48, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (1, 2)]
    rep = eng.run("train_erd", label_images=imgs, n_phases=2, out_path=str(tmp_path / "mlp.npz"),
                  regressor="mlp", c_values=(4.0, 16.0), densities=(0.02, 0.1, 0.4), c_search_fraction=0.15)
    assert rep["regressor"] == "mlp" and rep["c"] in (4.0, 16.0)
    m = load_erd_model(tmp_path / "mlp.npz")
    assert isinstance(m, MLPERD) and m.c == rep["c"]
    res = eng.run("run_slads", specimen=spec, classifier=clf, erd_model=str(tmp_path / "mlp.npz"),
                  target_fraction=0.2, batch=4, baselines=("random",), send_maps=False)
    assert res["td"] < res["td_random"]
