"""The browser's camera over WebRTC: a session's live analyser, the server's stream limit, the stream and its help."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import av
import streamlit as st
import streamlit_webrtc

from fer_core.inference.live import CAMERA_CONSTRAINTS, LiveAnalyser, ice_servers
from fer_core.inference.predict import EmotionAnalyser
from fer_core.inference.streams import StreamBoard
from ui.sidebar import PAGE_RUNS

if TYPE_CHECKING:
    from fer_core.datasets.recorder import FaceRecorder


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
    """The server process's live streams: their limit and fair analysis shares (``fer_core.inference.streams``)."""
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
    run drew the stream (counted by :func:`ui.sidebar.sidebar`, which every page calls), the check is
    skipped for this run.
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
