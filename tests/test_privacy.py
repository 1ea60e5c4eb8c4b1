"""Privacy: the app keeps no one's face. Frames, photos and videos are analysed in memory and never
written to disk; an uploaded training set sits in a temporary file only while it loads (with the
app's own job queue, which these tests use; on Redis workers it waits in the queue's inbox until its
training ends).

The pages run through Streamlit's AppTest with a fresh temporary folder (``$TMPDIR``) and a
temporary model store. Two checks: the folders hold exactly the same files before and after, and
an audit hook (``sys.addaudithook``) sees no file opened for writing anywhere while the pages run,
which also catches a file written and deleted again.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import streamlit_webrtc
from conftest import mp4_bytes
from streamlit.testing.v1 import AppTest

from fer_core.faces.images import encode_png
from fer_core.faces.samples import astronaut, sample_frame
from fer_core.service.queues import job_queue

APP = Path(__file__).resolve().parent.parent / "app.py"
LIVE, UPLOAD, TRAIN = (f"app_pages/{name}.py" for name in ("1_Live_webcam", "2_Upload", "3_Train"))
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class WriteRecorder:
    """An audit hook that records the paths of files opened for writing while it is recording.

    Audit hooks cannot be removed, so one is installed for the session and switched on and off.
    """

    def __init__(self) -> None:
        self.recording = False
        self.paths: list[str] = []

    def __call__(self, event: str, args: tuple) -> None:
        if self.recording and event == "open":
            path, _mode, flags = args
            if isinstance(path, str | bytes | os.PathLike) and flags & WRITE_FLAGS:
                self.paths.append(os.fsdecode(path))

    def __enter__(self) -> list[str]:
        self.paths = []
        self.recording = True
        return self.paths

    def __exit__(self, *exc_info) -> None:
        self.recording = False


@pytest.fixture(scope="session")
def file_writes() -> WriteRecorder:
    recorder = WriteRecorder()
    sys.addaudithook(recorder)
    return recorder


@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty temporary folder that ``tempfile`` (and so the app) uses during the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches its folder: make it look again
    assert Path(tempfile.gettempdir()) == folder
    return folder




def autograph_code(path: str | Path) -> bool:
    """A Python file TensorFlow's autograph writes when it converts a function (code, not anyone's data)."""
    return Path(path).name.startswith("__autograph_generated_file")


def leftovers(folder: Path) -> list[str]:
    """The names of the files left in ``folder``, autograph's code aside."""
    return sorted(path.name for path in folder.iterdir() if not autograph_code(path))


def files_under(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``roots`` with its size and modification time, autograph's code aside."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns)
            for root in roots for path in sorted(root.rglob("*")) if path.is_file() and not autograph_code(path)}


def data_writes(written: list[str], temp_dir: Path) -> list[str]:
    """The files opened for writing, less autograph's code and ``temp_dir`` itself (the name
    ``NamedTemporaryFile`` opens before its opener makes the real file, which is recorded too)."""
    return [path for path in written if not autograph_code(path) and Path(path) != temp_dir]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def fer_csv(rows: int = 49) -> bytes:
    """Random 48x48 faces in FER2013's CSV format."""
    rng = np.random.default_rng(2)
    lines = ["emotion,pixels,Usage"]
    for index in range(rows):
        lines.append(f"{index % 7},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},Training")
    return ("\n".join(lines) + "\n").encode()


def test_uploaded_photos_and_videos_are_never_written_to_disk(model_store, temp_dir, file_writes):
    at = open_page(UPLOAD)  # the model and the face detector are loaded before the folders are listed
    before = files_under(temp_dir, model_store.root)
    with file_writes as written:
        at.file_uploader[0].set_value([("astronaut.png", encode_png(astronaut()), "image/png"),
                                       ("class.jpg", cv2.imencode(".jpg", sample_frame(faces=2))[1].tobytes(),
                                        "image/jpeg")]).run()
        assert not at.exception
        assert len(at.get("plotly_chart")) >= 1  # the photos were analysed
        at.toggle(key="explain").set_value(True).run()
        at.file_uploader[1].set_value(("class.mp4", mp4_bytes(astronaut()), "video/mp4")).run()
        next(button for button in at.button if button.label == "Analyse video").click().run()
        assert not at.exception
        assert len(at.dataframe) == 1  # the video was analysed: its summary per face track
    assert data_writes(written, temp_dir) == []
    assert files_under(temp_dir, model_store.root) == before


def test_camera_frames_and_snapshots_are_never_written_to_disk(model_store, temp_dir, file_writes, monkeypatch):
    streamers = []
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **options: streamers.append(options)
                        or SimpleNamespace(state=SimpleNamespace(playing=True)))
    monkeypatch.setenv("FER_LAB_ICE_SERVERS", "[]")
    at = open_page(LIVE)
    before = files_under(temp_dir, model_store.root)
    with file_writes as written:
        callback = streamers[-1]["video_frame_callback"]
        for _ in range(5):
            callback(av.VideoFrame.from_ndarray(sample_frame(), format="bgr24"))
            time.sleep(0.05)
        at.camera_input[0].set_value(("snapshot.jpg", cv2.imencode(".jpg", astronaut())[1].tobytes(),
                                      "image/jpeg")).run()
        assert not at.exception
        assert at.session_state["live_analyser"].stats().faces_analysed > 0
    assert data_writes(written, temp_dir) == []
    assert files_under(temp_dir, model_store.root) == before


def test_an_uploaded_training_set_is_deleted_once_loaded(model_store, temp_dir, file_writes):
    at = open_page(TRAIN)
    models_before = files_under(model_store.root)
    folders_before = {path for path in model_store.root.rglob("*") if path.is_dir()}
    at.file_uploader(key="train_upload").set_value(("faces.csv", fer_csv(), "text/csv"))
    at.selectbox(key="train_arch").set_value("ds_cnn")
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_batch").set_value(32)
    at.text_input(key="train_name").set_value("privacy_test")
    with file_writes as written:
        at.button(key="train_start").click().run()
        spooled = [Path(path) for path in written if Path(path).parent == temp_dir]
    assert not at.exception
    assert len(spooled) == 1 and spooled[0].name.startswith("fer_lab_upload_"), written
    jobs = job_queue()
    assert jobs.inbox is None  # the app's own queue: the upload waits in the temporary folder, not the store
    job_id = at.session_state["train_job_id"]
    state = jobs.get(job_id)
    assert state is not None and state.model_name == "privacy_test"
    deadline = time.monotonic() + 60
    while state.status in ("waiting", "loading") and time.monotonic() < deadline:
        time.sleep(0.05)
        state = jobs.get(job_id)
    assert state.status not in ("waiting", "loading"), "the data did not load in time"
    assert not spooled[0].exists(), "the uploaded data outlived its loading"
    state = jobs.wait(job_id, timeout=300)
    assert state is not None and not state.active, "training did not finish in time"
    assert state.status == "done", state.error
    assert leftovers(temp_dir) == []
    # Only the trained model itself is kept in the store: no copy of the upload, no record of the job
    # (which named who started it), no folder left behind.
    new = set(map(Path, files_under(model_store.root))) - set(map(Path, models_before))
    assert {path.name for path in new} <= {"privacy_test.keras", "privacy_test.json", "privacy_test.tflite"}
    assert {path.name for path in new} >= {"privacy_test.keras", "privacy_test.json"}
    assert {path for path in model_store.root.rglob("*") if path.is_dir()} == folders_before


def test_an_uploaded_training_set_is_deleted_when_it_cannot_be_used(model_store, temp_dir):
    at = open_page(TRAIN)
    at.file_uploader(key="train_upload").set_value(("faces.csv", b"emotion,pixels\n9,1 2 3\n", "text/csv"))
    at.button(key="train_start").click().run()
    state = job_queue().wait(at.session_state["train_job_id"], timeout=60)
    assert state is not None and not state.active
    at.run()
    assert not at.exception
    assert state.status == "failed"
    assert "line 2: emotion label '9' is not 0-6" in at.error[0].value  # the place, without a traceback
    assert leftovers(temp_dir) == []


def test_the_write_recorder_sees_files_written_and_deleted(temp_dir, file_writes):
    """The check above would notice a temporary copy of an upload, even one deleted at once."""
    with file_writes as written, tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(b"frames")
    with file_writes as reading:
        Path(__file__).read_bytes()
    assert data_writes(written, temp_dir) == [handle.name]
    assert reading == []
    assert leftovers(temp_dir) == []
