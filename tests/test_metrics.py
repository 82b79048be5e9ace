import numpy as np
import pytest

from napari_slads_eds import InputError, confusion_matrix, total_distortion
from napari_slads_eds.metrics import misclassification_rate


def test_total_distortion_counts_wrong_pixels():
    x = np.array([[1, 1, 2], [2, 2, 1]])
    y = np.array([[1, 2, 2], [2, 1, 1]])
    assert total_distortion(x, y) == pytest.approx(2 / 6)   # eq. 19
    assert total_distortion(x, x) == 0.0
    with pytest.raises(InputError, match="shape"):
        total_distortion(x, y[:, :2])


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0], 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 2]]
    assert misclassification_rate([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0]) == pytest.approx(2 / 6)
    with pytest.raises(InputError):
        confusion_matrix([0, 3], [0, 1], 3)
