"""Compare models: figures from their cards side by side, or re-evaluated on a labelled set you upload,
with the faces behind each cell of their confusion matrices and a shareable report of each."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from fer_core.base.errors import DataError
from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.load import load_dataset
from fer_core.evaluation.evaluate import CELL_PAGE, Evaluation, card_evaluation, evaluation_rows
from fer_core.evaluation.report import html_report
from fer_core.inference.odds import ODDS_LABELS
from fer_core.registry.cards import Metrics
from fer_core.registry.store import ModelStore
from fer_core.service.charts import clicked_cell, confusion_matrix_figure, per_class_scores
from fer_core.service.uploads import resolve_server_path, server_data_roots, spool_upload
from ui.display import show_explanation, user_errors
from ui.sidebar import explanation_choice, load_classifier, sidebar

if TYPE_CHECKING:
    from streamlit.runtime.uploaded_file_manager import UploadedFile

#: Faces in a row of a cell's grid.
FACES_PER_ROW = 8

odds = sidebar().odds
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


def evaluate_models(models: list[str], dataset: FaceDataset) -> tuple[dict[str, Metrics], dict[str, Evaluation]]:
    """Each model's scores on the same labelled faces, measured as for its card but with the sidebar's odds,
    and its answer for every face, kept to open the cells of its confusion matrix without predicting again."""
    metrics, evaluations = {}, {}
    for model in models:
        classifier, preprocessing, _ = load_classifier(model)
        metrics[model], evaluations[model] = card_evaluation(classifier, preprocessing, dataset)
    return metrics, evaluations


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
            scores, answers = evaluate_models(chosen, dataset)
            earlier = st.session_state.get("compare_evaluation", {}).get("number", 0)
            # "number" keys its charts, so that a new evaluation starts with no cell chosen.
            st.session_state["compare_evaluation"] = {"data": f"{Path(dataset.source).name} ({which})",
                                                      "n": len(dataset), "metrics": scores, "evaluations": answers,
                                                      "number": earlier + 1, "maps": {}, "odds": odds}
            st.session_state.pop("compare_cell", None)

evaluation = st.session_state.get("compare_evaluation")
if evaluation is not None and evaluation["odds"] != odds:
    st.info(f"The evaluation on {evaluation['data']} read faces with the other odds: press **Evaluate the chosen "
            f"models** for figures with the {ODDS_LABELS[odds]}.")
use_evaluation = (evaluation is not None and set(chosen) <= set(evaluation["metrics"]) and evaluation["odds"] == odds
                  and st.toggle(f"Show the evaluation on {evaluation['data']} ({evaluation['n']} faces, "
                                f"{ODDS_LABELS[odds]}) instead of the cards' figures (FER2013 odds)", True,
                                key="compare_use_evaluation"))
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
if use_evaluation:
    st.caption("A report of each model's evaluation, one HTML file to share: scores, confusion matrices and the "
               "most confident mistakes.")
    for column, name in zip(st.columns(len(chosen)), chosen):
        column.download_button(f"{name} report (HTML)", key=f"report-{name}", mime="text/html", on_click="ignore",
                               data=partial(html_report, evaluation["evaluations"][name], name, evaluation["data"]),
                               file_name=f"{name}_evaluation.html")
missing = [name for name in chosen if name not in metrics]
if missing:
    st.caption(f"No stored evaluation for {', '.join(missing)}: re-evaluate on a labelled set above.")
if not metrics:
    st.stop()


def chart_key(model: str) -> str:
    """The key of a model's confusion-matrix chart. An evaluation's charts carry its number, so that a new
    evaluation starts with no cell chosen."""
    return f"matrix-{model}-{evaluation['number']}" if use_evaluation else f"matrix-{model}"


def open_cell(model: str) -> None:
    """Open the cell just chosen on ``model``'s confusion matrix; choosing it again closes it."""
    cell = clicked_cell(st.session_state.get(chart_key(model)))
    if cell is not None:
        st.session_state["compare_cell"] = {"model": model, "cell": cell, "shown": CELL_PAGE}
    elif st.session_state.get("compare_cell", {}).get("model") == model:
        del st.session_state["compare_cell"]


def show_more() -> None:
    """Show the next page of the open cell's faces."""
    st.session_state["compare_cell"]["shown"] += CELL_PAGE


def top_probabilities(probabilities: np.ndarray, count: int = 3) -> str:
    """A face's ``count`` most probable classes, e.g. "Happy 81%, Neutral 12%, Sad 4%"."""
    return ", ".join(f"{DISPLAY_NAMES[EMOTIONS[code]]} {probabilities[code]:.0%}"
                     for code in np.argsort(-probabilities)[:count])


def explanation(model: str, row: int, face: np.ndarray, label: str, method: str) -> np.ndarray:
    """The ``method`` map of why ``model`` answered ``label`` for a face of the evaluated set, made
    once per face and method and kept with the evaluation."""
    maps = evaluation["maps"]
    key = (model, row, method)
    if key not in maps:
        from fer_core.inference.explain import explain_cropped  # loads Keras and TensorFlow on first use

        classifier, preprocessing, _ = load_classifier(model)
        maps[key] = explain_cropped(classifier.model, face, preprocessing, label, method)
    return maps[key]


def show_cell(model: str, answers: Evaluation, true: int, predicted: int, shown: int) -> None:
    """The faces of one cell of ``model``'s confusion matrix: the most confident mistakes first (on the
    diagonal, the least confident correct answers), each with its most probable classes and, on
    request, the explanation of the model's answer."""
    faces = answers.cell(true, predicted, 0, shown)
    true_name, predicted_name = DISPLAY_NAMES[EMOTIONS[true]], DISPLAY_NAMES[EMOTIONS[predicted]]
    st.subheader(f"{model}: true {true_name} predicted as {predicted_name} ({len(faces.indices)} of {faces.total})")
    if not faces.total:
        st.info("No face of the evaluated set falls in this cell.")
        return
    st.caption("The least confident correct answers first." if true == predicted
               else "The most confident mistakes first.")
    explain = explanation_choice()
    for start in range(0, len(faces.indices), FACES_PER_ROW):
        for column, place in zip(st.columns(FACES_PER_ROW), range(start, len(faces.indices))):
            with column:
                st.image(faces.images[place], width="stretch", caption=top_probabilities(faces.probabilities[place]))
                if explain:
                    row = int(faces.indices[place])
                    show_explanation(explanation(model, row, faces.images[place], EMOTIONS[predicted], explain),
                                     explain, EMOTIONS[predicted], width="stretch")
    if faces.has_more:
        st.button(f"More (next {min(CELL_PAGE, faces.total - len(faces.indices))})", key="compare_more",
                  on_click=show_more)


st.subheader("Confusion matrices")
normalised = st.toggle("Normalised (share of each true class)", key="compare_normalised")
if use_evaluation:
    st.caption("Click a cell to see its faces; click it again to close them.")
columns = st.columns(min(3, len(metrics)))
for index, (name, values) in enumerate(metrics.items()):
    with columns[index % len(columns)]:
        figure = confusion_matrix_figure(values, normalised, name)
        if use_evaluation:
            st.plotly_chart(figure, key=chart_key(name), on_select=partial(open_cell, name), selection_mode="points")
        else:
            st.plotly_chart(figure, key=chart_key(name))
opened = st.session_state.get("compare_cell")
if use_evaluation and opened is not None and opened["model"] in metrics:
    show_cell(opened["model"], evaluation["evaluations"][opened["model"]], *opened["cell"], opened["shown"])

st.subheader("Precision, recall and F1 per class")
st.plotly_chart(per_class_scores(metrics), key="per-class")
