import json
import re
import shutil
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest

from fer_core.base.errors import ModelNotFoundError, SettingError
from fer_core.base.labels import EMOTIONS
from fer_core.faces.preprocess import Preprocessing
from fer_core.registry.cards import SCHEMA_VERSION, ModelCard, Training
from fer_core.registry.store import SHIPPED_MANIFEST, ModelStore, check_name

#: A card as versions before ``schema_version`` wrote it (no total minutes, weights type, backend nor
#: hashes), with a key of some other version beside.
VERSION_1_CARD = {
    "arch": "mini_xception", "description": "an older card", "labels": list(EMOTIONS), "input_size": [48, 48, 1],
    "preprocessing": {"size": 48, "margin": 0.0, "equalize": False, "align": False}, "parameters": 58423,
    "training": {"data": "fer2013.csv.gz", "train_rows": 28709, "validation_rows": 3589,
                 "recipe": {"arch": "mini_xception", "seed": 0}, "precision": "float32", "epochs_run": 37,
                 "stopped": "early_stopping", "minutes": 20.1, "history": {"loss": [1.8, 1.5]}},
    "metrics": {"dataset": "fer2013.csv.gz", "usage": ["PublicTest"], "accuracy": 0.5871, "macro_f1": 0.5277, "n": 8,
                "per_class": {name: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for name in EMOTIONS},
                "confusion_matrix": [[int(i == j or (i, j) == (0, 1)) for j in range(7)] for i in range(7)],
                "flip_tta": {"accuracy": 0.6038, "macro_f1": 0.55}},
    "ms_per_face": 0.15, "created": "2025-01-01T00:00:00+00:00", "keras_version": "3.9.0",
    "reproduce": "python -m fer_core train --arch mini_xception", "name": "its_first_name", "file_bytes": 123,
    "a_later_key": {"anything": 1},
}


def store_with_card(store: ModelStore, card: object) -> str:
    """Store the ``tiny`` network again as ``other`` beside the card JSON ``card``; returns the name."""
    shutil.copyfile(store.resolve("tiny"), store.root / "other.keras")
    (store.root / "other.json").write_text(json.dumps(card))
    return "other"


def test_names_list_default_first_and_load(model_store):
    assert model_store.names() == ["default", "tiny"]
    stored = model_store.load("default")
    assert stored.name == "default" and stored.card.arch == "ds_cnn"
    assert stored.model.output_shape == (None, 7)
    assert model_store.cards()[1].arch == "mini_xception"


def test_store_follows_the_environment_variable(model_store):
    assert ModelStore().names() == ["default", "tiny"]


def test_load_by_path_and_card_written_beside(model_store):
    path = model_store.resolve("tiny")
    assert path.suffix == ".keras"
    assert model_store.load(str(path)).card.arch == "mini_xception"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["file_bytes"] == path.stat().st_size
    with zipfile.ZipFile(path) as archive:  # Keras writes it uncompressed; the store deflates it
        assert {entry.compress_type for entry in archive.infolist()} == {zipfile.ZIP_DEFLATED}


def test_missing_and_damaged_models(model_store, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model 'nope'.*default, tiny"):
        model_store.load("nope")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="not a loadable Keras model"):
        model_store.load(str(broken))


def test_names_are_checked():
    for bad in ("", "../evil", "a/b", "x" * 65, "name.keras"):
        with pytest.raises(ValueError):
            check_name(bad)
    assert check_name("mini_xception-2.v1") == "mini_xception-2.v1"


def test_unreadable_card_is_reported_not_raised_by_the_listing(model_store):
    model_store.resolve("tiny").with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="tiny.json: the model card is not readable JSON"):
        model_store.card("tiny")
    listed = {card.name: card for card in model_store.cards()}
    assert "not readable JSON" in listed["tiny"].error and listed["tiny"].metrics is None
    assert listed["default"].arch == "ds_cnn" and listed["default"].error is None


def test_a_card_of_the_first_version_loads_with_its_figures(model_store):
    card = model_store.card(store_with_card(model_store, VERSION_1_CARD))
    assert card.name == "other"  # the name it is stored under, whatever the file says
    assert (card.arch, card.parameters, card.preprocessing) == ("mini_xception", 58423, Preprocessing())
    assert (card.accuracy, card.flip_accuracy, card.macro_f1, card.faces_scored) == (0.5871, 0.6038, 0.5277, 8)
    assert card.recommends_flip and card.scored_on == "fer2013.csv.gz"
    assert card.training_minutes == 20.1  # before fine-tuning, a run's own minutes were its whole training
    assert card.training.seed == 0 and card.training.members == []
    assert (card.weights_dtype, card.sha256, card.inference_backend) == ("float32", {}, None)
    assert card.metrics.per_class["fear"].support == 1
    assert card.metrics.confusion_normalized[0] == [0.5, 0.5, 0, 0, 0, 0, 0]
    assert card.metrics.confusion_normalized[6][6] == 1.0


def kept(old: object, new: object) -> bool:
    """Whether ``new`` holds every value of ``old``, at any depth (it may hold more keys)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(key in new and kept(value, new[key]) for key, value in old.items())
    return old == new


def test_a_card_is_written_with_every_field_and_reads_back_the_same(model_store):
    card = model_store.card("tiny")
    written = json.loads(model_store.resolve("tiny").with_suffix(".json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION
    assert set(written) == {"schema_version"} | {f.name for f in fields(ModelCard)} - {"error"}
    assert set(written["training"]) == {f.name for f in fields(Training)}
    assert ModelCard.from_json(json.dumps(written), "tiny") == card

    # An older card rewritten keeps every value it had, and gains the fields it lacked.
    old = ModelCard.from_dict(VERSION_1_CARD, "its_first_name")
    rewritten = old.to_dict()
    for key, value in VERSION_1_CARD.items():
        if key == "a_later_key":
            assert key not in rewritten
        else:
            assert kept(value, rewritten[key]), key
    assert rewritten["training"]["total_minutes"] == 20.1 and rewritten["weights_dtype"] == "float32"
    assert ModelCard.from_dict(rewritten, "its_first_name") == old


@pytest.mark.parametrize(("change", "message"), [
    ({"metrics": {**VERSION_1_CARD["metrics"], "accuracy": "high"}}, "card's metrics.accuracy is not a number"),
    ({"metrics": {**VERSION_1_CARD["metrics"], "confusion_matrix": [[1, 2]]}},
     "card's metrics.confusion_matrix is not a square table"),
    ({"metrics": {"accuracy": 0.5}}, "card has no metrics.macro_f1"),
    ({"training": {"members": [{"arch": "fer_vgg"}]}}, "card has no training.members[0].name"),
    ({"parameters": 1.5}, "card's parameters is not a whole number"),
    ({"schema_version": SCHEMA_VERSION + 1}, f"card is of schema version {SCHEMA_VERSION + 1}, newer than this"),
])
def test_a_card_with_a_wrong_value_is_reported_by_key_and_listed_as_an_error(model_store, change, message):
    name = store_with_card(model_store, {**VERSION_1_CARD, **change})
    with pytest.raises(ModelNotFoundError, match=re.escape(f"other.json: the model {message}")):
        model_store.card(name)
    listed = {card.name: card for card in model_store.cards()}
    assert listed["other"].error and listed["tiny"].error is None


def test_a_card_that_is_not_an_object_and_a_model_without_a_card(model_store, tmp_path):
    with pytest.raises(ModelNotFoundError, match="other.json: the model card is not a JSON object"):
        model_store.card(store_with_card(model_store, [VERSION_1_CARD]))
    bare = tmp_path / "bare.keras"
    shutil.copyfile(model_store.resolve("tiny"), bare)
    card = model_store.card(str(bare))
    assert (card.name, card.arch, card.labels, card.metrics) == ("bare", "unknown", list(EMOTIONS), None)


def test_delete_removes_the_card_first_then_the_model_files(model_store, monkeypatch):
    keras_file = model_store.resolve("tiny")
    keras_file.with_suffix(".tflite").write_bytes(b"flatbuffer")
    removed = []
    unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink",
                        lambda path, missing_ok=False: removed.append(path.name) or unlink(path, missing_ok))
    model_store.delete("tiny")
    assert removed == ["tiny.json", "tiny.keras", "tiny.tflite"]  # unlisted before its files go
    assert model_store.names() == ["default"] and not list(model_store.root.glob("tiny.*"))
    with pytest.raises(ModelNotFoundError, match="no model 'tiny'"):
        model_store.delete("tiny")
    with pytest.raises(SettingError, match="invalid model name"):
        model_store.delete("../models/default")


def test_shipped_models_are_named_with_their_hash_and_cannot_be_deleted(model_store):
    assert model_store.shipped() == set()  # a folder without the manifest ships nothing
    manifest = model_store.root / SHIPPED_MANIFEST
    default_hash = model_store.card("default").sha256["keras"]
    manifest.write_text(json.dumps({"default": default_hash, "tiny": "0" * 64, "gone": default_hash}))
    assert model_store.shipped() == {"default"}  # tiny was stored again since it shipped; gone is not stored
    assert "_shipped" not in model_store.names()
    with pytest.raises(SettingError, match="'default' ships with FER Lab and cannot be deleted"):
        model_store.delete("default")
    assert model_store.names() == ["default", "tiny"]
    model_store.resolve("default").with_suffix(".json").write_text("{not json")
    assert model_store.shipped() == {"default"}  # a damaged card does not say it changed
    model_store.delete("tiny")
    for text, message in (("[]", "must map each shipped model's name"), ("{", "not a readable list")):
        manifest.write_text(text)
        with pytest.raises(SettingError, match=message):
            model_store.delete("default")
