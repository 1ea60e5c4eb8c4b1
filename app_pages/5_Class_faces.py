"""Class faces: volunteers' faces recorded per emotion from the webcam (or snapshots), kept in this browser
session, downloaded or uploaded as zips, and a model fine-tuned on them, scored before and after."""

from __future__ import annotations

import cv2
import numpy as np
import streamlit as st

from fer_core.base.errors import FerError
from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.datasets.collection import FaceCollection
from fer_core.datasets.recorder import RECORDING_FACES, RECORDING_SECONDS, FaceRecorder, main_face_crop
from fer_core.faces.images import load_image
from fer_core.inference.live import LiveAnalyser
from fer_core.registry.store import ModelStore
from fer_core.service.charts import confusion_matrix_figure
from fer_core.service.jobs import JobState
from fer_core.service.queues import job_queue
from fer_core.service.work import finetune_problem, submit_finetune
from ui.display import existing_model, name_problem, user_errors
from ui.jobs import forget_job, job_now, remember_job, remembered_job, show_job
from ui.sidebar import analyser_or_stop, load_analyser, require_model, sidebar
from ui.webrtc import live_analyser, live_stream, stream_help, stream_notices

#: Thumbnails in a row of the gallery, and their size on screen (the 48x48 crops, enlarged).
FACES_PER_ROW = 10
THUMBNAIL = 96
RESPONSIBLE_USE = (
    "Record only people who agree to it: whoever is filmed sees the counter on the stream while faces are "
    "kept. The faces stay in this browser session's memory and are gone when you close the tab, unless you "
    "download them. A fine-tuned model is derived from them and is saved on the server: delete it when you "
    "are done. The network reads facial expressions, not feelings; do not use it to assess or monitor people.")

st.title("Class faces")
chosen = sidebar()
model = require_model(chosen)
jobs = job_queue()
collection: FaceCollection = st.session_state.setdefault("class_collection", FaceCollection())
if "class_recorder" not in st.session_state:
    st.session_state["class_recorder"] = FaceRecorder(collection)
recorder: FaceRecorder = st.session_state["class_recorder"]
st.write("Teach a model your class's faces: record a few seconds of each emotion, posed by volunteers, "
         "then fine-tune a model on them and see how much better it reads them.")
st.info(RESPONSIBLE_USE, icon=":material/front_hand:")


def thumbnail(face: np.ndarray) -> np.ndarray:
    """A 48x48 crop enlarged with sharp pixels, as the network sees it."""
    return cv2.resize(face, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_NEAREST)


@st.fragment(run_every=0.5)
def recording_panel(live: LiveAnalyser, faces: int, seconds: float) -> None:
    """The Record button and the counter of the recording under way; the whole page reruns when a
    recording has ended, to show its faces in the gallery."""
    stream_notices(live)
    emotion = st.session_state["class_emotion"]
    status = recorder.status()
    if status.finished != st.session_state.setdefault("class_recordings_seen", status.finished):
        st.session_state["class_recordings_seen"] = status.finished
        st.rerun()
    if st.button(f"Record {DISPLAY_NAMES[emotion]}", key="class_record", type="primary", icon=":material/videocam:",
                 disabled=status.recording, help=f"Keeps {faces} faces of the main face in {seconds:g} s."):
        recorder.start(emotion, faces, seconds)  # ignored while a recording is under way (a late click)
        status = recorder.status()
    if status.recording:
        st.metric(f"Recording {DISPLAY_NAMES[status.emotion]}", f"{status.taken} / {status.wanted} faces")
        st.progress(status.taken / status.wanted, text=f"{status.seconds_left:.1f} s left")
    elif status.message is not None:
        st.caption(status.message)


def add_snapshot(emotion: str, photo: bytes, detector: str) -> None:
    """Add the main face of a snapshot to the collection, or say that none was found."""
    image = load_image(photo, name="the snapshot")
    still = load_analyser(model, detector)  # a still photo has time for the detector's full settings
    crop = main_face_crop(image, still.detector.detect(image), still.preprocessing)
    if crop is None:
        st.warning("No face found in the snapshot. Face the camera, in good light, and take another.")
        return
    collection.add_face(emotion, crop)
    st.success(f"A face of {DISPLAY_NAMES[emotion]} added.")


def record() -> None:
    """The emotion to record, and the live stream with its Record button, or a snapshot."""
    st.subheader("1. Record faces")
    emotion = st.radio("Emotion", EMOTIONS, format_func=DISPLAY_NAMES.get, horizontal=True, key="class_emotion",
                       help="The emotion the volunteer shows; each face recorded is labelled with it.")
    stream_tab, snapshot_tab = st.tabs(["Live stream", "Snapshot"])
    with stream_tab:
        video_column, control_column = st.columns([3, 2])
        faces = control_column.slider("Faces per recording", 5, 50, RECORDING_FACES, key="class_faces")
        seconds = control_column.slider("Seconds per recording", 1.0, 10.0, RECORDING_SECONDS, 0.5,
                                        key="class_seconds")
        analyser = analyser_or_stop(model, chosen.detector, live=True)
        with video_column:
            live = live_analyser(analyser, 3, key="class_live_analyser", recorder=recorder)
            playing = live_stream("fer-class-faces", live)
        with control_column:
            if playing:
                recording_panel(live, faces, seconds)
            else:
                st.caption("Press START and allow the camera, pick an emotion, then press Record: the main face "
                           "is kept, cropped as the model sees it, while a counter runs on the stream.")
        stream_help()
    with snapshot_tab:
        photo = st.camera_input("Take a snapshot: its main face is added", key="class_snapshot")
        if photo is not None and st.session_state.get("class_snapshot_added") != photo.file_id:
            st.session_state["class_snapshot_added"] = photo.file_id
            with user_errors():
                add_snapshot(emotion, photo.getvalue(), chosen.detector)


def merge_uploads() -> None:
    """Add the faces of each newly uploaded zip once, and say for each zip still uploaded how it went."""
    uploads = st.file_uploader("Add faces from zips of class folders (downloaded here, or any)", type=["zip"],
                               accept_multiple_files=True, key="class_upload")
    merged: dict[str, tuple[bool, str]] = st.session_state.setdefault("class_merged", {})
    for upload in uploads or []:
        if upload.file_id not in merged:
            try:
                added = collection.merge_zip(upload.getvalue(), upload.name)
                merged[upload.file_id] = (True, f"{upload.name}: {added} faces added.")
            except FerError as error:
                merged[upload.file_id] = (False, f"{upload.name}: {error}")
        added, message = merged[upload.file_id]
        (st.success if added else st.error)(message)


def clear_all() -> None:
    """Remove every face of the collection (the confirmation is asked again next time)."""
    collection.clear()
    st.session_state["class_clear_sure"] = False


def gallery() -> None:
    """The collection per emotion, a delete button under each face; clear, download and upload."""
    st.subheader("2. Collected faces")
    merge_uploads()
    counts, recordings = collection.counts(), collection.recording_counts()
    if not len(collection):
        st.caption("No face yet: record some above, or upload a zip of faces collected before.")
        return
    st.caption(f"{len(collection)} faces in {sum(recordings.values())} recordings, in this browser session only.")
    for emotion in (name for name in EMOTIONS if counts[name]):
        label = f"{DISPLAY_NAMES[emotion]}: {counts[emotion]} faces in {recordings[emotion]} recording(s)"
        with st.expander(label, expanded=True):
            faces = collection.faces(emotion)
            for start in range(0, len(faces), FACES_PER_ROW):
                for column, face in zip(st.columns(FACES_PER_ROW), faces[start:start + FACES_PER_ROW]):
                    column.image(thumbnail(face.image), width=72)
                    column.button("Delete", key=f"class_delete_{face.face_id}", icon=":material/delete:",
                                  type="tertiary", on_click=collection.delete_face, args=(face.face_id,),
                                  help=f"Delete this face ({face.recording})")
    download, clear = st.columns(2)
    download.download_button("Download the faces (zip)", data=collection.to_zip, file_name="class_faces.zip",
                             mime="application/zip", on_click="ignore", key="class_download",
                             help="A folder per emotion, a subfolder per recording: the format the Train and "
                                  "Compare pages read, and this page takes back.")
    sure = clear.checkbox(f"Yes, remove all {len(collection)} faces", key="class_clear_sure")
    clear.button("Clear all", key="class_clear", disabled=not sure, on_click=clear_all)


@st.fragment(run_every=1.0)
def follow(job: JobState) -> None:
    """How far this session's fine-tuning has come, refreshed every second, and a button to cancel it."""
    job = job_now(job.job_id) or job  # the fragment's rerun reads the job anew
    if not job.active:
        st.rerun()
    start = ", ".join(sorted(job.uses))
    st.progress(job.fraction or 0.0, text=f"Fine-tuning {start} as '{job.model_name}': {job.message}")
    if st.button("Cancel", key="class_cancel", help="Stop now and save nothing."):
        with user_errors():
            jobs.cancel(job.job_id)
        st.toast("Cancelling after the current step...")


def use_model(name: str) -> None:
    """Choose ``name`` in the sidebar, for every page."""
    st.session_state["model"] = name


def show_outcome(job: JobState) -> None:
    """How this session's last fine-tuning ended: both models' accuracy and confusion matrices on the
    held-out faces, or why it did not finish."""
    if job.status == "failed":
        st.error(job.error)
        return
    if job.status == "cancelled":
        st.warning(f"Fine-tuning as '{job.model_name}' was cancelled; nothing was saved.")
        return
    card, before, start = job.card, job.baseline, ", ".join(sorted(job.uses))
    tuning = card.training.fine_tuning
    st.success(f"Saved as '{job.model_name}': choose it in the sidebar, on any page.")
    st.button(f"Use '{job.model_name}' now", key="class_use", on_click=use_model, args=(job.model_name,))
    first, second = st.columns(2)
    first.metric(f"Accuracy of {start} (before)", f"{before.accuracy:.1%}")
    second.metric(f"Accuracy of {job.model_name} (after)", f"{card.accuracy:.1%}",
                  delta=f"{(card.accuracy - before.accuracy) * 100:+.1f} points")
    untested = (f" No face of {', '.join(DISPLAY_NAMES[name] for name in tuning.untested_classes)} could be held "
                "out (a single recording each): they were trained on, not scored." if tuning.untested_classes else "")
    st.caption(f"Both scored on the {card.faces_scored} faces of {tuning.held_out_recordings} recording(s) held out "
               f"from training; trained on {card.training.train_rows} faces in {card.training.minutes} min "
               f"({card.training.stopped.replace('_', ' ')}).{untested}")
    normalised = st.toggle("Normalised confusion matrices", key="class_normalised")
    left, right = st.columns(2)
    left.plotly_chart(confusion_matrix_figure(before, normalised, f"Before: {start}"), key="class_before")
    right.plotly_chart(confusion_matrix_figure(card.metrics, normalised, f"After: {job.model_name}"),
                       key="class_after")
    with st.expander(f"Delete '{job.model_name}'"):
        st.caption("The fine-tuned model is derived from the faces: delete it when the class no longer needs it.")
        sure = st.checkbox(f"Yes, delete '{job.model_name}' for everyone on this server", key="class_delete_sure")
        if st.button("Delete model", key="class_delete_model", disabled=not sure):
            with user_errors():
                jobs.delete_model(job.model_name)
                forget_job("class_job_id")
                st.rerun()


def finetune_form() -> None:
    """What a fine-tuning is scored on, its starting model, time budget and name; submits the job to the
    fine-tuning lane."""
    st.caption("A share of each emotion's recordings is held out; both the starting and the fine-tuned model "
               "are scored on them. The fine-tuned model is saved on the server under its name.")
    names = ModelStore().names()
    start = st.selectbox("Start from", names, index=names.index(model), key="class_start",
                         help="The stored model to fine-tune; the sidebar's model at first.")
    minutes_column, name_column, owner_column = st.columns(3)
    minutes = minutes_column.number_input("Time budget (minutes)", 0.1, 10.0, 1.0, 0.1, key="class_minutes")
    name = name_column.text_input("Save as (model name)", f"{start}_class", key=f"class_name_{start}")
    owner = owner_column.text_input("Your name (shown to others while it runs)", key="class_owner")
    existing = existing_model(name)
    replace = existing is not None and st.checkbox("Replace the existing model", key="class_replace",
                                                   help=f"A model named '{existing}' exists: tick to overwrite it.")
    problem = finetune_problem(collection)
    if problem is not None:
        st.caption(problem)
    if not st.button("Fine-tune", type="primary", key="class_finetune", disabled=problem is not None):
        return
    problem = name_problem(name, existing, replace)
    if problem is not None:
        st.error(problem)
        return
    with user_errors():
        job = submit_finetune(jobs, collection, start, name, minutes=float(minutes), owner=owner or "someone")
        remember_job("class_job_id", job.job_id)
        st.rerun()


def finetune_section() -> None:
    """This session's fine-tuning: waiting, running, or its outcome and a form for the next one."""
    st.subheader("3. Fine-tune a model on them")
    show_job(job_now(remembered_job("class_job_id")), "class_leave", follow=follow, outcome=show_outcome,
             form=finetune_form)


record()
gallery()
finetune_section()
