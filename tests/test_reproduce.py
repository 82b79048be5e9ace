import json

import numpy as np
import pytest

from napari_slads_eds import InputError
from napari_slads_eds.reproduce import (CROP_EXPERIMENTS, EXPERIMENTS, check_experiment_names,
                                        prepare_whole_experiment, write_table)
from napari_slads_eds.segmentation import majority_downsample, read_micrograph, segment_phases


def test_default_experiments_use_the_whole_micrograph(sample_dir):
    """Paper conditions: the test object is the whole micrograph down-sampled to the grid
    (no crop), and the ERD is trained on another micrograph."""
    spec = EXPERIMENTS["2-phase-128"]
    exp = prepare_whole_experiment(spec)
    g = read_micrograph(sample_dir / spec.image)
    f = spec.settings.downsample
    assert exp.test_map.shape == (g.shape[0] // f, g.shape[1] // f)
    assert max(exp.test_map.shape) == spec.settings.size
    want = majority_downsample(segment_phases(g, 2, denoise_size=spec.settings.denoise), f)
    assert np.array_equal(exp.test_map, want)
    assert np.array_equal(exp.specimen.phase_map, exp.test_map)
    assert spec.train_image != spec.image
    t = read_micrograph(sample_dir / spec.train_image)
    # multi-scale training maps of the other micrograph, the test's scale first
    assert [m.shape for m in exp.train_maps] == [(t.shape[0] // g, t.shape[1] // g) for g in (f, f // 2, 2 * f)]
    assert exp.source["conditions"].startswith("whole micrograph")


def test_every_default_experiment_is_whole_and_crops_are_named():
    for name, spec in EXPERIMENTS.items():
        assert not name.endswith("-crop") and spec.train_image != spec.image
    assert all(n.endswith("-crop") for n in CROP_EXPERIMENTS)
    check_experiment_names(["2-phase-128-crop", "3-phase-256", "stopping-rule"])
    with pytest.raises(InputError, match="unknown experiment"):
        check_experiment_names(["2-phase-128-whole"])


def test_table_has_the_oracle_column(tmp_path):
    row = {"name": "x", "grid": [8, 16], "phases": 2, "fraction": 0.1, "td_slads": 0.02, "td_oracle": 0.01,
           "td_random": 0.1, "td_halton": 0.08, "misclassification": 0.0, "c": 4.0, "seconds": 1.0,
           "td_slads_at_0.05": 0.04, "td_oracle_at_0.05": 0.02, "td_halton_at_0.05": 0.1,
           "td_random_at_0.05": 0.12, "td_curve": [[0.1, 0.02]]}
    write_table([row], None, tmp_path)
    md = (tmp_path / "table.md").read_text()
    assert "TD oracle" in md and "| 0.01000 |" in md and "| 5 % | 0.04000 | 0.02000 |" in md
    assert "| 2.00 |" in md                                  # SLADS / oracle at 5 %
    assert "td_curve" not in json.loads((tmp_path / "table.json").read_text())["rows"][0]


def test_td_beyond_the_run_is_not_reported(tmp_path):
    """A fraction past the end of a TD curve gives None ('–' in the table), not the last TD."""
    from napari_slads_eds.reproduce import _td_at

    curve = [[0.01, 0.3], [0.1, 0.05], [0.15, 0.02]]
    assert _td_at(curve, 0.1) == 0.05 and _td_at(curve, 0.15) == 0.02
    assert _td_at(curve, 0.2) is None
    row = {"name": "x", "grid": [8, 8], "phases": 2, "fraction": 0.15, "td_slads": 0.02, "td_oracle": 0.01,
           "td_random": 0.1, "td_halton": 0.08, "misclassification": 0.0, "c": 4.0, "seconds": 1.0,
           "td_slads_at_0.2": None, "td_oracle_at_0.2": None, "td_halton_at_0.2": 0.07, "td_random_at_0.2": 0.09}
    write_table([row], None, tmp_path)
    assert "| 20 % | – | – | 0.09000 | 0.07000 | – | – |" in (tmp_path / "table.md").read_text()
