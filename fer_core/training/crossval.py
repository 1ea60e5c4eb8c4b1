"""k-fold cross-validation of a training recipe: per fold a fresh network trained on the other folds
(its validation faces taken from them too) and scored on the fold."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import numpy as np

from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.splits import stratified_split
from fer_core.evaluation.evaluate import cross_validate, evaluate_probabilities
from fer_core.faces.preprocess import Preprocessing, images_to_input
from fer_core.training.callbacks import ProgressListener
from fer_core.training.recipe import TrainConfig
from fer_core.training.train import train

#: Share of each fold's training part held out to validate (and stop early) on.
VALIDATION_SHARE = 0.1


def cross_validate_recipe(dataset: FaceDataset, config: TrainConfig, folds: int = 5, *,
                          listener: ProgressListener | None = None,
                          say: Callable[[str], None] = lambda line: None) -> dict:
    """Cross-validate ``config`` (checked already) on ``dataset`` in ``folds`` folds, each person's
    faces in one fold where the data names persons; every row counts, whatever its FER2013 Usage.

    ``listener`` follows each fold's training, ``say`` is told a line as each fold starts and ends.
    Returns :func:`~fer_core.evaluation.evaluate.cross_validation_summary`'s figures.
    """
    preprocessing = Preprocessing.from_dict(config.preprocessing)
    numbers = count(1)

    def fit_and_predict(train_part: FaceDataset, test_part: FaceDataset) -> np.ndarray:
        fold = f"fold {next(numbers)}/{folds}"
        learn, validation = stratified_split(train_part, VALIDATION_SHARE, config.seed)
        say(f"{fold}: training {config.arch} on {len(learn)} faces, validating on {len(validation)}, "
            f"testing on {len(test_part)}")
        result = train(learn, config, validation=validation, listener=listener)
        probabilities = result.model.predict(images_to_input(test_part.images, preprocessing), verbose=0)
        scores = evaluate_probabilities(test_part, probabilities)
        say(f"{fold}: accuracy {scores.accuracy:.4f}, macro-F1 {scores.macro_f1:.4f} "
            f"({result.stopped} after {result.epochs_run} epochs, {result.minutes:.1f} min)")
        return probabilities

    return cross_validate(dataset, fit_and_predict, folds, config.seed)
