"""Splits of a dataset: train and validation parts, FER2013's own split, and folds for cross-validation."""

from __future__ import annotations

import numpy as np

from fer_core.base.errors import DataError, SettingError
from fer_core.base.labels import EMOTIONS, NUM_CLASSES
from fer_core.datasets.dataset import FaceDataset


def stratified_split(
    dataset: FaceDataset, validation_fraction: float = 0.1, seed: int = 0
) -> tuple[FaceDataset, FaceDataset]:
    """Split into train and validation parts with the same class proportions."""
    from sklearn.model_selection import train_test_split  # scikit-learn takes 2 s to load: only when splitting

    counts = np.bincount(dataset.labels, minlength=NUM_CLASSES)
    test_size = max(int(round(validation_fraction * len(dataset))), int(np.count_nonzero(counts)))
    # Stratify when every class has two faces and the validation part can hold one of each.
    stratify = dataset.labels if counts[counts > 0].min() >= 2 and test_size < len(dataset) else None
    train_index, val_index = train_test_split(
        np.arange(len(dataset)), test_size=test_size if stratify is not None else validation_fraction,
        random_state=seed, stratify=stratify
    )
    return dataset.subset(train_index), dataset.subset(val_index)


def stratified_folds(dataset: FaceDataset, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (train, test) of ``k`` folds, each test part with the class proportions of the whole.

    Where the dataset names persons (``groups``), each person's faces fall in one test part
    (scikit-learn's StratifiedGroupKFold, whose proportions are then as close as whole persons allow).
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # as above

    if k < 2:
        raise SettingError(f"cross-validation needs 2 folds or more, not {k}")
    where = dataset.source or "the dataset"
    counts = np.bincount(dataset.labels, minlength=NUM_CLASSES)
    if not counts.any():
        raise DataError(f"{where}: no faces to split into folds")
    smallest = int(counts[counts > 0].min())
    if k > smallest:
        name = EMOTIONS[int(np.flatnonzero(counts == smallest)[0])]
        raise DataError(f"{where}: {k} folds need {k} or more faces of each class present, but {name} has "
                        f"{smallest}; use fewer folds, or more {name} faces")
    if dataset.groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        persons = len(np.unique(dataset.groups))
        if k > persons:
            raise DataError(f"{where}: {k} folds that keep each person's faces together need {k} persons or "
                            f"more, but the data names {persons}; use fewer folds")
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(dataset)), dataset.labels, dataset.groups))


def train_validation(dataset: FaceDataset, seed: int = 0) -> tuple[FaceDataset, FaceDataset]:
    """FER2013's own Training/PublicTest split when present, else a stratified 10% split.

    PrivateTest rows are never trained or selected on: they are kept for the final test.
    """
    if "Training" in dataset.usages() and "PublicTest" in dataset.usages():
        return dataset.with_usage("Training"), dataset.with_usage("PublicTest")
    usable = dataset.subset(dataset.usage != "PrivateTest")
    counts = np.bincount(usable.labels, minlength=NUM_CLASSES)
    if len(usable) < 2 * NUM_CLASSES or np.count_nonzero(counts) < 2:
        raise DataError(f"{dataset.source}: {len(usable)} faces in {np.count_nonzero(counts)} class(es) are too few "
                        f"to train and validate on; give at least {2 * NUM_CLASSES} faces of two or more classes")
    return stratified_split(usable, 0.1, seed)
