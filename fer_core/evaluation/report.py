"""A shareable evaluation report: one self-contained HTML page that opens offline.

The page has inline CSS only, its faces are PNG data URIs, and it holds no script and no
external address, so it can be mailed, attached to an issue or opened years later as it is.
"""

from __future__ import annotations

import base64
from html import escape

import numpy as np

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.evaluation.evaluate import Evaluation, EvaluationReport
from fer_core.faces.images import encode_png

#: Thumbnails shown per off-diagonal cell: its most confident mistakes.
MISTAKES_PER_CELL = 8
#: Displayed size of the 48x48 faces, in CSS pixels.
THUMBNAIL_PX = 72

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 64em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; margin: 1.5em 0 .5em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f4f4f4; }
td.diagonal { outline: 2px solid #333; outline-offset: -2px; }
.faces { display: flex; flex-wrap: wrap; gap: .5em; }
figure { margin: 0; text-align: center; font-size: .8em; }
figure img { display: block; }
.note { color: #666; font-size: .9em; }
"""


def _name(code: int) -> str:
    return DISPLAY_NAMES[EMOTIONS[code]]


def _png_data_uri(face: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(face)).decode("ascii")


def _metrics_table(report: EvaluationReport) -> str:
    return ("<table><tr><th>accuracy</th><th>macro-F1</th><th>faces</th></tr>"
            f"<tr><td>{report.accuracy:.4f}</td><td>{report.macro_f1:.4f}</td><td>{report.n}</td></tr></table>")


def _per_class_table(report: EvaluationReport) -> str:
    rows = "".join(
        f"<tr><th>{escape(DISPLAY_NAMES[name])}</th><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td>"
        f"<td>{row['f1']:.4f}</td><td>{row['support']}</td></tr>"
        for name, row in report.per_class.items())
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>faces</th></tr>"
            f"{rows}</table>")


def _matrix_cell(text: str, share: float, diagonal: bool) -> str:
    """A cell of the confusion matrix, shaded blue as deep as its row ``share`` (0-1)."""
    colour = "#fff" if share > 0.55 else "#222"
    marker = ' class="diagonal"' if diagonal else ""
    return f'<td{marker} style="background: rgba(31, 119, 180, {share:.3f}); color: {colour}">{text}</td>'


def _matrix_table(report: EvaluationReport, normalised: bool) -> str:
    """The confusion matrix (rows: true class, columns: predicted), cells shaded by their row share."""
    shares = report.confusion_normalized
    header = "".join(f"<th>{escape(_name(code))}</th>" for code in range(len(EMOTIONS)))
    rows = []
    for true, counts in enumerate(report.confusion_matrix):
        cells = "".join(
            _matrix_cell(f"{shares[true][predicted]:.2f}" if normalised else str(count), shares[true][predicted],
                         true == predicted)
            for predicted, count in enumerate(counts))
        rows.append(f"<tr><th>{escape(_name(true))}</th>{cells}<td>{sum(counts)}</td></tr>")
    table_id = "normalised" if normalised else "counts"
    return (f"<table id=\"{table_id}\"><tr><th>true \\ predicted</th>{header}<th>faces</th></tr>"
            f"{''.join(rows)}</table>")


def _mistakes(evaluation: Evaluation, per_cell: int) -> str:
    """For each off-diagonal cell with faces, its ``per_cell`` most confident mistakes as thumbnails."""
    sections = []
    for true, counts in enumerate(evaluation.report.confusion_matrix):
        for predicted, count in enumerate(counts):
            if true == predicted or count == 0:
                continue
            page = evaluation.cell(true, predicted, 0, per_cell)
            figures = "".join(
                f"<figure><img src=\"{_png_data_uri(face)}\" width=\"{THUMBNAIL_PX}\" height=\"{THUMBNAIL_PX}\" "
                f"alt=\"a {escape(_name(true))} face\"><figcaption>{confidence:.0%} "
                f"{escape(_name(predicted))}</figcaption></figure>"
                for face, confidence in zip(page.images, page.confidence))
            shown = f", the {len(page.indices)} most confident shown" if page.has_more else ""
            sections.append(f"<h3>{escape(_name(true))} predicted as {escape(_name(predicted))}: "
                            f"{page.total} face{'s' if page.total != 1 else ''}{shown}</h3>"
                            f"<div class=\"faces\">{figures}</div>")
    return "".join(sections) or "<p>No mistakes.</p>"


def html_report(evaluation: Evaluation, model_name: str, data_description: str, *,
                mistakes_per_cell: int = MISTAKES_PER_CELL) -> str:
    """One self-contained HTML page of a model's evaluation: its scores, per-class precision/recall/F1,
    the confusion matrix in counts and by row share, and each off-diagonal cell's most confident
    mistakes as thumbnails captioned with the predicted class's probability."""
    report = evaluation.report
    title = f"{model_name} on {data_description}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="note">Evaluation report made by FER Lab: model {escape(model_name)}, {report.n} labelled faces from
{escape(data_description)}.</p>
<h2>Scores</h2>
{_metrics_table(report)}
<h2>Per class</h2>
{_per_class_table(report)}
<h2>Confusion matrix</h2>
<p class="note">Rows: true class; columns: predicted class; cells shaded by their share of the row.</p>
<h3>Faces</h3>
{_matrix_table(report, normalised=False)}
<h3>Share of each row (recall on the diagonal)</h3>
{_matrix_table(report, normalised=True)}
<h2>Most confident mistakes</h2>
<p class="note">For each pair of true and predicted classes, the faces the model was surest of, most sure first;
the caption gives the probability of the predicted class.</p>
{_mistakes(evaluation, mistakes_per_cell)}
</body>
</html>
"""
