"""Shared fixtures.  Never import tensorflow here: GUI tests in the same session create
napari viewers, and TensorFlow in the same process crashes Mesa's OpenGL."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The workflow dock starts the engine when it opens (a 4-5 s TensorFlow start in a process of
# its own); the suite opens dozens of docks, so only the tests of that start switch it on.
os.environ.setdefault("SLADS_EDS_ENGINE_PRESTART", "0")

REPO = Path(__file__).resolve().parents[1]
#: Real data that may not be bundled (GPL Bruker map): ../shared/data next to the repository,
#: or $SLADS_EDS_SHARED_DATA; tests that need it skip with a reason when it is absent.
SHARED_DATA = Path(os.environ.get("SLADS_EDS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def sample_dir():
    from napari_slads_eds.spectra import sample_data_dir

    return sample_data_dir()


@pytest.fixture
def blobs():
    """A 48x48 two-phase label image (labels 1, 2)."""
    from skimage.data import binary_blobs

    return binary_blobs(48, blob_size_fraction=0.25, volume_fraction=0.4, rng=5).astype(np.int16) + 1


def pytest_sessionfinish(session, exitstatus):
    # The whole test session must stay free of TensorFlow (it lives in the engine process).
    if "tensorflow" in sys.modules and exitstatus == 0:
        session.exitstatus = 1
        print("\nERROR: tensorflow was imported into the pytest process", file=sys.stderr)
