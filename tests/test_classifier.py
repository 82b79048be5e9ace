"""Tests of the Keras spectrum classifier (napari_slads_eds.classifier).

The pytest process must never import TensorFlow (GUI tests in the same session create
napari viewers; TensorFlow in that process crashes Mesa's OpenGL).  So all TensorFlow work
runs in one spawned child process: the check functions live in ``tests/_tf_checks.py``
(importable here because pytest's default "prepend" import mode puts ``tests/`` on
``sys.path``, which spawned children inherit) and return plain Python values.
"""

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

import _tf_checks as checks

pytestmark = pytest.mark.engine

TIMEOUT = 300


@pytest.fixture(scope="module")
def tf_child():
    """Run a function from _tf_checks in the spawned TensorFlow child and return its result."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    def run(fn, *args, **kwargs):
        return pool.submit(fn, *args, **kwargs).result(timeout=TIMEOUT)

    yield run
    pool.shutdown(wait=True, cancel_futures=True)


def test_child_process_has_tensorflow_and_tests_path(tf_child):
    import os

    info = tf_child(checks.child_info)
    assert info["pid"] != os.getpid()
    assert info["tensorflow"] is True
    assert info["sys_path_has_tests"] is True


def test_flatten_size_is_2048_as_in_the_paper(tf_child):
    out = tf_child(checks.flatten_sizes, (2040, 2048, 1000))
    assert out[2040]["flatten"] == 2048
    assert out[2048]["flatten"] == 2048
    assert out[1000]["flatten"] == 16 * 63  # 16 * ceil(1000 / 16)
    assert out[2048]["layers"] == ["InputLayer", "Rescaling", "Conv1D", "MaxPooling1D", "Conv1D",
                                   "MaxPooling1D", "Flatten", "Dense", "Dense", "Dense", "Dense"]
    assert out[2048]["cnn_output"] == [3]
    assert out[2048]["detector_dense"] == [100, 100, 100, 100, 100, 100]


def test_threshold_choice(tf_child):
    out = tf_child(checks.threshold_choice)
    assert out["separable"] == pytest.approx((0.004 * 0.1) ** 0.5)  # geometric mean in the gap
    # best possible with the overlap: 2 errors (0.003 ill below 0.004 good, or 0.3 good)
    assert out["overlap_errors"] == 2
    assert out["only_good"] > 0.004


def test_training_report_and_progress(tf_child):
    out = tf_child(checks.train_report)
    rep = out["report"]
    L = out["n_phases"]
    assert L == 2 and out["phase_names"] == ["nist_Si_std_15kV", "nist_Fe_std_15kV"]
    assert out["axis"] == out["refs_axis"]
    assert rep["flatten_size"] == out["flatten_size"] == 2048
    conf = rep["confusion"]
    assert len(conf) == L + 1 and all(len(row) == L + 1 for row in conf)
    assert sum(map(sum, conf)) == rep["n_val"]
    wrong = rep["n_val"] - sum(conf[i][i] for i in range(L + 1))
    assert rep["misclassification"] == pytest.approx(wrong / rep["n_val"])
    # easy data (Si vs Fe): validation misclassification small even after quick training
    assert rep["misclassification"] <= 0.01
    assert rep["threshold"] == out["threshold"] > 0
    # half of the 8 spectra per phase train, 16 noisy draws each
    assert rep["n_train"] == L * 4 * 16
    assert rep["epochs"] == 6 and rep["detector_epochs"] == 12
    assert rep["seconds"] > 0
    models = [m["model"] for m in out["progress"]]
    assert models == ["detector"] * 12 + ["cnn"] * 6
    last = out["progress"][-1]
    assert last["stage"] == "classifier" and last["epoch"] == last["epochs"] == 6
    assert last["loss"] >= 0


def test_predict_contract_and_accuracy(tf_child):
    out = tf_child(checks.predict_contract)
    assert out["shape"] == [700] and out["dtype"] == "int16"
    assert 0 <= out["min"] and out["max"] <= 2
    assert out["min"] == 0 and out["max"] == 2  # ill and both phases occur
    assert out["single_shape"] == [1] and out["single_dtype"] == "int16"
    assert out["single_label"] == out["single_true"]
    assert out["single_ill"] == 0
    assert out["prob_shape"] == [700, 2] and out["prob_dtype"] == "float32"
    assert out["prob_row_sum_err"] < 1e-5
    assert out["var_shape"] == [700] and out["var_dtype"] == "float64"
    assert out["labels_from_variance"]  # label 0 exactly where variance > T (eq. 16)
    assert out["good_error"] <= 0.01
    assert out["ill_detected"] >= 0.99
    assert out["empty_shape"] == [0]
    # the numpy small-batch path and the compiled TF path agree
    assert out["numpy_vs_tf_labels"]
    assert out["numpy_vs_tf_var"] < 1e-3
    assert out["numpy_vs_tf_prob"] < 1e-4


def test_pure_poisson_noise_is_ill(tf_child):
    out = tf_child(checks.pure_noise_detection, 2000, 20.0)
    assert out["ill_fraction"] >= 0.999
    assert out["min_variance"] > out["threshold"] or out["ill_fraction"] < 1


def test_wrong_input_raises_input_error(tf_child):
    out = tf_child(checks.wrong_input_errors)
    for key, msg in out.items():
        assert msg is not None, f"{key}: no error raised"
        assert not msg.startswith("WRONG TYPE"), f"{key}: {msg}"
    assert "expected 2048 channels per spectrum, got 2049" in out["channels/predict"]
    assert "non-negative" in out["negative/predict"]
    assert "NaN" in out["nan/ill_variance"]


def test_save_load_roundtrip(tf_child, tmp_path):
    out = tf_child(checks.save_load_roundtrip, str(tmp_path / "clf"))
    assert out["files"] == ["classifier.json", "cnn.keras", "detector.keras"]
    assert out["labels_equal"] and out["single_equal"]
    assert out["n_labels_nonzero"] > 0
    assert out["var_max_diff"] == 0.0
    assert out["prob_max_diff"] == 0.0
    assert out["threshold"][0] == out["threshold"][1]
    assert out["phase_names"][0] == out["phase_names"][1]
    assert out["axis"][0] == out["axis"][1]
    assert out["f_equal"] and out["report_equal"]
    assert "pickle" not in (tmp_path / "clf" / "classifier.json").read_text()


def test_corrupt_or_missing_files_raise_input_error(tf_child, tmp_path):
    out = tf_child(checks.corrupt_files, str(tmp_path))
    expected_file = {
        "truncated_cnn": "cnn.keras", "truncated_detector": "detector.keras", "bitflip_cnn": "cnn.keras",
        "garbage_cnn": "cnn.keras", "missing_detector": "detector.keras",
        "truncated_json": "classifier.json", "wrong_version": "classifier.json",
    }
    for case, fname in expected_file.items():
        res = out[case]
        assert res is not None, f"{case}: load() did not fail"
        assert res["is_input_error"], f"{case}: {res['type']}: {res['message']}"
        assert fname in res["message"], f"{case}: {res['message']}"
    assert "truncated or corrupt" in out["truncated_cnn"]["message"]
    assert "corrupt" in out["bitflip_cnn"]["message"]
    assert "missing" in out["missing_detector"]["message"]
    assert out["wrong_version"]["message"].find("99") >= 0
    assert out["swapped_models"] is not None and out["swapped_models"]["is_input_error"]
    assert out["no_directory"]["type"] == "InputError"


def test_training_is_reproducible_from_the_seed(tf_child):
    out = tf_child(checks.reproducibility, 3)
    a, b, c = out["runs"]
    assert out["same_seed_same_weights"]
    assert a == b
    assert out["other_seed_other_weights"]
    assert c["weights_sum"] != a["weights_sum"]


def test_should_stop_cancels_training(tf_child):
    out = tf_child(checks.cancel_training, 5)
    assert out["raised"] == "TrainingCancelled"
    assert out["polls"] <= 7  # stops within a batch of being asked
    assert out["epochs_logged"] < 50


def test_bad_training_input(tf_child):
    out = tf_child(checks.bad_training_input)
    assert out["one_per_phase"] is not None and "at least 2 spectra per phase" in out["one_per_phase"]
    assert out["array"] is not None and "ReferenceSpectra" in out["array"]


def test_pytest_process_never_imports_tensorflow(tf_child):
    tf_child(checks.child_info)  # the child has TensorFlow loaded ...
    assert "tensorflow" not in sys.modules  # ... this process does not
    assert "keras" not in sys.modules
    assert "napari_slads_eds.classifier" not in sys.modules


def test_numpy_parts_of_the_classifier_import_no_tensorflow():
    # classifier_data (preprocessing, threshold) and classifier_numpy (the forward pass of
    # small batches) are numpy only: usable outside the engine process
    import subprocess

    code = ("import sys, napari_slads_eds.classifier_data, napari_slads_eds.classifier_numpy\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'napari_slads_eds.classifier') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
