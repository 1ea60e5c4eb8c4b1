"""Choosing a model's prior correction: the strength whose balanced odds give the highest mean per-class
recall on labelled faces (``python -m fer_core calibrate``), kept on its card."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_core.base.labels import EMOTIONS
from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.evaluate import evaluate_probabilities
from fer_core.inference.odds import adjust, prior_shift
from fer_core.registry.cards import PriorCorrection

#: The strengths tried: 0 (none) to 1.5 (half again Bayes' full correction), in steps of 0.05.
STRENGTHS = tuple(round(0.05 * step, 2) for step in range(31))


@dataclass(frozen=True)
class StrengthScore:
    """The scores of one strength on the faces it was tried on."""

    strength: float
    accuracy: float
    balanced_accuracy: float
    recalls: dict[str, float]


def strength_scores(dataset: FaceDataset, probabilities: np.ndarray, prior: list[float],
                    strengths: tuple[float, ...] = STRENGTHS) -> list[StrengthScore]:
    """Accuracy, mean per-class recall and each class's recall of ``probabilities`` (N, 7, read with the
    training odds) for the faces of ``dataset``, corrected by each strength."""
    scores = []
    for strength in strengths:
        report = evaluate_probabilities(dataset, adjust(probabilities, prior_shift(prior, strength)))
        scores.append(StrengthScore(strength, report.accuracy, report.balanced_accuracy,
                                    {name: float(report.per_class[name]["recall"]) for name in EMOTIONS}))
    return scores


def choose_strength(scores: list[StrengthScore], chosen_on: str) -> PriorCorrection:
    """The strength with the highest mean per-class recall (the weaker one of a tie), as a card keeps it."""
    untouched = next((score for score in scores if score.strength == 0), None)
    if untouched is None:
        raise ValueError("the strengths tried must include 0, the model as trained")
    best = max(scores, key=lambda score: (score.balanced_accuracy, -score.strength))
    return PriorCorrection(strength=best.strength, chosen_on=chosen_on, accuracy=best.accuracy,
                           balanced_accuracy=best.balanced_accuracy, accuracy_before=untouched.accuracy,
                           balanced_accuracy_before=untouched.balanced_accuracy)
