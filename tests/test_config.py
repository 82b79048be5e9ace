"""One sampling configuration (SamplingConfig), one result (RunResult), one run-folder layout."""

import dataclasses
import json

import numpy as np
import pytest

from napari_slads_eds import InputError
from napari_slads_eds.acquisition import RunConfig
from napari_slads_eds.config import RunSettings, SamplingConfig
from napari_slads_eds.slads_job import _sampling_config
from napari_slads_eds.replay import ReplaySettings
from napari_slads_eds.run_folder import RESULT_ARRAYS, RunResult, read_mode, write_run_folder


def test_sampling_config_is_frozen_checked_and_round_trips():
    c = SamplingConfig(fraction=0.2, batch=4, batch_mode="pseudo", seed=7, uncertainty="soft",
                       baseline_fractions=(0.05,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.fraction = 0.3
    back = SamplingConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    assert c.replace(batch=8).batch == 8 and c.batch == 4
    for bad, match in (({"fraction": 0.0}, "--fraction"), ({"fraction": "0.15"}, "finite number"),
                       ({"batch": 2.5}, "--batch"), ({"batch_mode": "best"}, "batch mode"),
                       ({"initial_pattern": "sobol"}, "initial pattern"), ({"seed": -1}, "--seed"),
                       ({"uncertainty": "fuzzy"}, "--uncertainty"), ({"baselines": "random"}, "sequence"),
                       ({"baselines": ("sobol",)}, "unknown baseline"), ({"baseline_fractions": (1.5,)}, r"\(0, 1\]"),
                       ({"k": 0}, r"k \(neighbours"), ({"frame_interval": float("nan")}, "finite")):
        with pytest.raises(InputError, match=match):
            SamplingConfig(**bad).check()
    with pytest.raises(InputError, match="unknown keys"):
        SamplingConfig.from_dict({"fraction": 0.1, "fractoin": 0.2})


def test_experiment_settings_derive_the_same_config():
    rs = RunSettings(fraction=0.1, batch=2, seed=3, uncertainty="soft", overlap=True)
    assert rs.sampling == SamplingConfig(fraction=0.1, batch=2, seed=3, uncertainty="soft", overlap=True)
    rp = ReplaySettings(fraction=0.1, batch=2, seed=3, uncertainty=None)
    assert rp.sampling == SamplingConfig(fraction=0.1, batch=2, seed=3, uncertainty="hard")
    # the experiment settings' checks of their sampling fields are SamplingConfig's
    with pytest.raises(InputError, match="batch mode"):
        RunSettings(batch_mode="x").check()
    with pytest.raises(InputError, match="batch mode"):
        ReplaySettings(batch_mode="x").check()


def test_the_loop_nests_the_config_and_journals_it_flat():
    cfg = RunConfig(SamplingConfig(fraction=0.3, seed=5), stop_threshold=0.1).check()
    d = cfg.to_dict()
    # journals written before the config existed hold these flat keys; resume compares them
    assert d["target_fraction"] == 0.3 and d["seed"] == 5 and d["uncertainty"] is None
    assert d["stop_threshold"] == 0.1
    with pytest.raises(InputError, match="SamplingConfig"):
        RunConfig({"fraction": 0.3}).check()


def test_run_slads_takes_the_config_or_keywords_not_both():
    c = SamplingConfig(fraction=0.2)
    assert _sampling_config(c, {}) is c
    assert _sampling_config(None, {"target_fraction": 0.2, "uncertainty": None, "baselines": None}) == \
        SamplingConfig(fraction=0.2, baselines=())
    with pytest.raises(InputError, match="not both"):
        _sampling_config(c, {"batch": 2})
    with pytest.raises(InputError, match="unknown keywords"):
        _sampling_config(None, {"batchsize": 2})


def _raw(H=8, W=10, n=12, td=0.1):
    rng = np.random.default_rng(0)
    pos = np.stack([rng.integers(0, H, n), rng.integers(0, W, n)], 1)
    return {"grid": [H, W], "phases": 2, "phase_names": ["Si", "Fe"], "sampling_fraction": n / (H * W),
            "n_measured": n, "n_replayed": 0, "td": td, "td_curve": [[n / (H * W), td]], "stop_reason": "target",
            "positions": pos, "labels": np.ones(n, int), "reconstruction": np.ones((H, W), int),
            "mask": np.zeros((H, W), bool), "erd": np.zeros((H, W)), "measurements_per_second": 100.0,
            "seconds": 1.0, "classifier_kind": "cnn", "uncertainty": "hard", "c": 8.0}


def test_run_result_has_the_same_keys_for_every_mode(tmp_path):
    keys = set()
    for mode, td in (("run", 0.1), ("replay", 0.2), ("microscope", None)):
        r = RunResult.from_job(_raw(td=td), mode=mode, config=SamplingConfig(), settings={}, source={},
                               classifier_report={"misclassification": 0.0, "path": "x"},
                               erd_report={"c": 8.0, "rows": 10}, seconds=2.0, dwell_per_position=0.5)
        r.write(tmp_path / mode)
        saved = json.loads((tmp_path / mode / "result.json").read_text())
        assert sorted(saved) == list(RunResult.json_keys())
        keys.add(tuple(sorted(saved)))
        assert saved["mode"] == mode and saved["dose"]["total_dwell"] == pytest.approx(6.0)
    assert len(keys) == 1
    assert not set(RESULT_ARRAYS) & set(RunResult.json_keys())
    assert np.isnan(saved["td"])                       # a microscope run without ground truth
    with pytest.raises(InputError, match="mode"):
        RunResult.from_job(_raw(), mode="sim", config=SamplingConfig(), settings={}, source={},
                           classifier_report={}, erd_report={}, seconds=0)
    bad = _raw()
    del bad["grid"]
    with pytest.raises(InputError, match="lacks"):
        RunResult.from_job(bad, mode="run", config=SamplingConfig(), settings={}, source={},
                           classifier_report={}, erd_report={}, seconds=0)


def test_run_folder_records_its_mode(tmp_path):
    write_run_folder(tmp_path / "a", None, ReplaySettings(), {"misclassification": 0.0}, {"c": 8.0}, n_phases=2,
                     mode="replay")
    assert read_mode(tmp_path / "a") == "replay"
    with pytest.raises(InputError, match="mode"):
        write_run_folder(tmp_path / "b", None, ReplaySettings(), {}, {"c": 8.0}, n_phases=2, mode="other")
    with pytest.raises(InputError, match="not a run folder"):
        read_mode(tmp_path / "nothing")
