"""Photos and videos: upload, see every face's emotion, explain it with a saliency map, download the results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.faces.images import load_image
from fer_core.inference.photos import PhotoFaces
from fer_core.inference.predict import EmotionAnalyser, FaceResult
from fer_core.service.charts import emotions_over_time
from fer_core.service.video import VideoAnalysis, analyse_video
from ui.display import PRIVACY_NOTE, show_photo, user_errors
from ui.sidebar import analyser_or_stop, explanation_choice, model_version, require_model, sidebar

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp"]
VIDEO_TYPES = ["mp4", "webm", "mov"]
#: Most track thumbnails shown for a video (the longest tracks).
TRACK_THUMBNAILS = 24

st.title("Photos and videos")
st.caption(PRIVACY_NOTE)
chosen = sidebar()
model = require_model(chosen)
thorough = st.toggle("Thorough: read each face in shifted views too", key="thorough",
                     help="Each face is also classified moved one pixel each way (and mirrored, where the model "
                          "uses the mirror image) and the answers are averaged: about five times the "
                          "classifier's time, slightly more accurate.")
analyser = analyser_or_stop(model, chosen.detector, thorough=thorough)
#: What results depend on besides the file: the model (its file changes when it is retrained), the detector,
#: the thorough setting and the odds.
settings = (model, model_version(model), chosen.detector, thorough, chosen.odds)


def analysed(file_id: str, image: np.ndarray, analyser: EmotionAnalyser, settings: tuple) -> list[FaceResult]:
    """The faces of an uploaded image, kept for this session so reruns (e.g. an explanation turned on) are instant.

    Keyed by the upload's id and ``settings`` (model name and file time, detector, thorough, odds), never by
    object ids, which Python reuses once the cache drops a model.
    """
    cache = st.session_state.setdefault("upload_results", {})
    key = (file_id, *settings)
    if key not in cache:
        cache[key] = analyser.analyse(image)
    return cache[key]


def show_video(analysis: VideoAnalysis) -> None:
    """Emotions over time for a chosen face track, the per-track summary and the per-frame CSV."""
    table = analysis.frame_table()
    st.write(f"{len(analysis.frames)} frames analysed over {analysis.duration:.1f} s at "
             f"{analysis.sample_rate:g} per second; {len(analysis.tracks)} face track(s).")
    if not analysis.tracks:
        st.warning("No face found in the sampled frames. Try the MTCNN detector or a higher sampling rate.")
        return
    summary = pd.DataFrame([{"track": t.track_id, "dominant emotion": DISPLAY_NAMES[t.dominant],
                             "first seen (s)": t.first_seen, "last seen (s)": t.last_seen, "samples": t.samples,
                             **{DISPLAY_NAMES[k]: v for k, v in t.mean_probabilities.items()}}
                            for t in analysis.tracks])
    if analysis.overview is not None:
        st.image(analysis.overview, channels="BGR", width="stretch",
                 caption=f"At {analysis.overview_time:.1f} s: each face tagged with its track's number")
    # The longest tracks' faces, at most a few rows of them, in track order.
    longest_first = sorted(analysis.tracks, key=lambda t: -t.samples)[:TRACK_THUMBNAILS]
    pictured = sorted((t for t in longest_first if t.thumbnail is not None), key=lambda t: t.track_id)
    st.image([track.thumbnail for track in pictured], channels="BGR",
             caption=[f"Track {track.track_id}: {DISPLAY_NAMES[track.dominant]}" for track in pictured])
    longest = max(analysis.tracks, key=lambda t: t.samples).track_id
    track_ids = [t.track_id for t in analysis.tracks]
    track = st.selectbox("Face track", track_ids, index=track_ids.index(longest),
                         format_func=lambda t: f"track {t}")
    st.plotly_chart(emotions_over_time(table[table["track"] == track], title=f"Emotions of track {track}"),
                    key="video-timeline")
    st.subheader("Summary per face track")
    st.dataframe(summary, hide_index=True,
                 column_config={DISPLAY_NAMES[k]: st.column_config.ProgressColumn(DISPLAY_NAMES[k], format="percent")
                                for k in EMOTIONS})
    st.download_button("Per-frame results (CSV)", table.to_csv(index=False),
                       file_name=f"{Path(analysis.name).stem}_emotions.csv", mime="text/csv")


photos_tab, video_tab = st.tabs(["Photos", "Video"])
with photos_tab:
    files = st.file_uploader("Photos", type=IMAGE_TYPES, accept_multiple_files=True,
                             help="Several at once; JPEG, PNG, WebP or BMP.")
    explain = explanation_choice()
    rows: list[dict] = []
    reports: list[dict] = []
    for file in files or []:
        st.subheader(file.name)
        with user_errors():
            image = load_image(file.getvalue(), name=file.name)
            photo = PhotoFaces.of(analysed(file.file_id, image, analyser, settings))
            show_photo(image, photo, analyser, explain, key=file.file_id,
                       download_name=f"{Path(file.name).stem}_emotions.png")
            rows += photo.rows(file.name)
            reports.append({"file": file.name, "model": analyser.model_name, "detector": chosen.detector,
                            "faces": photo.to_dicts()})
    current = {file.file_id for file in files or []}
    kept = st.session_state.get("upload_results", {})
    st.session_state["upload_results"] = {key: faces for key, faces in kept.items() if key[0] in current}
    if reports:
        st.divider()
        csv_column, json_column = st.columns(2)
        csv_column.download_button("All results (CSV)", pd.DataFrame(rows).to_csv(index=False),
                                   file_name="fer_lab_results.csv", mime="text/csv")
        json_column.download_button("All results (JSON)", json.dumps(reports, indent=2),
                                    file_name="fer_lab_results.json", mime="application/json")

with video_tab:
    video = st.file_uploader("Video", type=VIDEO_TYPES, help="MP4, WebM or MOV.")
    rate = st.slider("Frames analysed per second of video", 0.5, 10.0, 2.0, 0.5,
                     help="More frames follow faces more closely but take longer.")
    video_key = None if video is None else (video.file_id, rate, *settings)
    if video is not None and st.button("Analyse video", type="primary"):
        bar = st.progress(0.0, text=f"Analysing {video.name}...")
        with user_errors():
            st.session_state["video_analysis"] = video_key, analyse_video(
                video.getvalue(), analyser, sample_rate=rate, name=video.name,
                progress=lambda done: bar.progress(done, text=f"Analysing {video.name}: {done:.0%}"))
        bar.empty()
    analysed_key, analysis = st.session_state.get("video_analysis", (None, None))
    if analysis is not None:
        if video is None or analysed_key[0] != video.file_id:  # another file, or none: that analysis is done with
            st.session_state.pop("video_analysis")
        elif analysed_key == video_key:
            show_video(analysis)
        else:
            st.info("The sampling rate, model, face detector, odds or thorough setting changed since this video was "
                    "analysed: press **Analyse video** for results with the current settings.")
