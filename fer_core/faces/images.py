"""Reading images safely: Pillow with EXIF orientation, a pixel limit, and every common mode."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_core.base.errors import ImageError

#: Largest image accepted, in pixels (about 80 megapixels: any camera photo, no decompression bomb).
MAX_PIXELS = 80_000_000

#: A file path, the file's bytes, or a binary file object (an upload, io.BytesIO).
ImageSource = str | os.PathLike | bytes | IO[bytes]


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "the image"


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit, 32-bit and float pixels into 0-255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    array = array.astype(np.float64)
    high = float(array.max()) if array.size else 0.0
    if high <= 1.0:
        array = array * 255.0
    elif high > 255.0:
        array = array * (255.0 / high)
    return np.clip(array, 0, 255).astype(np.uint8)


def _pil_to_bgr(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to a BGR (or, for gray images, 2-D) uint8 array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_uint8(np.asarray(image))
    if image.mode in ("L", "1"):
        return np.asarray(image.convert("L"))
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def load_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode a file path, bytes or file object into a BGR uint8 array (2-D for gray images).

    EXIF orientation is applied, animated images give their first frame, and an image that
    declares more than ``max_pixels`` is refused from its header, before any pixel is decoded.
    """
    label = _describe(source, name)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        if isinstance(source, (str, os.PathLike)) and Path(source).stat().st_size == 0:
            raise ImageError(f"{label}: the file is empty (0 bytes)")
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{label}: the image declares {width}x{height} pixels, more than the "
                    f"limit of {max_pixels:,}; refusing to decode it"
                )
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _pil_to_bgr(image)
    except ImageError:
        raise
    except FileNotFoundError as error:
        raise ImageError(f"{label}: no such file") from error
    except IsADirectoryError as error:
        raise ImageError(f"{label}: is a folder, not an image") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{label}: not an image file Pillow can read") from error
    except Image.DecompressionBombError as error:
        raise ImageError(f"{label}: the image is too large to decode safely ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"{label}: the image is damaged or truncated ({error})") from error


def encode_png(image_bgr: np.ndarray) -> bytes:
    """Encode a BGR or gray uint8 array as PNG bytes (for downloads)."""
    array = image_bgr if image_bgr.ndim == 2 else image_bgr[:, :, ::-1]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()
