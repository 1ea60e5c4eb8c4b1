"""Face detectors behind one interface, picked by name from a registry.

``haar``: OpenCV's Haar cascade, fast enough for live video. ``mtcnn``: the MTCNN network of the
``mtcnn`` package (weights ship inside it), slower but more accurate and with eye landmarks; the
default of ``python -m fer_core predict`` (the app starts with ``haar`` and offers both).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import cv2.data  # the Haar cascades' folder: OpenCV's type stubs leave the submodule out of cv2
import numpy as np

from fer_core.base.errors import FerError, SettingError
from fer_core.base.pool import ObjectPool
from fer_core.faces.preprocess import Preprocessing, crop_face, to_gray

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One face: its box (x, y, width, height) in image pixels, a score, and eyes if known."""

    box: tuple[int, int, int, int]
    score: float
    left_eye: Point | None = None
    right_eye: Point | None = None

    @property
    def eyes(self) -> tuple[Point, Point] | None:
        if self.left_eye is None or self.right_eye is None:
            return None
        return self.left_eye, self.right_eye

    def scaled(self, factor: float) -> Detection:
        """The same detection in an image ``factor`` times as large."""
        x, y, w, h = self.box

        def point(p: Point | None) -> Point | None:
            return None if p is None else (p[0] * factor, p[1] * factor)

        box = (int(round(x * factor)), int(round(y * factor)),
               int(round(w * factor)), int(round(h * factor)))
        return Detection(box, self.score, point(self.left_eye), point(self.right_eye))


class FaceDetector(ABC):
    """Finds faces in a gray, BGR or BGRA image.

    ``max_side`` bounds the size detection runs at: a larger image is searched on a downscaled
    copy and the boxes are scaled back, which keeps very large photos fast. Faces smaller than
    ``min_face_size`` pixels are ignored, and with ``min_face_fraction`` also faces smaller than
    that share of the image's shorter side: a live stream that WebRTC scales down to 320x240 on a
    slow link or CPU then still finds the faces it found at 640x480.
    """

    name = "base"

    def __init__(self, min_face_size: int = 40, max_side: int = 1280, min_face_fraction: float = 0.0):
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        self.min_face_fraction = float(min_face_fraction)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image``, largest first."""
        height, width = image.shape[:2]
        min_face_size = max(self.min_face_size, self.min_face_fraction * min(height, width))
        if min(height, width) < min_face_size:
            return []
        factor = 1.0
        if max(height, width) > self.max_side:
            factor = max(height, width) / self.max_side
            size = (max(1, int(round(width / factor))), max(1, int(round(height / factor))))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found = self._detect(image, min_face_size / factor)
        if factor != 1.0:
            found = [d.scaled(factor) for d in found]
        return sorted(found, key=lambda d: d.box[2] * d.box[3], reverse=True)

    @abstractmethod
    def _detect(self, image: np.ndarray, min_face_size: float) -> list[Detection]:
        """Faces in an image no larger than ``max_side``."""


DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register(name: str) -> Callable[[type[FaceDetector]], type[FaceDetector]]:
    """Add a detector class to :data:`DETECTORS` under ``name``."""

    def decorate(cls: type[FaceDetector]) -> type[FaceDetector]:
        cls.name = name
        DETECTORS[name] = cls
        return cls

    return decorate


def _load_cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FerError(f"OpenCV's Haar cascade is missing ({path}); install opencv-python-headless<5")
    return cascade


@register("haar")
class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (Viola and Jones, CVPR 2001).

    Defaults are stricter than OpenCV's (more neighbours, a minimum size and a score threshold):
    tuned on scikit-image's sample photos, they find the astronaut's face and 91 of 100 LFW faces
    and report none of the phantom faces OpenCV's defaults see in coins, cells and moon craters.
    """

    def __init__(self, min_face_size: int = 40, max_side: int = 1280, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_score: float = 4.0, equalize: bool = False,
                 min_face_fraction: float = 0.0):
        super().__init__(min_face_size, max_side, min_face_fraction)
        self._cascades = ObjectPool(_load_cascade)
        with self._cascades.borrow():  # fail early when the cascade file is missing
            pass
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_score, self.equalize = min_score, equalize

    def _detect(self, image: np.ndarray, min_face_size: float) -> list[Detection]:
        gray = to_gray(image)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        side = max(1, int(min_face_size))
        with self._cascades.borrow() as cascade:  # OpenCV's cascades are not safe to share across threads
            boxes, _, weights = cascade.detectMultiScale3(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(side, side), outputRejectLevels=True)
        found = []
        for box, weight in zip(boxes, np.ravel(weights) if len(boxes) else []):
            if float(weight) >= self.min_score:
                x, y, width, height = (int(v) for v in box)
                found.append(Detection((x, y, width, height), float(weight)))
        return found


@register("mtcnn")
class MtcnnDetector(FaceDetector):
    """MTCNN (Zhang et al., IEEE Signal Processing Letters 2016) from the ``mtcnn`` package."""

    def __init__(self, min_face_size: int = 40, max_side: int = 1280, min_confidence: float = 0.9,
                 min_face_fraction: float = 0.0):
        super().__init__(min_face_size, max_side, min_face_fraction)
        try:
            from mtcnn import MTCNN  # loads TensorFlow: only when MTCNN is chosen
        except ImportError as error:
            raise FerError(f"the mtcnn face detector is not installed ({error}); pip install mtcnn") from error

        self.min_confidence = min_confidence
        self._mtcnn = MTCNN()
        self._lock = threading.Lock()

    def _detect(self, image: np.ndarray, min_face_size: float) -> list[Detection]:
        if image.ndim == 2 or image.shape[2] == 1:
            rgb = cv2.cvtColor(to_gray(image), cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 4:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        with self._lock:
            # mtcnn 1.0 fails inside its image pyramid when given min_face_size: filter below.
            faces = self._mtcnn.detect_faces(rgb, threshold_onet=self.min_confidence)
        found = []
        for face in faces:
            x, y, w, h = (int(v) for v in face["box"])
            left, top = max(0, x), max(0, y)  # a face cut by the image's edge: keep its visible part
            w, h = w - (left - x), h - (top - y)
            if face["confidence"] < self.min_confidence or min(w, h) < min_face_size:
                continue
            points = face.get("keypoints", {})
            found.append(Detection((left, top, w, h), float(face["confidence"]),
                                   _point(points.get("left_eye")), _point(points.get("right_eye"))))
        return found


@register("none")
class WholeImageDetector(FaceDetector):
    """No detection: the whole image is one face (for images that are already face crops)."""

    def __init__(self, min_face_size: int = 1, max_side: int = 100_000):
        super().__init__(min_face_size, max_side)

    def _detect(self, image: np.ndarray, min_face_size: float) -> list[Detection]:
        height, width = image.shape[:2]
        return [Detection((0, 0, width, height), 1.0)]


def _point(value) -> Point | None:
    return None if value is None else (float(value[0]), float(value[1]))


#: Options that make a detector fast enough for live video. A webcam face fills an eighth of the
#: frame's height or more (60 pixels at 640x480, 30 when WebRTC sends 320x240), so detection runs
#: on the frame scaled down to at most 320 pixels, for faces of that size, with a coarser scale
#: pyramid (`python -m fer_core bench --no-flip-tta` here: 8.9 ms per 640x480 frame instead of 39.6
#: with `--full-detector`, classification included).
LIVE_OPTIONS: dict[str, dict] = {
    "haar": {"max_side": 320, "scale_factor": 1.2, "min_face_size": 24, "min_face_fraction": 1 / 8},
    "mtcnn": {"max_side": 480, "min_face_size": 24, "min_face_fraction": 1 / 12},
}


def get_detector(name: str = "haar", live: bool = False, **options) -> FaceDetector:
    """A detector by registry name, with its options (e.g. ``min_face_size``).

    ``live`` applies :data:`LIVE_OPTIONS` (options given here still win).
    """
    if name not in DETECTORS:
        raise SettingError(f"unknown face detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}")
    if live:
        options = {**LIVE_OPTIONS.get(name, {}), **options}
    return DETECTORS[name](**options)


class LargestFaceCropper:
    """Picks the largest face out of labelled photos that are not face crops (a dataset from
    another source), cropped as the model's :class:`Preprocessing` crops detected faces.

    A photo where no face is found is kept whole; ``found`` and ``missed`` count both kinds.
    """

    def __init__(self, detector: FaceDetector, preprocessing: Preprocessing):
        self.detector, self.preprocessing = detector, preprocessing
        self.found = self.missed = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The gray crop of the largest face in ``image`` (gray, BGR or BGRA), else all of it in gray."""
        gray = to_gray(image)
        faces = self.detector.detect(image)
        if not faces:
            self.missed += 1
            return gray
        self.found += 1
        face = faces[0]
        return crop_face(gray, face.box, self.preprocessing.margin, face.eyes if self.preprocessing.align else None)
