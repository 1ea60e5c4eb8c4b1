"""Live webcam: the browser's camera stream analysed on the server, with a snapshot fallback."""

from __future__ import annotations

import streamlit as st

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.faces.images import load_image
from fer_core.inference.live import LiveAnalyser
from fer_core.inference.photos import PhotoFaces
from ui.display import show_photo, user_errors
from ui.sidebar import analyser_or_stop, load_analyser, require_model, sidebar
from ui.webrtc import live_analyser, live_stream, stream_help, stream_notices

st.title("Live webcam")
chosen = sidebar()
model = require_model(chosen)
analyser = analyser_or_stop(model, chosen.detector, live=True)  # the detector's fast settings, for the stream


@st.fragment(run_every=1.0)
def live_readout(live: LiveAnalyser) -> None:
    """Speed, faces analysed and the main face's probabilities, refreshed every second."""
    update = live.latest()
    if update is not None:
        st.session_state["live_update"] = update
    stream_notices(live)
    stats = live.stats()
    fps, cost, analysed, skipped = st.columns(4)
    fps.metric("Frames per second", f"{stats.fps:.1f}")
    cost.metric("Analysis per frame", f"{stats.analysis_ms:.0f} ms",
                help="Detection (every few frames) and classification of one analysed frame, a moving average.")
    analysed.metric("Faces analysed", f"{stats.faces_analysed:,}")
    skipped.metric("Frames passed through", f"{stats.skipped:,}",
                   help="Frames shown with the last boxes because analysis was still busy (keeps the stream live).")
    update = st.session_state.get("live_update")
    if update is None or not update.faces:
        st.caption("No face in view.")
        return
    main = max(update.faces, key=lambda tracked: tracked.face.box[2] * tracked.face.box[3])
    st.markdown(f"**Main face: {DISPLAY_NAMES[main.face.label]} {main.face.score:.0%}**")
    for name in EMOTIONS:  # bars, not a chart: redrawn every second in every viewer's browser
        probability = main.face.probabilities[name]
        st.progress(probability, text=f"{DISPLAY_NAMES[name]} {probability:.0%}")


stream_tab, snapshot_tab = st.tabs(["Live stream", "Snapshot"])
with stream_tab:
    smoothing_column, detection_column = st.columns(2)
    smoothing = smoothing_column.slider(
        "Smoothing", 0.0, 0.95, 0.6, 0.05,
        help="Weight of the past in each face's moving average: higher is steadier, lower reacts faster.")
    detect_every = detection_column.slider(
        "Detect faces every n-th analysed frame", 1, 10, 3,
        help="Between detections, faces are followed at their last boxes, which is much faster.")
    live = live_analyser(analyser, detect_every)
    live.smoothing = smoothing

    if live_stream("fer-live", live):
        live_readout(live)
    else:
        st.caption("Press START and allow the camera. Frames are analysed in memory and never stored.")
    stream_help()

with snapshot_tab:
    photo = st.camera_input("Take a snapshot")
    if photo is not None:
        with user_errors():
            image = load_image(photo.getvalue(), name="the snapshot")
            # A still photo has time for the detector's full settings, which also find small faces.
            still = load_analyser(model, chosen.detector)
            show_photo(image, PhotoFaces.of(still.analyse(image)), key="snapshot")
