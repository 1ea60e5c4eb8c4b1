"""What every page of the Streamlit app shares: the sidebar choices, cached model loading and error display."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
import numpy as np
import streamlit as st
import streamlit_webrtc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fer_core.base.errors import FerError  # noqa: E402
from fer_core.base.labels import DISPLAY_NAMES  # noqa: E402
from fer_core.faces.detect import DETECTORS, FaceDetector, get_detector  # noqa: E402
from fer_core.faces.preprocess import Preprocessing  # noqa: E402
from fer_core.inference.live import CAMERA_CONSTRAINTS, LiveAnalyser, ice_servers  # noqa: E402
from fer_core.inference.predict import EmotionAnalyser, EmotionClassifier, FaceResult, annotate  # noqa: E402
from fer_core.inference.streams import StreamBoard  # noqa: E402
from fer_core.registry.cards import ModelCard  # noqa: E402
from fer_core.registry.store import DEFAULT_NAME, ModelStore, check_name  # noqa: E402
from fer_core.service.charts import probability_bars  # noqa: E402
from fer_core.service.jobs import Job  # noqa: E402
from fer_core.service.queue import job_queue  # noqa: E402

if TYPE_CHECKING:
    from fer_core.datasets.recorder import FaceRecorder

PRIVACY_NOTE = ("Privacy: camera frames, photos and videos are processed in memory and never stored. Faces "
                "collected on the Class faces page stay in your browser session's memory until you download them. "
                "An uploaded dataset sits in a temporary file only while it loads. Only models you train or "
                "fine-tune are saved, under the name you give them.")
DETECTOR_LABELS = {
    "haar": "Haar cascade (fast, for live video)",
    "mtcnn": "MTCNN (slower, more accurate)",
    "none": "None (images are face crops)",
}
DEFAULT_DETECTOR = "haar"
#: Session key of the count of this session's page runs, whole ones (fragments rerun on their own).
PAGE_RUNS = "_page_runs"
#: fer_core.inference.explain.EXPLANATIONS by name: a short name and what the map shows. Said here so a page
#: need not load TensorFlow to offer them.
EXPLANATION_LABELS = {
    "grad_cam": ("Grad-CAM", "the regions that raised the class's score"),
    "guided_backprop": ("Guided backprop", "the pixels the class's score is most sensitive to"),
    "guided_grad_cam": ("Guided Grad-CAM", "those pixels inside Grad-CAM's regions"),
}


def _keep_keras_state_of_other_threads() -> None:
    """Stop Streamlit from clearing the Keras session after every script run, once Keras is loaded.

    Streamlit does it to free Keras 2 graphs. Keras 3 keeps its state per thread, and its
    ``clear_session`` replaces that state for every thread at once: a training job building its model
    while any page reruns lost its layer-name counters mid-way ("The name 'batch_normalization' is
    used 2 times in the model") and its mixed-precision policy. Script runs are threads of their
    own, so their Keras state goes with them anyway. Keras is not imported for this: classifying
    faces does not need it (LiteRT), and it costs some 500 MB. Every page calls this through
    :func:`sidebar`, after its imports, so a page that loads Keras (Train) is covered in the same run.
    While another thread (a job starting) is still importing Keras, its module is there but incomplete:
    the import statement waits until it is complete.
    """
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session = lambda free_memory=True: None


@dataclass
class Selection:
    """The model and face detector chosen in the sidebar."""

    model: str | None
    detector: str


def _remember(name: str) -> None:
    """Copy a sidebar widget's value to a plain session key, which outlives page changes."""
    st.session_state[name] = st.session_state[f"_{name}"]


def explanation_choice() -> str | None:
    """The switch for explanation maps and the method, a key of :data:`EXPLANATION_LABELS` (None
    when off); the method chosen holds while the switch is off and across pages."""
    st.session_state.setdefault("explanation", "grad_cam")
    if not st.toggle("Explain: show where the network looked", key="explain"):
        return None
    st.session_state["_explanation"] = st.session_state["explanation"]
    st.radio("Explanation", list(EXPLANATION_LABELS), key="_explanation", on_change=_remember,
             args=("explanation",), format_func=lambda name: EXPLANATION_LABELS[name][0], horizontal=True,
             help=" ".join(f"{short}: {shows}." for short, shows in EXPLANATION_LABELS.values()))
    return st.session_state["explanation"]


def sidebar() -> Selection:
    """Model and detector choice in the sidebar; every page calls it, and the choice holds across pages.

    Streamlit forgets the state of a widget that a page does not draw, so the choice is kept under
    plain session keys and handed back to the widgets on each page.
    """
    _keep_keras_state_of_other_threads()
    st.session_state[PAGE_RUNS] = st.session_state.get(PAGE_RUNS, 0) + 1  # see _keep_stream_drawn_last_run
    names = ModelStore().names()
    if st.session_state.get("model") not in names:
        st.session_state["model"] = names[0] if names else None
    st.session_state.setdefault("detector", DEFAULT_DETECTOR)
    with st.sidebar:
        st.header("Settings")
        if names:
            st.session_state["_model"] = st.session_state["model"]
            st.selectbox("Model", names, key="_model", on_change=_remember, args=("model",),
                         help="Stored models; train more on the Train page.")
        else:
            st.warning("No model is stored yet. Train one on the Train page.")
        st.session_state["_detector"] = st.session_state["detector"]
        st.selectbox("Face detector", list(DETECTORS), key="_detector", on_change=_remember, args=("detector",),
                     format_func=lambda name: DETECTOR_LABELS.get(name, name))
        if os.environ.get("FER_LAB_REPLICA"):  # set by deploy/: which replica holds this session
            st.caption(f"Served by replica {os.environ['FER_LAB_REPLICA']}")
    return Selection(st.session_state["model"], st.session_state["detector"])


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def _classifier(path: str, modified: float) -> tuple[EmotionClassifier, Preprocessing, str]:
    """A stored model loaded once per file version (``modified`` changes when it is retrained)."""
    stored = ModelStore().load(path)
    return EmotionClassifier.from_stored(stored), stored.card.preprocessing, stored.name


@st.cache_resource(show_spinner="Loading the face detector...")
def _detector(name: str, live: bool) -> FaceDetector:
    """A face detector loaded once per server for each name and setting (live or full)."""
    return get_detector(name, live=live)


def load_classifier(model: str, thorough: bool = False) -> tuple[EmotionClassifier, Preprocessing, str]:
    """The compiled classifier of a stored model, its preprocessing and name, loaded once per server;
    ``thorough`` gives it shifted views too (a copy sharing the loaded model)."""
    path = ModelStore().resolve(model)
    classifier, preprocessing, name = _classifier(str(path), path.stat().st_mtime)
    return (classifier.with_views(shift_tta=True) if thorough else classifier), preprocessing, name


def model_version(model: str) -> float:
    """The modification time of a stored model's file: it changes whenever the model is retrained."""
    return ModelStore().resolve(model).stat().st_mtime


def load_analyser(model: str, detector: str, live: bool = False, thorough: bool = False) -> EmotionAnalyser:
    """An analyser for a stored model and a detector, both loaded once per server.

    ``live`` picks the detector's fast settings for video (``fer_core.faces.detect.LIVE_OPTIONS``); still
    images need the full settings, which also find small faces. ``thorough`` reads each face in
    shifted views too: slower, a little more accurate.
    """
    classifier, preprocessing, name = load_classifier(model, thorough)
    return EmotionAnalyser(classifier, _detector(detector, live), preprocessing, name)


def analyser_or_stop(model: str, detector: str, live: bool = False, thorough: bool = False) -> EmotionAnalyser:
    """:func:`load_analyser`, or an error message and the end of the page when the model or the
    detector cannot be loaded (a damaged model file, a missing detector package)."""
    try:
        return load_analyser(model, detector, live, thorough)
    except (FerError, ImportError, OSError) as error:
        st.error(f"Model '{model}' with the '{detector}' face detector cannot be loaded: {error_message(error)}. "
                 "Choose another model or face detector in the sidebar.")
        st.stop()


def require_model(chosen: Selection) -> str:
    """The chosen model's name; stops the page with a hint when no model is stored."""
    if chosen.model is None:
        st.info("No model is stored yet: train one on the Train page first.")
        st.stop()
    return chosen.model


def error_message(error: Exception) -> str:
    """A readable message for an error about input, a missing package or a file that cannot be read."""
    if isinstance(error, ImportError):
        missing = f"the package '{error.name}' is not installed" if error.name else f"a package is missing ({error})"
        return f"{missing} on this server; install the requirements with `pip install -r requirements.txt`"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)


@contextmanager
def user_errors() -> Iterator[None]:
    """Show fer_core's errors about bad input, a missing package or an unreadable file as a message,
    never as a traceback."""
    try:
        yield
    except (FerError, ImportError, OSError) as error:
        st.error(error_message(error))


def key_figures(card: ModelCard) -> None:
    """Accuracy (plain and with flip TTA), macro-F1, parameters and milliseconds per face of a
    model card, as metrics."""
    columns = st.columns(5)
    columns[0].metric("Accuracy", _percent(card.accuracy), help=card.scored_on)
    columns[1].metric("With flip TTA", _percent(card.flip_accuracy),
                      help="Each face also read mirrored and the answers averaged, as the app does when it helps.")
    columns[2].metric("Macro-F1", _percent(card.macro_f1))
    columns[3].metric("Parameters", "n/a" if card.parameters is None else f"{card.parameters:,}")
    columns[4].metric("ms per face", "n/a" if card.ms_per_face is None else f"{card.ms_per_face:.2f}")


def _percent(value: float | None) -> str:
    """A share as a percentage, or "n/a"."""
    return "n/a" if value is None else f"{value:.1%}"


def show_faces(image: np.ndarray, results: list[FaceResult], analyser: EmotionAnalyser | None = None,
               explain: str | None = None, key: str = "faces") -> np.ndarray:
    """The annotated image beside one probability chart per face, with the map of the explanation
    method ``explain`` (a key of :data:`EXPLANATION_LABELS`) when given.

    Returns the annotated image (BGR) for a download.
    """
    annotated = annotate(image, results)
    left, right = st.columns([3, 2])
    left.image(annotated, channels="BGR", width="stretch")
    with right:
        if not results:
            st.warning("No face found. Try another face detector in the sidebar, or a larger, frontal face.")
        for index, face in enumerate(results, start=1):
            title = f"Face {index}: {DISPLAY_NAMES[face.label]} {face.score:.0%}"
            st.plotly_chart(probability_bars(face.probabilities, title=title), key=f"{key}-bars-{index}")
            if explain and analyser is not None:
                from fer_core.inference.explain import explain_face  # loads Keras and TensorFlow on first use

                show_explanation(explain_face(analyser.classifier.model, image, face.box, analyser.preprocessing,
                                              face.label, method=explain), explain, face.label)
    return annotated


def show_explanation(picture: np.ndarray, method: str, label: str, width: int | str = 192) -> None:
    """An explanation map (BGR, from ``fer_core.inference.explain``) captioned with its method, a key of
    :data:`EXPLANATION_LABELS`, and the class it explains."""
    st.image(picture, channels="BGR", width=width,
             caption=f"{EXPLANATION_LABELS[method][0]} for {DISPLAY_NAMES[label]}")


def existing_model(name: str) -> str | None:
    """The stored model a new model of this name would replace (names differing only in case included:
    they are one file on some file systems), or None."""
    return next((stored for stored in ModelStore().names() if stored.casefold() == name.casefold()), None)


def name_problem(name: str, existing: str | None, replace: bool) -> str | None:
    """Why a new model cannot be saved under ``name`` from a page, or None when it can."""
    try:
        check_name(name)
    except ValueError as error:
        return str(error)
    if name.casefold() == DEFAULT_NAME or existing == DEFAULT_NAME:
        return (f"'{DEFAULT_NAME}' is the model every visitor of the app starts with, so it cannot be trained "
                "from this page: choose another name.")
    if existing is not None and not replace:
        return (f"A model named '{existing}' exists: tick 'Replace the existing model' to overwrite it, or choose "
                "another name.")
    return None


def live_analyser(analyser: EmotionAnalyser, detect_every: int, key: str = "live_analyser",
                  recorder: FaceRecorder | None = None) -> LiveAnalyser:
    """This session's live analyser kept under ``key``, made anew when the model, detector, detection
    rate or recorder changes."""
    live = st.session_state.get(key)
    same = (live is not None and live.analyser.classifier is analyser.classifier
            and live.analyser.detector is analyser.detector and live.detect_every == detect_every
            and live.recorder is recorder)
    if not same:
        live = LiveAnalyser(analyser, detect_every=detect_every, recorder=recorder, board=stream_board(),
                            owner=stream_owner())
        st.session_state[key] = live
    return live


def rtc_configuration() -> dict | None:
    """ICE servers from ``.streamlit/secrets.toml`` or the environment (None: streamlit-webrtc's default)."""
    try:
        secrets = st.secrets.to_dict()
    except FileNotFoundError:
        secrets = None
    servers = ice_servers(secrets=secrets)
    return None if servers is None else {"iceServers": servers}


@st.cache_resource
def stream_board() -> StreamBoard:
    """The live streams of this server process: their limit and fair analysis shares (``fer_core.inference.streams``)."""
    return StreamBoard.from_environment()


def stream_owner() -> str:
    """This browser session's name on the stream board (one stream a session, whichever page)."""
    if "_stream_owner" not in st.session_state:
        st.session_state["_stream_owner"] = uuid.uuid4().hex
    return st.session_state["_stream_owner"]


def server_full_message() -> None:
    """What a session is told instead of a stream when the server carries its most streams."""
    board = stream_board()
    st.warning(f"The server is carrying its most live streams ({board.limit}), so yours cannot start now. "
               "Use the **Snapshot** tab meanwhile, or try again when a stream has ended.", icon="⏸️")
    if st.button("Try again", key="stream-try-again"):
        st.rerun()


def stream_notices(live: LiveAnalyser) -> None:
    """For a page's live readout: rerun the page when the server refused this stream (the page then says
    why), and say when the server is busy enough that only some of the stream's frames are analysed."""
    stats = live.stats()
    if stats.refused:
        st.rerun()
    if stats.analysed_every >= 1.5:
        st.caption(f"The server is busy ({stream_board().streams()} live streams): it reads the faces on one "
                   f"frame in {stats.analysed_every:.0f} of this stream, and the frames between keep the last "
                   "boxes.")


def live_stream(key: str, live: LiveAnalyser) -> bool:
    """The browser's camera sent over WebRTC through ``live`` and shown annotated; True while it plays.

    When the server already carries its most streams (:func:`stream_board`), the session is told so
    instead, and False is returned."""
    board = stream_board()
    if not board.admits(live.owner):
        server_full_message()
        return False

    def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
        """Runs in streamlit-webrtc's worker thread, once per received frame."""
        return av.VideoFrame.from_ndarray(live.process(frame.to_ndarray(format="bgr24")), format="bgr24")

    try:
        configuration = rtc_configuration()
    except ValueError as error:
        st.error(f"ICE server configuration: {error}")
        configuration = None
    _keep_stream_drawn_last_run(key)
    # Looked up at each call, not imported by name: the tests replace the streamer.
    context = streamlit_webrtc.webrtc_streamer(
        key=key, mode=streamlit_webrtc.WebRtcMode.SENDRECV, rtc_configuration=configuration,
        video_frame_callback=video_frame_callback, media_stream_constraints=CAMERA_CONSTRAINTS,
        async_processing=True)
    st.session_state[f"_{key}_drawn_in"] = st.session_state.get(PAGE_RUNS)
    if not context.state.playing:
        board.release(live.owner)
    return bool(context.state.playing)


def _keep_stream_drawn_last_run(key: str) -> None:
    """Stop streamlit-webrtc (0.79) from ending a stream that the page's previous run drew.

    It ends a stream whose page was left, found as a run of the app that did not draw it: its count
    of finished runs has grown by more than one since. That count grows on the server's event loop a
    moment after a run ends, so a run that starts within that moment (two clicks in quick
    succession, or a recording's end and a click, on a busy CPU) reads the old count, and the run
    after it stopped the stream as if its page had been left. When this session's previous page
    run drew the stream (counted by :func:`sidebar`, which every page calls), the check is skipped
    for this run.
    """
    context = st.session_state.get(key)
    runs = st.session_state.get(PAGE_RUNS)
    drawn_last_run = runs is not None and st.session_state.get(f"_{key}_drawn_in") == runs - 1
    if drawn_last_run and hasattr(context, "_last_rendered_run_count"):
        context._last_rendered_run_count = None  # the streamer sets it again in this run


def stream_help() -> None:
    """What to do when the WebRTC stream does not connect."""
    with st.expander("The stream does not connect?"):
        st.markdown(
            "Browsers give a page the camera only over HTTPS or on localhost. Behind school or company "
            "firewalls WebRTC also needs a TURN server: set `TURN_URL`, `TURN_USERNAME` and "
            "`TURN_CREDENTIAL`, or a JSON list in `FER_LAB_ICE_SERVERS` (`[]` for localhost only), or "
            "`ice_servers` in `.streamlit/secrets.toml`. Meanwhile the **Snapshot** tab works without WebRTC.")


@st.fragment(run_every=2.0)
def waiting_turn(job: Job, key: str, note: str = "") -> None:
    """A session's queued job while it waits: its place in its lane, and a button (``key``) to leave."""
    jobs = job_queue()
    place = jobs.place(job.job_id)
    if place is None:  # it has started, or left the queue
        st.rerun()
    st.info(f"Your {job.request.description} is {place.describe()}.{' ' + note if note else ''}")
    if st.button("Leave the queue", key=key, help="Take it out of the queue; nothing runs."):
        jobs.cancel(job.job_id)
        st.rerun()
