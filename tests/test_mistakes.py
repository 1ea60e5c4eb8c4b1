"""The faces behind a confusion-matrix cell: which faces, in which order, page by page."""

import numpy as np
import pytest
from conftest import synthetic_dataset

from fer_core.base.errors import SettingError
from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.evaluate import Evaluation, card_evaluation, card_metrics, evaluate_classifier, evaluate_faces
from fer_core.faces.preprocess import Preprocessing


def _evaluation(n: int = 210, seed: int = 0) -> Evaluation:
    """Synthetic faces with random probabilities: every cell of the matrix gets a few faces."""
    images, labels = synthetic_dataset(n, seed)
    probabilities = np.random.default_rng(seed).dirichlet(np.ones(7), n)
    return Evaluation(FaceDataset(images, labels, np.array(["PrivateTest"] * n)), probabilities)


def test_a_cell_holds_exactly_the_faces_of_its_true_and_predicted_class():
    evaluation = _evaluation()
    predicted = evaluation.probabilities.argmax(axis=1)
    for true in range(7):
        for guess in range(7):
            page = evaluation.cell(true, guess, count=1000)
            expected = np.flatnonzero((evaluation.dataset.labels == true) & (predicted == guess))
            assert sorted(page.indices.tolist()) == expected.tolist()
            assert page.total == len(expected) == evaluation.report.confusion_matrix[true][guess]
            np.testing.assert_array_equal(page.images, evaluation.dataset.images[page.indices])
            np.testing.assert_array_equal(page.probabilities, evaluation.probabilities[page.indices])
            assert not page.has_more


def test_mistakes_come_most_confident_first_and_correct_answers_least_confident_first():
    evaluation = _evaluation(700)
    mistakes = evaluation.cell(3, 4, count=1000)
    assert len(mistakes.indices) >= 5
    assert mistakes.indices.tolist() != sorted(mistakes.indices.tolist())  # not merely row order
    assert np.all(np.diff(mistakes.confidence) <= 0)
    assert mistakes.confidence[0] == evaluation.probabilities[mistakes.indices, 4].max()
    correct = evaluation.cell(3, 3, count=1000)
    assert len(correct.indices) >= 5
    assert np.all(np.diff(correct.confidence) >= 0)
    assert correct.confidence[0] == evaluation.probabilities[correct.indices, 3].min()


def test_pages_follow_each_other_until_the_cell_ends():
    evaluation = _evaluation(700)
    whole = evaluation.cell(0, 6, count=1000)
    assert whole.total > 10
    pages, start = [], 0
    while True:
        page = evaluation.cell(0, 6, start=start, count=4)
        pages.append(page)
        start += len(page.indices)
        if not page.has_more:
            break
    assert [len(page.indices) for page in pages[:-1]] == [4] * (len(pages) - 1)
    assert np.concatenate([page.indices for page in pages]).tolist() == whole.indices.tolist()
    beyond = evaluation.cell(0, 6, start=whole.total, count=4)
    assert len(beyond.indices) == 0 and beyond.total == whole.total and not beyond.has_more


def test_bad_cells_and_pages_are_refused_clearly():
    evaluation = _evaluation()
    with pytest.raises(SettingError, match="true class 7 is not a class code"):
        evaluation.cell(7, 0)
    with pytest.raises(SettingError, match="predicted class -1"):
        evaluation.cell(0, -1)
    with pytest.raises(SettingError, match="count=0"):
        evaluation.cell(0, 1, count=0)
    with pytest.raises(SettingError, match="start=-2"):
        evaluation.cell(0, 1, start=-2)
    with pytest.raises(ValueError, match="expected \\(210, 7\\)"):
        Evaluation(evaluation.dataset, evaluation.probabilities[:, :6])


class _FixedClassifier:
    """Stands in for EmotionClassifier: fixed probabilities for whatever faces it is given."""

    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = probabilities

    def with_views(self, **_views) -> "_FixedClassifier":
        return self

    def predict_dataset(self, batch: np.ndarray) -> np.ndarray:
        assert len(batch) == len(self.probabilities)
        return self.probabilities


def test_the_classifier_evaluations_keep_each_face_and_score_as_before():
    reference = _evaluation()
    classifier = _FixedClassifier(reference.probabilities)
    evaluation = evaluate_faces(classifier, Preprocessing(size=48), reference.dataset)
    np.testing.assert_array_equal(evaluation.probabilities, reference.probabilities)
    assert evaluate_classifier(classifier, Preprocessing(size=48), reference.dataset) == reference.report
    metrics, plain = card_evaluation(classifier, Preprocessing(size=48), reference.dataset, "faces.csv")
    assert metrics == card_metrics(classifier, Preprocessing(size=48), reference.dataset, "faces.csv")
    assert metrics.confusion_matrix == plain.report.confusion_matrix == reference.report.confusion_matrix
    assert metrics.dataset == "faces.csv"
