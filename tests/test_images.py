import io

import numpy as np
import pytest
from PIL import Image

from fer_core.base.errors import ImageError
from fer_core.faces.images import encode_png, load_image


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_is_honoured():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = _encode(image, "JPEG", exif=exif.tobytes())
    assert load_image(data).shape == (40, 20, 3)


@pytest.mark.parametrize(("mode", "fmt"), [
    ("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"),
    ("RGB", "WEBP"), ("RGB", "BMP"), ("LA", "PNG"),
])
def test_every_common_mode_loads_as_uint8(mode, fmt):
    image = Image.new(mode, (30, 20))
    array = load_image(_encode(image, fmt))
    assert array.dtype == np.uint8
    assert array.shape[:2] == (20, 30)
    assert array.ndim == 2 or array.shape[2] == 3


def test_sixteen_bit_values_are_scaled_not_clipped():
    image = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert load_image(_encode(image, "PNG")).max() == 255


def test_rgb_becomes_bgr():
    array = load_image(_encode(Image.new("RGB", (2, 2), (255, 0, 0)), "PNG"))
    assert array[0, 0].tolist() == [0, 0, 255]


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("L", (10, 10), value) for value in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    array = load_image(buffer.getvalue())
    assert array.shape[:2] == (10, 10) and int(np.asarray(array).mean()) < 100


def test_bad_files_raise_image_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: the file is empty"):
        load_image(empty)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is text, not a png")
    with pytest.raises(ImageError, match="fake.png: not an image"):
        load_image(fake)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")[:80])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(truncated)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_is_refused_from_the_header():
    # A PNG that declares 30000x30000 pixels: refused before decoding.
    bomb = _encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageError, match="bomb.png: the image is too large.*900000000 pixels"):
        load_image(bomb, name="bomb.png")
    # Below Pillow's own limit, ours names the declared size.
    big = _encode(Image.new("1", (9000, 9000)), "PNG", optimize=True)
    with pytest.raises(ImageError, match="declares 9000x9000 pixels"):
        load_image(big, name="big.png", max_pixels=10_000_000)


def test_encode_png_round_trip():
    array = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(encode_png(array)), array)


def test_truncated_jpeg_is_refused(tmp_path):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _encode(photo, "JPEG")
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(data[: len(data) // 2], name="cut.jpg")
