"""TensorFlow's start-up side effects (environment, silenced fd 2) belong to the engine
process, not to the import of a library module."""

import os
import subprocess
import sys

import pytest

TF_VARS = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")


def _env_without_tf_vars() -> dict:
    return {k: v for k, v in os.environ.items() if k not in TF_VARS}


@pytest.mark.engine
def test_importing_the_classifier_sets_no_environment_variable():
    code = ("import os; before = dict(os.environ)\n"
            "import napari_slads_eds.classifier, napari_slads_eds.erd_keras\n"
            "print('changed:', sorted(k for k in {'KERAS_BACKEND', 'TF_CPP_MIN_LOG_LEVEL'} "
            "if os.environ.get(k) != before.get(k)))\n")
    r = subprocess.run([sys.executable, "-c", code], env=_env_without_tf_vars(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "changed: []"


@pytest.mark.engine
def test_engine_sets_the_tensorflow_environment_and_keeps_its_banners_off_stderr():
    code = ("from napari_slads_eds import Engine\n"
            "import os, sys\n"
            "with Engine() as eng:\n"
            "    print('child:', [eng.run('call', target='os:getenv', kwargs={'key': k}) "
            "for k in ('KERAS_BACKEND', 'TF_CPP_MIN_LOG_LEVEL')])\n"
            "    info = eng.run('engine_info')\n"
            "    print('tf:', info['tensorflow'])\n"
            "print('parent:', [os.environ.get(k) for k in ('KERAS_BACKEND', 'TF_CPP_MIN_LOG_LEVEL')], "
            "'tensorflow' in sys.modules)\n"
            "print('stderr still works', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], env=_env_without_tf_vars(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = dict(line.split(": ", 1) for line in r.stdout.strip().splitlines() if ": " in line)
    assert out["child"] == "['tensorflow', '3']"
    assert out["tf"][:1].isdigit()                                 # TensorFlow ran in the child
    assert out["parent"] == "[None, None] False"                   # the parent is untouched
    assert "stderr still works" in r.stderr                        # fd 2 given back
    for banner in ("oneDNN", "absl::InitializeLog", "cuda"):
        assert banner not in r.stderr, r.stderr[-2000:]
