"""k-fold cross-validation: folds that partition the data, keep class proportions and never split a person;
persons read from folders or a pattern; the summary and its last line; clear errors for bad options."""

import io
import re
import zipfile

import numpy as np
import pytest
from conftest import synthetic_dataset, write_fer_csv
from PIL import Image

from fer_core.base.errors import DataError, FerError, SettingError
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.folders import load_image_folder
from fer_core.datasets.load import load_dataset
from fer_core.datasets.splits import stratified_folds
from fer_core.evaluation.evaluate import (
    cross_validate,
    cross_validation_summary,
    format_cross_validation,
    report_from_predictions,
)

#: Uneven class sizes, so that stratification is not the same as an even split.
CLASS_SIZES = [23, 6, 17, 40, 11, 9, 30]


def _uneven_dataset(groups: np.ndarray | None = None) -> FaceDataset:
    labels = np.repeat(np.arange(7), CLASS_SIZES)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 48, 48), dtype=np.uint8)
    return FaceDataset(images, labels, np.array(["Training"] * len(labels)), "set", groups)


def _assert_partition(folds, n: int) -> None:
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(n))  # each face in exactly one test fold
    for train, test in folds:
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(n))


@pytest.mark.parametrize("k", [2, 3, 5, 6])
def test_folds_partition_the_faces_and_keep_the_class_proportions(k):
    dataset = _uneven_dataset()
    folds = stratified_folds(dataset, k, seed=1)
    assert len(folds) == k
    _assert_partition(folds, len(dataset))
    overall = np.bincount(dataset.labels, minlength=7) / len(dataset)
    for _, test in folds:
        in_fold = np.bincount(dataset.labels[test], minlength=7)
        assert np.all(np.abs(in_fold - overall * len(test)) <= 1), (in_fold, overall * len(test))


def test_group_folds_never_split_a_person():
    dataset = _uneven_dataset()
    # 34 persons, each with faces of several classes (persons cut across the class blocks).
    groups = np.array([f"person{index % 34}" for index in range(len(dataset))])
    dataset.groups = groups
    folds = stratified_folds(dataset, 5, seed=2)
    _assert_partition(folds, len(dataset))
    for train, test in folds:
        assert len(test) > 0
        assert not set(groups[train]) & set(groups[test])
    assert sorted(np.concatenate([np.unique(groups[test]) for _, test in folds]).tolist()) == sorted(set(groups))


@pytest.mark.parametrize(("k", "groups", "error", "message"), [
    (1, None, SettingError, "needs 2 folds or more, not 1"),
    (0, None, SettingError, "not 0"),
    (7, None, DataError, "7 folds need 7 or more faces of each class present, but disgust has 6"),
    (4, np.array(["a", "b", "c"] * 45 + ["a"]), DataError, "need 4 persons or more, but the data names 3"),
])
def test_bad_fold_counts_are_refused_clearly(k, groups, error, message):
    with pytest.raises(error, match=re.escape(message)):
        stratified_folds(_uneven_dataset(groups), k)


def _nearest_mean(train: FaceDataset, test: FaceDataset) -> np.ndarray:
    """A 'model' trained on ``train`` only: each test face gets the class whose mean face is nearest."""
    means = np.stack([train.images[train.labels == c].mean(axis=0) for c in range(7)])
    distances = ((test.images[:, None].astype(float) - means[None]) ** 2).sum(axis=(2, 3))
    return np.eye(7)[distances.argmin(axis=1)]


def test_cross_validation_summary_and_its_last_line():
    images, labels = synthetic_dataset(84)
    persons = np.array([f"p{index % 12}" for index in range(84)])
    dataset = FaceDataset(images, labels, np.array(["Training"] * 84), "set", persons)
    seen = []

    def fit_and_predict(train, test):
        seen.append((set(train.groups), set(test.groups)))
        return _nearest_mean(train, test)

    summary = cross_validate(dataset, fit_and_predict, k=4)
    assert all(not train & test for train, test in seen)
    assert {"folds", "mean", "std"} <= set(summary)
    assert [set(fold) for fold in summary["folds"]] == [{"accuracy", "macro_f1", "n"}] * 4
    assert sum(fold["n"] for fold in summary["folds"]) == 84
    assert np.sum(summary["confusion_matrix"]) == 84
    assert summary["persons"] == 12
    assert summary["mean"] > 0.5
    text = format_cross_validation(summary)
    assert "each of the 12 persons in one fold only" in text
    assert re.fullmatch(r"accuracy: \d\.\d{4} \+- \d\.\d{4}", text.splitlines()[-1])


def test_summary_mean_and_standard_deviation_by_hand():
    true = np.array([0, 1, 2, 3])
    reports = [report_from_predictions(true, np.array([0, 1, 0, 0])),  # accuracy 0.5
               report_from_predictions(true, np.array([0, 1, 2, 3]))]  # accuracy 1.0
    summary = cross_validation_summary(reports)
    assert summary["folds"][0] == {"accuracy": 0.5, "macro_f1": reports[0].macro_f1, "n": 4}
    assert (summary["mean"], summary["std"]) == (0.75, 0.25)
    assert summary["persons"] is None
    assert format_cross_validation(summary).splitlines()[-1] == "accuracy: 0.7500 +- 0.2500"
    assert "the data names no persons" in format_cross_validation(summary)


# ---------------------------------------------------------------- persons in folder datasets


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_tree(root, paths: list[str]) -> None:
    images, _ = synthetic_dataset(len(paths))
    for path, image in zip(paths, images):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(_png(image))


def test_a_folder_per_person_below_the_class_folders_names_the_persons(tmp_path):
    _write_tree(tmp_path, ["happy/alice/1.png", "happy/bob/2.png", "sad/alice/3.png",
                           "train/sad/carol/4.png", "neutral/test/dan/5.png"])
    dataset = load_image_folder(tmp_path)
    by_label = sorted(zip(dataset.labels.tolist(), dataset.groups.tolist(), dataset.usage.tolist()))
    assert by_label == [(3, "alice", "Training"), (3, "bob", "Training"), (4, "alice", "Training"),
                        (4, "carol", "Training"), (6, "dan", "PublicTest")]
    part = dataset.subset(dataset.labels == 3)
    assert sorted(part.groups.tolist()) == ["alice", "bob"]


def test_persons_are_unknown_unless_every_face_has_one(tmp_path):
    _write_tree(tmp_path, ["happy/alice/1.png", "happy/2.png", "sad/3.png"])
    assert load_image_folder(tmp_path).groups is None


def test_a_pattern_finds_persons_in_file_names_and_reports_files_it_misses(tmp_path):
    _write_tree(tmp_path, ["happy/S005_001.png", "sad/S005_002.png", "sad/S010_001.png"])
    dataset = load_dataset(tmp_path, persons=r"(S\d+)_\d+\.png$")
    assert sorted(dataset.groups.tolist()) == ["S005", "S005", "S010"]
    _write_tree(tmp_path, ["angry/unnamed.png"])
    with pytest.raises(DataError, match=r"unnamed\.png: the person pattern .* finds no person in 'angry/unnamed.png'"):
        load_dataset(tmp_path, persons=r"(S\d+)_\d+\.png$")
    with pytest.raises(SettingError, match="is not a regular expression"):
        load_dataset(tmp_path, persons="(S")


def test_persons_from_a_zip_survive_the_cache_and_a_csv_refuses_a_pattern(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    images, _ = synthetic_dataset(3)
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, image in zip(["faces/happy/alice/1.png", "faces/sad/bob/2.png", "faces/sad/alice/3.png"], images):
            handle.writestr(name, _png(image))
    first = load_dataset(archive, cache=True)
    second = load_dataset(archive, cache=True)  # read back from the cache
    assert list((tmp_path / "cache").glob("*.npz"))
    assert first.groups.tolist() == second.groups.tolist() == ["alice", "bob", "alice"]
    csv = tmp_path / "faces.csv"
    write_fer_csv(csv, *synthetic_dataset(7))
    assert load_dataset(csv).groups is None
    with pytest.raises(FerError, match="names no files, so no persons"):
        load_dataset(csv, persons=r"(\w+)")
