"""TensorFlow-side checks for test_classifier.py.

These functions run in a *spawned* child process (never in the pytest process, which
must stay free of TensorFlow: GUI tests create napari viewers in it).  They import
:mod:`napari_slads_eds.classifier` inside, do the work and return plain Python values.
This module itself imports only numpy at top level, so the pytest process can import it
to pickle references to its functions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: Small but realistic training set: Si vs Fe standards, 2048 channels, 7500 counts.
SMALL = dict(L=2, p=2048, m=8, counts=7500.0)
#: Quick training settings (a few seconds on 2 cores).
QUICK = dict(n_noisy=16, n_noisy_val=8, epochs=6, detector_epochs=12)

_cache: dict = {}


def _references(L: int, p: int, m: int, counts: float, seed: int):
    from napari_slads_eds.spectra import (bundled_standards, default_axis,
                                          default_standards_for, make_reference_spectra)

    std = bundled_standards()
    return make_reference_spectra([std[n] for n in default_standards_for(L)], axis=default_axis(p),
                                  n_per_phase=m, counts_per_spectrum=counts, seed=seed)


def _trained(seed: int = 0):
    """The quick classifier on SMALL data (trained once per child process)."""
    key = ("small", seed)
    if key not in _cache:
        from napari_slads_eds.classifier import SpectrumClassifier

        refs = _references(**SMALL, seed=1)
        log: list = []
        clf, report = SpectrumClassifier.train(refs, seed=seed, progress=log.append, **QUICK)
        _cache[key] = (clf, report, log, refs)
    return _cache[key]


def _test_spectra(refs, n_per_phase: int, n_ill: int, seed: int):
    """Fresh test spectra: reference + Poisson(2) per phase, and Poisson(20) ill-spectra."""
    rng = np.random.default_rng(seed)
    L, M, p = refs.spectra.shape
    good = refs.spectra[:, rng.integers(0, M, n_per_phase)]
    good = (good + rng.poisson(2.0, good.shape)).reshape(-1, p).astype(np.float32)
    labels = np.repeat(np.arange(1, L + 1), n_per_phase)
    ill = rng.poisson(20.0, (n_ill, p)).astype(np.float32)
    return good, labels, ill


def child_info() -> dict:
    """Where the child runs and what it has imported."""
    import os

    import napari_slads_eds.classifier  # noqa: F401

    return {"pid": os.getpid(), "tensorflow": "tensorflow" in sys.modules,
            "sys_path_has_tests": str(Path(__file__).resolve().parent) in
            [str(Path(p).resolve()) for p in sys.path if p]}


def flatten_sizes(channels=(2040, 2048)) -> dict:
    """CNN flat-layer size and the layer output shapes for each channel count."""
    from napari_slads_eds.classifier import build_cnn, build_detector

    out = {}
    for p in channels:
        cnn = build_cnn(p, 3)
        det = build_detector(p)
        out[int(p)] = {
            "flatten": int(cnn.get_layer("flat").output.shape[-1]),
            "layers": [type(layer).__name__ for layer in cnn.layers],
            "cnn_output": list(cnn.output_shape[1:]),
            "detector_dense": [int(layer.units) for layer in det.layers if hasattr(layer, "units")],
        }
    return out


def train_report() -> dict:
    """Report, progress log and the classifier's attributes after quick training."""
    clf, report, log, refs = _trained()
    return {"report": report, "progress": log, "n_phases": clf.n_phases,
            "phase_names": list(clf.phase_names), "threshold": clf.threshold,
            "flatten_size": clf.flatten_size, "axis": clf.axis.to_dict(),
            "refs_axis": refs.axis.to_dict()}


def predict_contract() -> dict:
    """Shapes, dtypes and value ranges of predict and friends, and accuracy on fresh data."""
    clf, report, log, refs = _trained()
    good, y, ill = _test_spectra(refs, 200, 300, seed=7)
    x = np.concatenate([good, ill])
    lab = clf.predict(x)
    single = clf.predict(good[0])
    single_ill = clf.predict(ill[0][None, :])
    prob = clf.predict_phase_probabilities(x)
    var = clf.ill_variance(x)
    lab_small, var_small, prob_small = clf.predict_with_details(x[:5])  # numpy fast path
    lab_big, var_big, prob_big = clf.predict_with_details(x[:5].repeat(10, axis=0))  # TF path
    return {
        "shape": list(lab.shape), "dtype": str(lab.dtype), "min": int(lab.min()), "max": int(lab.max()),
        "single_shape": list(single.shape), "single_dtype": str(single.dtype),
        "single_label": int(single[0]), "single_true": int(y[0]), "single_ill": int(single_ill[0]),
        "prob_shape": list(prob.shape), "prob_dtype": str(prob.dtype),
        "prob_row_sum_err": float(np.abs(prob.sum(axis=1) - 1).max()),
        "var_shape": list(var.shape), "var_dtype": str(var.dtype),
        "good_error": float(np.mean(lab[: len(good)] != y)),
        "ill_detected": float(np.mean(lab[len(good):] == 0)),
        "n_ill": int(len(ill)),
        "empty_shape": list(clf.predict(np.zeros((0, clf.n_channels))).shape),
        "labels_from_variance": bool(np.array_equal(
            lab == 0, var > clf.threshold)),
        "numpy_vs_tf_labels": bool(np.array_equal(lab_small, lab_big[::10])),
        "numpy_vs_tf_var": float(np.max(np.abs(var_small - var_big[::10]) / np.maximum(var_big[::10], 1e-6))),
        "numpy_vs_tf_prob": float(np.abs(prob_small - prob_big[::10]).max()),
    }


def pure_noise_detection(n: int = 2000, lam: float = 20.0) -> dict:
    """Fraction of pure Poisson(lam) spectra labelled 0 (ill)."""
    clf, *_ = _trained()
    rng = np.random.default_rng(123)
    x = rng.poisson(lam, (n, clf.n_channels))
    return {"ill_fraction": float(np.mean(clf.predict(x) == 0)), "n": n,
            "min_variance": float(clf.ill_variance(x).min()), "threshold": clf.threshold}


def wrong_input_errors() -> dict:
    """Messages of the errors raised for bad spectra."""
    from napari_slads_eds._validation import InputError

    clf, *_ = _trained()
    out = {}
    cases = {
        "channels": np.zeros((3, clf.n_channels + 1)),
        "rank": np.zeros((2, 3, clf.n_channels)),
        "negative": -np.ones((1, clf.n_channels)),
        "nan": np.full((1, clf.n_channels), np.nan),
    }
    for name, x in cases.items():
        for fn in ("predict", "ill_variance", "predict_phase_probabilities"):
            try:
                getattr(clf, fn)(x)
            except InputError as exc:
                out[f"{name}/{fn}"] = str(exc)
            except Exception as exc:  # pragma: no cover - reported to the test
                out[f"{name}/{fn}"] = f"WRONG TYPE {type(exc).__name__}: {exc}"
            else:
                out[f"{name}/{fn}"] = None
    return out


def save_load_roundtrip(directory: str) -> dict:
    """Save, load (safe_mode) and compare predictions."""
    from napari_slads_eds.classifier import SpectrumClassifier

    clf, report, log, refs = _trained()
    good, y, ill = _test_spectra(refs, 100, 100, seed=11)
    x = np.concatenate([good, ill])
    d = Path(directory)
    clf.save(d)
    clf2 = SpectrumClassifier.load(d)
    a, b = clf.predict(x), clf2.predict(x)
    return {
        "files": sorted(p.name for p in d.iterdir()),
        "labels_equal": bool(np.array_equal(a, b)),
        "single_equal": bool(np.array_equal(clf.predict(x[:3]), clf2.predict(x[:3]))),
        "var_max_diff": float(np.abs(clf.ill_variance(x) - clf2.ill_variance(x)).max()),
        "prob_max_diff": float(np.abs(clf.predict_phase_probabilities(x)
                                      - clf2.predict_phase_probabilities(x)).max()),
        "threshold": [clf.threshold, clf2.threshold],
        "phase_names": [list(clf.phase_names), list(clf2.phase_names)],
        "axis": [clf.axis.to_dict(), clf2.axis.to_dict()],
        "f_equal": bool(np.array_equal(clf.f, clf2.f)),
        "report_equal": clf2.report == report,
        "n_labels_nonzero": int(np.sum(a > 0)),
    }


def corrupt_files(directory: str) -> dict:
    """Save, then damage one file at a time; collect load() error types and messages."""
    import shutil

    from napari_slads_eds._validation import InputError
    from napari_slads_eds.classifier import SpectrumClassifier

    clf, *_ = _trained()
    base = Path(directory) / "good"
    clf.save(base)
    out = {}

    def attempt(name, damage):
        d = Path(directory) / name
        shutil.copytree(base, d)
        damage(d)
        try:
            SpectrumClassifier.load(d)
        except Exception as exc:
            out[name] = {"type": type(exc).__name__, "message": str(exc),
                         "is_input_error": isinstance(exc, InputError)}
        else:
            out[name] = None

    def truncate(fname, keep=0.5):
        def f(d):
            data = (d / fname).read_bytes()
            (d / fname).write_bytes(data[: int(len(data) * keep)])
        return f

    attempt("truncated_cnn", truncate("cnn.keras"))
    attempt("truncated_detector", truncate("detector.keras", 0.9))
    def flip_byte(fname):
        def f(d):
            data = bytearray((d / fname).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (d / fname).write_bytes(bytes(data))
        return f

    attempt("bitflip_cnn", flip_byte("cnn.keras"))
    attempt("garbage_cnn", lambda d: (d / "cnn.keras").write_bytes(b"not a zip file at all"))
    attempt("missing_detector", lambda d: (d / "detector.keras").unlink())
    attempt("truncated_json", truncate("classifier.json"))
    attempt("wrong_version", lambda d: (d / "classifier.json").write_text(
        (d / "classifier.json").read_text().replace('"format_version": 1', '"format_version": 99')))
    attempt("swapped_models", lambda d: (
        (d / "cnn.keras").rename(d / "tmp.keras"), (d / "detector.keras").rename(d / "cnn.keras"),
        (d / "tmp.keras").rename(d / "detector.keras")))
    try:
        SpectrumClassifier.load(Path(directory) / "does_not_exist")
    except Exception as exc:
        out["no_directory"] = {"type": type(exc).__name__, "message": str(exc)}
    return out


def reproducibility(seed: int = 3) -> dict:
    """Train twice with one seed and once with another (tiny settings)."""
    from napari_slads_eds.classifier import SpectrumClassifier

    refs = _references(L=2, p=2048, m=4, counts=7500.0, seed=2)
    kw = dict(n_noisy=6, n_noisy_val=4, epochs=2, detector_epochs=3)
    rng = np.random.default_rng(0)
    x = np.concatenate([refs.spectra.reshape(-1, 2048) + rng.poisson(2.0, (8, 2048)),
                        rng.poisson(20.0, (4, 2048))])
    runs = []
    for s in (seed, seed, seed + 1):
        clf, report = SpectrumClassifier.train(refs, seed=s, **kw)
        w = np.concatenate([a.ravel() for a in clf.detector.get_weights() + clf.cnn.get_weights()])
        runs.append({"threshold": clf.threshold, "labels": clf.predict(x).tolist(),
                     "variance": clf.ill_variance(x).tolist(), "weights_sum": float(np.sum(w, dtype=np.float64)),
                     "weights": w})
    same_weights = bool(np.array_equal(runs[0]["weights"], runs[1]["weights"]))
    diff_weights = not bool(np.array_equal(runs[0]["weights"], runs[2]["weights"]))
    for r in runs:
        del r["weights"]
    return {"runs": runs, "same_seed_same_weights": same_weights, "other_seed_other_weights": diff_weights}


def cancel_training(stop_after: int = 5) -> dict:
    """should_stop() turning True after a few polls raises TrainingCancelled."""
    from napari_slads_eds.classifier import SpectrumClassifier, TrainingCancelled

    refs = _references(L=2, p=2048, m=4, counts=7500.0, seed=2)
    calls = {"n": 0}
    log: list = []

    def should_stop():
        calls["n"] += 1
        return calls["n"] > stop_after

    try:
        SpectrumClassifier.train(refs, n_noisy=32, epochs=50, progress=log.append, should_stop=should_stop)
    except TrainingCancelled as exc:
        return {"raised": "TrainingCancelled", "message": str(exc), "polls": calls["n"], "epochs_logged": len(log)}
    return {"raised": None, "polls": calls["n"], "epochs_logged": len(log)}


def bad_training_input() -> dict:
    """Errors for references with one spectrum per phase and for a non-ReferenceSpectra."""
    from napari_slads_eds._validation import InputError
    from napari_slads_eds.classifier import SpectrumClassifier

    out = {}
    for name, refs in (("one_per_phase", _references(L=2, p=256, m=1, counts=7500.0, seed=0)),
                       ("array", np.zeros((2, 4, 256)))):
        try:
            SpectrumClassifier.train(refs, epochs=1)
        except InputError as exc:
            out[name] = str(exc)
        else:
            out[name] = None
    return out


def threshold_choice() -> dict:
    """choose_threshold on separable and overlapping variances."""
    from napari_slads_eds.classifier import choose_threshold

    good, ill = [0.001, 0.002, 0.004], [0.1, 0.5, 1.0]
    overlap_good = [0.001, 0.002, 0.004, 0.3]          # one good spectrum looks ill
    overlap_ill = [0.003, 0.1, 0.5, 1.0, 2.0, 3.0]     # one ill spectrum looks good
    t = choose_threshold(overlap_good, overlap_ill)
    errors = sum(g > t for g in overlap_good) + sum(b <= t for b in overlap_ill)
    return {"separable": choose_threshold(good, ill), "overlap": t, "overlap_errors": int(errors),
            "only_good": choose_threshold(good, [])}
