"""Plotly figures shared by the app's pages: probabilities, emotions over time, training curves,
confusion matrices and per-class scores. Figures only; no Streamlit here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fer_core.base.labels import COLORS_RGB, DISPLAY_NAMES, EMOTIONS
from fer_core.registry.cards import Metrics

#: Class colours as CSS strings, keyed by display name (the names the charts show).
COLOR_MAP = {DISPLAY_NAMES[name]: "rgb({}, {}, {})".format(*COLORS_RGB[name]) for name in EMOTIONS}
NAMES = [DISPLAY_NAMES[name] for name in EMOTIONS]


def probability_bars(probabilities: dict[str, float], title: str | None = None, height: int = 260) -> go.Figure:
    """Horizontal bars of the seven class probabilities, in the class colours.

    Built from graph objects: plotly express takes some 50 ms of CPU per figure, graph objects about 1 ms."""
    values = [probabilities[name] for name in EMOTIONS][::-1]  # the first class on top
    bars = go.Bar(x=values, y=NAMES[::-1], orientation="h", marker_color=[COLOR_MAP[name] for name in NAMES[::-1]],
                  text=[f"{value:.0%}" for value in values], textposition="auto",
                  hovertemplate="%{y}: %{x:.1%}<extra></extra>")
    return go.Figure(bars, layout=dict(
        title=title, height=height, showlegend=False, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        xaxis=dict(range=[0, 1], tickformat=".0%", title=None), yaxis=dict(title=None)))


def emotions_over_time(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Lines of each class probability against time, from a table with ``time`` and one column per class."""
    long = table.melt(id_vars="time", value_vars=list(EMOTIONS), var_name="emotion", value_name="probability")
    long["emotion"] = long["emotion"].map(DISPLAY_NAMES)
    figure = px.line(long, x="time", y="probability", color="emotion", color_discrete_map=COLOR_MAP,
                     markers=True, title=title, labels={"time": "time (s)"})
    figure.update_layout(yaxis=dict(range=[0, 1], tickformat=".0%"), hovermode="x unified")
    return figure


def training_curves(history: list[dict]) -> go.Figure:
    """Loss and accuracy per epoch, training and validation, side by side."""
    frame = pd.DataFrame(history, columns=["epoch", "loss", "accuracy", "val_loss", "val_accuracy"])
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for column, (key, name) in enumerate((("loss", "loss"), ("accuracy", "accuracy")), start=1):
        for prefix, label, dash in (("", "training", "solid"), ("val_", "validation", "dash")):
            figure.add_trace(go.Scatter(x=frame["epoch"], y=frame[prefix + key], mode="lines+markers",
                                        name=f"{label} {name}", line=dict(dash=dash)), row=1, col=column)
    figure.update_xaxes(title_text="epoch", dtick=1 if len(frame) < 15 else None)
    figure.update_yaxes(tickformat=".0%", row=1, col=2)
    figure.update_layout(height=330, margin=dict(t=40, b=0), legend=dict(orientation="h", y=-0.25))
    return figure


def confusion_matrix_figure(metrics: Metrics, normalised: bool = False, title: str | None = None) -> go.Figure:
    """Heat map of a model's confusion matrix (rows true, columns predicted): counts, or shares of
    the true class. The hover shows both.

    A click on a heat map is not reported to a selection (Plotly selects points, and Streamlit's
    ``on_select`` hears of no heat-map click), so an invisible marker lies on each cell, with the
    cell's true and predicted class codes as its ``customdata``: a click anywhere selects the
    nearest cell, which turns red.
    """
    counts = pd.DataFrame(metrics.confusion_matrix, index=NAMES, columns=NAMES)
    shares = pd.DataFrame(metrics.confusion_normalized, index=NAMES, columns=NAMES, dtype=float)
    shown = shares if normalised else counts
    figure = px.imshow(shown, text_auto=".0%" if normalised else "d", color_continuous_scale="Blues",
                       labels=dict(x="predicted", y="true", color="share" if normalised else "faces"),
                       zmin=0, zmax=1 if normalised else None, title=title, aspect="equal")
    figure.update_traces(hoverinfo="skip", hovertemplate=None)  # the cells' markers show the hover
    true, predicted = (codes.ravel() for codes in np.indices(counts.shape))
    figure.add_trace(go.Scatter(
        x=[NAMES[code] for code in predicted], y=[NAMES[code] for code in true], mode="markers",
        marker=dict(symbol="square", size=30, color="rgba(0, 0, 0, 0)"),
        selected=dict(marker=dict(color="rgba(214, 39, 40, 0.45)")), showlegend=False,
        # a list, not an array: Plotly would send an array as binary, which reaches the selection as {"0": ...}
        customdata=np.column_stack([true, predicted, counts.to_numpy().ravel(), shares.to_numpy().ravel()]).tolist(),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[2]} faces "
                      "(%{customdata[3]:.1%} of the true class)<extra></extra>"))
    figure.update_layout(margin=dict(l=0, r=0, t=40 if title else 10, b=0), coloraxis_showscale=False,
                         hoverdistance=-1)
    return figure


def clicked_cell(selection: dict | None) -> tuple[int, int] | None:
    """The (true, predicted) class codes of the cell chosen in a :func:`confusion_matrix_figure`,
    from Streamlit's selection state of the chart (None when no cell is chosen)."""
    points = ((selection or {}).get("selection") or {}).get("points") or []
    cells = [point["customdata"] for point in points if point.get("customdata")]
    if not cells:
        return None
    true, predicted = cells[-1][:2]
    return int(true), int(predicted)


def per_class_scores(metrics_by_model: dict[str, Metrics]) -> go.Figure:
    """Grouped bars of precision, recall and F1 per class, one colour per model."""
    rows = [{"model": model, "emotion": DISPLAY_NAMES[name], "metric": metric, "value": getattr(scores, metric)}
            for model, metrics in metrics_by_model.items()
            for name, scores in metrics.per_class.items()
            for metric in ("precision", "recall", "f1")]
    figure = px.bar(pd.DataFrame(rows), x="emotion", y="value", color="model", barmode="group",
                    facet_row="metric", category_orders={"emotion": NAMES, "metric": ["precision", "recall", "f1"]},
                    height=620)
    figure.update_yaxes(range=[0, 1], tickformat=".0%", title=None)
    figure.for_each_annotation(lambda annotation: annotation.update(text=annotation.text.split("=")[-1]))
    return figure
