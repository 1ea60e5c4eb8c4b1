"""FER Lab: facial emotion recognition in the browser. Start with ``streamlit run app.py``."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

# aiortc's libsrtp must initialise before TensorFlow is loaded: the other way round the process crashes
# (segmentation fault in srtp_init). The Live webcam page needs it, so it is loaded first, here.
import streamlit_webrtc  # noqa: F401, I001

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.registry.store import ModelStore
from fer_core.service.threads import cap_training_threads, training_threads
from ui.display import PRIVACY_NOTE, key_figures, user_errors
from ui.sidebar import sidebar

# The pages live in app_pages/, not pages/: Streamlit runs any script in a pages/ folder on its own
# (without this file's navigation, page settings and import order) when it is the first one opened.
PAGES = {
    "live": st.Page("app_pages/1_Live_webcam.py", title="Live webcam", icon=":material/videocam:"),
    "upload": st.Page("app_pages/2_Upload.py", title="Photos and videos", icon=":material/upload:"),
    "train": st.Page("app_pages/3_Train.py", title="Train", icon=":material/model_training:"),
    "compare": st.Page("app_pages/4_Compare.py", title="Compare models", icon=":material/compare:"),
    "class_faces": st.Page("app_pages/5_Class_faces.py", title="Class faces", icon=":material/face:"),
}
RESPONSIBLE_USE = (
    "Responsible use: FER Lab reads facial *expressions*, not feelings; posed and cultural differences fool it, "
    "and FER2013's faces are not balanced across ages, genders and skin tones. Record only volunteers, who see "
    "the counter. It is for learning, not for assessing or monitoring students or workers (in the EU that is "
    "prohibited in schools and workplaces, AI Act art. 5(1)(f)); more in the README.")


def home() -> None:
    """What the app does, the active model's key figures, the privacy note and the way in."""
    st.title("FER Lab")
    st.write(
        "FER Lab finds faces in a webcam stream, photos and videos and tells which of seven emotions each "
        f"face shows ({', '.join(DISPLAY_NAMES[name] for name in EMOTIONS)}), with networks trained on "
        "FER2013. You can also train your own networks, compare them, and fine-tune one on your class's faces."
    )
    chosen = sidebar()
    if chosen.model is None:
        st.info("No model is stored yet: train one on the Train page, or with `python -m fer_core train`.")
    else:
        st.subheader(f"Active model: {chosen.model}")
        with user_errors():
            card = ModelStore().card(chosen.model)
            st.caption(f"{card.arch}: {card.description}")
            key_figures(card, chosen.odds)
            if card.training.data:
                st.caption(f"Trained on {card.training.data}; figures measured on "
                           f"{card.faces_scored or 'its'} validation faces.")
    st.info(PRIVACY_NOTE, icon=":material/lock:")
    st.info(RESPONSIBLE_USE, icon=":material/front_hand:")
    st.subheader("Pages")
    for page, text in zip(PAGES.values(), (
        "your webcam, analysed live in the browser (or a snapshot)",
        "several photos at once, or a video, with charts and downloads",
        "train a network on FER2013 or your own labelled faces",
        "models side by side: accuracy, confusion matrices, per-class scores",
        "record your class's faces per emotion and fine-tune a model on them, before and after",
    )):
        st.page_link(page, label=f"{page.title}: {text}", icon=page.icon)


# A file of our own: a Material icon as the favicon makes every browser fetch it from Google's font server.
@st.cache_resource
def cap_trainings() -> bool:
    """Once per server process, before TensorFlow loads: trainings run here (with no Redis queue) leave the
    live streams their cores."""
    return cap_training_threads(training_threads())


with user_errors():  # a wrong FER_LAB_WORKER_THREADS is said on every page
    cap_trainings()
st.set_page_config(page_title="FER Lab", page_icon=str(Path(__file__).parent / "ui" / "favicon.png"), layout="wide")
st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True), *PAGES.values()]).run()
