"""Model quality on labelled faces: accuracy, per-class precision/recall/F1, confusion matrices
(with the faces of each cell) and k-fold cross-validation, all computed with scikit-learn's metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from fer_core.base.errors import DataError, SettingError
from fer_core.base.labels import EMOTIONS, NUM_CLASSES
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.splits import stratified_folds
from fer_core.faces.preprocess import Preprocessing, images_to_input
from fer_core.registry.cards import ClassScores, Metrics, Scores, row_shares

if TYPE_CHECKING:

    from fer_core.inference.predict import EmotionClassifier


@dataclass
class EvaluationReport:
    """Scores of one model on one labelled set."""

    accuracy: float
    macro_f1: float
    n: int
    per_class: dict[str, dict[str, float]]  #: precision, recall and f1 of each class, and its support (an int)
    confusion_matrix: list[list[int]]

    @property
    def balanced_accuracy(self) -> float:
        """The mean recall of the classes that have faces (each emotion counting as much)."""
        return self.as_metrics().balanced_accuracy

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """Rows divided by their totals (recall on the diagonal); empty rows stay zero."""
        return row_shares(self.confusion_matrix)

    def as_metrics(self, *, flip_tta: Scores | None = None, dataset: str | None = None,
                   usage: list[str] | None = None) -> Metrics:
        """These scores as a model card holds them, with those of flip TTA and where the faces came from."""
        return Metrics(dataset=dataset, usage=usage or [], accuracy=self.accuracy, macro_f1=self.macro_f1, n=self.n,
                       per_class={name: ClassScores(precision=row["precision"], recall=row["recall"], f1=row["f1"],
                                                    support=int(row["support"]))
                                  for name, row in self.per_class.items()},
                       confusion_matrix=self.confusion_matrix, flip_tta=flip_tta)

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "macro_f1": self.macro_f1,
            "n": self.n,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix,
            "confusion_matrix_normalized": self.confusion_normalized,
        }

    def format(self) -> str:
        """A readable table: one row per class, then the confusion matrix and the accuracy."""
        lines = [f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
        for name, row in self.per_class.items():
            lines.append(f"{name:<10}{row['precision']:>10.4f}{row['recall']:>10.4f}"
                         f"{row['f1']:>10.4f}{row['support']:>10d}")
        lines.append(f"{'macro f1':<10}{self.macro_f1:>30.4f}{self.n:>10d}")
        lines.append("")
        lines.append("confusion matrix (rows: true, columns: predicted)")
        lines.append(" " * 10 + "".join(f"{name[:7]:>8}" for name in EMOTIONS))
        for name, counts in zip(EMOTIONS, self.confusion_matrix):
            lines.append(f"{name:<10}" + "".join(f"{value:>8d}" for value in counts))
        lines.append("")
        lines.append(f"balanced accuracy (mean recall): {self.balanced_accuracy:.4f}")
        lines.append(f"accuracy: {self.accuracy:.4f}")
        return "\n".join(lines)


def report_from_predictions(true_labels: np.ndarray, predicted_labels: np.ndarray) -> EvaluationReport:
    """Scores of predicted against true FER2013 codes."""
    classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, predicted_labels, labels=classes, zero_division=0)
    per_class = {
        name: {"precision": round(float(precision[c]), 4), "recall": round(float(recall[c]), 4),
               "f1": round(float(f1[c]), 4), "support": int(support[c])}
        for c, name in enumerate(EMOTIONS)
    }
    present = [c for c in classes if support[c] > 0]
    return EvaluationReport(
        accuracy=round(float(accuracy_score(true_labels, predicted_labels)), 4),
        macro_f1=round(float(f1_score(true_labels, predicted_labels, labels=present,
                                      average="macro", zero_division=0)), 4),
        n=int(len(true_labels)),
        per_class=per_class,
        confusion_matrix=confusion_matrix(true_labels, predicted_labels, labels=classes).tolist(),
    )


def evaluate_probabilities(dataset: FaceDataset, probabilities: np.ndarray) -> EvaluationReport:
    """Scores of class probabilities (N, 7) for the faces of ``dataset``."""
    return report_from_predictions(dataset.labels, np.argmax(probabilities, axis=1))


#: Faces on one page of a confusion-matrix cell: a few rows of thumbnails, then "more".
CELL_PAGE = 24


@dataclass(frozen=True, eq=False)
class CellFaces:
    """One page of the faces of a confusion-matrix cell: true class ``true`` predicted as ``predicted``."""

    true: int
    predicted: int
    #: The faces' rows in the evaluated dataset, in the order shown.
    indices: np.ndarray
    #: The faces, (len(indices), 48, 48) uint8.
    images: np.ndarray
    #: Their class probabilities, (len(indices), 7).
    probabilities: np.ndarray
    #: Place of the first face of this page in the whole cell.
    start: int
    #: Faces in the whole cell.
    total: int

    @property
    def confidence(self) -> np.ndarray:
        """Each face's probability of the predicted class."""
        return self.probabilities[:, self.predicted]

    @property
    def has_more(self) -> bool:
        """Whether the cell holds faces after this page."""
        return self.start + len(self.indices) < self.total


@dataclass(eq=False)
class Evaluation:
    """A model's class probabilities (N, 7) for every face of a labelled set, kept with the faces: its
    scores, and the faces of any confusion-matrix cell, are read from it without predicting again."""

    dataset: FaceDataset
    probabilities: np.ndarray

    def __post_init__(self) -> None:
        self.probabilities = np.asarray(self.probabilities, dtype=np.float64)
        expected = (len(self.dataset), NUM_CLASSES)
        if self.probabilities.shape != expected:
            raise ValueError(f"probabilities of shape {self.probabilities.shape} for {expected[0]} faces; "
                             f"expected {expected}")

    @cached_property
    def report(self) -> EvaluationReport:
        """The scores: accuracy, macro-F1, per-class figures and the confusion matrix."""
        return evaluate_probabilities(self.dataset, self.probabilities)

    @cached_property
    def predicted(self) -> np.ndarray:
        """Each face's predicted class code (the most probable class)."""
        return np.argmax(self.probabilities, axis=1)

    def cell(self, true: int, predicted: int, start: int = 0, count: int = CELL_PAGE) -> CellFaces:
        """``count`` faces of true class ``true`` predicted as ``predicted``, from place ``start`` in the cell.

        Off the diagonal the most confident mistakes come first (highest probability of ``predicted``),
        on it the least confident correct answers (lowest probability of the class); ties keep row order.
        """
        for role, code in (("true", true), ("predicted", predicted)):
            if not 0 <= code < NUM_CLASSES:
                raise SettingError(f"{role} class {code} is not a class code (0-{NUM_CLASSES - 1})")
        if start < 0 or count < 1:
            raise SettingError(f"a page of a cell starts at place 0 or later and holds 1 face or more, "
                               f"not start={start}, count={count}")
        members = np.flatnonzero((self.dataset.labels == true) & (self.predicted == predicted))
        confidence = self.probabilities[members, predicted]
        ordered = members[np.argsort(confidence if true == predicted else -confidence, kind="stable")]
        shown = ordered[start:start + count]
        return CellFaces(true=int(true), predicted=int(predicted), indices=shown, images=self.dataset.images[shown],
                         probabilities=self.probabilities[shown], start=start, total=len(members))


def evaluation_rows(dataset: FaceDataset, usage: str | None = None) -> FaceDataset:
    """The rows to score: those of ``usage`` if given, else FER2013's PrivateTest rows (faces no
    model here trained on or was selected on), else PublicTest, else all rows."""
    if usage:
        if usage not in dataset.usages():
            raise DataError(f"{dataset.source}: no rows with Usage {usage} (found: {', '.join(dataset.usages())})")
        return dataset.with_usage(usage)
    for candidate in ("PrivateTest", "PublicTest"):
        if candidate in dataset.usages():
            return dataset.with_usage(candidate)
    return dataset


def evaluate_faces(classifier: EmotionClassifier, preprocessing: Preprocessing, dataset: FaceDataset) -> Evaluation:
    """A classifier's probabilities for each (already cropped) face of a labelled dataset, with their scores."""
    return Evaluation(dataset, classifier.predict_dataset(images_to_input(dataset.images, preprocessing)))


def evaluate_classifier(classifier: EmotionClassifier, preprocessing: Preprocessing,
                        dataset: FaceDataset) -> EvaluationReport:
    """Scores of a classifier on the (already cropped) faces of a labelled dataset."""
    return evaluate_faces(classifier, preprocessing, dataset).report


def card_evaluation(classifier: EmotionClassifier, preprocessing: Preprocessing, dataset: FaceDataset,
                    data_description: str | None = None) -> tuple[Metrics, Evaluation]:
    """A model card's metrics (see :func:`card_metrics`), and the per-face evaluation of plain inference
    whose confusion matrix they hold (to open its cells)."""
    plain = evaluate_faces(classifier.with_views(flip_tta=False, shift_tta=False), preprocessing, dataset)
    flipped = evaluate_classifier(classifier.with_views(flip_tta=True, shift_tta=False), preprocessing, dataset)
    metrics = plain.report.as_metrics(flip_tta=Scores(accuracy=flipped.accuracy, macro_f1=flipped.macro_f1,
                                                      balanced_accuracy=flipped.balanced_accuracy),
                                      dataset=data_description, usage=sorted(set(dataset.usage.tolist())))
    return metrics, plain


def card_metrics(classifier: EmotionClassifier, preprocessing: Preprocessing, dataset: FaceDataset,
                 data_description: str | None = None) -> Metrics:
    """A model card's metrics: the full scores of plain inference, and under ``flip_tta`` the
    accuracy and macro-F1 with the mirrored face averaged in (as the app runs most models).
    ``data_description`` names the data (a file name) for the card."""
    return card_evaluation(classifier, preprocessing, dataset, data_description)[0]


def cross_validate(
    dataset: FaceDataset,
    fit_and_predict: Callable[[FaceDataset, FaceDataset], np.ndarray],
    k: int = 5,
    seed: int = 0,
) -> dict:
    """k-fold cross-validation, stratified by class and, where the dataset names persons, keeping
    each person's faces in one fold (see ``splits.stratified_folds``, which raises on bad ``k``).

    ``fit_and_predict(train, test)`` trains a fresh model on ``train`` alone (any validation split
    comes out of ``train``, never ``test``) and returns its probabilities (len(test), 7) for
    ``test``. Returns :func:`cross_validation_summary` of the folds.
    """
    reports = []
    for train_index, test_index in stratified_folds(dataset, k, seed):
        test_part = dataset.subset(test_index)
        reports.append(Evaluation(test_part, fit_and_predict(dataset.subset(train_index), test_part)).report)
    persons = None if dataset.groups is None else len(np.unique(dataset.groups))
    return cross_validation_summary(reports, persons)


def cross_validation_summary(reports: list[EvaluationReport], persons: int | None = None) -> dict:
    """The JSON of a cross-validation from its folds' reports: ``folds`` (each fold's ``accuracy``,
    ``macro_f1`` and ``n``), ``mean`` and ``std`` of the accuracy over the folds (population standard
    deviation), ``macro_f1_mean`` and ``macro_f1_std`` likewise, ``persons`` (how many persons, each
    kept in one fold; None when the data names none) and the summed ``confusion_matrix``."""
    accuracies = np.array([report.accuracy for report in reports])
    f1s = np.array([report.macro_f1 for report in reports])
    return {
        "folds": [{"accuracy": report.accuracy, "macro_f1": report.macro_f1, "n": report.n} for report in reports],
        "mean": round(float(accuracies.mean()), 4),
        "std": round(float(accuracies.std()), 4),
        "macro_f1_mean": round(float(f1s.mean()), 4),
        "macro_f1_std": round(float(f1s.std()), 4),
        "persons": persons,
        "confusion_matrix": np.sum([report.confusion_matrix for report in reports], axis=0).tolist(),
    }


def format_cross_validation(summary: dict) -> str:
    """A readable table of :func:`cross_validation_summary`: one row per fold, how the folds were
    made, then the means; the last line is ``accuracy: MEAN +- STD``."""
    lines = [f"{'fold':<6}{'accuracy':>10}{'macro f1':>10}{'faces':>8}"]
    for number, fold in enumerate(summary["folds"], 1):
        lines.append(f"{number:<6}{fold['accuracy']:>10.4f}{fold['macro_f1']:>10.4f}{fold['n']:>8d}")
    lines.append("")
    if summary["persons"] is None:
        lines.append("folds stratified by class (the data names no persons)")
    else:
        lines.append(f"folds stratified by class, each of the {summary['persons']} persons in one fold only")
    lines.append(f"macro f1: {summary['macro_f1_mean']:.4f} +- {summary['macro_f1_std']:.4f}")
    lines.append(f"accuracy: {summary['mean']:.4f} +- {summary['std']:.4f}")
    return "\n".join(lines)
