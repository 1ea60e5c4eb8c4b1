from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import ASTRONAUT_FACE, overlap

from fer_core.base.labels import EMOTIONS
from fer_core.inference.predict import EmotionAnalyser, EmotionClassifier, FaceResult, shifted_views
from fer_core.registry.cards import Metrics, Scores


@pytest.fixture
def analyser(model_store):
    return EmotionAnalyser.from_store("default", "haar", store=model_store)


def _check_face(face: FaceResult):
    assert set(face.probabilities) == set(EMOTIONS)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert face.label == max(face.probabilities, key=face.probabilities.get)


@pytest.mark.parametrize("layout", ["bgr", "gray", "gray3d", "bgra"])
def test_analyse_any_channel_layout(analyser, astronaut_bgr, layout):
    image = {
        "bgr": astronaut_bgr,
        "gray": cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY),
        "gray3d": cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)[..., None],
        "bgra": cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA),
    }[layout]
    faces = analyser.analyse(image)
    assert len(faces) == 1
    assert overlap(faces[0].box, ASTRONAUT_FACE) > 0.5
    _check_face(faces[0])


def test_tiny_and_huge_images(analyser, astronaut_bgr):
    assert analyser.analyse(np.zeros((1, 1, 3), np.uint8)) == []
    assert analyser.analyse(np.zeros((1, 1), np.uint8)) == []
    huge = cv2.resize(astronaut_bgr, (6000, 6000), interpolation=cv2.INTER_LINEAR)
    faces = analyser.analyse(huge)
    assert len(faces) == 1
    assert overlap(faces[0].box, tuple(v * 6000 / 512 for v in ASTRONAUT_FACE)) > 0.5


def test_float_and_invalid_arrays(analyser, astronaut_bgr):
    assert len(analyser.analyse(astronaut_bgr.astype(np.float32) / 255.0)) == 1
    with pytest.raises(ValueError, match="expected an image"):
        analyser.analyse(np.zeros((0, 0), np.uint8))


def test_all_faces_of_a_frame_in_one_batch(model_store, astronaut_bgr):
    from fer_core.faces.samples import sample_frame

    calls = []
    analyser = EmotionAnalyser.from_store("default", "haar", store=model_store)
    classify = analyser.classifier.__call__
    analyser.classifier = lambda faces: calls.append(len(faces)) or classify(faces)
    faces = analyser.analyse(sample_frame(1280, 720, faces=3))
    assert len(faces) == 3 and calls == [3]


def _position_sensitive_model():
    """A model whose answer depends on where every pixel is (the test store's model answers about
    1/7 for anything, which could not tell a view from another)."""
    import keras

    return keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(
        7, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=0))])


def test_flip_tta_averages_mirrored_predictions():
    model = _position_sensitive_model()
    faces = np.random.default_rng(0).random((3, 48, 48, 1)).astype(np.float32)
    plain = EmotionClassifier(model)(faces)
    mirrored = EmotionClassifier(model)(faces[:, :, ::-1])
    assert not np.allclose(plain, mirrored, atol=1e-3)
    np.testing.assert_allclose(EmotionClassifier(model, flip_tta=True)(faces), (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(plain, model.predict(faces, verbose=0), atol=1e-5)
    assert EmotionClassifier(model)(np.zeros((0, 48, 48, 1), np.float32)).shape == (0, 7)


def test_shifted_views_move_each_way_by_one_pixel_repeating_the_edge():
    faces = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5, 1)
    views = shifted_views(faces)
    assert len(views) == 4 and all(view.shape == faces.shape for view in views)
    up, down, left, right = views
    np.testing.assert_array_equal(up[:, :-1], faces[:, 1:])
    np.testing.assert_array_equal(up[:, -1], faces[:, -1])
    np.testing.assert_array_equal(down[:, 1:], faces[:, :-1])
    np.testing.assert_array_equal(down[:, 0], faces[:, 0])
    np.testing.assert_array_equal(left[:, :, :-1], faces[:, :, 1:])
    np.testing.assert_array_equal(left[:, :, -1], faces[:, :, -1])
    np.testing.assert_array_equal(right[:, :, 1:], faces[:, :, :-1])
    np.testing.assert_array_equal(right[:, :, 0], faces[:, :, 0])


def test_shift_tta_averages_ten_views():
    model = _position_sensitive_model()
    faces = np.random.default_rng(1).random((3, 48, 48, 1)).astype(np.float32)
    plain = EmotionClassifier(model)
    views = [faces, *shifted_views(faces)]
    shifted = np.mean([plain(view) for view in views], axis=0)
    ten = np.mean([plain(view) for view in views] + [plain(view[:, :, ::-1]) for view in views], axis=0)
    np.testing.assert_allclose(EmotionClassifier(model, shift_tta=True)(faces), shifted, atol=1e-5)
    both = EmotionClassifier(model, flip_tta=True, shift_tta=True)(faces)
    np.testing.assert_allclose(both, ten, atol=1e-5)
    assert not np.allclose(both, plain(faces), atol=1e-3)  # the views really differ
    assert not np.allclose(both, shifted, atol=1e-3)
    np.testing.assert_allclose(both.sum(axis=1), 1.0, atol=1e-5)
    flipping = EmotionClassifier(model, flip_tta=True)
    thorough = flipping.with_views(shift_tta=True)
    assert thorough.flip_tta and thorough.shift_tta and not flipping.shift_tta
    np.testing.assert_allclose(thorough(faces), both, atol=1e-5)
    np.testing.assert_allclose(thorough.with_views(shift_tta=False)(faces), flipping(faces), atol=1e-6)
    np.testing.assert_allclose(thorough.with_views(flip_tta=False)(faces), shifted, atol=1e-5)


def test_face_result_json_shape():
    face = FaceResult((1, 2, 3, 4), {name: 0.0 for name in EMOTIONS} | {"sad": 1.0})
    assert face.to_dict() == {"box": [1, 2, 3, 4], "label": "sad", "score": 1.0,
                              "probabilities": {name: (1.0 if name == "sad" else 0.0) for name in EMOTIONS}}


def test_litert_path_matches_tensorflow_and_is_used_from_the_store(model_store):
    from fer_core.inference.predict import to_tflite

    stored = model_store.load("default")
    lite = to_tflite(stored.model)
    model_store.save("fast", stored.model, stored.card, lite)
    fast = EmotionClassifier.from_stored(model_store.load("fast"))
    assert fast.backend == "litert"
    assert EmotionClassifier.from_stored(stored).backend == "tensorflow"
    faces = np.random.default_rng(1).random((5, 48, 48, 1)).astype(np.float32)
    reference = EmotionClassifier(stored.model)(faces)
    np.testing.assert_allclose(fast(faces), reference, atol=1e-5)
    np.testing.assert_allclose(fast(faces[:2]), reference[:2], atol=1e-5)  # another batch size
    flipped = EmotionClassifier(stored.model, flip_tta=True, lite=lite)(faces)
    np.testing.assert_allclose(flipped, EmotionClassifier(stored.model, flip_tta=True)(faces), atol=1e-5)


def test_lite_file_is_used_only_with_the_keras_file_it_was_saved_with(model_store):
    import json
    import os
    import shutil

    from fer_core.inference.predict import to_tflite

    stored = model_store.load("tiny")
    model_store.save("tiny", stored.model, stored.card, to_tflite(stored.model))
    keras_file = model_store.resolve("tiny")
    lite_file, card_file = keras_file.with_suffix(".tflite"), keras_file.with_suffix(".json")
    os.utime(lite_file, (keras_file.stat().st_mtime - 60,) * 2)  # a copy may date the files in any order
    assert model_store.load("tiny").lite is not None
    original = keras_file.read_bytes()
    shutil.copyfile(model_store.resolve("default"), keras_file)  # another network put in by hand
    assert model_store.load("tiny").lite is None
    keras_file.write_bytes(original)
    lite_file.write_bytes(to_tflite(model_store.load("default").model))  # or another LiteRT file
    assert model_store.load("tiny").lite is None
    card = json.loads(card_file.read_text())
    del card["sha256"]  # a card from before the hashes: the older file is the stale one
    card_file.write_text(json.dumps(card))
    assert model_store.load("tiny").lite is not None
    os.utime(lite_file, (keras_file.stat().st_mtime - 60,) * 2)
    assert model_store.load("tiny").lite is None
    lite = lite_file.read_bytes()
    model_store.save("tiny", stored.model, replace(stored.card, sha256={"keras": "of an earlier save"}))
    assert not lite_file.exists()
    assert set(model_store.card("tiny").sha256) == {"keras"}
    lite_file.write_bytes(lite)  # a LiteRT file of an earlier save, newer than the Keras file
    assert model_store.load("tiny").lite is None


def test_litert_inference_imports_neither_keras_nor_tensorflow(model_store):
    """A served model with a LiteRT file keeps the process light: TensorFlow loads only for Grad-CAM."""
    import subprocess
    import sys

    from fer_core.inference.predict import to_tflite

    stored = model_store.load("default")
    model_store.save("default", stored.model, stored.card, to_tflite(stored.model))
    script = """
import sys
import fer_core.service.charts, fer_core.datasets.load, fer_core.service.uploads  # inference pages
import fer_core.evaluation.evaluate, fer_core.inference.live, fer_core.service.video
import ui.display, ui.jobs, ui.sidebar, ui.webrtc  # and what the pages share
from fer_core.inference.predict import EmotionAnalyser
from fer_core.faces.samples import astronaut
analyser = EmotionAnalyser.from_store("default", "haar")
assert analyser.classifier.backend == "litert"
assert len(analyser.analyse(astronaut())) == 1
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "inference imported TensorFlow"
assert analyser.classifier.model.output_shape == (None, 7)  # the Keras model, loaded on demand
assert "keras" in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_damaged_keras_file_beside_a_lite_file_is_reported_at_load(model_store):
    import json

    from fer_core.base.errors import ModelNotFoundError
    from fer_core.inference.predict import to_tflite

    stored = model_store.load("tiny")
    model_store.save("tiny", stored.model, stored.card, to_tflite(stored.model))
    keras_file = model_store.resolve("tiny")
    card_file = keras_file.with_suffix(".json")
    card = json.loads(card_file.read_text())
    del card["sha256"]  # a card from before the hashes: the files' dates pair them
    card_file.write_text(json.dumps(card))
    keras_file.write_bytes(b"not a model")
    keras_file.with_suffix(".tflite").touch()  # still newer than the .keras file
    with pytest.raises(ModelNotFoundError, match="not a loadable Keras model"):
        model_store.load("tiny")


def test_stored_model_uses_flip_tta_when_its_card_shows_it_scored_higher(model_store):
    def scored(accuracy: float, flipped: float | None) -> Metrics:
        flip_tta = None if flipped is None else Scores(accuracy=flipped, macro_f1=0.5)
        return Metrics(accuracy=accuracy, macro_f1=0.5, n=10, per_class={}, confusion_matrix=[], flip_tta=flip_tta)

    stored = model_store.load("default")
    assert not stored.card.recommends_flip  # the fixture's card has no metrics
    assert not replace(stored.card, metrics=scored(0.66, None)).recommends_flip
    assert not replace(stored.card, metrics=scored(0.66, 0.65)).recommends_flip
    assert not EmotionClassifier.from_stored(stored).flip_tta
    stored.card = replace(stored.card, metrics=scored(0.5, 0.6))
    assert stored.card.recommends_flip
    assert EmotionClassifier.from_stored(stored).flip_tta
    assert not EmotionClassifier.from_stored(stored, flip_tta=False).flip_tta
