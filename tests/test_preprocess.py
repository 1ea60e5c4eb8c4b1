import numpy as np
import pytest

from fer_core.faces.preprocess import Preprocessing, crop_face, faces_to_input, prepare_faces, to_gray


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 3), (20, 30, 4)])
def test_to_gray_accepts_every_channel_layout(shape):
    gray = to_gray(np.full(shape, 100, np.uint8))
    assert gray.shape == (20, 30) and gray.dtype == np.uint8
    assert int(gray[0, 0]) == 100


def test_to_gray_rejects_other_shapes():
    with pytest.raises(ValueError, match="gray, BGR or BGRA"):
        to_gray(np.zeros((4, 4, 2), np.uint8))


def test_crop_at_the_edge_keeps_a_square_and_replicates_border():
    image = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100) % 256
    crop = crop_face(image.astype(np.uint8), (80, 80, 40, 20), margin=0.0)
    assert crop.shape == (40, 40)


def test_crop_with_eyes_levels_a_tilted_face():
    image = np.zeros((100, 100), np.uint8)
    image[40:44, 20:80] = 255  # a horizontal bar
    # Eyes on a line at 45 degrees: the crop rotates by 45 degrees, so the bar is no longer level.
    tilted = crop_face(image, (20, 20, 60, 60), eyes=((30, 30), (70, 70)))
    level = crop_face(image, (20, 20, 60, 60))
    assert np.count_nonzero(level[20:24].max(axis=1)) == 4
    assert not np.array_equal(tilted, level)


def test_faces_to_input_scales_and_equalises():
    faces = np.stack([np.linspace(100, 150, 48 * 48).reshape(48, 48).astype(np.uint8)])
    plain = faces_to_input(faces, Preprocessing())
    assert plain.shape == (1, 48, 48, 1) and plain.dtype == np.float32
    assert plain.min() >= 100 / 255 - 1e-6 and plain.max() <= 150 / 255 + 1e-6
    equalised = faces_to_input(faces, Preprocessing(equalize=True))
    assert equalised.max() > 0.95 and equalised.min() < 0.05


def test_prepare_faces_batches_all_boxes():
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    batch = prepare_faces(image, [(10, 10, 50, 60), (100, 50, 120, 120)], Preprocessing(size=64))
    assert batch.shape == (2, 64, 64, 1)
    assert prepare_faces(image, [], Preprocessing()).shape == (0, 48, 48, 1)


def test_preprocessing_card_round_trip():
    recipe = Preprocessing(size=44, margin=0.1, equalize=True)
    assert Preprocessing.from_dict({**recipe.to_dict(), "unknown": 1}) == recipe
