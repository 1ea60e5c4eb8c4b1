"""Live analysis (tracking, smoothing, frame skipping, the result queue) and video analysis with PyAV."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from fer_core.base.errors import ImageError
from fer_core.base.labels import EMOTIONS
from fer_core.faces.detect import Detection, FaceDetector, get_detector
from fer_core.faces.preprocess import Preprocessing
from fer_core.faces.samples import astronaut
from fer_core.inference.annotate import face_label, place_tags
from fer_core.inference.live import FaceTracker, LiveAnalyser, ice_servers, iou
from fer_core.inference.predict import EmotionAnalyser, EmotionClassifier, FaceResult
from fer_core.service.video import THUMBNAIL_HEIGHT, analyse_video
from fer_core.training.networks import build_model


def one_hot(label: str) -> dict[str, float]:
    return {name: float(name == label) for name in EMOTIONS}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FixedDetector(FaceDetector):
    """Reports the given boxes, counts its calls and, like a slow detector, lets time pass."""

    def __init__(self, boxes, clock: FakeClock | None = None, cost: float = 0.0):
        super().__init__(min_face_size=1)
        self.boxes, self.clock, self.cost, self.calls = boxes, clock, cost, 0

    def _detect(self, image, min_face_size):
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.cost
        return [Detection(box, 1.0) for box in self.boxes]


class ScriptedClassifier:
    """Returns the next row of a script of probabilities for every face of a call."""

    def __init__(self, rows: list[dict[str, float]]):
        self.rows, self.calls = rows, 0

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        row = self.rows[min(self.calls, len(self.rows) - 1)]
        self.calls += 1
        return np.tile([row[name] for name in EMOTIONS], (len(faces), 1)).astype(np.float32)


def stub_live(rows, boxes=((40, 40, 60, 60),), clock=None, cost=0.0, **options):
    detector = FixedDetector(list(boxes), clock, cost)
    classifier = ScriptedClassifier(rows)
    analyser = EmotionAnalyser(classifier, detector, Preprocessing())
    live = LiveAnalyser(analyser, clock=clock or FakeClock(), **options)
    return live, detector, classifier


FRAME = np.full((160, 160, 3), 90, np.uint8)


def test_iou_of_identical_disjoint_and_half_overlapping_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_tracker_keeps_ids_of_moving_faces_and_drops_lost_ones():
    tracker = FaceTracker(iou_threshold=0.3, max_missed=1)
    first = [Detection((0, 0, 50, 50), 1.0), Detection((200, 0, 50, 50), 1.0)]
    ids = [t.track_id for t in tracker.update(first, [FaceResult(d.box, one_hot("happy")) for d in first])]
    moved = [Detection((205, 3, 50, 50), 1.0), Detection((4, 2, 50, 50), 1.0), Detection((400, 400, 50, 50), 1.0)]
    tracked = tracker.update(moved, [FaceResult(d.box, one_hot("sad")) for d in moved])
    assert [t.track_id for t in tracked] == [ids[1], ids[0], max(ids) + 1]
    for _ in range(2):
        tracker.update([], [])
    assert tracker.detections == []


def test_tracker_smooths_probabilities_with_an_exponential_moving_average():
    tracker = FaceTracker(smoothing=0.75)
    box = [Detection((10, 10, 40, 40), 1.0)]
    tracker.update(box, [FaceResult(box[0].box, one_hot("happy"))])
    face = tracker.update(box, [FaceResult(box[0].box, one_hot("sad"))])[0].face
    assert face.probabilities["happy"] == pytest.approx(0.75)
    assert face.probabilities["sad"] == pytest.approx(0.25)
    assert face.label == "happy"


def test_live_analyser_detects_every_kth_frame_and_tracks_in_between():
    live, detector, classifier = stub_live([one_hot("happy")], detect_every=3, max_load=1.0)
    for _ in range(7):
        live.process(FRAME)
    stats = live.stats()
    assert detector.calls == 3  # frames 1, 4 and 7
    assert classifier.calls == 7
    assert (stats.frames, stats.analysed, stats.skipped, stats.faces_analysed) == (7, 7, 0, 7)
    update = live.latest()
    assert [t.track_id for t in update.faces] == [1]
    assert update.faces[0].face.box == (40, 40, 60, 60)


def test_live_analyser_drops_a_face_that_left_even_between_detections():
    live, detector, _ = stub_live([one_hot("happy")], detect_every=3, max_load=1.0, max_missed=1)
    for _ in range(3):
        live.process(FRAME)
    assert [t.track_id for t in live.latest().faces] == [1]
    detector.boxes = []  # the face leaves: frames 4 and 7 detect nothing
    shown = []
    for _ in range(6):
        live.process(FRAME)
        shown.append([t.track_id for t in live.latest().faces])
    assert shown == [[1]] * 3 + [[]] * 3  # held where it was after one miss, dropped after the second
    detector.boxes = [(40, 40, 60, 60)]  # a face there after two empty detections is a new track
    for _ in range(3):
        live.process(FRAME)
    assert [t.track_id for t in live.latest().faces] == [2]


def test_tracker_keeps_a_track_through_frames_without_detection():
    tracker = FaceTracker(max_missed=0)
    box = [Detection((10, 10, 40, 40), 1.0)]
    tracker.update(box, [FaceResult(box[0].box, one_hot("happy"))])
    for _ in range(5):
        again = tracker.detections
        faces = tracker.update(again, [FaceResult(d.box, one_hot("happy")) for d in again], detected=False)
        assert [t.track_id for t in faces] == [1]
    assert tracker.update([], []) == [] and tracker.detections == []


def test_live_analyser_smoothing_is_settable_while_running():
    live, _, _ = stub_live([one_hot("happy"), one_hot("sad"), one_hot("sad")], detect_every=1, max_load=1.0,
                           smoothing=0.0)
    live.process(FRAME)
    live.process(FRAME)
    assert live.latest().faces[0].face.label == "sad"  # no smoothing: the newest wins
    live.smoothing = 0.9
    live.process(FRAME)
    assert live.latest().faces[0].face.probabilities["sad"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        live.smoothing = 1.0


def stream(live: LiveAnalyser, clock: FakeClock, frames: int = 30, rate: float = 30.0) -> tuple[list, list[float]]:
    """Feed frames arriving at ``rate`` per second to one worker; return the outputs and each frame's delay."""
    outputs, delays = [], []
    for index in range(frames):
        arrival = 100.0 + index / rate
        clock.now = max(clock.now, arrival)  # a frame waits while the worker is busy
        outputs.append(live.process(FRAME))
        delays.append(clock.now - arrival)
    return outputs, delays


def test_live_analyser_passes_frames_through_when_analysis_falls_behind():
    clock = FakeClock()
    live, _, _ = stub_live([one_hot("angry")], clock=clock, cost=0.1, detect_every=1, max_load=0.8)
    outputs, delays = stream(live, clock)  # 30 fps while each analysis takes 0.1 s
    stats = live.stats()
    assert stats.frames == 30
    assert 5 <= stats.analysed <= 10 and stats.skipped == 30 - stats.analysed
    assert max(delays) <= 0.1 + 1e-9  # the picture stays live
    assert stats.fps == pytest.approx(30, rel=0.1)
    assert stats.analysis_ms == pytest.approx(100)
    # Passed-through frames still carry the last box.
    assert all(not np.array_equal(out[40, 40:100], FRAME[40, 40:100]) for out in outputs)


def test_without_skipping_a_slow_analyser_falls_behind():
    clock = FakeClock()
    live, _, _ = stub_live([one_hot("angry")], clock=clock, cost=0.1, detect_every=1, max_load=1.0)
    _, delays = stream(live, clock)
    assert live.stats().skipped == 0
    assert delays[-1] > 2.0


def test_live_queue_is_bounded_and_latest_returns_the_newest_update():
    live, _, _ = stub_live([one_hot("happy")], detect_every=1, max_load=1.0, queue_size=2)
    for _ in range(5):
        live.process(FRAME)
    assert live.results.qsize() == 2
    assert live.latest().stats.analysed == 5
    assert live.latest() is None


def test_ice_servers_from_secrets_json_or_turn_variables():
    assert ice_servers({}) is None
    assert ice_servers({"FER_LAB_ICE_SERVERS": "[]"}) == []
    turn = ice_servers({"TURN_URL": "turn:turn.example.org:3478", "TURN_USERNAME": "class", "TURN_CREDENTIAL": "s3"})
    assert {"urls": ["turn:turn.example.org:3478"], "username": "class", "credential": "s3"} in turn
    secrets = {"ice_servers": [{"urls": ["stun:stun.example.org"]}]}
    assert ice_servers({"FER_LAB_ICE_SERVERS": "[]"}, secrets) == [{"urls": ["stun:stun.example.org"]}]
    with pytest.raises(ValueError, match="FER_LAB_ICE_SERVERS"):
        ice_servers({"FER_LAB_ICE_SERVERS": "{not json"})


# ---------------------------------------------------------------- video


@pytest.fixture(scope="module")
def analyser() -> EmotionAnalyser:
    return EmotionAnalyser(EmotionClassifier(build_model("ds_cnn")), get_detector("haar"), Preprocessing())


@pytest.fixture(scope="module")
def clip() -> bytes:
    """Three seconds of the astronaut photo at 10 fps, drifting right, as H.264 MP4 bytes."""
    photo = astronaut()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for index in range(30):
            frame = av.VideoFrame.from_ndarray(np.roll(photo, index, axis=1), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_video_is_sampled_tracked_and_summarised(clip, analyser):
    progress: list[float] = []
    analysis = analyse_video(clip, analyser, sample_rate=2.0, name="clip.mp4", progress=progress.append)
    assert [frame.time for frame in analysis.frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert all(len(frame.faces) == 1 for frame in analysis.frames)
    assert analysis.duration == pytest.approx(3.0, abs=0.15)
    assert progress == sorted(progress) and progress[-1] == 1.0
    (track,) = analysis.tracks
    assert (track.first_seen, track.last_seen, track.samples) == (0.0, 2.5, 6)
    table = analysis.frame_table()
    expected = table[list(EMOTIONS)].mean()
    assert track.mean_probabilities == pytest.approx(expected.to_dict())
    assert track.dominant == expected.idxmax()


def test_video_tracks_have_thumbnails_and_an_overview_tagged_with_their_numbers(clip, analyser):
    analysis = analyse_video(clip, analyser, sample_rate=2.0)
    (track,) = analysis.tracks
    assert track.thumbnail is not None and track.thumbnail.shape[0] == THUMBNAIL_HEIGHT
    assert analysis.overview is not None and analysis.overview.shape == (512, 512, 3)
    (first,) = analysis.frames[0].faces  # every frame shows the one face: the first is the busiest
    assert analysis.overview_time == 0.0
    (tag,) = place_tags([first.face.box], [face_label(first.face)], analysis.overview.shape, [track.track_id])
    assert tuple(analysis.overview[tag.rect[1] + 1, tag.rect[0] + 1]) == (20, 20, 20)  # the number's chip


def test_video_from_a_path_gives_the_same_frames(clip, analyser, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    analysis = analyse_video(path, analyser, sample_rate=1.0)
    assert analysis.name == str(path)
    assert [frame.time for frame in analysis.frames] == pytest.approx([0.0, 1.0, 2.0])


def test_corrupt_video_raises_image_error_naming_the_file(analyser):
    with pytest.raises(ImageError, match="broken.mp4"):
        analyse_video(np.random.default_rng(0).bytes(5000), analyser, name="broken.mp4")


def test_file_without_video_stream_raises_image_error(analyser):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(np.zeros(8000, np.int16).tobytes())
    with pytest.raises(ImageError, match="sound.wav: the file holds no video stream"):
        analyse_video(buffer.getvalue(), analyser, name="sound.wav")


def test_missing_video_file_raises_image_error(analyser, tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        analyse_video(tmp_path / "absent.mp4", analyser)
