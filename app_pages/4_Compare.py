"""Compare models: figures from their cards side by side, or re-evaluated on a labelled set you upload."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from fer_core.cards import Metrics
from fer_core.charts import confusion_matrix_figure, per_class_scores
from fer_core.data import FaceDataset, load_dataset, resolve_server_path, server_data_roots, spool_upload
from fer_core.errors import DataError
from fer_core.evaluate import card_metrics, evaluation_rows
from fer_core.store import ModelStore
from ui_common import load_classifier, sidebar, user_errors

if TYPE_CHECKING:
    from streamlit.runtime.uploaded_file_manager import UploadedFile

sidebar()
st.title("Compare models")
store = ModelStore()
names = store.names()
if len(names) < 2:
    st.info("Comparing needs at least two stored models; train another one on the Train page.")
    st.stop()
chosen = st.multiselect("Models", names, default=names[:2], key="compare_models")
if len(chosen) < 2:
    st.info("Choose two or more models.")
    st.stop()
cards = {name: store.card_or_error(name) for name in chosen}
for card in cards.values():
    if card.error:
        st.warning(card.error)


def evaluate_models(models: list[str], dataset: FaceDataset) -> dict[str, Metrics]:
    """Each model's evaluation on the same labelled faces, measured as for its card."""
    results = {}
    for model in models:
        classifier, preprocessing, _ = load_classifier(model)
        results[model] = card_metrics(classifier, preprocessing, dataset)
    return results


def scored_rows(dataset: FaceDataset) -> tuple[FaceDataset, str]:
    """The rows to score, chosen as ``python -m fer_core evaluate`` does (PrivateTest rows if any, else
    PublicTest, else all), and which they are, e.g. "PrivateTest rows"."""
    rows = evaluation_rows(dataset)
    usages = rows.usages()
    test_split = len(usages) == 1 and usages[0] in ("PrivateTest", "PublicTest")
    return rows, f"{usages[0]} rows" if test_split else "all rows"


def read_labelled_set(upload: UploadedFile | None, path_text: str) -> FaceDataset:
    """The labelled faces of an upload (spooled to a temporary file, deleted at once) or of a path inside
    the server's data folders (``FER_LAB_DATA_DIR``)."""
    if upload is not None:
        path = spool_upload(upload, Path(upload.name).suffix)
        try:
            dataset = load_dataset(path)
        finally:
            path.unlink(missing_ok=True)
        dataset.source = upload.name
        return dataset
    if path_text.strip():
        return load_dataset(resolve_server_path(path_text))
    raise DataError("choose a labelled set first: upload a file" + (" or give a path" if server_data_roots() else ""))


with st.expander("Re-evaluate on a labelled set of your own (optional)"):
    upload = st.file_uploader("FER2013 CSV (.csv or .csv.gz) or zip of class folders", type=["csv", "gz", "zip"],
                              key="compare_upload")
    roots = server_data_roots()  # none unless the server allows some: a visitor must not open any file
    path_text = (st.text_input(f"...or a path inside {', '.join(map(str, roots))}", key="compare_path")
                 if roots else "")
    st.caption("Scored are FER2013's PrivateTest rows if the set has any (faces no model here trained on), "
               "else its PublicTest rows, else all rows, as `python -m fer_core evaluate` does.")
    if st.button("Evaluate the chosen models", key="compare_evaluate"):
        with user_errors(), st.spinner("Evaluating..."):
            dataset, which = scored_rows(read_labelled_set(upload, path_text))
            st.session_state["compare_evaluation"] = {"data": f"{Path(dataset.source).name} ({which})",
                                                      "n": len(dataset), "metrics": evaluate_models(chosen, dataset)}

evaluation = st.session_state.get("compare_evaluation")
use_evaluation = (evaluation is not None and set(chosen) <= set(evaluation["metrics"])
                  and st.toggle(f"Show the evaluation on {evaluation['data']} ({evaluation['n']} faces) instead of "
                                "the cards' figures", True, key="compare_use_evaluation"))
if use_evaluation:
    metrics = {name: evaluation["metrics"][name] for name in chosen}
else:
    metrics = {name: card.metrics for name, card in cards.items() if card.metrics is not None}


def figures(name: str) -> dict:
    """A model's row of the table: its scores shown (the card's or the evaluation's) and its card's facts."""
    card, scores = cards[name], metrics.get(name)
    return {
        "model": name,
        "architecture": card.arch,
        "accuracy": None if scores is None else scores.accuracy,
        "with flip TTA": None if scores is None else scores.flip_accuracy,
        "macro-F1": None if scores is None else scores.macro_f1,
        "parameters": card.parameters,
        "ms per face": card.ms_per_face,
        "training data": card.training.data,
        "measured on": evaluation["data"] if use_evaluation else card.scored_on,
    }


table = pd.DataFrame([figures(name) for name in cards])
st.dataframe(table, hide_index=True, column_config={
    "accuracy": st.column_config.NumberColumn(format="percent"),
    "with flip TTA": st.column_config.NumberColumn(
        format="percent", help="Each face also read mirrored and the two answers averaged, as the app does "
                               "for models whose card shows that it helps."),
    "macro-F1": st.column_config.NumberColumn(format="%.3f"),
    "parameters": st.column_config.NumberColumn(format="localized"),
    "ms per face": st.column_config.NumberColumn(format="%.2f"),
})
missing = [name for name in chosen if name not in metrics]
if missing:
    st.caption(f"No stored evaluation for {', '.join(missing)}: re-evaluate on a labelled set above.")
if not metrics:
    st.stop()

st.subheader("Confusion matrices")
normalised = st.toggle("Normalised (share of each true class)", key="compare_normalised")
columns = st.columns(min(3, len(metrics)))
for index, (name, values) in enumerate(metrics.items()):
    with columns[index % len(columns)]:
        st.plotly_chart(confusion_matrix_figure(values, normalised, name), key=f"matrix-{name}")

st.subheader("Precision, recall and F1 per class")
st.plotly_chart(per_class_scores(metrics), key="per-class")
