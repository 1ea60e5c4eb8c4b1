"""Sample frames with real faces, built from photos that scikit-image ships (nothing downloads)."""

from __future__ import annotations

import cv2
import numpy as np


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (Eileen Collins, public domain) as a 512x512 BGR array."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def sample_frame(width: int = 640, height: int = 480, faces: int = 1) -> np.ndarray:
    """A BGR frame of the given size with ``faces`` copies of the astronaut photo side by side."""
    frame = np.full((height, width, 3), 96, np.uint8)
    photo = astronaut()
    side = min(height, width // faces)
    tile = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    top = (height - side) // 2
    gap = (width - faces * side) // (faces + 1)
    for index in range(faces):
        left = gap + index * (side + gap)
        frame[top:top + side, left:left + side] = tile
    return frame
