"""The Streamlit app through Streamlit's AppTest: every page renders, and its main paths work end to end."""

from __future__ import annotations

import ast
import base64
import io
import json
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pandas as pd
import pytest
import streamlit_webrtc
import tomllib
from conftest import mp4_bytes
from sklearn.metrics import confusion_matrix
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest

import ui.sidebar
import ui.webrtc
from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.datasets.load import load_dataset
from fer_core.evaluation.evaluate import evaluation_rows, report_from_predictions
from fer_core.faces.detect import get_detector
from fer_core.faces.images import encode_png
from fer_core.faces.preprocess import Preprocessing, images_to_input
from fer_core.faces.samples import astronaut, group_photo
from fer_core.inference.live import CAMERA_CONSTRAINTS
from fer_core.inference.odds import adjust, shift_for
from fer_core.inference.photos import PhotoFaces
from fer_core.inference.predict import FaceResult
from fer_core.inference.streams import StreamBoard
from fer_core.registry.cards import PriorCorrection, Scores, Training, make_card
from fer_core.registry.store import ModelStore
from fer_core.service.charts import confusion_matrix_figure
from fer_core.service.queues import job_queue
from fer_core.training.networks import build_ensemble, build_model, copy_in_precision
from ui.display import EXPLANATION_LABELS
from ui.sidebar import model_version

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
LIVE, UPLOAD, TRAIN, COMPARE = (f"app_pages/{name}.py"
                                for name in ("1_Live_webcam", "2_Upload", "3_Train", "4_Compare"))


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
        metrics = report_from_predictions(truth, predicted).as_metrics(dataset="test faces")
        model = build_model("ds_cnn")
        store.save(name, model, make_card(arch="ds_cnn", model=model, preprocessing=Preprocessing(),
                                          training=Training(data="synthetic"), metrics=metrics, ms_per_face=1.5,
                                          reproduce="(test model)"))
    return store


def open_app(page: str | None = None) -> AppTest:
    """The app at Home or at a page, after a run without exception."""
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def fer_csv(private: int = 0, usage_column: bool = True) -> bytes:
    """Random 48x48 faces in FER2013's CSV format: 35 Training and 14 PublicTest rows, then ``private`` PrivateTest.

    Without ``usage_column`` the CSV has only ``emotion,pixels`` (all rows count as Training).
    """
    rng = np.random.default_rng(1)
    usages = ["Training"] * 35 + ["PublicTest"] * 14 + ["PrivateTest"] * private
    lines = ["emotion,pixels,Usage" if usage_column else "emotion,pixels"]
    for index, usage in enumerate(usages):
        pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        lines.append(f"{index % 7},{pixels},{usage}" if usage_column else f"{index % 7},{pixels}")
    return ("\n".join(lines) + "\n").encode()


def jpeg(image: np.ndarray) -> bytes:
    """An image as JPEG bytes, as a camera or an upload sends it."""
    return cv2.imencode(".jpg", image)[1].tobytes()


def plotly_figures(at: AppTest) -> list[dict]:
    """The specs of the page's Plotly charts, in page order."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def damage(store: ModelStore, name: str) -> None:
    """Overwrite a stored model's .keras file with bytes Keras cannot load (its card stays)."""
    store.resolve(name).write_bytes(b"not a keras file")


def plotly_array(value: dict | list) -> np.ndarray:
    """An array of a figure's JSON (plotly sends numpy arrays base64-encoded)."""
    if isinstance(value, list):
        return np.asarray(value)
    shape = tuple(int(n) for n in value["shape"].split(","))
    return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)


def heatmap(figure: dict) -> np.ndarray:
    """The z values of a figure's first trace."""
    return plotly_array(figure["data"][0]["z"])


def test_home_shows_the_active_model_and_the_privacy_note(store):
    at = open_app()
    card = store.card("default")
    assert [m.value for m in at.metric] == [f"{card.accuracy:.1%}", "n/a",  # no flip TTA on this card
                                            f"{card.metrics.balanced_accuracy:.1%}", f"{card.macro_f1:.1%}",
                                            f"{card.parameters:,}", "1.50"]
    assert any("never stored" in info.value for info in at.info)
    assert at.sidebar.selectbox(key="_model").options == ["default", "small"]
    detector = at.sidebar.selectbox(key="_detector")
    assert detector.value == "haar" and len(detector.options) == 3
    assert len(at.get("page_link")) == 5


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
    bars = at.get("progress")  # the main face's probabilities
    assert len(bars) == 7 and abs(sum(bar.proto.value for bar in bars) - 100) <= 7  # each rounded to a percent
    assert calls[-1]["media_stream_constraints"] == CAMERA_CONSTRAINTS


def test_live_page_over_the_stream_limit_says_so_and_offers_the_snapshot(store, monkeypatch):
    board = StreamBoard(1, 0.4)
    assert board.claim("another session")
    monkeypatch.setattr(ui.webrtc, "stream_board", lambda: board)
    calls = []
    stopped = SimpleNamespace(state=SimpleNamespace(playing=False))
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **options: calls.append(options) or stopped)
    at = open_app(LIVE)
    assert calls == []  # no stream offered
    assert any("its most live streams (1)" in warning.value for warning in at.warning)
    assert len(at.camera_input) == 1  # the Snapshot fallback
    board.release("another session")
    at.button(key="stream-try-again").click().run()
    assert len(calls) == 1 and not at.warning


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
    assert downloads == ["Annotated image (PNG)", "All results (CSV)", "All results (JSON)"]  # none for the wall
    images = len(image_captions(at))
    at.toggle(key="explain").set_value(True).run()
    assert not at.exception
    assert len(image_captions(at)) == images + 1  # one Grad-CAM overlay for the one face
    maps = set()
    for method, (short, _) in EXPLANATION_LABELS.items():
        at.radio(key="_explanation").set_value(method).run()
        assert not at.exception
        explained = [picture for image in at.get("image") for picture in image.proto.imgs
                     if picture.caption.startswith(tuple(f"{label} for " for label, _ in EXPLANATION_LABELS.values()))]
        assert len(explained) == 1
        assert explained[0].caption.startswith(f"{short} for ")
        maps.add(explained[0].url)
    assert len(maps) == len(EXPLANATION_LABELS)  # three different pictures
    at.toggle(key="explain").set_value(False).run()
    assert len(image_captions(at)) == images and [radio.key for radio in at.get("radio")] == ["_odds"]
    at.toggle(key="explain").set_value(True).run()
    assert at.radio(key="_explanation").value == "guided_grad_cam"  # the method chosen before


def test_the_pages_offer_every_explanation_method_of_the_engine():
    from fer_core.inference.explain import EXPLANATIONS

    assert list(EXPLANATION_LABELS) == list(EXPLANATIONS)


def test_an_ensemble_as_the_default_model_analyses_and_explains_faces(store):
    members = [copy_in_precision(store.load(name).model, "ds_cnn", "float16", name) for name in ("default", "small")]
    ensemble = build_ensemble(members, "default")
    store.save("default", ensemble, replace(store.card("default"), arch="ensemble", parameters=ensemble.count_params()))
    at = open_app()
    assert any("ensemble" in caption.value for caption in at.caption)
    at.switch_page(UPLOAD).run()
    at.file_uploader[0].set_value([("astronaut.png", encode_png(astronaut()), "image/png")]).run()
    assert not at.exception
    assert len(plotly_figures(at)) == 1
    images = len(image_captions(at))
    at.toggle(key="explain").set_value(True).run()
    assert not at.exception
    assert len(image_captions(at)) == images + 1


def test_upload_page_analyses_a_video_and_reports_a_broken_one(store):
    at = open_app(UPLOAD)
    at.file_uploader[1].set_value(("class.mp4", mp4_bytes(astronaut()), "video/mp4")).run()
    at.button[0].click().run()
    assert not at.exception
    assert len(plotly_figures(at)) == 1  # emotions over time
    summary = at.dataframe[0].value
    assert list(summary["track"]) == [1] and list(summary["samples"]) == [4]  # 2 s at 2 frames per second
    captions = image_captions(at)
    assert captions[0].endswith("each face tagged with its track's number")
    assert captions[1] == f"Track 1: {summary['dominant emotion'][0]}"
    at.file_uploader[1].set_value(("broken.mov", b"\x00" * 4096, "video/quicktime")).run()
    at.button[0].click().run()
    assert not at.exception
    assert at.error[0].value.startswith("broken.mov: not a readable video")


def test_train_page_trains_a_tiny_dataset_to_a_saved_model(store):
    spooled_before = set(Path(tempfile.gettempdir()).glob("fer_lab_upload_*"))
    at = open_app(TRAIN)
    at.file_uploader(key="train_upload").set_value(("faces.csv", fer_csv(), "text/csv"))
    at.selectbox(key="train_arch").set_value("ds_cnn").run()
    assert at.selectbox(key="train_start_from").options == ["random weights", "default", "small"]
    at.selectbox(key="train_start_from").set_value("small")  # fine-tuned from a stored ds_cnn
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_swa_epochs").set_value(2)
    at.button(key="train_start").click().run()
    assert at.error[0].value == "averaging the last 2 epochs needs at least as many epochs (not 1)"
    assert "train_job_id" not in at.session_state
    at.number_input(key="train_swa_epochs").set_value(1)  # weight averaging at a constant learning rate
    at.selectbox(key="train_batch").set_value(32)
    at.text_input(key="train_name").set_value("tiny_test")
    at.text_input(key="train_owner").set_value("Ada")
    at.button(key="train_start").click().run()
    assert not at.exception
    job = job_queue().get(at.session_state["train_job_id"])
    assert job.model_name == "tiny_test" and job.active

    # A second session sees who trains what in the queue (tests/test_jobs.py queues a second training).
    other = open_app(TRAIN)
    queue = other.dataframe[0].value
    assert (queue["job"][0], queue["by"][0]) == ("training of 'tiny_test' (ds_cnn)", "Ada")

    state = job_queue().wait(job.job_id, timeout=300)
    assert state is not None and not state.active, "training did not finish in time"
    at.run()
    assert not at.exception
    assert state.status == "done", state.error
    assert "tiny_test" in store.names()
    card = store.card("tiny_test")
    assert card.training.epochs_run == 1 and card.faces_scored == 14
    recipe = card.training.recipe
    assert (recipe["init_from"], recipe["swa_epochs"], recipe["schedule"]) == ("small", 1, "constant")
    assert card.training.averaged_epochs == 1
    # the network it started from, then this run: its data by the uploaded file's name, every setting not the default
    assert card.reproduce == ("(test model) && python -m fer_core train --arch ds_cnn --data faces.csv "
                              "--name tiny_test --epochs 1 --batch-size 32 --init-from small --schedule constant "
                              "--swa-epochs 1")
    assert at.success[0].value.startswith("Saved as 'tiny_test' after 1 epoch(s)")
    assert len(plotly_figures(at)) == 2  # training curves and the confusion matrix
    assert set(Path(tempfile.gettempdir()).glob("fer_lab_upload_*")) == spooled_before  # upload deleted


def test_stop_and_save_ends_a_run_early_and_saves_its_best_weights(store, monkeypatch):
    import fer_core.training.train

    clicked = threading.Event()
    load = fer_core.training.train.load_dataset

    def load_after_the_click(*args, **kwargs):  # the job waits for the click, however fast it would train
        clicked.wait(60)
        return load(*args, **kwargs)

    monkeypatch.setattr(fer_core.training.train, "load_dataset", load_after_the_click)
    at = open_app(TRAIN)
    at.file_uploader(key="train_upload").set_value(("faces.csv", fer_csv(), "text/csv"))
    at.selectbox(key="train_arch").set_value("ds_cnn")
    at.number_input(key="train_epochs").set_value(50)
    at.selectbox(key="train_batch").set_value(32)
    at.text_input(key="train_name").set_value("stopped_model")
    at.button(key="train_start").click().run()
    job = job_queue().get(at.session_state["train_job_id"])
    assert job.model_name == "stopped_model" and job.active
    at.button(key="train_finish").click().run()
    clicked.set()
    assert not at.exception
    state = job_queue().wait(job.job_id, timeout=120)
    assert state is not None and not state.active
    at.run()
    assert state.status == "done" and state.stopped == "finished", state.error
    card = store.card("stopped_model")
    assert card.training.stopped == "finished" and card.training.epochs_run == 1
    assert "stopped by you; the best epoch, or the weight average, so far kept" in at.success[0].value
    assert not job_queue().finish(job.job_id)  # no longer running


def test_compare_page_draws_matrices_for_two_models_from_their_cards(store):
    at = open_app(COMPARE)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["default", "small"]
    assert list(table["accuracy"]) == [store.card(name).accuracy for name in ("default", "small")]
    figures = plotly_figures(at)
    assert len(figures) == 3  # two confusion matrices and the per-class bars
    counts = heatmap(figures[0])
    assert counts.tolist() == store.card("default").metrics.confusion_matrix
    at.toggle(key="compare_normalised").set_value(True).run()
    shares = heatmap(plotly_figures(at)[0])
    assert shares.sum(axis=1) == pytest.approx(np.ones(7))


def test_an_unreadable_card_is_a_message_on_home_and_compare(store):
    (store.root / "small.json").write_text("{not json")
    at = open_app()
    at.selectbox(key="_model").set_value("small").run()
    assert not at.exception
    assert any("small.json: the model card is not readable JSON" in error.value for error in at.error)
    at.switch_page(COMPARE).run()
    assert not at.exception
    assert any("small.json: the model card is not readable JSON" in warning.value for warning in at.warning)
    assert list(at.dataframe[0].value["model"]) == ["default", "small"]


def test_compare_page_re_evaluates_models_on_an_uploaded_set(store, tmp_path):
    card = store.card("default")  # a card that has the app read faces mirrored too
    mirrored = replace(card, metrics=replace(card.metrics, flip_tta=Scores(accuracy=0.99, macro_f1=0.99)))
    (store.root / "default.json").write_text(mirrored.to_json())
    at = open_app(COMPARE)
    at.file_uploader(key="compare_upload").set_value(("labelled.csv", fer_csv(private=21), "text/csv"))
    at.button(key="compare_evaluate").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["measured on"]) == {"labelled.csv (PrivateTest rows)"}
    evaluation = at.session_state["compare_evaluation"]
    assert evaluation["n"] == 21
    assert all(sum(map(sum, metrics.confusion_matrix)) == 21 for metrics in evaluation["metrics"].values())
    assert len(plotly_figures(at)) == 3
    # measured as the cards are: plain inference, and the flip TTA figure beside it
    csv = tmp_path / "labelled.csv"
    csv.write_bytes(fer_csv(private=21))
    faces = evaluation_rows(load_dataset(csv))
    inputs = images_to_input(faces.images, Preprocessing())
    for name, accuracy, flipped in zip(table["model"], table["accuracy"], table["with flip TTA"]):
        network = store.load(name).model
        plain = network.predict(inputs, verbose=0)
        mirrored = plain + network.predict(inputs[:, :, ::-1], verbose=0)
        assert evaluation["metrics"][name].confusion_matrix == confusion_matrix(
            faces.labels, plain.argmax(1), labels=range(7)).tolist()
        assert accuracy == pytest.approx(np.mean(plain.argmax(1) == faces.labels), abs=5e-5)  # cards round to 4 places
        assert flipped == pytest.approx(np.mean(mirrored.argmax(1) == faces.labels), abs=5e-5)


def test_a_bad_labelled_set_on_compare_shows_the_data_error(store):
    at = open_app(COMPARE)
    at.file_uploader(key="compare_upload").set_value(("labelled.csv", b"label,image\n", "text/csv"))
    at.button(key="compare_evaluate").click().run()
    assert not at.exception
    assert "missing column(s) emotion, pixels" in at.error[0].value


# Tests of the fixes from the app review ----------------------------------------------------------


@pytest.mark.parametrize("page", [LIVE, UPLOAD])
def test_a_damaged_model_file_gives_a_message_not_a_traceback(store, monkeypatch, page):
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer",
                        lambda **options: SimpleNamespace(state=SimpleNamespace(playing=False)))
    damage(store, "default")
    at = open_app(page)  # asserts: no exception
    assert len(at.error) == 1
    assert "Model 'default' with the 'haar' face detector cannot be loaded" in at.error[0].value
    assert "not a loadable Keras model" in at.error[0].value
    assert not at.file_uploader and not at.camera_input  # the page stopped there


def test_a_missing_detector_package_gives_a_message_not_a_traceback(store, monkeypatch):
    def missing(name: str, live: bool = False, **options):
        raise ModuleNotFoundError("No module named 'mtcnn'", name="mtcnn")

    ui.sidebar._detector.clear()  # the cached detectors would hide the missing package
    monkeypatch.setattr(ui.sidebar, "get_detector", missing)
    at = open_app(UPLOAD)
    assert "the package 'mtcnn' is not installed" in at.error[0].value
    assert not at.file_uploader
    ui.sidebar._detector.clear()


def test_user_errors_shows_missing_packages_and_unreadable_files_as_messages():
    def script():
        import streamlit as st

        from ui.display import user_errors  # AppTest runs this function's body alone, as a script

        with user_errors():
            raise FileNotFoundError(2, "No such file or directory", "/data/faces.csv")
        with user_errors():
            raise ModuleNotFoundError("No module named 'mtcnn'", name="mtcnn")
        st.write("the page goes on")

    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception
    assert at.error[0].value == "/data/faces.csv: No such file or directory"
    assert at.error[1].value.startswith("the package 'mtcnn' is not installed on this server")
    assert at.markdown[0].value == "the page goes on"


def test_live_snapshot_uses_the_full_detector_settings_to_find_a_small_face(store, monkeypatch):
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer",
                        lambda **options: SimpleNamespace(state=SimpleNamespace(playing=False)))
    frame = np.full((480, 640, 3), 128, np.uint8)  # a face of about 50 px in a webcam-sized snapshot
    frame[112:368, 192:448] = cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    photo = jpeg(frame)
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    assert not get_detector("haar", live=True).detect(image) and get_detector("haar").detect(image)
    at = open_app(LIVE)
    at.camera_input[0].set_value(("snapshot.jpg", photo, "image/jpeg")).run()
    assert not at.exception
    assert not at.warning  # "No face found"
    assert len(plotly_figures(at)) == 1


def test_train_page_refuses_the_default_name_and_an_existing_name_unless_replacing(store):
    jobs = job_queue()
    at = open_app(TRAIN)
    at.file_uploader(key="train_upload").set_value(("faces.csv", fer_csv(), "text/csv"))
    at.selectbox(key="train_arch").set_value("ds_cnn")
    at.number_input(key="train_epochs").set_value(1)
    at.text_input(key="train_name").set_value("default").run()
    assert "train_replace" not in [box.key for box in at.checkbox]  # the app's own model: not even on purpose
    at.button(key="train_start").click().run()
    assert not at.exception
    assert "'default' is the model every visitor of the app starts with" in at.error[0].value
    assert "train_job_id" not in at.session_state

    at.text_input(key="train_name").set_value("small").run()
    assert at.checkbox(key="train_replace").value is False
    at.button(key="train_start").click().run()
    assert "A model named 'small' exists: tick 'Replace the existing model'" in at.error[0].value
    assert "train_job_id" not in at.session_state

    at.checkbox(key="train_replace").check()
    at.button(key="train_start").click().run()
    assert not at.exception
    job = jobs.get(at.session_state["train_job_id"])
    assert job.model_name == "small" and job.active
    jobs.cancel(job.job_id)
    state = jobs.wait(job.job_id, timeout=120)
    assert state is not None and not state.active
    assert state.status == "cancelled"


def test_upload_page_keys_photo_results_on_the_model_its_file_the_detector_thoroughness_and_odds(store, monkeypatch):
    import fer_core.inference.predict

    shifted = []
    views = fer_core.inference.predict.shifted_views
    monkeypatch.setattr(fer_core.inference.predict, "shifted_views",
                        lambda faces: shifted.append(len(faces)) or views(faces))
    at = open_app(UPLOAD)
    at.file_uploader[0].set_value([("astronaut.png", encode_png(astronaut()), "image/png")]).run()
    at.sidebar.selectbox(key="_model").set_value("small").run()
    assert not shifted
    at.toggle(key="thorough").set_value(True).run()
    assert not at.exception and len(plotly_figures(at)) == 1
    assert shifted == [1]  # the one face, read in shifted views
    version = {name: model_version(name) for name in ("default", "small")}
    results = at.session_state["upload_results"]
    assert {key[1:] for key in results} == {("default", version["default"], "haar", False, "balanced"),
                                           ("small", version["small"], "haar", False, "balanced"),
                                           ("small", version["small"], "haar", True, "balanced")}
    at.toggle(key="thorough").set_value(False).run()
    before = results[next(key for key in results if key[1] == "default")]

    # "default" retrained under the same name: its results are computed anew, with the new model.
    model = build_model("ds_cnn")
    store.save("default", model, replace(store.card("default"), metrics=None))
    at.sidebar.selectbox(key="_model").set_value("default").run()
    assert not at.exception
    retrained = ("default", model_version("default"), "haar", False, "balanced")
    fresh = [faces for key, faces in at.session_state["upload_results"].items() if key[1:] == retrained]
    assert len(fresh) == 1 and fresh[0] is not before


def test_upload_page_never_shows_a_video_analysis_of_other_settings_or_another_file(store):
    at = open_app(UPLOAD)
    at.file_uploader[1].set_value(("class.mp4", mp4_bytes(astronaut()), "video/mp4")).run()
    at.button[0].click().run()
    assert list(at.dataframe[0].value["samples"]) == [4]

    at.slider[0].set_value(4.0).run()  # another sampling rate: the analysis at 2 per second is not shown
    assert not at.dataframe and not plotly_figures(at)
    assert "press **Analyse video**" in at.info[0].value
    at.button[0].click().run()
    assert list(at.dataframe[0].value["samples"]) == [8]

    # Another video under the same name: nothing is shown until it is analysed.
    at.file_uploader[1].set_value(("class.mp4", mp4_bytes(np.full((240, 320, 3), 90, np.uint8)), "video/mp4")).run()
    assert not at.exception
    assert not at.dataframe and not plotly_figures(at)
    at.button[0].click().run()
    assert any("No face found in the sampled frames" in warning.value for warning in at.warning)


@pytest.fixture
def downloads(monkeypatch) -> dict:
    """What the page's download buttons offer, by label (filled as the page runs)."""
    offered: dict = {}
    download_button = DeltaGenerator.download_button

    def spy(self, label, data, *args, **kwargs):
        offered[label] = data
        return download_button(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", spy)
    return offered


def test_upload_page_csv_rows_are_face_result_rows(store, downloads, monkeypatch):
    to_row = FaceResult.to_row
    monkeypatch.setattr(FaceResult, "to_row", lambda face: {**to_row(face), "added_to_row": 1})
    at = open_app(UPLOAD)
    at.file_uploader[0].set_value([("astronaut.png", encode_png(astronaut()), "image/png")]).run()
    assert not at.exception
    table = pd.read_csv(io.StringIO(downloads["All results (CSV)"]))
    faces = next(iter(at.session_state["upload_results"].values()))
    assert list(table.columns) == ["file", "face", *to_row(faces[0]), "added_to_row"]
    assert table.iloc[0].to_dict() == pytest.approx({"file": "astronaut.png", "face": 1, **to_row(faces[0]),
                                                     "added_to_row": 1})


def test_upload_page_numbers_a_group_photo_summarises_it_and_downloads_the_numbers(store, downloads):
    at = open_app(UPLOAD)
    at.file_uploader[0].set_value([("group.png", encode_png(group_photo()), "image/png")]).run()
    assert not at.exception
    faces = PhotoFaces.of(next(iter(at.session_state["upload_results"].values())))
    assert len(faces.faces) == 12
    assert any(markdown.value == f"**{faces.summary()}**" for markdown in at.markdown)
    titles = [f"Face {number}: {DISPLAY_NAMES[face.label]} {face.score:.0%}"
              for number, face in zip(faces.numbers, faces.faces)]
    assert [m.value for m in at.markdown if m.value.startswith("**Face ")] == [f"**{title}**" for title in titles]
    # Untrained models are unsure of every face: all twelve to check, least certain first.
    captions = image_captions(at)
    assert len(faces.to_check()) == 12
    assert captions[:6] == [titles[number - 1] for number in faces.to_check()[:6]]  # the six least certain
    assert captions[6:8] == ["", "Network's view"]  # the annotated photo, then the first face's cell
    assert len(plotly_figures(at)) == 12
    report = json.loads(downloads["All results (JSON)"])
    assert [(face["face"], face["box"]) for face in report[0]["faces"]] == [
        (number, list(face.box)) for number, face in zip(faces.numbers, faces.faces)]
    table = pd.read_csv(io.StringIO(downloads["All results (CSV)"]))
    assert list(table["face"]) == faces.numbers and list(table["x"]) == [face.box[0] for face in faces.faces]
    assert downloads["Annotated image (PNG)"] == encode_png(faces.annotated(group_photo()))
    at.button(key=next(button.key for button in at.button if button.label == "Full size")).click().run()
    assert not at.exception


def test_compare_page_offers_server_paths_only_inside_the_data_folder(store, tmp_path, monkeypatch):
    monkeypatch.delenv("FER_LAB_DATA_DIR", raising=False)
    at = open_app(COMPARE)
    assert not [box for box in at.text_input if box.key == "compare_path"]
    at.button(key="compare_evaluate").click().run()
    assert at.error[0].value == "choose a labelled set first: upload a file"

    data = tmp_path / "data"
    data.mkdir()
    (data / "faces.csv").write_bytes(fer_csv())
    (tmp_path / "outside.csv").write_bytes(fer_csv())
    monkeypatch.setenv("FER_LAB_DATA_DIR", str(data))
    at.run()
    at.text_input(key="compare_path").set_value(str(tmp_path / "outside.csv"))
    at.button(key="compare_evaluate").click().run()
    assert not at.exception
    assert "outside the data folder(s) this server allows" in at.error[0].value
    assert "compare_evaluation" not in at.session_state

    at.text_input(key="compare_path").set_value("faces.csv")
    at.button(key="compare_evaluate").click().run()
    assert not at.exception and not at.error
    assert set(at.dataframe[0].value["measured on"]) == {"faces.csv (PublicTest rows)"}


@pytest.mark.parametrize(("usage_column", "scored", "n"), [
    (True, "labelled.csv (PublicTest rows)", 14),
    (False, "labelled.csv (all rows)", 49),
], ids=["public-test", "no-usage-column"])
def test_compare_page_scores_the_rows_the_cli_scores_and_says_which(store, usage_column, scored, n):
    at = open_app(COMPARE)
    at.file_uploader(key="compare_upload").set_value(("labelled.csv", fer_csv(usage_column=usage_column), "text/csv"))
    at.button(key="compare_evaluate").click().run()
    assert not at.exception
    assert set(at.dataframe[0].value["measured on"]) == {scored}
    evaluation = at.session_state["compare_evaluation"]
    assert evaluation["n"] == n
    assert all(metrics.n == n for metrics in evaluation["metrics"].values())
    assert any(f"({n} faces, Balanced (posed faces))" in toggle.label for toggle in at.toggle)


def test_confusion_matrix_figure_shows_the_counts_or_the_shares_of_each_true_class(store):
    metrics = store.card("default").metrics
    counts = np.asarray(metrics.confusion_matrix, dtype=float)
    figure = json.loads(confusion_matrix_figure(metrics).to_json())
    assert heatmap(figure).tolist() == metrics.confusion_matrix
    shares = heatmap(json.loads(confusion_matrix_figure(metrics, normalised=True).to_json()))
    assert shares == pytest.approx(counts / counts.sum(axis=1, keepdims=True), abs=5e-5)  # cards round to 4 places
    cells = plotly_array(figure["data"][1]["customdata"]).reshape(7, 7, 4)  # the markers that take the clicks
    assert cells[..., 0].tolist() == [[true] * 7 for true in range(7)]
    assert cells[..., 1].tolist() == [list(range(7))] * 7
    assert cells[..., 2].tolist() == metrics.confusion_matrix and cells[..., 3] == pytest.approx(shares)

    no_angry_face = replace(metrics, confusion_matrix=[[0] * 7, *metrics.confusion_matrix[1:]])
    shares = heatmap(json.loads(confusion_matrix_figure(no_angry_face, normalised=True).to_json()))
    assert shares[0].tolist() == [0.0] * 7 and shares[1:].sum(axis=1) == pytest.approx(np.ones(6), abs=5e-4)


APP_FILES = ["fer_core/service/charts.py", *(f"ui/{module.name}" for module in sorted(ROOT.glob("ui/*.py"))),
             *(f"app_pages/{page.name}" for page in sorted(ROOT.glob("app_pages/*.py")))]


@pytest.mark.parametrize("path", APP_FILES)
def test_public_functions_of_the_app_have_type_hints_and_docstrings(path):
    tree = ast.parse((ROOT / path).read_text())
    lacking = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            untyped = [a.arg for a in arguments if a.annotation is None and a.arg not in ("self", "cls")]
            if untyped or node.returns is None or ast.get_docstring(node) is None:
                lacking.append(f"{node.name} (line {node.lineno})")
    assert not lacking, f"{path}: public functions without type hints or a docstring: {', '.join(lacking)}"


# The faces behind a confusion-matrix cell, and the evaluation reports (issue 23) --------------------


def always_answer(store: ModelStore, name: str, code: int) -> None:
    """Make a stored untrained network answer class ``code`` for every face (a large bias on its logit)."""
    stored = store.load(name)
    logits = stored.model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 0, np.where(np.arange(7) == code, 5.0, 0.0).astype(bias.dtype)])
    store.save(name, stored.model, stored.card)


def image_captions(at: AppTest) -> list[str]:
    """The captions of the page's images, in page order."""
    return [caption for element in at.get("image") for caption in element.captions]


def test_compare_page_opens_the_faces_of_a_cell_page_by_page_and_explains_them(store, monkeypatch):
    from fer_core.evaluation.evaluate import Evaluation
    from fer_core.inference import explain

    monkeypatch.setattr("fer_core.evaluation.evaluate.CELL_PAGE", 2)
    always_answer(store, "default", 3)  # every face: Happy
    maps_made = []
    monkeypatch.setattr(explain, "explain_cropped", lambda *args, **kwargs: maps_made.append(args) or
                        np.zeros((192, 192, 3), np.uint8))
    at = open_app(COMPARE)
    at.file_uploader(key="compare_upload").set_value(("labelled.csv", fer_csv(private=21), "text/csv"))
    at.button(key="compare_evaluate").click().run()
    assert not at.exception
    evaluation = at.session_state["compare_evaluation"]
    answers = evaluation["evaluations"]["default"]
    assert isinstance(answers, Evaluation) and len(answers.dataset) == 21
    assert [row[3] for row in answers.report.confusion_matrix] == [3] * 7
    charts = at.get("plotly_chart")
    assert [json.loads(chart.proto.spec)["data"][1]["type"] for chart in charts[:2]] == ["scatter", "scatter"]
    assert all(chart.proto.selection_mode == [0] for chart in charts[:2])  # the matrices take clicks on points
    assert [button.label for button in at.get("download_button")] == ["default report (HTML)",
                                                                     "small report (HTML)"]

    at.session_state["compare_cell"] = {"model": "default", "cell": (0, 3), "shown": 2}  # as a click on the cell
    at.run()
    assert not at.exception
    assert [heading.value for heading in at.subheader][1] == "default: true Angry predicted as Happy (2 of 3)"
    assert "The most confident mistakes first." in [caption.value for caption in at.caption]
    captions = image_captions(at)
    happy = f"Happy {answers.probabilities[0, 3]:.0%}, "  # each face's most probable classes, most first
    assert len(captions) == 2 and all(caption.startswith(happy) for caption in captions), captions
    at.button(key="compare_more").click().run()
    assert at.subheader[1].value == "default: true Angry predicted as Happy (3 of 3)"
    assert len(image_captions(at)) == 3 and not [button for button in at.button if button.key == "compare_more"]

    at.toggle(key="explain").set_value(True).run()
    assert not at.exception
    assert image_captions(at)[1::2] == ["Grad-CAM for Happy"] * 3
    # made for the cell's faces, explaining the model's answer (model, face, preprocessing, label, method)
    np.testing.assert_array_equal(np.stack([args[1] for args in maps_made]), answers.cell(0, 3).images)
    assert [args[3:] for args in maps_made] == [("happy", "grad_cam")] * 3
    at.run()
    assert len(maps_made) == 3  # kept with the evaluation, not made again on every run

    at.session_state["compare_cell"] = {"model": "default", "cell": (3, 3), "shown": 2}
    at.run()
    assert at.subheader[1].value == "default: true Happy predicted as Happy (2 of 3)"
    assert "The least confident correct answers first." in [caption.value for caption in at.caption]
    at.session_state["compare_cell"] = {"model": "small", "cell": (3, 3), "shown": 2}
    small = evaluation["evaluations"]["small"].cell(3, 3)
    at.run()
    assert at.subheader[1].value == f"small: true Happy predicted as Happy ({min(small.total, 2)} of {small.total})"

    at.button(key="compare_evaluate").click().run()  # a new evaluation starts with no cell open
    assert "compare_cell" not in at.session_state
    assert [heading.value for heading in at.subheader] == ["Confusion matrices", "Precision, recall and F1 per class"]


def test_a_click_on_a_matrix_is_read_as_its_cell():
    from fer_core.service.charts import clicked_cell

    # the selection state Streamlit 1.67 reported for a click on the cell true Sad, predicted Disgust
    clicked = {"selection": {"points": [{"curve_number": 1, "point_number": 36, "point_index": 36, "x": "Disgust",
                                         "y": "Sad", "customdata": [4, 1, 2, 0.1]}],
                             "point_indices": [36], "box": [], "lasso": []}}
    assert clicked_cell(clicked) == (4, 1)
    assert clicked_cell({"selection": {"points": [], "point_indices": [], "box": [], "lasso": []}}) is None
    assert clicked_cell(None) is None


def test_the_sidebar_switches_every_page_between_balanced_and_fer2013_odds(store):
    counts = dict(zip(EMOTIONS, (3995, 436, 4097, 7215, 4830, 3171, 4965)))
    correction = PriorCorrection(strength=1.0, chosen_on="test faces", accuracy=0.5, balanced_accuracy=0.6,
                                 accuracy_before=0.55, balanced_accuracy_before=0.45)
    card = store.card("default")
    store.update_card("default", replace(card, prior_correction=correction,
                                         training=replace(card.training, class_counts=counts)))
    at = open_app()
    assert at.sidebar.radio(key="_odds").value == "balanced"
    assert "60.0%" in [m.value for m in at.metric]  # the mean recall with the balanced odds
    at.switch_page(UPLOAD).run()
    at.file_uploader[0].set_value([("astronaut.png", encode_png(astronaut()), "image/png")]).run()
    (balanced,) = next(iter(at.session_state["upload_results"].values()))
    at.sidebar.radio(key="_odds").set_value("fer2013").run()
    assert not at.exception
    answers = {key[-1]: faces for key, faces in at.session_state["upload_results"].items()}
    (trained,) = answers["fer2013"]
    shift = shift_for(store.card("default"), "balanced")
    expected = adjust(np.array([[trained.probabilities[name] for name in EMOTIONS]]), shift)[0]
    assert [balanced.probabilities[name] for name in EMOTIONS] == pytest.approx(expected.tolist(), abs=1e-5)
    at.switch_page(LIVE).run()
    assert at.sidebar.radio(key="_odds").value == "fer2013"  # the choice holds across pages


def test_hosted_app_shows_students_the_viewer_toolbar():
    """No Deploy button or developer menu for a class (the browser test checks the page);
    README says how a developer gets them back."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"
    assert "--client.toolbarMode developer" in (ROOT / "README.md").read_text()
