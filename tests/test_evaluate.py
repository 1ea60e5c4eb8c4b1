import numpy as np
import pytest
from conftest import synthetic_dataset

from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.evaluate import cross_validate, evaluate_probabilities, report_from_predictions


def test_confusion_matrix_equals_a_hand_computed_one():
    true = np.array([0, 0, 0, 1, 3, 3, 3, 3, 6, 6])
    predicted = np.array([0, 0, 3, 1, 3, 3, 6, 3, 6, 0])
    report = report_from_predictions(true, predicted)
    expected = np.zeros((7, 7), int)
    expected[0, 0], expected[0, 3] = 2, 1
    expected[1, 1] = 1
    expected[3, 3], expected[3, 6] = 3, 1
    expected[6, 6], expected[6, 0] = 1, 1
    assert report.confusion_matrix == expected.tolist()
    assert report.accuracy == 0.7
    assert report.n == 10
    # happy: 3 of 4 found (recall 0.75); predicted 4 times, 3 right (precision 0.75).
    assert report.per_class["happy"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert report.per_class["angry"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert report.per_class["fear"]["support"] == 0
    normalized = np.array(report.confusion_normalized)
    assert normalized[0].tolist()[:4] == [pytest.approx(2 / 3, abs=1e-4), 0, 0, pytest.approx(1 / 3, abs=1e-4)]
    assert normalized[2].sum() == 0  # no fear faces: the row stays zero
    # recalls of the four classes with faces: angry 2/3, disgust 1, happy 3/4, neutral 1/2 (fear has none)
    assert report.balanced_accuracy == pytest.approx((2 / 3 + 1 + 0.75 + 0.5) / 4, abs=1e-4)
    assert report.format().splitlines()[-1] == "accuracy: 0.7000"
    assert set(report.to_dict()) == {"accuracy", "balanced_accuracy", "macro_f1", "n", "per_class", "confusion_matrix",
                                     "confusion_matrix_normalized"}


def test_evaluate_probabilities_uses_the_argmax():
    dataset = FaceDataset(np.zeros((2, 48, 48), np.uint8), np.array([3, 4]), np.array(["Training"] * 2))
    probabilities = np.array([[0, 0, 0, 0.9, 0.1, 0, 0], [0, 0, 0, 0.6, 0.4, 0, 0]])
    assert evaluate_probabilities(dataset, probabilities).accuracy == 0.5


def test_cross_validation_runs_every_fold_on_unseen_faces():
    images, labels = synthetic_dataset(70)
    dataset = FaceDataset(images, labels, np.array(["Training"] * 70))
    seen_sizes = []

    def nearest_mean(train, test):
        seen_sizes.append((len(train), len(test)))
        means = np.stack([train.images[train.labels == c].mean(axis=0) for c in range(7)])
        distances = ((test.images[:, None].astype(float) - means[None]) ** 2).sum(axis=(2, 3))
        return np.eye(7)[distances.argmin(axis=1)]

    result = cross_validate(dataset, nearest_mean, k=5)
    assert seen_sizes == [(56, 14)] * 5
    assert len(result["folds"]) == 5
    assert np.sum(result["confusion_matrix"]) == 70
    assert result["mean"] > 0.5
