"""Recording a class's faces from the live stream into a
:class:`~fer_core.datasets.collection.FaceCollection`.

:class:`FaceRecorder` is fed by :class:`~fer_core.inference.live.LiveAnalyser` (as its
``recorder``) with every analysed frame and its face boxes. While armed by
:meth:`FaceRecorder.start` it keeps the main (largest) face's crop, cut by
:func:`~fer_core.faces.preprocess.crop_faces` exactly as the model's classifier cuts it, spread
evenly over the recording's seconds (consecutive frames are near copies), and adds them to the
collection as one recording when it has its faces or its time is up. It draws a counter on the
stream, so that whoever is filmed sees that faces are being kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from fer_core.base.errors import DataError
from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.datasets.collection import FaceCollection, emotion_code
from fer_core.faces.detect import Detection
from fer_core.faces.preprocess import Preprocessing, crop_faces

#: A recording's faces and seconds unless told otherwise: 20 faces spread over 4 s.
RECORDING_FACES = 20
RECORDING_SECONDS = 4.0
RECORDING_COLOR = (40, 40, 220)  # BGR red, as a camera's recording light


def main_face(detections: list[Detection]) -> Detection | None:
    """The largest face of a frame (the one nearest the camera), or None without faces."""
    return max(detections, key=lambda detection: detection.box[2] * detection.box[3], default=None)


def main_face_crop(image: np.ndarray, detections: list[Detection], preprocessing: Preprocessing) -> np.ndarray | None:
    """The main face's gray crop as a model with ``preprocessing`` is given it, or None without faces."""
    face = main_face(detections)
    if face is None:
        return None
    return crop_faces(image, [face.box], preprocessing, [face.eyes])[0]


@dataclass(frozen=True)
class RecordingStatus:
    """What a :class:`FaceRecorder` is doing, for the page's counter."""

    recording: bool
    emotion: str | None  #: the emotion being recorded, or last recorded (None before the first)
    taken: int  #: faces taken so far (the last recording's, once it has ended)
    wanted: int
    seconds_left: float
    finished: int  #: recordings ended so far, added or not: the page refreshes its gallery when it grows
    message: str | None = None  #: how the last recording ended


class FaceRecorder:
    """Records the main face of a live stream into ``collection``, one recording per :meth:`start`.

    Thread-safe: the stream's thread calls :meth:`offer` and :meth:`annotate`, the page :meth:`start`
    and :meth:`status`. ``clock`` gives seconds (tests pass a fake one).
    """

    def __init__(self, collection: FaceCollection, clock: Callable[[], float] = time.monotonic):
        self.collection = collection
        self._clock = clock
        self._lock = threading.Lock()
        self._emotion: str | None = None
        self._crops: list[np.ndarray] = []
        self._wanted = RECORDING_FACES
        self._interval = 0.0
        self._deadline = 0.0
        self._next_take = 0.0
        self._recording = False
        self._finished = 0
        self._message: str | None = None

    def start(self, emotion: int | str, faces: int = RECORDING_FACES, seconds: float = RECORDING_SECONDS) -> bool:
        """Start recording ``faces`` faces of ``emotion`` over ``seconds``; False (and nothing changes)
        while a recording is under way: a second press of Record, or a late one, does not cut it short."""
        code = emotion_code(emotion)
        if faces < 1 or not seconds > 0:
            raise DataError(f"a recording needs 1 face or more and more than 0 seconds, not {faces} in {seconds}")
        now = self._clock()
        with self._lock:
            if self._recording and now < self._deadline:
                return False
            if self._recording:
                self._end()
            self._emotion, self._crops, self._wanted = EMOTIONS[code], [], int(faces)
            self._interval, self._deadline, self._next_take = seconds / faces, now + seconds, now
            self._recording, self._message = True, None
            return True

    def offer(self, image: np.ndarray, detections: list[Detection], preprocessing: Preprocessing) -> None:
        """An analysed frame and its faces: the main face is kept when a face is due."""
        now = self._clock()
        with self._lock:
            if not self._recording:
                return
            if now < self._deadline and now >= self._next_take:
                crop = main_face_crop(image, detections, preprocessing)
                if crop is not None:
                    self._crops.append(crop)
                    # On schedule, so a late frame does not push back the faces after it, but never
                    # sooner than half a gap: after a while without a face, no burst of near copies.
                    self._next_take = max(self._next_take + self._interval, now + self._interval / 2)
            if len(self._crops) >= self._wanted or now >= self._deadline:
                self._end()

    def status(self) -> RecordingStatus:
        """The recording's state; ends a recording whose time is up (the stream may have stopped)."""
        now = self._clock()
        with self._lock:
            if self._recording and now >= self._deadline:
                self._end()
            left = max(0.0, self._deadline - now) if self._recording else 0.0
            return RecordingStatus(self._recording, self._emotion, len(self._crops), self._wanted, left,
                                   self._finished, self._message)

    def annotate(self, frame: np.ndarray) -> np.ndarray:
        """Draw the counter of a recording under way on a BGR frame (in place), so the person filmed sees
        it: a red dot and "REC Happy 7/20" in white on a black band, top left."""
        with self._lock:
            if not self._recording:
                return frame
            assert self._emotion is not None  # start sets it before any recording
            text = f"REC {DISPLAY_NAMES[self._emotion]} {len(self._crops)}/{self._wanted}"
        scale = max(0.5, frame.shape[1] / 640)
        font_scale, thickness = 0.8 * scale, max(1, round(2 * scale))
        (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        pad = round(8 * scale)
        cv2.rectangle(frame, (0, 0), (width + 3 * pad + height, height + 2 * pad), (0, 0, 0), -1)
        cv2.circle(frame, (pad + height // 2, pad + height // 2), height // 2, RECORDING_COLOR, -1)
        cv2.putText(frame, text, (2 * pad + height, pad + height), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
        return frame

    def _end(self) -> None:
        """Add the faces taken as one recording and say how it went (the caller holds the lock)."""
        assert self._emotion is not None  # start sets it before any recording
        self._recording = False
        self._finished += 1
        name = DISPLAY_NAMES[self._emotion]
        if not self._crops:
            self._message = (f"No face was found while recording {name}: nothing was added. Face the camera, "
                             "in good light, and record again.")
            return
        try:
            self.collection.add_recording(self._emotion, self._crops)
        except DataError as error:
            self._message = str(error)
        else:
            self._message = f"{len(self._crops)} faces of {name} recorded."
