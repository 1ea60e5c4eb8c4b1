"""The models that ship in ``models/``: each has its full card, written as this version writes
cards, the LiteRT file saved with it, and fits the size limits (the default at most 5 MB, any at
most 20 MB). Reads files only: no network runs."""

import json

import pytest

from fer_core.base.labels import EMOTIONS
from fer_core.registry.store import DEFAULT_NAME, PROJECT_MODELS, SHIPPED_MANIFEST, ModelStore
from fer_core.training.networks import ARCHITECTURES

SHIPPED = ModelStore(PROJECT_MODELS)
RESEARCH_ARCHITECTURES = ("mini_xception", "ds_cnn", "simple_cnn", "alexnet_small", "modified_cnn")


def test_the_default_and_every_research_architecture_ship():
    assert {DEFAULT_NAME, *RESEARCH_ARCHITECTURES} <= set(SHIPPED.names())


@pytest.mark.parametrize("name", SHIPPED.names())
def test_shipped_model_has_its_card_and_lite_file_within_the_size_limit(name):
    card = SHIPPED.card(name)
    # every field, in this version's layout: a card of an older one is rewritten through fer_core.registry.cards
    assert SHIPPED.resolve(name).with_suffix(".json").read_text() == card.to_json()
    assert card.labels == list(EMOTIONS)
    assert card.arch in (*ARCHITECTURES, "ensemble")
    metrics = card.metrics
    assert metrics.usage == ["PublicTest"] and metrics.n == 3589
    assert 0.0 < metrics.accuracy < 1.0 and set(metrics.per_class) == set(EMOTIONS)
    assert sum(map(sum, metrics.confusion_matrix)) == metrics.n
    assert card.parameters > 0 and card.ms_per_face > 0 and card.training.minutes > 0 and card.training_minutes > 0
    assert card.reproduce.startswith("python -m fer_core ")
    stored = SHIPPED.load(name)
    assert stored.lite is not None, "the .tflite file is not the one saved with the .keras file"
    limit = 5_000_000 if name == DEFAULT_NAME else 20_000_000
    keras_file = SHIPPED.resolve(name)
    assert keras_file.stat().st_size <= limit and len(stored.lite) <= limit


def test_the_manifest_names_every_shipped_model_with_its_hash():
    """What the app refuses to delete: a model stored here again needs its new hash in the manifest."""
    listed = json.loads((PROJECT_MODELS / SHIPPED_MANIFEST).read_text())
    assert listed == {name: SHIPPED.card(name).sha256["keras"] for name in SHIPPED.names()}
    assert SHIPPED.shipped() == set(SHIPPED.names())
