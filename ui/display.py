"""How pages show things: errors as messages, a model's key figures, analysed faces, explanation maps, model names."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import streamlit as st

from fer_core.base.errors import FerError
from fer_core.base.labels import DISPLAY_NAMES
from fer_core.faces.images import encode_png
from fer_core.inference.annotate import face_label
from fer_core.inference.photos import UNCERTAIN_BELOW, PhotoFaces, network_view
from fer_core.inference.predict import EmotionAnalyser, FaceResult
from fer_core.registry.cards import ModelCard
from fer_core.registry.store import DEFAULT_NAME, ModelStore, check_name
from fer_core.service.charts import probability_bars

PRIVACY_NOTE = ("Privacy: camera frames, photos and videos are processed in memory and never stored. Faces "
                "collected on the Class faces page stay in your browser session's memory until you download them. "
                "An uploaded dataset sits in a temporary file only while it loads; with training workers, in the model "
                "store's inbox folder until its training ends, so that another worker can resume it, and faces sent "
                "to be fine-tuned on wait in the job queue (Redis) until the fine-tune ends. Only models you train or "
                "fine-tune are saved, under the name you give them.")
#: fer_core.inference.explain.EXPLANATIONS by name: a short name and what the map shows. Said here so a page
#: need not load TensorFlow to offer them.
EXPLANATION_LABELS = {
    "grad_cam": ("Grad-CAM", "the regions that raised the class's score"),
    "guided_backprop": ("Guided backprop", "the pixels the class's score is most sensitive to"),
    "guided_grad_cam": ("Guided Grad-CAM", "those pixels inside Grad-CAM's regions"),
}


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


def key_figures(card: ModelCard, odds: str = "balanced") -> None:
    """Accuracy (plain and with flip TTA), mean per-class recall (with the balanced odds where the card
    has them and ``odds`` is balanced), macro-F1, parameters and milliseconds per face of a model card, as
    metrics."""
    columns = st.columns(6)
    columns[0].metric("Accuracy", _percent(card.accuracy), help=card.scored_on)
    columns[1].metric("With flip TTA", _percent(card.flip_accuracy),
                      help="Each face also read mirrored and the answers averaged, as the app does when it helps.")
    correction = card.prior_correction
    if correction is not None:
        balanced = odds == "balanced"
        recall = correction.balanced_accuracy if balanced else correction.balanced_accuracy_before
        source = (f"With the {'balanced' if balanced else 'training'} odds on {correction.chosen_on}; "
                  f"{correction.balanced_accuracy_before if balanced else correction.balanced_accuracy:.1%} "
                  f"with the {'training' if balanced else 'balanced'} ones.")
    else:
        recall = card.metrics.balanced_accuracy if card.metrics is not None else None
        source = "The network's own answer: " + ("the balanced odds its loss learned." if card.training.balanced_by_loss
                                                  else "its training data's odds.")
    columns[2].metric("Mean recall", _percent(recall),
                      help="The mean of the seven classes' recalls: the accuracy a class posing every emotion "
                           "equally often would see. " + source)
    columns[3].metric("Macro-F1", _percent(card.macro_f1))
    columns[4].metric("Parameters", "n/a" if card.parameters is None else f"{card.parameters:,}")
    columns[5].metric("ms per face", "n/a" if card.ms_per_face is None else f"{card.ms_per_face:.2f}")


def _percent(value: float | None) -> str:
    """A share as a percentage, or "n/a"."""
    return "n/a" if value is None else f"{value:.1%}"


#: Faces per row of a photo's faces grid (fewer faces: never fewer than two columns, so one face is not stretched).
GRID_COLUMNS = 4
#: Most faces shown in a photo's "check these" row.
CHECK_ROW = 6


def show_photo(image: np.ndarray, photo: PhotoFaces, analyser: EmotionAnalyser | None = None,
               explain: str | None = None, key: str = "faces", download_name: str | None = None) -> None:
    """A photo's summary and the faces to check, the photo with numbered faces (full size on demand, and
    a PNG download named ``download_name`` when given), and a grid of every face as the network saw it
    beside its probabilities, with the map of the explanation method ``explain`` (a key of
    :data:`EXPLANATION_LABELS`) when given."""
    annotated = photo.annotated(image)
    if not photo.faces:
        st.image(annotated, channels="BGR", width="stretch")
        st.warning("No face found. Try another face detector in the sidebar, or a larger, frontal face.")
        return
    st.markdown(f"**{photo.summary()}**")
    to_check = photo.to_check()
    if to_check:
        more = len(to_check) - CHECK_ROW
        st.markdown(f"Check these, least certain first (top emotion under {UNCERTAIN_BELOW:.0%})"
                    + (f"; {more} more below:" if more > 0 else ":"))
        shown = to_check[:CHECK_ROW]
        st.image([_network_view(photo.faces[number - 1], 88) for number in shown], width=88,
                 caption=[_face_title(number, photo.faces[number - 1]) for number in shown])
    elif len(photo.faces) > 1:
        st.caption(f"Every face's top emotion has {UNCERTAIN_BELOW:.0%} probability or more.")
    st.image(annotated, channels="BGR", width="stretch")
    actions = st.container(horizontal=True)
    if actions.button("Full size", key=f"{key}-full", help="The annotated photo at one image pixel per screen pixel."):
        _full_size(annotated)
    if download_name is not None:
        actions.download_button("Annotated image (PNG)", encode_png(annotated), key=f"{key}-png",
                                file_name=download_name, mime="image/png")
    columns = max(2, min(GRID_COLUMNS, len(photo.faces)))
    for first in range(0, len(photo.faces), columns):
        for cell, number in zip(st.columns(columns), photo.numbers[first:first + columns]):
            with cell.container(border=True):
                _show_face(number, photo.faces[number - 1], analyser, explain, key)


def _face_title(number: int, face: FaceResult) -> str:
    return f"Face {number}: {face_label(face)}"


def _network_view(face: FaceResult, size: int) -> np.ndarray:
    """The face as the network saw it, or a gray square for a face that was not analysed here."""
    return network_view(face, size) if face.network_input is not None else np.full((size, size), 128, np.uint8)


def _show_face(number: int, face: FaceResult, analyser: EmotionAnalyser | None, explain: str | None,
               key: str) -> None:
    """One cell of the faces grid: the face's number and reading, its network view (and explanation), its bars."""
    st.markdown(f"**{_face_title(number, face)}**")
    pictures, captions = [_network_view(face, 96)], ["Network's view"]
    if explain and analyser is not None and face.network_input is not None:
        from fer_core.inference.explain import explain_prepared  # loads Keras and TensorFlow on first use

        explained = explain_prepared(analyser.classifier.model, face.network_input, face.label, explain)
        pictures.append(explained[:, :, ::-1])  # BGR to RGB, as the network view's gray needs no channels
        captions.append(f"{EXPLANATION_LABELS[explain][0]} for {DISPLAY_NAMES[face.label]}")
    st.image(pictures, caption=captions, width=96)
    st.plotly_chart(probability_bars(face.probabilities, height=170), key=f"{key}-bars-{number}",
                    config={"displayModeBar": False})


@st.dialog("Annotated photo, full size", width="large")
def _full_size(annotated: np.ndarray) -> None:
    """The photo at one image pixel per screen pixel, scrolled within the dialog: ``st.image`` would
    shrink it to the dialog's width."""
    picture = base64.b64encode(encode_png(annotated)).decode()
    st.html(f'<div style="overflow: auto; max-height: 75vh"><img alt="The annotated photo, full size" '
            f'style="max-width: none" src="data:image/png;base64,{picture}"></div>')


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
