"""Property-based tests: the image and CSV entry points either work or raise their own error."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from PIL import Image

from fer_core.base.errors import DataError, ImageError
from fer_core.base.labels import EMOTIONS
from fer_core.datasets.fer2013 import load_fer2013_csv
from fer_core.faces.images import load_image

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.binary(max_size=2048))
def test_any_bytes_give_an_image_or_an_image_error(data):
    try:
        image = load_image(data, name="upload.jpg")
    except ImageError as error:
        assert str(error).startswith("upload.jpg: ")
    else:
        assert image.dtype == np.uint8 and image.ndim in (2, 3)


@FAST
@given(
    mode=st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"]),
    fmt=st.sampled_from(["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"]),
    width=st.integers(1, 64),
    height=st.integers(1, 64),
)
def test_valid_images_of_any_mode_and_format_load(mode, fmt, width, height):
    image = Image.new(mode, (width, height))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        reject()  # Pillow cannot write this mode in this format: nothing to read back
    array = load_image(buffer.getvalue())
    assert array.shape[:2] == (height, width)
    assert array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] == 3)


@FAST
@given(st.binary(max_size=600))
def test_truncated_png_never_escapes_as_another_error(cut):
    image = Image.fromarray(np.random.default_rng(len(cut)).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()[: len(cut)]
    with pytest.raises(ImageError):
        load_image(data)


_cell = st.text(alphabet="0123456789 -.,xe\n\"", max_size=30)


@FAST
@given(rows=st.lists(st.tuples(_cell, _cell, _cell), max_size=5), header=st.booleans())
def test_any_csv_text_gives_a_dataset_or_a_data_error(tmp_path_factory, rows, header):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    lines = (["emotion,pixels,Usage"] if header else []) + [",".join(row) for row in rows]
    path.write_text("\n".join(lines))
    try:
        dataset = load_fer2013_csv(path)
    except DataError as error:
        assert str(path) in str(error)
    else:
        assert dataset.images.shape[1:] == (48, 48) and len(dataset) == len(dataset.labels)


@pytest.fixture(scope="module")
def analysers():
    """A Haar analyser and a whole-image (``none`` detector) one, sharing an untrained ds_cnn."""
    from fer_core.faces.detect import get_detector
    from fer_core.faces.preprocess import Preprocessing
    from fer_core.inference.predict import EmotionAnalyser, EmotionClassifier
    from fer_core.training.networks import build_model

    classifier = EmotionClassifier(build_model("ds_cnn"))
    return {name: EmotionAnalyser(classifier, get_detector(name), Preprocessing()) for name in ("haar", "none")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 160),
    width=st.integers(1, 160),
    channels=st.sampled_from([0, 1, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
)
def test_analyser_accepts_any_image_array(analysers, height, width, channels, dtype):
    shape = (height, width) if channels == 0 else (height, width, channels)
    image = (np.random.default_rng(height * width).random(shape) * 255).astype(dtype)
    whole = analysers["none"].analyse(image)
    assert [face.box for face in whole] == [(0, 0, width, height)]  # the whole image is the one face
    found = analysers["haar"].analyse(image)
    assert isinstance(found, list)
    for face in whole + found:
        x, y, w, h = face.box
        assert 0 <= x < x + w <= width and 0 <= y < y + h <= height  # a box inside the image
        assert list(face.probabilities) == list(EMOTIONS) and face.label in EMOTIONS
        assert abs(sum(face.probabilities.values()) - 1.0) < 1e-3
