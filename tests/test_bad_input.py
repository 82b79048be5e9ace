"""Bad input at the public edge of the library: every case gives a correct result or a
clear InputError that says what was expected.  docs/bad_input.md lists these cases (and
the ones tested elsewhere: classifier, engine, widgets); a test below checks that every
row of that table names a test that exists."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_slads_eds import (EnergyAxis, InputError, LinearERD, ReferenceSpectra, Sampler, SimulatedSpecimen,
                              load_run, read_micrograph, read_spectrum, reconstruct, segment_phases)
from napari_slads_eds.journal import read_journal
from napari_slads_eds.pipeline import RunSettings, prepare_experiment, resume_experiment
from napari_slads_eds.spectra import Spectrum, default_standards_for, make_reference_spectra

REPO = Path(__file__).resolve().parents[1]


def _refs(L=2, M=2, p=50):
    return ReferenceSpectra(np.ones((L, M, p)) * 5, EnergyAxis(0.0, 0.01, p), tuple(f"p{i}" for i in range(L)))


def _write(tmp, name, data: bytes):
    p = tmp / name
    p.write_bytes(data)
    return p


CASES = {
    # id: (callable(tmp_path), expected message regex)
    "not-an-image": (lambda t: read_micrograph(_write(t, "x.png", b"hello")), "not a readable image"),
    "missing-file": (lambda t: read_micrograph(t / "nope.tif"), "not found"),
    "empty-image": (lambda t: segment_phases(np.zeros((0, 4)), 2), "empty"),
    "constant-image": (lambda t: segment_phases(np.full((9, 9), 3.0), 2), "constant"),
    "too-few-grey-levels": (lambda t: segment_phases(np.tile([0.0, 1.0], (6, 3)), 3), "only 2 grey levels"),
    "nan-in-image": (lambda t: segment_phases(np.full((5, 5), np.nan), 2), "NaN"),
    "image-stack": (lambda t: segment_phases(np.zeros((3, 4, 5, 6)), 2), "2-D"),
    "tiny-image": (lambda t: prepare_experiment(np.random.default_rng(0).random((40, 40)), 2,
                                                RunSettings(size=32)), "fewer than two"),
    "too-many-phases-for-bundled-spectra": (lambda t: default_standards_for(9), "no default reference spectra"),
    "labels-outside-0-L": (lambda t: reconstruct((3, 3), [[0, 0]], [5], 2), "0..2"),
    "non-integer-labels": (lambda t: Sampler((4, 4), 2, None, truth=np.full((4, 4), 1.5)), "integer"),
    "truth-of-wrong-shape": (lambda t: Sampler((4, 4), 2, None, truth=np.ones((3, 3), int)), "shape"),
    "positions-outside-grid": (lambda t: Sampler((4, 4), 2, None).update([[4, 0]], [1]), "outside"),
    "position-measured-twice": (lambda t: _twice(), "unmeasured"),
    "select-without-erd-model": (lambda t: Sampler((4, 4), 2, None).select(), "ERD model"),
    "nan-counts": (lambda t: SimulatedSpecimen(np.ones((4, 4), int),
                                               ReferenceSpectra(np.full((1, 2, 5), np.nan),
                                                                EnergyAxis(0, 0.01, 5), ("a",))), "NaN"),
    "negative-counts": (lambda t: ReferenceSpectra(-np.ones((1, 2, 5)), EnergyAxis(0, 0.01, 5), ("a",)),
                        "non-negative"),
    "spectrum-of-wrong-length": (lambda t: ReferenceSpectra(np.ones((1, 2, 5)), EnergyAxis(0, 0.01, 6), ("a",)),
                                 "5 channels but the energy axis has 6"),
    "reference-of-other-calibration": (lambda t: make_reference_spectra(
        [read_spectrum(REPO / "sample_data/spectra/tima_calcite_25kV.msa")],
        axis=EnergyAxis(0.0035, 0.01001223, 2048)), "energy axis"),
    "phase-without-training-spectra": (lambda t: ReferenceSpectra(np.zeros((2, 0, 5)), EnergyAxis(0, 0.01, 5),
                                                                  ("a", "b")), "at least one"),
    "phase-with-empty-spectra": (lambda t: ReferenceSpectra(np.concatenate([np.ones((1, 2, 5)), np.zeros((1, 2, 5))]),
                                                            EnergyAxis(0, 0.01, 5), ("a", "b")), "no counts"),
    "specimen-labels-beyond-references": (lambda t: SimulatedSpecimen(np.full((4, 4), 3), _refs()), "1..2"),
    "corrupt-spectrum-file": (lambda t: read_spectrum(_write(t, "s.msa", b"#FORMAT : EMSA\n1,x,,\n")), "s.msa"),
    "truncated-erd-model": (lambda t: LinearERD.load(_write(t, "erd.npz", b"PK\x03\x04 cut")), "erd.npz"),
    "pickled-object-in-npz": (lambda t: _pickled_npz(t), "run.npz"),
    "truncated-run-file": (lambda t: load_run(_write(t, "run.npz", b"PK\x03\x04 cut")), "run.npz"),
    "truncated-journal": (lambda t: read_journal(_write(t, "journal.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)),
                          "journal.h5"),
    "resume-of-a-folder-that-is-no-run": (lambda t: resume_experiment(t), "cannot be resumed"),
    "fraction-outside-0-1": (lambda t: RunSettings(fraction=1.5).check(), "fraction"),
    "k-less-than-one": (lambda t: reconstruct((3, 3), [[0, 0]], [1], 2, k=0), "k must be"),
    "k-not-an-integer": (lambda t: reconstruct((3, 3), [[0, 0]], [1], 2, k=2.5), "k must be an integer"),
    "k-too-large-for-the-sampler": (lambda t: Sampler((4, 4), 2, None, k=10**9), r"1\.\.100"),
    "phases-not-an-integer": (lambda t: segment_phases(np.random.default_rng(0).random((9, 9)), 2.5),
                              "number of phases must be an integer"),
    "negative-seed": (lambda t: SimulatedSpecimen(np.ones((4, 4), int), _refs(), seed=-1),
                      r"seed must be an integer in 0\.\.4294967295"),
    "nan-or-inf-noise-lambda": (lambda t: SimulatedSpecimen(np.ones((4, 4), int), _refs(), noise_lambda=np.inf),
                                "noise_lambda"),
    "bad-c-values": (lambda t: _train_erd_with_c((0,)), "c values must be"),
    "erd-features-of-wrong-shape": (lambda t: LinearERD(np.r_[1.0, np.zeros(27)], np.zeros(6), np.ones(6), 2.0)
                                    .predict(np.ones((3, 4))), r"expected shape \(n, 6\)"),
    "spectrum-image-npz-with-malformed-calibration": (lambda t: _malformed_npz(t, energy_offset_keV=np.array([0.1, 0.2])),
                                                      "must be single numbers"),
    "spectrum-image-npz-with-0-d-counts": (lambda t: _malformed_npz(t, counts=np.array(5)), r"\(H, W, p\)"),
    "spectrum-image-npz-with-huge-counts": (lambda t: _malformed_npz(t, counts=np.full((8, 8, 16), 2**62, np.uint64)),
                                            "are not X-ray counts"),
    "standard-with-implausible-calibration": (lambda t: make_reference_spectra(
        [Spectrum(np.ones(100), EnergyAxis(0, 0.01, 100), name="good"),
         Spectrum(np.ones(100), EnergyAxis(0, 10.0, 100), name="kev_units")]), "'kev_units': implausible energy"),
    "standards-of-different-calibrations": (lambda t: make_reference_spectra(
        [Spectrum(np.ones(100), EnergyAxis(0, 0.01, 100), name="a"),
         Spectrum(np.ones(100), EnergyAxis(0.1, 0.01, 100), name="b")]), "different energy calibrations"),
    "too-few-channels": (lambda t: make_reference_spectra(
        [Spectrum(np.arange(1.0, 11.0), EnergyAxis(0, 0.01, 10), name="short")]), "10 channels are too few"),
    "two-phases-with-the-same-standard": (lambda t: make_reference_spectra(
        [Spectrum(np.arange(1.0, 101.0), EnergyAxis(0, 0.01, 100), name="Fe")] * 2), "the same reference spectrum"),
    "a-folder-given-as-micrograph": (lambda t: read_micrograph(t), "is a folder, expected a micrograph file"),
    "grid-shape-not-2-d": (lambda t: reconstruct((3, 3, 3), [[0, 0]], [1], 2), r"grid shape must be \(H, W\)"),
    "result-without-reconstruction": (lambda t: _write_run_of({}, t), "needs 'reconstruction'"),
    "training-image-too-small": (lambda t: prepare_experiment(
        np.random.default_rng(0).random((80, 80)), 2, RunSettings(size=32, downsample=2),
        train=[np.random.default_rng(1).random((20, 20))]), "at least 16x16"),
    "standard-with-overflowing-counts": (lambda t: make_reference_spectra(
        [Spectrum(np.full(100, 1e308), EnergyAxis(0, 0.01, 100), name="huge")]), "overflow"),
}


def _malformed_npz(t, **fields):
    from napari_slads_eds.eds_io import read_eds

    d = {"counts": np.ones((8, 8, 16), np.int32), "energy_offset_keV": 0.0, "energy_scale_keV": 0.01}
    d.update(fields)
    np.savez(t / "map.npz", **d)
    return read_eds(t / "map.npz")


def _write_run_of(result, t):
    from napari_slads_eds.results import write_run

    return write_run(result, t / "run")


def _train_erd_with_c(c_values):
    from napari_slads_eds.erd import train_erd

    im = np.ones((16, 16), int)
    im[:, 8:] = 2
    return train_erd([im], 2, c_values=c_values)


def _twice():
    s = Sampler((4, 4), 2, None)
    s.update([[0, 0]], [1])
    s.update([[0, 0]], [1])


def _pickled_npz(t):
    p = t / "run.npz"
    np.savez(p, result_json=np.array("{}"), labels=np.array([{"evil": 1}], dtype=object))
    return load_run(p)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_a_clear_error(case, tmp_path):
    fn, message = CASES[case]
    with pytest.raises(InputError, match=message):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(tmp_path)


# --- inputs that are not errors: a correct result --------------------------------------------

def test_rgb_micrograph_is_converted_with_a_warning(tmp_path):
    import imageio.v3 as iio

    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[:, 5:] = 200
    iio.imwrite(tmp_path / "rgb.png", rgb)
    with pytest.warns(UserWarning, match="RGB image converted to grey"):
        g = read_micrograph(tmp_path / "rgb.png")
    assert g.shape == (10, 10) and segment_phases(g, 2, denoise_size=0)[0, 9] == 2


def test_k_larger_than_the_measured_count_uses_all_of_them():
    rec = reconstruct((5, 5), [[0, 0], [4, 4]], [1, 2], 2, k=10)
    assert rec[0, 1] == 1 and rec[4, 3] == 2


def test_a_run_to_100_percent_and_an_empty_erd_map():
    truth = np.ones((6, 6), dtype=np.int16)
    truth[:, 3:] = 2
    m = LinearERD(np.r_[1.0, np.zeros(27)], np.zeros(6), np.ones(6), 2.0)
    s = Sampler((6, 6), 2, m, truth=truth)
    while len(p := s.select(5)):
        s.update(p, truth[p[:, 0], p[:, 1]])
    assert s.fraction == 1.0 and s.td == 0.0
    assert np.isnan(s.erd_map).all() and s.select(1).shape == (0, 2)


def test_every_row_of_the_bad_input_table_is_a_test():
    doc = (REPO / "docs" / "bad_input.md").read_text()
    rows = [r for r in doc.splitlines() if r.startswith("| ") and not r.startswith("| input") and "---" not in r]
    assert len(rows) >= len(CASES)
    tests_text = {p.name: p.read_text() for p in (REPO / "tests").glob("test_*.py")}
    for row in rows:
        ref = row.rstrip(" |").rsplit("|", 1)[-1].strip().strip("`")
        m = re.fullmatch(r"(test_\w+\.py)::(test_\w+)(?:\[([\w-]+)\])?", ref)
        assert m, f"row without a test reference: {row}"
        f, fn, param = m.groups()
        assert f in tests_text and f"def {fn}(" in tests_text[f], f"{ref} does not exist"
        if param and f == "test_bad_input.py":
            assert param in CASES, f"{param} is not a case of {fn}"
    for case in CASES:
        assert f"[{case}]" in doc, f"case {case} is missing from docs/bad_input.md"


@pytest.mark.parametrize("kw, match", [
    ({"batch": 2.5}, "--batch must be an integer"),
    ({"fraction": "0.15"}, "--fraction must be a finite number"),
    ({"initial_fraction": float("nan")}, "initial fraction must be a finite number"),
    ({"size": True}, "--size must be an integer"),
    ({"baseline_fractions": "0.1"}, "baseline fractions"),
    ({"baseline_fractions": (2.0, -1)}, "baseline fractions"),
    ({"baseline_fractions": 5}, "baseline fractions"),           # (a TypeError from tuple(5) before)
])
def test_run_settings_of_the_wrong_type_are_named(kw, match):
    """A hand-edited run_settings.json (read back by resume) with values of the wrong type
    is refused at once, naming the setting, not later with a raw TypeError."""
    with pytest.raises(InputError, match=match):
        RunSettings(**kw).check()
    RunSettings(baseline_fractions=[0.05, 0.1]).check()          # a JSON list is fine


# --- issue 14: the HyperSpy/npz export of a run --------------------------------------------

def _export_result(H=8, W=8, n=5):
    rec = np.ones((H, W), np.int32)
    pos = np.array([[i % H, (3 * i) % W] for i in range(n)]).reshape(-1, 2)
    return {"reconstruction": rec, "positions": pos, "labels": np.ones(n), "mask": rec > 0}


def _with(**changes):
    r = _export_result()
    r.update(changes)
    return r


@pytest.mark.parametrize("result, kw, match", [
    (_with(positions=[["a", "b"]] * 5), {}, "positions must be integers"),
    (_with(positions=np.arange(9)), {}, r"positions must be \(n, 2\)"),
    (_with(positions=np.full((5, 2), 0.5)), {}, "non-integral"),
    (_with(positions=np.full((5, 2), np.nan)), {}, "NaN"),
    (_with(labels=["x"] * 5), {}, "labels must be integers"),
    (_with(labels=[np.nan] * 5), {}, "labels contain NaN"),
    (_with(labels=[70000] * 5), {}, r"labels must be in 0\.\.32767"),
    (_with(mask=np.ones((9, 8), bool)), {}, r"the mask is \(9, 8\)"),
    (_with(ground_truth=np.ones((3, 3))), {}, r"the ground truth is \(3, 3\)"),
    (_with(reconstruction=np.full((8, 8), np.nan)), {}, "reconstruction labels contain NaN"),
    (_with(td_curve=[[0.1]]), {}, r"td_curve must be a list of \[fraction, TD\] pairs"),
    (_with(td_curve="abc"), {}, "td_curve must be a list"),
    (_with(settings={"a": object()}), {}, "JSON values"),
    (_export_result(), {"elements": 5}, "elements must be element symbols"),
    (_export_result(), {"elements": {"Fe": 1}}, "elements must be element symbols"),
    (_export_result(), {"live_time_s": True}, "live_time_s must be a number"),
    (_export_result(), {"spectra": np.ones((5, 10)), "axis": "keV"}, "axis must be an EnergyAxis"),
])
@pytest.mark.parametrize("suffix", [".hspy", ".npz"])
def test_export_of_a_malformed_result_is_refused(result, kw, match, suffix, tmp_path):
    """export_run refuses what it would otherwise write wrong (truncated float positions,
    maps of another shape) or fail on with a raw numpy/json error."""
    from napari_slads_eds.export import export_run

    with pytest.raises(InputError, match=match):
        export_run(result, tmp_path / f"run{suffix}", **kw)
    assert not (tmp_path / f"run{suffix}").exists()


@pytest.mark.parametrize("suffix", [".hspy", ".npz"])
def test_export_of_a_run_without_measurements_and_an_axis_dict(suffix, tmp_path):
    """No position measured (a 1x1 grid, zero spectra) loads back; an axis given as its
    dict is accepted."""
    from napari_slads_eds.export import export_run, load_export

    ax = EnergyAxis(0.0, 0.01, 10)
    p = export_run(_export_result(1, 1, 0), tmp_path / f"a{suffix}", spectra=np.zeros((0, 10)), axis=ax)
    r = load_export(p)
    assert r["positions"].shape == (0, 2) and r["spectra"].shape == (0, 10)
    p = export_run(_export_result(), tmp_path / f"b{suffix}", spectra=np.ones((5, 10)), axis=ax.to_dict())
    assert load_export(p)["energy_axis"] == ax


# --- issue 14: SamplingConfig, the settings and a hand-edited run_settings.json -------------

@pytest.mark.parametrize("kw, match", [
    ({"baselines": None}, "baselines: expected a sequence"),
    ({"baselines": 5}, "baselines: expected a sequence"),
    ({"baseline_fractions": None}, "baseline fractions"),
    ({"baseline_fractions": 5}, "baseline fractions"),
    ({"overlap": "false"}, "overlap must be true or false"),
    ({"overlap": 2}, "overlap must be true or false"),
])
def test_sampling_config_of_the_wrong_type_is_named(kw, match):
    """A JSON null or a string where a list or a bool belongs: an InputError naming the
    field (a raw TypeError before; "overlap": "false" was silently true)."""
    from napari_slads_eds.config import SamplingConfig

    with pytest.raises(InputError, match=match):
        SamplingConfig(**kw).check()
    with pytest.raises(InputError, match=match):
        SamplingConfig.from_dict(kw)


def test_sampling_config_replace_and_from_settings_name_unknown_fields():
    from napari_slads_eds.config import SamplingConfig

    with pytest.raises(InputError, match=r"unknown fields \['bogus'\]"):
        SamplingConfig().replace(bogus=1)
    with pytest.raises(InputError, match=r"unknown fields \['bogus'\]"):
        SamplingConfig.from_settings(RunSettings(), bogus=1)
    assert SamplingConfig().replace(fraction=0.3).fraction == 0.3


@pytest.mark.parametrize("kw, match", [
    ({"upsample": "abc"}, "--upsample must be an integer"),
    ({"ill_fraction": 2.0}, r"--ill-fraction must be in \[0, 1\)"),
    ({"counts_per_spectrum": -1.0}, "counts per spectrum must be > 0"),
    ({"noise_lambda": "2"}, "noise_lambda must be a finite number"),
    ({"ill_lambda": -5.0}, "ill_lambda"),
    ({"max_train_regions": "4"}, "max_train_regions"),
])
def test_run_settings_of_the_wrong_type_or_range_are_named_too(kw, match):
    with pytest.raises(InputError, match=match):
        RunSettings(**kw).check()


@pytest.mark.parametrize("kw, match", [
    ({"smooth": "1.0"}, "--smooth .* must be a finite number"),
    ({"train_share": "x"}, "--train-share must be a finite number"),
    ({"dwell": "0.5"}, "--dwell must be a finite number"),
    ({"n_per_phase": "600"}, "n_per_phase .* must be an integer"),
    ({"erd_downsample": 0}, "erd_downsample must be an integer"),
    ({"c_values": 5}, "c_values .* must be a list"),
    ({"default_calibration": 5}, "--calibration .* must be a list of 2 numbers"),
    ({"default_calibration": (0.0, -0.01)}, "energy scale .* must be > 0"),
    ({"classifier": 5}, "--classifier must be a classifier folder"),
    ({"train": "a.png"}, "--train must be a list"),
])
def test_replay_settings_of_the_wrong_type_are_named(kw, match):
    """What a hand-edited run_settings.json of a replay holds reaches ReplaySettings.check
    on resume: an InputError naming the setting, not a TypeError from a comparison."""
    from napari_slads_eds.replay import ReplaySettings

    with pytest.raises(InputError, match=match):
        ReplaySettings(**kw).check()


def _fake_replay_folder(t, **meta_changes):
    """A replay's run folder as far as read_run_folder looks (no real models: the tests
    stop before they are used)."""
    import json
    from dataclasses import asdict

    from napari_slads_eds.replay import ReplaySettings

    d = t / "replay"
    (d / "models" / "classifier").mkdir(parents=True)
    (d / "models" / "classifier" / "classifier.json").write_text(json.dumps({"kind": "poisson"}))
    for name in ("models/classifier/poisson_model.npz", "models/erd_model.npz", "journal.h5"):
        (d / name).write_bytes(b"")
    (d / "models" / "training.json").write_text(json.dumps({"classifier": {}, "erd": {"c": 8.0}}))
    np.savez(t / "map.npz", counts=np.ones((4, 4, 16), np.uint16), energy_offset_keV=0.0, energy_scale_keV=0.01)
    meta = {"mode": "replay", "settings": asdict(ReplaySettings()), "n_phases": 2,
            "source": {"spectrum_image": str(t / "map.npz")}}
    for k, v in meta_changes.items():
        if k.startswith("settings_"):
            meta["settings"][k[len("settings_"):]] = v
        else:
            meta[k] = v
    (d / "run_settings.json").write_text(json.dumps(meta))
    return d


@pytest.mark.parametrize("changes, match", [
    ({"source": "x"}, "'source' must be a JSON object"),
    ({"source": {"spectrum_image": 5}}, r"the map it replays \(5\) is not there"),
    ({"source": {}}, r"the map it replays \(unknown\) is not there"),
    ({"settings_smooth": "1.0"}, "--smooth .* must be a finite number"),
    ({"settings_c_values": 5}, "c_values .* must be a list"),
    ({"settings_bogus": 1}, "invalid replay settings"),
    ({"settings": {"size": 32}}, "invalid replay settings"),
])
def test_resume_of_a_hand_edited_replay_folder_is_refused(changes, match, tmp_path):
    from napari_slads_eds.replay import resume_replay

    d = _fake_replay_folder(tmp_path, **changes)
    with pytest.raises(InputError, match=match):
        resume_replay(d)


def test_read_mode_of_a_folder_whose_source_is_not_an_object(tmp_path):
    import json

    from napari_slads_eds.run_folder import read_mode

    (tmp_path / "run_settings.json").write_text(json.dumps({"source": "x"}))
    assert read_mode(tmp_path) == "run"      # not an AttributeError; read_run_folder names it


def test_a_replay_records_the_maps_absolute_path(tmp_path, monkeypatch):
    """resume_replay reads the map again from run_settings.json: a relative path given to
    slads-eds replay must not depend on the folder resume is started in."""
    from napari_slads_eds.replay import ReplaySettings, prepare_replay

    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, (8, 8, 32)).astype(np.uint16)
    counts[:, 4:, :16] += rng.poisson(20.0, (8, 4, 16)).astype(np.uint16)
    np.savez(tmp_path / "map.npz", counts=counts, energy_offset_keV=0.0, energy_scale_keV=0.3)
    monkeypatch.chdir(tmp_path)
    exp = prepare_replay("map.npz", 2, ReplaySettings(n_per_phase=8, erd_training="micrograph"))
    assert exp.source["spectrum_image"] == str((tmp_path / "map.npz").resolve())


@pytest.mark.parametrize("name", ["run.npz", "specimen.npz", "models/erd_model.npz",
                                  "models/classifier/poisson_model.npz"])
def test_export_never_overwrites_a_run_folders_own_files(name, tmp_path):
    """slads-eds export DIR --to DIR/run.npz (or the Save dialog on that name) wrote an
    export over the run's run.npz; over specimen.npz or a model it made the run
    unresumable.  Beside them (run_export.npz) or elsewhere is fine."""
    import json

    from napari_slads_eds.export import export_run

    (tmp_path / "run_settings.json").write_text(json.dumps({"mode": "run"}))
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"precious")
    with pytest.raises(InputError, match="is a file of the run folder"):
        export_run(_export_result(), target)
    assert target.read_bytes() == b"precious"
    assert export_run(_export_result(), tmp_path / "run_export.npz").is_file()


# --- issue 14: the napari writer (File > Save Selected Layers) and reader ------------------

def _run_layer_data(rec=None, mask=None, points=None, rec_meta=None, pts_meta=None):
    rec = np.array([[1, 1, 2], [1, 2, 2]], np.int32) if rec is None else rec
    out = [(rec, {"name": "r", "metadata": {"slads_eds_run": "reconstruction", **(rec_meta or {})}}, "labels")]
    if mask is not None:
        out.append((mask, {"name": "m", "metadata": {"slads_eds_run": "mask"}}, "image"))
    if points is not None:
        out.append((points, {"name": "p", "metadata": {"slads_eds_run": "measured"}, **(pts_meta or {})}, "points"))
    return out


_MASK = np.array([[1, 0, 0], [0, 0, 1]], np.uint8)


@pytest.mark.parametrize("layers, match", [
    (_run_layer_data(rec=np.array([[1.4, 1, 2], [1, 2, 2]]), mask=_MASK), "non-integer values"),
    (_run_layer_data(rec=np.full((2, 3), np.nan), mask=_MASK), "NaN or inf"),
    (_run_layer_data(rec=-np.ones((2, 3)), mask=_MASK), r"phase labels in 0\.\.32767"),
    (_run_layer_data(mask=np.full((2, 3), np.nan)), "mask 'm' must be finite numbers"),
    (_run_layer_data(points=np.array([[0.0, 0.0], [1.0, 2.0]]),
                     pts_meta={"features": {"label": ["a", "b"]}}), "'label' feature must be integer"),
    (_run_layer_data(points=np.array([[0.0, 0.0], [1.0, 2.0]]),
                     pts_meta={"features": {"label": [np.nan, 1.0]}}), "'label' feature holds NaN"),
    (_run_layer_data(points=np.array([[0.0, np.nan]])), r"must be \(n, 2\) finite"),
])
def test_writer_refuses_layers_it_would_save_wrong(layers, match, tmp_path):
    """A Labels layer of float (or NaN) data was truncated to int silently; a NaN mask saved
    a run of no measurements; a string label feature gave a raw ValueError."""
    from napari_slads_eds._writer import write_run_layers

    with pytest.raises(InputError, match=match):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_run_layers(str(tmp_path / "run.npz"), layers)
    assert not (tmp_path / "run.npz").exists()


def test_writer_takes_the_last_two_columns_of_3d_points_and_odd_metadata():
    """Points of a 3-D view (plane, row, col) gave scrambled positions (reshape to (-1, 2));
    a role that is not a string, a summary that is not a dict, units that are not a
    sequence gave raw TypeErrors/ValueErrors."""
    from napari_slads_eds._writer import layers_to_run

    pts = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    run, _ = layers_to_run(_run_layer_data(points=pts, rec_meta={"slads_eds_result": "x"}))
    np.testing.assert_array_equal(run["positions"], [[0, 0], [1, 2]])
    np.testing.assert_array_equal(run["labels"], [1, 2])
    lt = _run_layer_data(mask=_MASK)
    lt[0][1]["units"] = 5
    lt[0][1]["scale"] = "abc"
    assert layers_to_run(lt)[1] == {}
    lt[0][1]["metadata"]["slads_eds_run"] = ["reconstruction"]
    with pytest.raises(InputError, match="not part of a SLADS run"):
        layers_to_run(lt)


def test_reader_refuses_an_empty_spectrum_image(tmp_path):
    from napari_slads_eds._reader import read_path

    np.savez(tmp_path / "m.npz", counts=np.ones((0, 5, 16), np.uint16), energy_offset_keV=0.0,
             energy_scale_keV=0.01)
    with pytest.raises(InputError, match="is empty: 0x5 pixels"):
        read_path(str(tmp_path / "m.npz"))


# --- issue 14: RunResult.from_job, write_run_folder, sampling_job_kwargs --------------------

_RAW = {"grid": [4, 4], "n_measured": 3, "phases": 2, "sampling_fraction": 0.2}


@pytest.mark.parametrize("changes, match", [
    ({"raw": None}, "the job's result must be a dict"),
    ({"raw": {**_RAW, "grid": "ab"}}, "bad grid"),
    ({"raw": {**_RAW, "grid": [1, 2, 3]}}, "bad grid"),
    ({"raw": {**_RAW, "grid": [0, 0]}}, "bad grid"),
    ({"raw": {**_RAW, "td": "x"}}, "not a number"),
    ({"dwell_per_position": "x"}, "not a number"),
    ({"config": 5}, "config must be a SamplingConfig"),
    ({"settings": [1]}, "settings must be a dict"),
])
def test_run_result_from_a_bad_job_result(changes, match):
    from napari_slads_eds.config import SamplingConfig
    from napari_slads_eds.run_folder import RunResult

    kw = dict(raw=_RAW, mode="run", config=SamplingConfig(), settings={}, source={}, classifier_report={},
              erd_report={}, seconds=1.0)
    kw.update(changes)
    raw = kw.pop("raw")
    with pytest.raises(InputError, match=match):
        RunResult.from_job(raw, **kw)
    # None reports and a config dict are accepted
    kw.update(config={}, settings=None, classifier_report=None, erd_report=None, dwell_per_position=1.0)
    assert RunResult.from_job(_RAW, **kw).dose["total_dwell"] == 3.0


@pytest.mark.parametrize("kw, match", [
    ({"settings": {"a": 1}}, "settings must be RunSettings or ReplaySettings"),
    ({"n_phases": "two"}, "n_phases must be an integer"),
    ({"settings": RunSettings(fraction=2.0)}, "--fraction must be in"),
])
def test_write_run_folder_refuses_bad_arguments_before_writing(kw, match, tmp_path):
    from napari_slads_eds.run_folder import write_run_folder

    args = dict(settings=RunSettings(), n_phases=2)
    args.update(kw)
    with pytest.raises(InputError, match=match):
        write_run_folder(tmp_path / "out", None, args.pop("settings"), {}, {}, **args)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        write_run_folder(tmp_path / "file", None, RunSettings(), {}, {}, n_phases=2)


def test_sampling_job_kwargs_with_no_or_odd_training_report():
    from napari_slads_eds.config import SamplingConfig
    from napari_slads_eds.run_folder import sampling_job_kwargs

    for rep in (None, {"stopping": "x"}):
        assert sampling_job_kwargs("d", SamplingConfig(), rep, resume=False, stop_td=0.1)["stop_threshold"] is None
