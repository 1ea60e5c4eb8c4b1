"""The shareable HTML report: self-contained (nothing fetched from a network), with the matrix and the mistakes."""

import base64
import io
from html.parser import HTMLParser

import numpy as np
from conftest import synthetic_dataset
from PIL import Image

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.evaluate import Evaluation
from fer_core.evaluation.report import html_report

PNG_PREFIX = "data:image/png;base64,"


class _Page(HTMLParser):
    """What a browser would load or run from the page, and the counts table's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.image_sources: list[str] = []
        self.addresses: list[str] = []
        self.counts: list[list[str]] = []
        self._in_counts = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.image_sources.append(attributes.get("src") or "")
        self.addresses += [value for name, value in attrs if name in ("href", "src", "srcset", "action") and value]
        if tag == "table":
            self._in_counts = attributes.get("id") == "counts"
        elif self._in_counts and tag == "tr":
            self.counts.append([])
        elif self._in_counts and tag == "td":
            self._in_cell = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_counts = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.counts[-1].append(data)


def _evaluation() -> Evaluation:
    """Synthetic faces, mostly predicted right, with some confident mistakes in several cells."""
    images, labels = synthetic_dataset(140)
    rng = np.random.default_rng(3)
    guesses = np.where(rng.random(140) < 0.7, labels, rng.integers(0, 7, 140))
    probabilities = rng.dirichlet(np.ones(7), 140) * 0.5
    probabilities[np.arange(140), guesses] += 0.5
    return Evaluation(FaceDataset(images, labels, np.array(["PrivateTest"] * 140)), probabilities)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _image(source: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.removeprefix(PNG_PREFIX)))))


def test_the_report_needs_no_network_and_no_script():
    html = html_report(_evaluation(), "ds_cnn", "faces.csv")
    page = _parse(html)
    assert page.tags[:3] == ["html", "head", "meta"]
    for address in ("http://", "https://", 'src="//', "href="):
        assert address not in html
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert page.image_sources and all(source.startswith(PNG_PREFIX) for source in page.image_sources)
    assert page.addresses == page.image_sources
    assert _image(page.image_sources[0]).shape == (48, 48)


def test_the_report_holds_the_matrix_and_each_cells_most_confident_mistakes():
    evaluation = _evaluation()
    page = _parse(html_report(evaluation, "ds_cnn", "faces.csv", mistakes_per_cell=2))
    matrix = evaluation.report.confusion_matrix
    # Each row of the counts table: the seven cells, then the row's total.
    assert page.counts[1:] == [[str(value) for value in row] + [str(sum(row))] for row in matrix]
    mistakes = [(true, predicted) for true in range(7) for predicted in range(7)
                if true != predicted and matrix[true][predicted]]
    assert len(page.image_sources) == sum(min(2, matrix[true][predicted]) for true, predicted in mistakes)
    shown = iter(page.image_sources)
    for true, predicted in mistakes:
        for face in evaluation.cell(true, predicted, count=2).images:
            np.testing.assert_array_equal(_image(next(shown)), face)


def test_the_report_escapes_names_and_shows_the_scores():
    evaluation = _evaluation()
    html = html_report(evaluation, "<b>model</b>", "faces & more.csv")
    assert "<b>model</b>" not in html and "&lt;b&gt;model&lt;/b&gt;" in html
    assert "faces &amp; more.csv" in html
    assert f"{evaluation.report.accuracy:.4f}" in html and f"{evaluation.report.macro_f1:.4f}" in html
    assert all(DISPLAY_NAMES[name] in html for name in EMOTIONS)
