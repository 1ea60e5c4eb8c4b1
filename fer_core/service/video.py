"""Emotions through a video: frames sampled at a chosen rate, faces joined into tracks, a summary per track.

Videos (mp4, webm, mov and anything else FFmpeg reads) are decoded with PyAV from a path or from
bytes held in memory; nothing is written to disk.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
import pandas as pd

from fer_core.base.errors import ImageError
from fer_core.base.labels import EMOTIONS
from fer_core.inference.annotate import annotate
from fer_core.inference.live import FaceTracker, TrackedFace
from fer_core.inference.predict import EmotionAnalyser

VideoSource = str | os.PathLike | bytes


@dataclass
class VideoFrameResult:
    """The faces of one sampled frame, at its time in seconds from the start."""

    time: float
    faces: list[TrackedFace]


@dataclass
class TrackSummary:
    """One face followed through the video: when it was seen and its mean probabilities."""

    track_id: int
    first_seen: float
    last_seen: float
    samples: int
    mean_probabilities: dict[str, float]
    #: The face where it was seen largest (BGR, :data:`THUMBNAIL_HEIGHT` tall), to tell whose track it is.
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)
    dominant: str = field(init=False)

    def __post_init__(self) -> None:
        self.dominant = max(self.mean_probabilities, key=self.mean_probabilities.__getitem__)


@dataclass
class VideoAnalysis:
    """Per-frame results and per-track summaries of one video."""

    name: str
    duration: float
    sample_rate: float
    frames: list[VideoFrameResult]
    tracks: list[TrackSummary]
    #: The sampled frame showing the most tracks, each face's box tagged with its track number (BGR).
    overview: np.ndarray | None = field(default=None, repr=False)
    overview_time: float = 0.0

    def frame_table(self) -> pd.DataFrame:
        """One row per face per sampled frame: time, track, label, score, box and probabilities."""
        return _frame_table(self.frames)


def _frame_table(frames: list[VideoFrameResult]) -> pd.DataFrame:
    rows = [{"time": frame.time, "track": tracked.track_id, **tracked.face.to_row()}
            for frame in frames for tracked in frame.faces]
    columns = ["time", "track", "label", "score", "x", "y", "width", "height", *EMOTIONS]
    return pd.DataFrame(rows, columns=columns)


#: The height of a track's thumbnail in pixels.
THUMBNAIL_HEIGHT = 112


def face_thumbnail(image: np.ndarray, box: tuple[int, int, int, int], height: int = THUMBNAIL_HEIGHT) -> np.ndarray:
    """The face in ``box`` with a fifth of its size around it, scaled to ``height`` pixels (BGR)."""
    x, y, w, h = box
    margin = round(0.2 * max(w, h))
    top, left = max(0, y - margin), max(0, x - margin)
    crop = image[top:y + h + margin, left:x + w + margin]
    if crop.size == 0:
        raise ValueError(f"the box {box} lies outside the {image.shape[1]}x{image.shape[0]} frame")
    return cv2.resize(crop, (max(1, round(crop.shape[1] * height / crop.shape[0])), height),
                      interpolation=cv2.INTER_AREA)


class _Sightings:
    """What the analysis keeps beside the table: each track's largest face and the frame with most faces."""

    def __init__(self) -> None:
        self.largest: dict[int, tuple[int, np.ndarray]] = {}
        self.busiest: tuple[int, float, np.ndarray, list[TrackedFace]] = (0, 0.0, np.zeros((0, 0, 3), np.uint8), [])

    def add(self, time: float, image: np.ndarray, faces: list[TrackedFace]) -> None:
        for tracked in faces:
            area = tracked.face.box[2] * tracked.face.box[3]
            if area > self.largest.get(tracked.track_id, (0, None))[0]:
                self.largest[tracked.track_id] = area, face_thumbnail(image, tracked.face.box)
        if len(faces) > self.busiest[0]:
            self.busiest = len(faces), time, image, faces

    def overview(self) -> np.ndarray | None:
        count, _, image, faces = self.busiest
        return annotate(image, [t.face for t in faces], [t.track_id for t in faces]) if count else None


def summarise_tracks(frames: list[VideoFrameResult]) -> list[TrackSummary]:
    """Mean probabilities, first and last time seen and sample count of every track."""
    table = _frame_table(frames)
    if table.empty:
        return []
    grouped = table.groupby("track")
    times = grouped["time"].agg(["min", "max", "size"])
    means = grouped[list(EMOTIONS)].mean()
    return [TrackSummary(int(track), float(times.at[track, "min"]), float(times.at[track, "max"]),
                         int(times.at[track, "size"]), {k: float(v) for k, v in means.loc[track].items()})
            for track in times.index]


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """The frame as BGR, turned as the video's display matrix says (phone videos filmed upright)."""
    image = frame.to_ndarray(format="bgr24")
    turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def analyse_video(
    source: VideoSource,
    analyser: EmotionAnalyser,
    *,
    sample_rate: float = 2.0,
    name: str | None = None,
    progress: Callable[[float], None] | None = None,
    iou_threshold: float = 0.3,
    max_missed: int = 2,
) -> VideoAnalysis:
    """Analyse ``sample_rate`` frames per second of a video and follow each face through it.

    ``progress`` receives the fraction of the video done (0 to 1). A file that is not a readable
    video, or holds no video stream, raises :class:`ImageError` naming it.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "the video")
    interval = 1.0 / sample_rate
    tracker = FaceTracker(iou_threshold, max_missed)
    frames: list[VideoFrameResult] = []
    sightings = _Sightings()
    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)) as container:
            if not container.streams.video:
                raise ImageError(f"{label}: the file holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            duration = _duration(container, stream)
            next_time = 0.0
            decoded = 0
            for frame in container.decode(stream):
                decoded += 1
                time = float(frame.time) if frame.time is not None else (decoded - 1) / float(stream.average_rate or 25)
                if time + 1e-6 < next_time:
                    continue
                next_time = (math.floor(time / interval + 1e-6) + 1) * interval
                image = _upright(frame)
                detections = analyser.detector.detect(image)
                faces = tracker.update(detections, analyser.classify(image, detections))
                frames.append(VideoFrameResult(round(time, 3), faces))
                sightings.add(round(time, 3), image, faces)
                if progress is not None and duration:
                    progress(min(1.0, time / duration))
    except ImageError:
        raise
    except FileNotFoundError as error:
        raise ImageError(f"{label}: no such file") from error
    except (av.FFmpegError, OSError) as error:
        raise ImageError(f"{label}: not a readable video (mp4, webm or mov) or damaged ({error})") from error
    if not frames:
        raise ImageError(f"{label}: no video frame could be decoded")
    if progress is not None:
        progress(1.0)
    tracks = summarise_tracks(frames)
    for track in tracks:
        track.thumbnail = sightings.largest[track.track_id][1]
    return VideoAnalysis(label, duration or frames[-1].time, sample_rate, frames, tracks, sightings.overview(),
                         sightings.busiest[1])
