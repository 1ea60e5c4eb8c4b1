"""Sample frames with real faces, built from photos that scikit-image ships (nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (Eileen Collins, public domain) as a 512x512 BGR array."""
    from skimage import data  # scikit-image takes a second to load: only for its photo

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


def camera_frames(width: int = 640, height: int = 480, count: int = 1, noise: float = 0.0,
                  seed: int = 0) -> list[np.ndarray]:
    """``count`` frames of a camera filming :func:`sample_frame`: the same picture with Gaussian sensor
    noise of ``noise`` gray levels (with none, ``count`` times the same frame)."""
    frame = sample_frame(width, height)
    if noise == 0:
        return [frame] * count
    rng = np.random.default_rng(seed)
    return [np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """BGR frames as raw YUV 4:2:0 video (YUV4MPEG2), the format Chromium's fake camera plays, looped."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:  # each the Y plane, then U, then V
            handle.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
