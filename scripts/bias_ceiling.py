"""How far can any change of odds take a model? The per-class biases that give the highest mean recall on
labelled faces, found on those same faces: a ceiling for the prior correction, not a figure to ship.

    python scripts/bias_ceiling.py fer2013.csv.gz [--model default] [--usage PublicTest]

The balanced odds (``python -m fer_core calibrate``) move the seven log-probabilities by one strength
times the log prior; here each class gets a bias of its own (coordinate ascent over -1.5 to 1.5 in
steps of 0.05, six rounds). What this reaches on the faces it was tuned on is more than any correction
chosen elsewhere could: if it misses a target, training must raise it, not the odds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_core.base.labels import EMOTIONS  # noqa: E402
from fer_core.datasets.load import load_dataset  # noqa: E402
from fer_core.evaluation.evaluate import evaluate_faces, evaluate_probabilities, evaluation_rows  # noqa: E402
from fer_core.inference.odds import adjust  # noqa: E402
from fer_core.inference.predict import EmotionClassifier  # noqa: E402
from fer_core.registry.store import ModelStore  # noqa: E402

BIASES = np.round(np.arange(-30, 31) * 0.05, 2)
ROUNDS = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    parser.add_argument("--usage", default="PublicTest")
    args = parser.parse_args()

    stored = ModelStore().load(args.model)
    faces = evaluation_rows(load_dataset(args.data, cache=True), args.usage)
    classifier = EmotionClassifier.from_stored(stored, odds="fer2013")
    probabilities = evaluate_faces(classifier, stored.card.preprocessing, faces).probabilities

    def scored(shift: np.ndarray):
        return evaluate_probabilities(faces, adjust(probabilities, shift))

    shift = np.zeros(len(EMOTIONS), np.float32)  # taken from the log-probabilities, as adjust does
    for _ in range(ROUNDS):
        for index in range(len(EMOTIONS)):
            trials = [np.where(np.arange(len(EMOTIONS)) == index, bias, shift).astype(np.float32) for bias in BIASES]
            shift = max(trials, key=lambda trial: scored(trial).balanced_accuracy)
    before, after = scored(np.zeros_like(shift)), scored(shift)
    print(f"model {stored.name} on {args.data} [{args.usage}], {len(faces)} faces, "
          f"{'with' if classifier.flip_tta else 'without'} flip TTA")
    print("biases taken from the log-probabilities: "
          + ", ".join(f"{name} {value:+.2f}" for name, value in zip(EMOTIONS, shift)))
    for title, report in (("FER2013 odds", before), ("best biases", after)):
        print(f"{title}: accuracy {report.accuracy:.4f}, mean recall {report.balanced_accuracy:.4f}; recall "
              + ", ".join(f"{name} {report.per_class[name]['recall']:.2f}" for name in EMOTIONS))


if __name__ == "__main__":
    main()
