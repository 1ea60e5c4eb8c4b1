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


#: Where the astronaut's head is in her photo (x, y, width, height): face, hair and a little shoulder.
_HEAD = (130, 10, 190, 220)
#: The astronaut's face in her photo (x, y, width, height), found by eye: the ground truth of tests and benchmarks.
ASTRONAUT_FACE = (180, 60, 90, 110)
#: A group photo's rows, back to front: how many people, the width of each head and the step between them.
_GROUP_ROWS = ((5, 112, 120), (4, 150, 164), (3, 200, 226))
_GROUP_WIDTH = 960


def _group_heads() -> list[tuple[int, int, int, int]]:
    """Where :func:`group_photo` puts its twelve heads (x, y, width, height), back row first, left to right:
    each the astronaut's head box, scaled."""
    _, _, w, h = _HEAD
    heights = [round(head_width * h / w) for _, head_width, _ in _GROUP_ROWS]
    heads, top = [], heights[0] // 4
    for (count, head_width, step), head_height in zip(_GROUP_ROWS, heights):
        left = (_GROUP_WIDTH - (count - 1) * step - head_width) // 2
        heads += [(left + index * step, top, head_width, head_height) for index in range(count)]
        top += int(head_height * 0.78)
    return heads


def group_faces() -> list[tuple[float, float, float, float]]:
    """The faces in :func:`group_photo` (x, y, width, height), back row first, left to right: :data:`ASTRONAUT_FACE`
    scaled with each head (her face is centred in her head box, so a mirrored head keeps it)."""
    hx, hy, hw, _ = _HEAD
    fx, fy, fw, fh = ASTRONAUT_FACE
    return [(left + (fx - hx) * width / hw, top + (fy - hy) * width / hw, fw * width / hw, fh * width / hw)
            for left, top, width, _ in _group_heads()]


def group_photo(seed: int = 4) -> np.ndarray:
    """A black-and-white group photo (BGR, 960 pixels wide) of twelve people in three rows, back rows small
    and crowded.

    Each person is the astronaut's head, mirrored or not, with its own brightness, contrast, gamma and a
    slight tilt, on a grainy gray backdrop: a many-face test picture that ships with the code.
    """
    rng = np.random.default_rng(seed)
    x, y, w, h = _HEAD
    head = cv2.cvtColor(astronaut()[y:y + h, x:x + w], cv2.COLOR_BGR2GRAY)
    heads = _group_heads()
    margin = heads[0][1]
    photo = np.full((max(top + height for _, top, _, height in heads) + margin, _GROUP_WIDTH), 150, np.float32)
    for left, top, head_width, head_height in heads:
        person = cv2.resize(head, (head_width, head_height), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            person = person[:, ::-1]
        tilt = cv2.getRotationMatrix2D((head_width / 2, head_height / 2), rng.uniform(-5, 5), 1.0)
        person = cv2.warpAffine(person, tilt, (head_width, head_height), borderMode=cv2.BORDER_REFLECT)
        shade = 255.0 * (person / 255.0) ** rng.uniform(0.7, 1.4)
        shade = (shade - 128.0) * rng.uniform(0.8, 1.2) + 128.0 + rng.uniform(-25, 25)
        photo[top:top + head_height, left:left + head_width] = shade
    photo += rng.normal(0.0, 6.0, photo.shape)
    gray = np.clip(photo, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
