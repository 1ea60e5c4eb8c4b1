"""From a detected face to the network's input: crop, align, gray, equalise, resize, scale.

Training and inference share :func:`faces_to_input`, so a model always sees faces prepared the
way it was trained on; the recipe is stored in the model card as a :class:`Preprocessing`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Preprocessing:
    """How faces are prepared for a model (saved in its card)."""

    size: int = 48
    margin: float = 0.0
    equalize: bool = False
    align: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def to_gray(image: np.ndarray) -> np.ndarray:
    """A 2-D uint8 gray image from gray, (H, W, 1), BGR or BGRA input."""
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"expected a gray, BGR or BGRA image, got an array of shape {image.shape}")
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    return gray


def resize_face(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (area filter when shrinking, linear when enlarging)."""
    if gray.shape[:2] == (size, size):
        return gray
    shrinking = gray.shape[0] > size or gray.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interpolation)


def square_box(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int]:
    """Centre x, centre y and side of the square around ``box`` grown by ``margin`` per side."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    return int(round(x + w / 2)), int(round(y + h / 2)), max(1, int(round(side)))


def crop_face(
    gray: np.ndarray,
    box: tuple[int, int, int, int],
    margin: float = 0.0,
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> np.ndarray:
    """The square face region around ``box``; rotated so the eyes are level when given.

    Parts of the square outside the image are filled by replicating the border, so faces at the
    edge of a frame keep their proportions.
    """
    cx, cy, side = square_box(box, margin)
    angle = 0.0
    if eyes is not None:
        (lx, ly), (rx, ry) = eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    # One affine warp does the rotation, the crop and the border padding together.
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
    matrix[0, 2] += side / 2 - cx
    matrix[1, 2] += side / 2 - cy
    return cv2.warpAffine(
        gray, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def faces_to_input(faces: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Gray uint8 faces (N, size, size) to the model's float32 input (N, size, size, 1) in [0, 1]."""
    if preprocessing.equalize:
        faces = np.stack([cv2.equalizeHist(face) for face in faces]) if len(faces) else faces
    return (faces.astype(np.float32) * (1.0 / 255.0))[..., np.newaxis]


def images_to_input(images: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Already-cropped gray faces (N, H, W) of a dataset, resized if needed, as model input."""
    size = preprocessing.size
    if images.shape[1:] != (size, size):
        images = np.stack([resize_face(face, size) for face in images]) if len(images) else np.zeros(
            (0, size, size), np.uint8)
    return faces_to_input(images, preprocessing)


def crop_faces(
    image: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    preprocessing: Preprocessing,
    eyes: list[tuple[tuple[float, float], tuple[float, float]] | None] | None = None,
) -> np.ndarray:
    """The gray uint8 crops (N, size, size) of every box of ``image``, cut as ``preprocessing`` says:
    the faces a model is given, before :func:`faces_to_input` scales them (and a dataset holds)."""
    gray = to_gray(image)
    crops = []
    for index, box in enumerate(boxes):
        face_eyes = eyes[index] if (eyes is not None and preprocessing.align) else None
        crop = crop_face(gray, box, preprocessing.margin, face_eyes)
        crops.append(resize_face(crop, preprocessing.size))
    size = preprocessing.size
    return np.stack(crops) if crops else np.zeros((0, size, size), np.uint8)


def prepare_faces(
    image: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    preprocessing: Preprocessing,
    eyes: list[tuple[tuple[float, float], tuple[float, float]] | None] | None = None,
) -> np.ndarray:
    """Crop every box from ``image`` and return the model input for all of them as one batch."""
    return faces_to_input(crop_faces(image, boxes, preprocessing, eyes), preprocessing)
