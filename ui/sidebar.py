"""The choices that hold across pages (model, detector, odds, explanation) and the cached loading of what they name."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import streamlit as st

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fer_core.base.errors import FerError  # noqa: E402
from fer_core.faces.detect import DETECTORS, FaceDetector, get_detector  # noqa: E402
from fer_core.faces.preprocess import Preprocessing  # noqa: E402
from fer_core.inference.odds import ODDS, ODDS_LABELS, shift_for  # noqa: E402
from fer_core.inference.predict import EmotionAnalyser, EmotionClassifier  # noqa: E402
from fer_core.registry.cards import ModelCard  # noqa: E402
from fer_core.registry.store import ModelStore  # noqa: E402
from ui.display import EXPLANATION_LABELS, error_message  # noqa: E402

DETECTOR_LABELS = {
    "haar": "Haar cascade (fast, for live video)",
    "mtcnn": "MTCNN (slower, more accurate)",
    "none": "None (images are face crops)",
}
DEFAULT_DETECTOR = "haar"
#: Session key of the count of this session's page runs, whole ones (fragments rerun on their own).
PAGE_RUNS = "_page_runs"


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
        import keras  # only once another module has loaded it: see above

        keras.backend.clear_session = lambda free_memory=True: None


@dataclass
class Selection:
    """The model, face detector and odds chosen in the sidebar."""

    model: str | None
    detector: str
    odds: str = ODDS[0]


def _remember(name: str) -> None:
    """Copy a widget's value to a plain session key, which outlives page changes."""
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
    st.session_state[PAGE_RUNS] = st.session_state.get(PAGE_RUNS, 0) + 1  # see ui.webrtc._keep_stream_drawn_last_run
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
        st.session_state["_odds"] = chosen_odds()
        st.radio("Odds", ODDS, key="_odds", on_change=_remember, args=("odds",), format_func=ODDS_LABELS.get,
                 help="Balanced: every emotion as likely, as when a class poses each one in turn (the model's "
                      "prior correction, from its card). FER2013 odds: as the model learned them from FER2013, "
                      "where a quarter of the faces are happy and one in seventy disgusted.")
        if os.environ.get("FER_LAB_REPLICA"):  # set by deploy/: which replica holds this session
            st.caption(f"Served by replica {os.environ['FER_LAB_REPLICA']}")
    return Selection(st.session_state["model"], st.session_state["detector"], chosen_odds())


def require_model(chosen: Selection) -> str:
    """The chosen model's name; stops the page with a hint when no model is stored."""
    if chosen.model is None:
        st.info("No model is stored yet: train one on the Train page first.")
        st.stop()
    return chosen.model


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def _stored_classifier(path: str, modified: float) -> tuple[EmotionClassifier, ModelCard]:
    """A stored model loaded once per file version (``modified`` changes when it is retrained), with its
    training odds, and its card."""
    stored = ModelStore().load(path)
    return EmotionClassifier.from_stored(stored, odds="fer2013"), stored.card


@st.cache_resource(max_entries=16)
def _classifier(path: str, modified: float, odds: str) -> tuple[EmotionClassifier, Preprocessing, str]:
    """The stored model read with ``odds``: one object per model version and odds, so that a live stream
    sees the same classifier on every rerun (a copy sharing the loaded model)."""
    classifier, card = _stored_classifier(path, modified)
    return classifier.with_prior_shift(shift_for(card, odds)), card.preprocessing, card.name


@st.cache_resource(show_spinner="Loading the face detector...")
def _detector(name: str, live: bool) -> FaceDetector:
    """A face detector loaded once per server for each name and setting (live or full)."""
    return get_detector(name, live=live)


def chosen_odds() -> str:
    """The odds chosen in the sidebar (one of ``fer_core.inference.odds.ODDS``)."""
    return st.session_state.get("odds", ODDS[0])


def load_classifier(model: str, thorough: bool = False, odds: str | None = None
                    ) -> tuple[EmotionClassifier, Preprocessing, str]:
    """The compiled classifier of a stored model, its preprocessing and name, loaded once per server;
    ``thorough`` gives it shifted views too (a copy sharing the loaded model). It reads faces with
    ``odds``, by default those chosen in the sidebar."""
    path = ModelStore().resolve(model)
    classifier, preprocessing, name = _classifier(str(path), model_version(model), odds or chosen_odds())
    return (classifier.with_views(shift_tta=True) if thorough else classifier), preprocessing, name


def model_version(model: str) -> float:
    """When a stored model last changed: its file's modification time, or its card's where that is later
    (retrained, or calibrated: ``python -m fer_core calibrate`` writes only the card)."""
    path = ModelStore().resolve(model)
    card = path.with_suffix(".json")
    return max(path.stat().st_mtime, card.stat().st_mtime if card.exists() else 0.0)


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
