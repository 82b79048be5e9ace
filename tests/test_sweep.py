"""``slads-eds sweep`` on a tiny LocalCluster (2 worker processes, 32x32 grids).

The sweep's tasks and the model training run in the Dask workers (which import
TensorFlow); this pytest process is the client and must stay free of it.
"""

import json
import math
import sys

import numpy as np
import pytest

from napari_slads_eds import InputError
from napari_slads_eds.sweep import (ROWS_DIR, SUMMARY_FILE, TABLE_FILE, SweepConfig, expand_images,
                                    plan_tasks, sweep)

distributed = pytest.importorskip("distributed")

# the Dask workers import TensorFlow (classifier), like the engine process; about a minute in all
pytestmark = [pytest.mark.engine, pytest.mark.slow]

FRACTIONS = (0.05, 0.1, 0.2)
TINY = dict(fractions=FRACTIONS, strategies=("slads", "halton", "random"), seeds=(0, 1), size=32,
            downsample=2, epochs=1, c_values=(8,),
            classifier_options=dict(n_noisy=8, n_noisy_val=4, detector_epochs=2))   # quick training


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_dir):
    import imageio.v3 as iio

    d = tmp_path_factory.mktemp("sweep-images")
    (d / "unreadable.png").write_text("this is not a PNG")
    iio.imwrite(d / "uniform.png", np.full((160, 160), 120, np.uint8))   # cannot give 2 phases
    return [str(sample_dir / "sem_nanoporous_gold_inlens.png"), str(d / "unreadable.png"),
            str(d / "uniform.png")]


@pytest.fixture(scope="module")
def first(client, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    table = sweep(images, 2, out=out, scheduler=client, **TINY)
    return out, table


def _td_cols():
    return [f"td_{f:g}" for f in FRACTIONS]


def test_one_row_per_task_with_td_per_fraction(first):
    out, table = first
    assert len(table) == 3 * 3 * 2                      # images x strategies x seeds
    assert (out / TABLE_FILE).is_file() and (out / SUMMARY_FILE).is_file()
    ok = table[table["status"] == "ok"]
    assert set(ok["image"].map(lambda p: p.rsplit("/", 1)[-1])) == {"sem_nanoporous_gold_inlens.png"}
    assert len(ok) == 6
    assert set(ok["strategy"]) == {"slads", "halton", "random"} and set(ok["seed"]) == {0, 1}
    tds = ok[_td_cols()].to_numpy()
    assert np.all(np.isfinite(tds)) and np.all((tds >= 0) & (tds <= 1))
    assert (ok["spectra"] == round(0.2 * 32 * 32)).all()
    assert (ok["beam_s"] == ok["spectra"] * 1.0).all()
    assert ok["worker"].str.startswith("tcp://").all()
    # the TD columns and the fraction at the target come from the task's own curve
    for _, r in ok.iterrows():
        fr, td = np.asarray(r["curve_fraction"]), np.asarray(r["curve_td"])
        for f in FRACTIONS:
            assert r[f"td_{f:g}"] == td[np.searchsorted(fr, f)]
        hit = fr[td <= 0.01]
        assert (math.isnan(r["fraction_at_target"]) if hit.size == 0 else r["fraction_at_target"] == hit[0])
    # SLADS beats both static scans at the largest fraction (mean over the seeds)
    at = ok.groupby("strategy")["td_0.2"].mean()
    assert at["slads"] <= at["halton"] and at["slads"] <= at["random"]
    # the Parquet file holds the same table
    import pandas as pd

    back = pd.read_parquet(out / TABLE_FILE)
    assert list(back["id"]) == list(table["id"])
    np.testing.assert_array_equal(back[_td_cols()].to_numpy(), table[_td_cols()].to_numpy())


def test_failing_tasks_are_rows_with_their_error(first):
    out, table = first
    bad = table[table["image"].str.endswith("unreadable.png")]
    flat = table[table["image"].str.endswith("uniform.png")]
    assert len(bad) == 6 and (bad["status"] == "error").all()
    assert bad["error"].str.contains("not a readable image").all()
    assert (flat["status"] == "error").all() and flat["error"].str.contains("phases").all()
    assert np.isnan(bad[_td_cols()].to_numpy()).all()
    summary = (out / SUMMARY_FILE).read_text()
    assert "12 failed" in summary and "not a readable image" in summary


def test_models_trained_once_and_client_without_tensorflow(first):
    out, _ = first
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules
    reports = json.loads((out / "models" / "reports.json").read_text())
    assert set(reports) == {"classifier", "erd_linear"}
    assert reports["erd_linear"]["n_maps"] >= 1
    assert (out / "models" / "classifier" / "cnn.keras").is_file()


def test_resume_runs_only_missing_tasks(first, client, images):
    out, table = first
    rows = sorted((out / ROWS_DIR).glob("*.json"))
    ok_ids = list(table[table["status"] == "ok"]["id"])
    removed = [out / ROWS_DIR / f"{i}.json" for i in ok_ids[:2]]
    kept = {p: p.stat().st_mtime_ns for p in rows if p not in removed}
    model_stamp = (out / "models" / "erd_linear.npz").stat().st_mtime_ns
    for p in removed:
        p.unlink()
    again = sweep(images, 2, out=out, scheduler=client, **TINY)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())       # finished rows not run again
    assert all(p.is_file() for p in removed)
    assert (out / "models" / "erd_linear.npz").stat().st_mtime_ns == model_stamp   # not retrained
    assert list(again["id"]) == list(table["id"])
    # the rerun tasks give the same numbers (same seeds, same models), on whichever worker
    np.testing.assert_array_equal(again[_td_cols()].to_numpy(), table[_td_cols()].to_numpy())
    kept_ids = ~again["id"].isin(ok_ids[:2])
    assert (again["seconds"][kept_ids] == table["seconds"][kept_ids]).all()


def test_cli_sweep_on_finished_folder_prints_summary(first, images, capsys, monkeypatch):
    import importlib

    from napari_slads_eds.cli import main

    sweep_module = importlib.import_module("napari_slads_eds.sweep")   # (the package's ``sweep`` is the function)

    out, _ = first
    argv = ["sweep", "--images", *images, "--phases", "2", "--fractions", "0.05", "0.1", "0.2",
            "--seeds", "0", "1", "--size", "32", "--epochs", "1", "--c-values", "8", "--out", str(out), "--quiet"]
    assert main(argv) == 2                # the test's quick classifier options are not the CLI's
    assert "other settings: classifier_options" in capsys.readouterr().err
    real = sweep_module.sweep
    monkeypatch.setattr(sweep_module, "sweep", lambda *a, **kw: real(
        *a, **kw, classifier_options=TINY["classifier_options"]))
    assert main(argv) == 0                # every task finished: the summary, no cluster needed
    shown = capsys.readouterr()
    assert "TD at 20 %" in shown.out and "slads (linear, batch 1, initial halton)" in shown.out
    assert "12 of 18 tasks failed" in shown.err


def test_resume_refuses_other_fixed_settings(first, images):
    out, _ = first
    with pytest.raises(InputError, match="other settings: size 32"):
        sweep(images, 2, out=out, **{**TINY, "size": 40})


def test_plan_ids_stable_and_settings_checked(images):
    cfg = SweepConfig(images=images, phases=2, erd=("linear", "mlp"), batch=(1, 64), seeds=(0, 1)).check()
    tasks = plan_tasks(cfg)
    # per image and seed: 2 erd x 2 batch SLADS tasks + halton + random
    assert len(tasks) == 3 * 2 * (4 + 2)
    assert len({t["id"] for t in tasks}) == len(tasks)
    assert [t["id"] for t in plan_tasks(SweepConfig(images=images, phases=2, erd=("mlp", "linear"),
                                                    batch=(64, 1), seeds=(1, 0)).check())] == [t["id"] for t in tasks]
    static = [t for t in tasks if t["strategy"] != "slads"]
    assert all(t["erd"] == "-" and t["batch"] == 0 for t in static)
    # a fixed setting changes every id (its rows would not fit)
    other = plan_tasks(SweepConfig(images=images, phases=2, erd=("linear", "mlp"), batch=(1, 64),
                                   seeds=(0, 1), size=48).check())
    assert not {t["id"] for t in other} & {t["id"] for t in tasks}
    for bad in (dict(fractions=(0.0,)), dict(fractions=(1.5,)), dict(strategies=("raster",)),
                dict(erd=()), dict(batch=(0,)), dict(phases=1), dict(target_td=1.0), dict(dwell=-1)):
        with pytest.raises(InputError):
            SweepConfig(**{"images": images, "phases": 2, **bad}).check()
    with pytest.raises(InputError, match="matches no file"):
        expand_images(["/nonexistent-folder/*.png"])
