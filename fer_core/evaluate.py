"""Model quality on labelled faces: accuracy, per-class precision/recall/F1, confusion matrices
and k-fold cross-validation, all computed with scikit-learn's metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from fer_core.data import FaceDataset, stratified_folds
from fer_core.errors import DataError
from fer_core.labels import EMOTIONS, NUM_CLASSES
from fer_core.preprocess import Preprocessing, images_to_input

if TYPE_CHECKING:
    import keras

    from fer_core.predict import EmotionClassifier
    from fer_core.store import ModelStore


@dataclass
class EvaluationReport:
    """Scores of one model on one labelled set."""

    accuracy: float
    macro_f1: float
    n: int
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """Rows divided by their totals (recall on the diagonal); empty rows stay zero."""
        counts = np.asarray(self.confusion_matrix, dtype=np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0).round(4).tolist()

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
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
        for name, row in zip(EMOTIONS, self.confusion_matrix):
            lines.append(f"{name:<10}" + "".join(f"{value:>8d}" for value in row))
        lines.append("")
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


def evaluate_classifier(classifier: EmotionClassifier, preprocessing: Preprocessing,
                        dataset: FaceDataset) -> EvaluationReport:
    """Scores of a classifier on the (already cropped) faces of a labelled dataset."""
    return evaluate_probabilities(dataset, classifier.predict_dataset(images_to_input(dataset.images, preprocessing)))


def card_metrics(classifier: EmotionClassifier, preprocessing: Preprocessing, dataset: FaceDataset) -> dict:
    """A model card's metrics: the full scores of plain inference, and under ``flip_tta`` the
    accuracy and macro-F1 with the mirrored face averaged in (as the app runs most models)."""
    plain = evaluate_classifier(classifier.with_views(flip_tta=False, shift_tta=False), preprocessing, dataset)
    flipped = evaluate_classifier(classifier.with_views(flip_tta=True, shift_tta=False), preprocessing, dataset)
    return {**plain.to_dict(), "flip_tta": {"accuracy": flipped.accuracy, "macro_f1": flipped.macro_f1}}


def save_evaluated(
    model: keras.Model,
    name: str,
    validation: FaceDataset,
    *,
    card_fields: dict,
    preprocessing: Preprocessing,
    store: ModelStore | None = None,
    compact_copy: keras.Model | None = None,
    weights_dtype: str = "float32",
) -> dict:
    """Score ``model`` on its validation faces, time it, and save it with its card; returns the card.

    The card's metrics are those of plain inference and, under ``flip_tta``, of inference with
    the mirrored face averaged in. ``card_fields`` are passed to ``store.make_card`` (arch,
    training, reproduce, description). With ``compact_copy``, ``model`` with its weights stored in
    ``weights_dtype`` (float16 or int8, see ``ensemble.save_ensemble``), both files hold weights
    of that type; the scores are then those of the compact LiteRT file (of the float32 ``model``
    where LiteRT is missing).
    """
    from fer_core.bench import classifier_ms_per_face
    from fer_core.predict import EmotionClassifier, to_tflite
    from fer_core.store import ModelStore, make_card

    lite = to_tflite(model, weights_dtype)
    plain = EmotionClassifier(model, lite=lite)
    metrics = {"dataset": card_fields["training"]["data"], "usage": sorted(set(validation.usage.tolist())),
               **card_metrics(plain, preprocessing, validation)}
    card = make_card(model=model, preprocessing=preprocessing.to_dict(), metrics=metrics,
                     ms_per_face=classifier_ms_per_face(plain), **card_fields)
    card["inference_backend"] = plain.backend  # what ms_per_face was measured with
    if weights_dtype != "float32":
        card["weights_dtype"] = weights_dtype
    store = store or ModelStore()
    store.save(name, compact_copy or model, card, lite)
    return store.card(name)


def cross_validate(
    dataset: FaceDataset,
    fit_and_predict: Callable[[FaceDataset, FaceDataset], np.ndarray],
    k: int = 5,
    seed: int = 0,
) -> dict:
    """k-fold stratified cross-validation.

    ``fit_and_predict(train, test)`` trains a fresh model on ``train`` and returns its
    probabilities for ``test``. Returns each fold's report, the mean and standard deviation of
    accuracy and macro-F1, and the summed confusion matrix.
    """
    reports = []
    for train_index, test_index in stratified_folds(dataset, k, seed):
        train_part = dataset.subset(train_index)
        test_part = dataset.subset(test_index)
        reports.append(evaluate_probabilities(test_part, fit_and_predict(train_part, test_part)))
    accuracies = np.array([r.accuracy for r in reports])
    f1s = np.array([r.macro_f1 for r in reports])
    return {
        "folds": [r.to_dict() for r in reports],
        "accuracy_mean": round(float(accuracies.mean()), 4),
        "accuracy_std": round(float(accuracies.std()), 4),
        "macro_f1_mean": round(float(f1s.mean()), 4),
        "macro_f1_std": round(float(f1s.std()), 4),
        "confusion_matrix": np.sum([r.confusion_matrix for r in reports], axis=0).tolist(),
    }
