"""The Streamlit app through Streamlit's AppTest: every page renders, and its main paths work end to end."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import streamlit_webrtc
from streamlit.testing.v1 import AppTest

from fer_core.evaluate import report_from_predictions
from fer_core.images import encode_png
from fer_core.jobs import TrainingBusyError, training_jobs
from fer_core.models import build_model
from fer_core.samples import astronaut
from fer_core.store import ModelStore, make_card
from fer_core.train import TrainConfig  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "app.py"
LIVE, UPLOAD, TRAIN, COMPARE = (f"pages/{name}.py" for name in ("1_Live_webcam", "2_Upload", "3_Train", "4_Compare"))


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    """A temporary store with two untrained ds_cnn models whose cards carry different test metrics."""
    root = tmp_path / "models"
    monkeypatch.setenv("FER_LAB_MODELS", str(root))
    store = ModelStore(root)
    rng = np.random.default_rng(0)
    truth = np.arange(70) % 7
    for name, agreement in (("default", 0.6), ("small", 0.3)):
        predicted = np.where(rng.random(70) < agreement, truth, rng.integers(0, 7, 70))
        metrics = {"dataset": "test faces", **report_from_predictions(truth, predicted).to_dict()}
        model = build_model("ds_cnn")
        store.save(name, model, make_card(arch="ds_cnn", model=model, preprocessing={"size": 48},
                                          training={"data": "synthetic"}, metrics=metrics, ms_per_face=1.5,
                                          reproduce="(test model)"))
    return store


def open_app(page: str | None = None) -> AppTest:
    """The app at Home or at a page, after a run without exception."""
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def fer_csv(private: int = 0) -> bytes:
    """Random 48x48 faces in FER2013's CSV format: 35 Training and 14 PublicTest rows, then ``private`` PrivateTest."""
    rng = np.random.default_rng(1)
    usages = ["Training"] * 35 + ["PublicTest"] * 14 + ["PrivateTest"] * private
    lines = ["emotion,pixels,Usage"]
    for index, usage in enumerate(usages):
        pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        lines.append(f"{index % 7},{pixels},{usage}")
    return ("\n".join(lines) + "\n").encode()


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def plotly_figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def heatmap(figure: dict) -> np.ndarray:
    """The z values of a figure's first trace (plotly sends arrays base64-encoded)."""
    z = figure["data"][0]["z"]
    shape = tuple(int(n) for n in z["shape"].split(","))
    return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)


def test_home_shows_the_active_model_and_the_privacy_note(store):
    at = open_app()
    metrics = store.card("default")["metrics"]
    assert [m.value for m in at.metric] == [f"{metrics['accuracy']:.1%}", f"{metrics['macro_f1']:.1%}",
                                            f"{store.card('default')['parameters']:,}", "1.50"]
    assert any("never stored" in info.value for info in at.info)
    assert at.sidebar.selectbox(key="_model").options == ["default", "small"]
    detector = at.sidebar.selectbox(key="_detector")
    assert detector.value == "haar" and len(detector.options) == 3
    assert len(at.get("page_link")) == 4


def test_sidebar_choice_holds_on_every_page(store):
    at = open_app()
    at.sidebar.selectbox(key="_model").set_value("small").run()
    assert any("Active model: small" in header.value for header in at.subheader)
    for page in (UPLOAD, COMPARE):
        at.switch_page(page).run()
        assert at.sidebar.selectbox(key="_model").value == "small"


def test_live_page_streams_annotated_frames_and_shows_the_readout(store, monkeypatch):
    calls = []

    def fake_streamer(**options):
        calls.append(options)
        return SimpleNamespace(state=SimpleNamespace(playing=True))

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_streamer)
    monkeypatch.setenv("FER_LAB_ICE_SERVERS", "[]")
    at = open_app(LIVE)
    assert [slider.label for slider in at.slider] == ["Smoothing", "Detect faces every n-th analysed frame"]
    assert calls[-1]["rtc_configuration"] == {"iceServers": []}
    assert len(at.camera_input) == 1

    frame = av.VideoFrame.from_ndarray(astronaut(), format="bgr24")
    output = calls[-1]["video_frame_callback"](frame).to_ndarray(format="bgr24")
    assert output.shape == (512, 512, 3) and not np.array_equal(output, astronaut())  # a box was drawn
    at.slider[0].set_value(0.3).run()
    assert at.session_state["live_analyser"].smoothing == pytest.approx(0.3)
    analysed = {metric.label: metric.value for metric in at.metric}
    assert analysed["Faces analysed"] == "1"
    assert len(plotly_figures(at)) == 1  # the main face's probabilities


def test_live_page_snapshot_fallback_analyses_a_camera_photo(store, monkeypatch):
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer",
                        lambda **options: SimpleNamespace(state=SimpleNamespace(playing=False)))
    at = open_app(LIVE)
    at.camera_input[0].set_value(("snapshot.jpg", jpeg(astronaut()), "image/jpeg")).run()
    assert not at.exception
    assert len(plotly_figures(at)) == 1


def test_upload_page_analyses_photos_explains_them_and_reports_bad_files(store):
    at = open_app(UPLOAD)
    gray = np.full((200, 200, 3), 128, np.uint8)
    at.file_uploader[0].set_value([("astronaut.png", encode_png(astronaut()), "image/png"),
                                   ("wall.webp", cv2.imencode(".webp", gray)[1].tobytes(), "image/webp"),
                                   ("broken.jpg", b"not an image", "image/jpeg")]).run()
    assert not at.exception
    assert [error.value for error in at.error] == ["broken.jpg: not an image file Pillow can read"]
    assert len(plotly_figures(at)) == 1  # one face in the astronaut photo, none on the wall
    assert any("No face found" in warning.value for warning in at.warning)
    downloads = [button.proto.label for button in at.get("download_button")]
    assert downloads == ["Annotated image (PNG)", "Annotated image (PNG)", "All results (CSV)", "All results (JSON)"]
    images = len(at.get("image"))
    at.toggle(key="gradcam").set_value(True).run()
    assert not at.exception
    assert len(at.get("image")) == images + 1  # one Grad-CAM overlay for the one face


def test_upload_page_analyses_a_video_and_reports_a_broken_one(store):
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for _ in range(10):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(astronaut(), format="bgr24")))
        container.mux(stream.encode())
    at = open_app(UPLOAD)
    at.file_uploader[1].set_value(("class.mp4", buffer.getvalue(), "video/mp4")).run()
    at.button[0].click().run()
    assert not at.exception
    assert len(plotly_figures(at)) == 1  # emotions over time
    summary = at.dataframe[0].value
    assert list(summary["track"]) == [1] and list(summary["samples"]) == [4]  # 2 s at 2 frames per second
    at.file_uploader[1].set_value(("broken.mov", b"\x00" * 4096, "video/quicktime")).run()
    at.button[0].click().run()
    assert not at.exception
    assert at.error[0].value.startswith("broken.mov: not a readable video")


def test_train_page_trains_a_tiny_dataset_to_a_saved_model(store):
    spooled_before = set(Path(tempfile.gettempdir()).glob("fer_lab_upload_*"))
    at = open_app(TRAIN)
    at.file_uploader(key="train_upload").set_value(("faces.csv", fer_csv(), "text/csv"))
    at.selectbox(key="train_arch").set_value("ds_cnn")
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_batch").set_value(32)
    at.text_input(key="train_name").set_value("tiny_test")
    at.text_input(key="train_owner").set_value("Ada")
    at.button(key="train_start").click().run()
    assert not at.exception
    job = training_jobs().current()
    assert job.model_name == "tiny_test" and job.active

    # One training per server: a second session is told who trains and since when.
    other = open_app(TRAIN)
    assert "started by Ada" in other.warning[0].value
    with pytest.raises(TrainingBusyError, match="started by Ada"):
        training_jobs().start("elsewhere.csv", TrainConfig(arch="ds_cnn"), "second")

    assert job.wait(timeout=300), "training did not finish in time"
    at.run()
    assert not at.exception
    assert job.status == "done", job.error
    assert "tiny_test" in store.names()
    card = store.card("tiny_test")
    assert card["training"]["epochs_run"] == 1 and card["metrics"]["n"] == 14
    assert at.success[0].value.startswith("Saved as 'tiny_test' after 1 epoch(s)")
    assert len(plotly_figures(at)) == 2  # training curves and the confusion matrix
    assert set(Path(tempfile.gettempdir()).glob("fer_lab_upload_*")) == spooled_before  # upload deleted


def test_train_page_reports_bad_data_without_a_traceback(store):
    at = open_app(TRAIN)
    at.file_uploader(key="train_upload").set_value(("faces.csv", b"emotion,pixels\n9,1 2 3\n", "text/csv"))
    at.button(key="train_start").click().run()
    job = training_jobs().current()
    assert job.wait(timeout=60)
    at.run()
    assert not at.exception
    assert job.status == "failed"
    assert "line 2: emotion label '9' is not 0-6" in at.error[0].value


def test_a_job_refused_or_cancelled_deletes_its_data_and_saves_nothing(store, tmp_path):
    data = tmp_path / "faces.csv"
    data.write_bytes(fer_csv())
    jobs = training_jobs()
    job = jobs.start(data, TrainConfig(arch="ds_cnn", epochs=3, batch_size=8), "cancelled_model",
                     owner="Bo", delete_data=True)
    refused = tmp_path / "refused.csv"
    refused.write_bytes(b"x")
    with pytest.raises(TrainingBusyError, match="started by Bo"):
        jobs.start(refused, TrainConfig(), "other", delete_data=True)
    assert not refused.exists()
    assert jobs.cancel(job.job_id)
    assert job.wait(timeout=120)
    assert job.status == "cancelled"
    assert not data.exists()
    assert "cancelled_model" not in store.names()


def test_compare_page_draws_matrices_for_two_models_from_their_cards(store):
    at = open_app(COMPARE)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["default", "small"]
    assert list(table["accuracy"]) == [store.card(name)["metrics"]["accuracy"] for name in ("default", "small")]
    figures = plotly_figures(at)
    assert len(figures) == 3  # two confusion matrices and the per-class bars
    counts = heatmap(figures[0])
    assert counts.tolist() == store.card("default")["metrics"]["confusion_matrix"]
    at.toggle(key="compare_normalised").set_value(True).run()
    shares = heatmap(plotly_figures(at)[0])
    assert shares.sum(axis=1) == pytest.approx(np.ones(7))


def test_compare_page_re_evaluates_models_on_an_uploaded_set(store):
    at = open_app(COMPARE)
    at.file_uploader(key="compare_upload").set_value(("labelled.csv", fer_csv(private=21), "text/csv"))
    at.button(key="compare_evaluate").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["measured on"]) == {"labelled.csv (PrivateTest rows)"}
    evaluation = at.session_state["compare_evaluation"]
    assert evaluation["n"] == 21
    assert all(sum(map(sum, metrics["confusion_matrix"])) == 21 for metrics in evaluation["metrics"].values())
    assert len(plotly_figures(at)) == 3


def test_a_bad_labelled_set_on_compare_shows_the_data_error(store):
    at = open_app(COMPARE)
    at.file_uploader(key="compare_upload").set_value(("labelled.csv", b"label,image\n", "text/csv"))
    at.button(key="compare_evaluate").click().run()
    assert not at.exception
    assert "missing column(s) emotion, pixels" in at.error[0].value
