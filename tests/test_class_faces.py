"""The Class faces page and its engine (fer_core.datasets.recorder, fer_core.service.work): faces recorded
from the live path as the classifier crops them, the gallery, zips out and in, and fine-tuning in the
background, before and after."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import streamlit_webrtc
from conftest import ASTRONAUT_FACE, overlap, synthetic_face
from streamlit.testing.v1 import AppTest

from fer_core.base.errors import DataError
from fer_core.base.labels import EMOTIONS
from fer_core.datasets.collection import FaceCollection
from fer_core.datasets.folders import load_zip
from fer_core.datasets.recorder import FaceRecorder, main_face_crop
from fer_core.faces.detect import Detection
from fer_core.faces.preprocess import Preprocessing, crop_faces, resize_face
from fer_core.faces.samples import astronaut
from fer_core.inference.live import LiveAnalyser
from fer_core.inference.predict import EmotionAnalyser
from fer_core.registry.store import ModelStore
from fer_core.service.queue import EmbeddedJobQueue
from fer_core.service.queues import job_queue
from fer_core.service.work import finetune_problem, submit_finetune

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
PAGE = "app_pages/5_Class_faces.py"
SMALL, LARGE = (10, 10, 40, 40), (80, 30, 100, 110)


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class FixedDetector:
    """Finds the same boxes in every frame."""

    def __init__(self, boxes) -> None:
        self.boxes = boxes

    def detect(self, image):
        return [Detection(box, 1.0) for box in self.boxes]


def uniform(faces: np.ndarray) -> np.ndarray:
    return np.full((len(faces), 7), 1 / 7, np.float32)


def recorded_faces(collection: FaceCollection, recordings: dict[str, int], per_recording: int = 4) -> None:
    """Add synthetic faces to ``collection``: for each emotion, that many recordings."""
    rng = np.random.default_rng(0)
    for emotion, count in recordings.items():
        code = EMOTIONS.index(emotion)
        for _ in range(count):
            collection.add_recording(emotion, [synthetic_face(code, rng) for _ in range(per_recording)])


# The recorder, fed by the live path ---------------------------------------------------------------


def test_the_recorder_keeps_the_main_face_as_the_classifier_crops_it_spread_over_the_seconds():
    preprocessing = Preprocessing(size=64, margin=0.15)  # not the collection's 48x48, nor a tight crop
    clock, collection = FakeClock(), FaceCollection()
    recorder = FaceRecorder(collection, clock)
    live = LiveAnalyser(EmotionAnalyser(uniform, FixedDetector([SMALL, LARGE]), preprocessing), detect_every=2,
                        max_load=1.0, clock=clock, recorder=recorder)
    frames = [np.random.default_rng(seed).integers(0, 256, (200, 260, 3), dtype=np.uint8) for seed in range(12)]
    assert recorder.start("happy", faces=3, seconds=1.5)  # a face every 0.5 s
    assert not recorder.start("sad") and recorder.status().emotion == "happy"  # a second press changes nothing
    for frame in frames:
        live.process(frame)
        clock.now += 0.25
    # Faces were due at 0, 0.5 and 1 s: frames 0, 2 and 4 (of which 2 and 4 were not detected, but tracked).
    kept = [face.image for face in collection.faces("happy")]
    expected = [resize_face(crop_faces(frames[index], [LARGE], preprocessing)[0], 48) for index in (0, 2, 4)]
    assert len(kept) == 3 and all(np.array_equal(a, b) for a, b in zip(kept, expected))
    status = recorder.status()
    assert not status.recording and status.taken == 3 and status.finished == 1
    assert status.message == "3 faces of Happy recorded."
    assert collection.recording_counts()["happy"] == 1  # one recording


def test_haar_finds_the_astronaut_and_the_recording_holds_her_face(model_store):
    analyser = EmotionAnalyser.from_store("default", detector="haar")
    collection = FaceCollection()
    recorder = FaceRecorder(collection)
    live = LiveAnalyser(analyser, recorder=recorder, max_load=1.0)
    frame = astronaut()
    live.process(frame)  # the first analysis warms the classifier up
    recorder.start("surprise", faces=2, seconds=2.0)
    detections = analyser.detector.detect(frame)
    main = max(detections, key=lambda detection: detection.box[2] * detection.box[3])
    assert overlap(main.box, ASTRONAUT_FACE) > 0.5
    deadline = time.monotonic() + 10
    while recorder.status().recording and time.monotonic() < deadline:
        live.process(frame)
    [first, second] = [face.image for face in collection.faces("surprise")]
    assert np.array_equal(first, main_face_crop(frame, detections, analyser.preprocessing))
    assert np.array_equal(first, second)  # the same photo twice


def test_a_recording_ends_at_its_time_with_the_faces_it_has_or_none():
    clock, collection = FakeClock(), FaceCollection()
    recorder = FaceRecorder(collection, clock)
    frame = np.full((200, 260, 3), 120, np.uint8)
    recorder.start("sad", faces=10, seconds=1.0)
    recorder.offer(frame, [Detection(LARGE, 1.0)], Preprocessing())
    clock.now += 0.5
    recorder.offer(frame, [], Preprocessing())  # no face in this frame
    assert recorder.status().recording and recorder.status().taken == 1
    clock.now += 0.6  # time is up, and no frame comes (the stream stopped): status() ends it
    status = recorder.status()
    assert not status.recording and status.message == "1 faces of Sad recorded." and len(collection) == 1
    recorder.start("angry", faces=5, seconds=1.0)
    clock.now += 2.0
    recorder.offer(frame, [], Preprocessing())
    status = recorder.status()
    assert not status.recording and status.finished == 2 and "No face was found" in status.message
    assert len(collection) == 1


def test_a_face_found_late_is_not_kept_in_a_burst_of_near_copies():
    clock, collection = FakeClock(), FaceCollection()
    recorder = FaceRecorder(collection, clock)
    frame = np.full((200, 260, 3), 120, np.uint8)
    recorder.start("fear", faces=4, seconds=4.0)  # a face a second
    taken_at = []
    for tick in range(50):  # a frame every 0.1 s; the face is found after 2.5 s
        clock.now = 50.0 + tick / 10
        before = recorder.status().taken
        recorder.offer(frame, [Detection(LARGE, 1.0)] if tick >= 25 else [], Preprocessing())
        if recorder.status().taken > before:
            taken_at.append(tick / 10)
    assert taken_at == [2.5, 3.0] and len(collection) == 2  # half a second apart, not every frame until on time


def test_the_counter_is_drawn_on_the_stream_only_while_recording_and_a_full_collection_is_said():
    clock = FakeClock()
    recorder = FaceRecorder(FaceCollection(max_faces=2), clock)
    frame = np.full((240, 320, 3), 120, np.uint8)
    assert np.array_equal(recorder.annotate(frame.copy()), frame)
    recorder.start("happy", faces=3, seconds=1.0)
    drawn = recorder.annotate(frame.copy())
    changed = np.abs(drawn.astype(int) - frame).max(axis=2) > 0
    assert changed.sum() > 100 and not changed[60:].any()  # in the top-left corner
    for _ in range(3):
        recorder.offer(frame, [Detection(LARGE, 1.0)], Preprocessing())
        clock.now += 0.4
    status = recorder.status()
    assert not status.recording and "takes at most 2" in status.message
    assert np.array_equal(recorder.annotate(frame.copy()), frame)


def test_the_recorder_refuses_an_unknown_emotion_and_an_empty_recording():
    recorder = FaceRecorder(FaceCollection())
    with pytest.raises(DataError, match="not an emotion"):
        recorder.start("bored")
    with pytest.raises(DataError, match="1 face or more"):
        recorder.start("happy", faces=0)
    assert not recorder.status().recording


# Fine-tuning on a collection, in the fine-tuning lane ---------------------------------------------


def test_fine_tuning_needs_two_emotions_and_one_recorded_twice():
    collection = FaceCollection()
    recorded_faces(collection, {"happy": 1})
    assert "two emotions" in finetune_problem(collection)
    recorded_faces(collection, {"sad": 1})
    assert "recorded twice" in finetune_problem(collection)
    with pytest.raises(DataError, match="two emotions"):
        submit_finetune(EmbeddedJobQueue(), FaceCollection(), "tiny", "x", minutes=1)
    recorded_faces(collection, {"sad": 1})
    assert finetune_problem(collection) is None


def test_a_fine_tuning_job_scores_both_models_on_the_held_out_recordings(model_store):
    collection = FaceCollection()
    recorded_faces(collection, {"happy": 3, "sad": 2, "neutral": 1})
    jobs = EmbeddedJobQueue()
    with pytest.raises(DataError, match="cannot save over it"):
        submit_finetune(jobs, collection, "tiny", "TINY", minutes=0.05, store=model_store)
    job = submit_finetune(jobs, collection, "tiny", "tiny_class", minutes=0.05, owner="Ada", store=model_store)
    assert job.lane == "finetune" and job.uses == frozenset({"tiny"})
    collection.clear()  # the job fine-tunes on the faces as they were when it was submitted
    state = jobs.wait(job.job_id, timeout=300)
    assert state is not None and not state.active, "fine-tuning did not finish in time"
    assert state.status == "done", state.error
    card, before = state.card, state.baseline
    assert card.name == "tiny_class" and "tiny_class" in model_store.names()
    tuning = card.training.fine_tuning
    assert tuning.start == "tiny" and tuning.untested_classes == ["neutral"]
    assert before.accuracy == pytest.approx(tuning.accuracy_before)
    assert before.n == card.metrics.n == card.faces_scored == 8  # one recording of happy, one of sad
    assert np.sum(before.confusion_matrix) == 8 and state.fraction == 1.0


# The page -------------------------------------------------------------------------------------------


def open_page(monkeypatch, playing: bool = False) -> tuple[AppTest, list[dict]]:
    """The Class faces page, with the WebRTC streamer replaced (its options are collected)."""
    streams: list[dict] = []
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **options: streams.append(options)
                        or SimpleNamespace(state=SimpleNamespace(playing=playing)))
    monkeypatch.setenv("FER_LAB_ICE_SERVERS", "[]")
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at, streams


def gallery_faces(at: AppTest) -> int:
    return len([button for button in at.button if button.key and button.key.startswith("class_delete_")])


def test_home_links_the_page_and_says_how_to_use_the_app_responsibly(model_store):
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    assert "Class faces" in [link.proto.label.split(":")[0] for link in at.get("page_link")]
    assert any("not feelings" in info.value and "AI Act art. 5(1)(f)" in info.value for info in at.info)


def test_pressing_record_keeps_the_streams_main_face_and_shows_it_in_the_gallery(model_store, monkeypatch):
    at, streams = open_page(monkeypatch, playing=True)
    assert streams[-1]["key"] == "fer-class-faces"
    at.radio(key="class_emotion").set_value("happy")
    at.slider(key="class_faces").set_value(5)
    at.slider(key="class_seconds").set_value(10.0).run()  # 2 s a face: room for a loaded CPU
    at.button(key="class_record").click().run()
    assert at.session_state["class_recorder"].status().recording
    callback, frame = streams[-1]["video_frame_callback"], av.VideoFrame.from_ndarray(astronaut(), format="bgr24")
    shown = callback(frame).to_ndarray(format="bgr24")
    assert not np.array_equal(shown[:30, :150], astronaut()[:30, :150])  # the counter, top left
    deadline = time.monotonic() + 30
    while at.session_state["class_recorder"].status().recording and time.monotonic() < deadline:
        callback(frame)
        time.sleep(0.05)
    at.run()
    assert not at.exception
    collection = at.session_state["class_collection"]
    assert collection.counts()["happy"] == 5 == gallery_faces(at)
    assert [expander.label for expander in at.expander if expander.label.startswith("Happy")] == [
        "Happy: 5 faces in 1 recording(s)"]
    assert any(caption.value == "5 faces of Happy recorded." for caption in at.caption)


def test_the_stream_is_not_taken_for_one_left_behind_while_its_page_reruns(model_store, monkeypatch):
    """streamlit-webrtc ends a stream when its count of runs shows a run that did not draw it; that count
    lags behind quick reruns, so the check is skipped when the page's previous run drew the stream."""
    at, _ = open_page(monkeypatch, playing=True)
    at.session_state["fer-class-faces"] = SimpleNamespace(_last_rendered_run_count=5)  # as the streamer keeps it
    at.run()
    assert at.session_state["fer-class-faces"]._last_rendered_run_count is None  # drawn in the run before
    at.switch_page("app_pages/2_Upload.py").run()
    at.session_state["fer-class-faces"]._last_rendered_run_count = 5
    at.switch_page(PAGE).run()
    assert at.session_state["fer-class-faces"]._last_rendered_run_count == 5  # left and back: its check stands


def test_a_snapshot_adds_its_main_face_once(model_store, monkeypatch):
    at, _ = open_page(monkeypatch)
    at.radio(key="class_emotion").set_value("sad").run()
    at.camera_input(key="class_snapshot").set_value(("snapshot.jpg", cv2.imencode(".jpg", astronaut())[1].tobytes(),
                                                     "image/jpeg")).run()
    assert not at.exception
    assert any("A face of Sad added" in success.value for success in at.success)
    at.run()
    assert at.session_state["class_collection"].counts()["sad"] == 1 == gallery_faces(at)


def test_faces_are_deleted_one_by_one_and_cleared_after_a_confirmation(model_store, monkeypatch):
    at, _ = open_page(monkeypatch)
    collection = at.session_state["class_collection"]
    recorded_faces(collection, {"happy": 1, "fear": 2}, per_recording=3)
    at.run()
    assert gallery_faces(at) == 9
    first = collection.faces("fear")[0]
    at.button(key=f"class_delete_{first.face_id}").click().run()
    assert gallery_faces(at) == 8 and first.face_id not in [face.face_id for face in collection.faces("fear")]
    assert at.button(key="class_clear").disabled
    at.checkbox(key="class_clear_sure").check().run()
    at.button(key="class_clear").click().run()
    assert not at.exception and len(collection) == 0 and gallery_faces(at) == 0


def test_zips_are_downloaded_and_merged_back_once_and_a_bad_zip_is_a_message(model_store, monkeypatch):
    first, second = FaceCollection(), FaceCollection()
    recorded_faces(first, {"happy": 2}, per_recording=3)
    recorded_faces(second, {"angry": 1, "happy": 1}, per_recording=2)
    at, _ = open_page(monkeypatch)
    at.file_uploader(key="class_upload").set_value([
        ("first.zip", first.to_zip(), "application/zip"), ("second.zip", second.to_zip(), "application/zip"),
        ("broken.zip", b"not a zip at all", "application/zip")]).run()
    assert not at.exception
    collection = at.session_state["class_collection"]
    assert collection.counts()["happy"] == 8 and collection.counts()["angry"] == 2
    assert collection.recording_counts()["happy"] == 3  # the recordings stay apart
    assert [success.value for success in at.success] == ["first.zip: 6 faces added.", "second.zip: 4 faces added."]
    assert len(at.error) == 1 and at.error[0].value.startswith("broken.zip: ")
    at.run()  # the same uploads are not merged again
    assert len(collection) == 10 and len(at.error) == 1
    assert [button.proto.label for button in at.get("download_button")] == ["Download the faces (zip)"]
    with zipfile.ZipFile(io.BytesIO(collection.to_zip())) as archive:  # what the button hands out
        assert len(archive.namelist()) == 10


def test_the_downloaded_zip_is_one_the_train_and_compare_pages_read(tmp_path):
    collection = FaceCollection()
    recorded_faces(collection, {"happy": 2, "sad": 1}, per_recording=3)
    path = tmp_path / "class_faces.zip"
    path.write_bytes(collection.to_zip())
    dataset = load_zip(path)
    assert np.bincount(dataset.labels, minlength=7).tolist() == [0, 0, 0, 6, 3, 0, 0]


def test_the_form_fine_tunes_and_the_new_model_is_scored_before_and_after_and_chosen(model_store, monkeypatch):
    at, _ = open_page(monkeypatch)
    assert at.button(key="class_finetune").disabled  # no faces yet
    recorded_faces(at.session_state["class_collection"], {"happy": 2, "sad": 2})
    at.run()
    assert at.selectbox(key="class_start").value == "default"  # the sidebar's model
    at.selectbox(key="class_start").set_value("tiny").run()
    assert at.text_input(key="class_name_tiny").value == "tiny_class"
    at.number_input(key="class_minutes").set_value(0.1)
    at.button(key="class_finetune").click().run()
    assert not at.exception
    job = job_queue().get(at.session_state["class_job_id"])
    assert job.lane == "finetune"
    state = job_queue().wait(job.job_id, timeout=300)
    assert state is not None and not state.active, "fine-tuning did not finish in time"
    at.run()
    assert not at.exception and state.status == "done", state.error
    assert any("Saved as 'tiny_class'" in success.value for success in at.success)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Accuracy of tiny (before)"] == f"{state.baseline.accuracy:.1%}"
    assert metrics["Accuracy of tiny_class (after)"] == f"{state.card.accuracy:.1%}"
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert len(titles) == 2 and '"Before: tiny"' in titles[0] and '"After: tiny_class"' in titles[1]
    assert "tiny_class" in at.sidebar.selectbox(key="_model").options  # listed at once
    at.button(key="class_use").click().run()
    assert at.sidebar.selectbox(key="_model").value == "tiny_class"
    at.switch_page("app_pages/1_Live_webcam.py").run()
    assert not at.exception and at.sidebar.selectbox(key="_model").value == "tiny_class"
    at.switch_page(PAGE).run()
    at.checkbox(key="class_delete_sure").check().run()
    at.button(key="class_delete_model").click().run()
    assert not at.exception and "tiny_class" not in ModelStore().names()


def test_a_name_the_form_cannot_save_under_is_refused_before_any_job(model_store, monkeypatch):
    at, _ = open_page(monkeypatch)
    recorded_faces(at.session_state["class_collection"], {"happy": 2, "sad": 1})
    at.run()
    at.text_input(key="class_name_default").set_value("tiny")
    at.button(key="class_finetune").click().run()
    assert "class_job_id" not in at.session_state
    assert any("A model named 'tiny' exists" in error.value for error in at.error)
