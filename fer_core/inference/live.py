"""Live video analysis: face tracks across frames, smoothed probabilities and frame skipping.

Detection is the slow step, so :class:`LiveAnalyser` detects faces only every k-th analysed frame
and in between classifies the faces again at their tracked boxes. Boxes of consecutive frames are
joined into tracks by overlap (IoU), and each track's probabilities are smoothed with an
exponential moving average so labels do not flicker. When analysis takes longer than the frames
keep coming, frames are passed through with the last known boxes instead of being analysed, so the
picture stays live on a slow CPU. With a :class:`fer_core.inference.streams.StreamBoard`, a stream holds one of
the server's stream slots while its frames come, and its analysis takes only its fair share of the
server's analysis time. Results for a UI thread go through a :class:`queue.Queue`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from fer_core.base.labels import EMOTIONS
from fer_core.faces.detect import Detection
from fer_core.inference.annotate import annotate
from fer_core.inference.predict import EmotionAnalyser, FaceResult

if TYPE_CHECKING:
    from fer_core.faces.preprocess import Preprocessing
    from fer_core.inference.streams import StreamBoard

Box = tuple[int, int, int, int]
#: What the pages ask of the browser's camera: 640x480 at 15 frames a second is plenty for finding
#: and reading faces, and at 1280x720 decoding, conversions and encoding take twice as long
#: (scripts/frame_costs.py). "ideal" lets a camera without that mode send its nearest one.
CAMERA_CONSTRAINTS = {
    "video": {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 15, "max": 15}},
    "audio": False,
}


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    width = min(ax + aw, bx + bw) - max(ax, bx)
    height = min(ay + ah, by + bh) - max(ay, by)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / float(aw * ah + bw * bh - overlap)


class FrameRecorder(Protocol):
    """What a :class:`LiveAnalyser` feeds and lets draw on the stream, e.g. the Class faces page's
    :class:`fer_core.datasets.recorder.FaceRecorder`; both are called from the stream's thread."""

    def offer(self, image: np.ndarray, detections: list[Detection], preprocessing: Preprocessing) -> None:
        """An analysed frame, its faces, and how the model crops them."""

    def annotate(self, frame: np.ndarray) -> np.ndarray:
        """Draw on a BGR frame (in place) and return it."""


@dataclass
class TrackedFace:
    """A face of one frame with the id of the track it belongs to (probabilities smoothed)."""

    track_id: int
    face: FaceResult


@dataclass
class _Track:
    track_id: int
    detection: Detection
    probabilities: np.ndarray
    missed: int = 0

    def face(self, box: Box, detection_score: float) -> TrackedFace:
        """This track's face at ``box``, with its smoothed probabilities."""
        smoothed = dict(zip(EMOTIONS, map(float, self.probabilities)))
        return TrackedFace(self.track_id, FaceResult(box, smoothed, detection_score))


class FaceTracker:
    """Joins the faces of successive frames into tracks by box overlap.

    ``smoothing`` is the weight of a track's past in its exponential moving average (0 means the
    newest probabilities are reported as they are). A track that more than ``max_missed``
    detections in a row do not find again is dropped; until then it is :meth:`held` where it was
    last seen (a detector misses a face now and then). Frames in between detections classify again
    only the faces the last detection found, and cannot tell that a face has gone, so they age no track.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 2, smoothing: float = 0.0):
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.smoothing = smoothing
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def detections(self) -> list[Detection]:
        """Where the last detection found each tracked face, to classify again until the next one."""
        return [track.detection for track in self._tracks if track.missed == 0]

    def held(self) -> list[TrackedFace]:
        """The faces the last detection missed but that are still tracked: their last box and
        probabilities, to show until they are found again or dropped."""
        return [track.face(track.detection.box, track.detection.score) for track in self._tracks if track.missed > 0]

    def update(self, detections: list[Detection], results: list[FaceResult], *,
               detected: bool = True) -> list[TrackedFace]:
        """Match this frame's faces to tracks, start tracks for new faces, return the frame's faces.

        ``detected=False``: the faces are this tracker's own ``detections``, classified again on a
        frame without detection; tracks then neither age nor get dropped.
        """
        pairs = sorted(
            ((iou(track.detection.box, detection.box), t, d)
             for t, track in enumerate(self._tracks) for d, detection in enumerate(detections)),
            reverse=True)
        track_of: dict[int, _Track] = {}
        matched_tracks: set[int] = set()
        for overlap, t, d in pairs:
            if overlap < self.iou_threshold:
                break
            if t in matched_tracks or d in track_of:
                continue
            matched_tracks.add(t)
            track_of[d] = self._tracks[t]
        if detected:
            for t, seen in enumerate(self._tracks):
                seen.missed = 0 if t in matched_tracks else seen.missed + 1
            self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]

        faces = []
        for d, (detection, result) in enumerate(zip(detections, results)):
            new = np.array([result.probabilities[name] for name in EMOTIONS], np.float64)
            track = track_of.get(d)
            if track is None:
                track = _Track(self._next_id, detection, new)
                self._next_id += 1
                self._tracks.append(track)
            else:
                track.detection = detection
                track.probabilities = self.smoothing * track.probabilities + (1.0 - self.smoothing) * new
            faces.append(track.face(result.box, result.detection_score))
        return faces


@dataclass
class LiveStats:
    """How the live analysis keeps up: frames seen, analysed and passed through, and speeds."""

    frames: int = 0
    analysed: int = 0
    skipped: int = 0
    faces_analysed: int = 0
    fps: float = 0.0
    analysis_ms: float = 0.0
    analysed_every: float = 1.0  #: frames per analysed frame, lately (1: every frame analysed)
    refused: bool = False  #: the server was full when this stream's frames came (see StreamBoard)


@dataclass
class LiveUpdate:
    """What the UI shows after an analysed frame: its faces (largest first) and the statistics."""

    faces: list[TrackedFace]
    stats: LiveStats


class LiveAnalyser:
    """Thread-safe analysis of a video stream, frame by frame (see the module docstring).

    ``detect_every``: detect faces on every k-th analysed frame, track them in between.
    ``smoothing``: weight of the past in each track's moving average, 0 (none) to below 1.
    ``max_load``: the share of wall time analysis may take; frames arriving before the analyser
    is due again are only annotated with the last boxes.
    ``board`` and ``owner``: the server's streams; each frame renews ``owner``'s slot on the board,
    and analysis takes at most the board's fair share (and ``max_load``). When the board is full,
    frames are passed through with a notice and ``stats().refused`` is set.
    ``recorder``: given every analysed frame and its face boxes, and draws on every frame (the
    Class faces page records faces with it).
    """

    def __init__(self, analyser: EmotionAnalyser, *, detect_every: int = 3, smoothing: float = 0.6,
                 max_load: float = 0.8, iou_threshold: float = 0.3, max_missed: int = 2,
                 clock: Callable[[], float] = time.monotonic, queue_size: int = 4,
                 board: StreamBoard | None = None, owner: str = "stream", recorder: FrameRecorder | None = None):
        if detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        if not 0.0 < max_load <= 1.0:
            raise ValueError("max_load must lie in (0, 1]")
        self.analyser = analyser
        self.detect_every = detect_every
        self.max_load = max_load
        self.results: queue.Queue[LiveUpdate] = queue.Queue(maxsize=queue_size)
        self.recorder = recorder
        self.board = board
        self.owner = owner
        self._clock = clock
        self._tracker = FaceTracker(iou_threshold, max_missed)
        self.smoothing = smoothing
        self._lock = threading.Lock()
        self._stats = LiveStats()
        self._last_faces: list[TrackedFace] = []
        self._due = 0.0
        self._frame_times: deque[float] = deque(maxlen=60)
        self._frames_analysed: deque[bool] = deque(maxlen=60)

    @property
    def smoothing(self) -> float:
        return self._tracker.smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), not {value}")
        self._tracker.smoothing = float(value)

    def stats(self) -> LiveStats:
        """A copy of the current statistics."""
        with self._lock:
            return LiveStats(**vars(self._stats))

    def process(self, image: np.ndarray) -> np.ndarray:
        """Analyse (or pass through) one BGR frame and return it annotated."""
        now = self._clock()
        with self._lock:
            self._count_frame(now)
            self._stats.refused = self.board is not None and not self.board.claim(self.owner)
            if self._stats.refused:
                self._stats.skipped += 1
                return server_full_notice(image)
            analyse = now >= self._due
            self._frames_analysed.append(analyse)
            self._stats.analysed_every = len(self._frames_analysed) / max(1, sum(self._frames_analysed))
            if analyse:
                faces = self._analyse(image, now)
            else:
                self._stats.skipped += 1
                faces = self._last_faces
        annotated = annotate(image, [tracked.face for tracked in faces])
        return annotated if self.recorder is None else self.recorder.annotate(annotated)

    def _count_frame(self, now: float) -> None:
        self._stats.frames += 1
        self._frame_times.append(now)
        span = self._frame_times[-1] - self._frame_times[0]
        self._stats.fps = (len(self._frame_times) - 1) / span if span > 0 else 0.0

    def _analyse(self, image: np.ndarray, started: float) -> list[TrackedFace]:
        """Detect or track, classify, smooth, schedule the next analysis and publish the result."""
        detected = self._stats.analysed % self.detect_every == 0
        detections = self.analyser.detector.detect(image) if detected else self._tracker.detections
        faces = self._tracker.update(detections, self.analyser.classify(image, detections), detected=detected)
        if self.recorder is not None:
            self.recorder.offer(image, detections, self.analyser.preprocessing)
        faces += self._tracker.held()
        cost = self._clock() - started
        # Rest long enough that analysis takes at most its share of the wall time.
        share = self.max_load if self.board is None else min(self.max_load, self.board.share())
        self._due = started + cost / share
        self._stats.analysed += 1
        self._stats.faces_analysed += len(faces)
        self._stats.analysis_ms = cost * 1000.0 if self._stats.analysed == 1 else (
            0.8 * self._stats.analysis_ms + 0.2 * cost * 1000.0)
        self._last_faces = faces
        self._publish(LiveUpdate(faces, LiveStats(**vars(self._stats))))
        return faces

    def _publish(self, update: LiveUpdate) -> None:
        """Put an update on the queue, dropping the oldest one when the UI has not kept up."""
        while True:
            try:
                self.results.put_nowait(update)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.results.get_nowait()

    def latest(self, timeout: float = 0.0) -> LiveUpdate | None:
        """The newest update on the queue (older ones are discarded), or None if none came."""
        update = None
        try:
            update = self.results.get(timeout=timeout) if timeout > 0 else self.results.get_nowait()
            while True:
                update = self.results.get_nowait()
        except queue.Empty:
            return update


def server_full_notice(image: np.ndarray) -> np.ndarray:
    """A frame with a notice that it is not analysed because the server carries its most streams."""
    shown = image.copy()
    shown[:36] = 0
    cv2.putText(shown, "Server full: not analysed. Use Snapshot.", (8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                (255, 255, 255), 2, cv2.LINE_AA)
    return shown


def ice_servers(environ: Mapping[str, str] = os.environ, secrets: Mapping | None = None) -> list[dict] | None:
    """ICE servers for WebRTC from app secrets or environment variables; None if none are set.

    ``secrets["ice_servers"]`` or ``$FER_LAB_ICE_SERVERS`` (JSON) give the whole list, which may be
    empty for localhost; otherwise ``$TURN_URL`` with ``$TURN_USERNAME`` and ``$TURN_CREDENTIAL``
    give one TURN server, next to a public STUN server.
    """
    if secrets is not None and "ice_servers" in secrets:
        return [dict(server) for server in secrets["ice_servers"]]
    text = environ.get("FER_LAB_ICE_SERVERS")
    if text is not None:
        try:
            servers = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"FER_LAB_ICE_SERVERS is not valid JSON ({error})") from error
        if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
            raise ValueError('FER_LAB_ICE_SERVERS must be a JSON list like [{"urls": ["stun:host:3478"]}]')
        return servers
    if environ.get("TURN_URL"):
        turn = {"urls": [environ["TURN_URL"]], "username": environ.get("TURN_USERNAME", ""),
                "credential": environ.get("TURN_CREDENTIAL", "")}
        return [{"urls": ["stun:stun.l.google.com:19302"]}, turn]
    return None
