import json
import zipfile

import pytest

from fer_core.errors import ModelNotFoundError
from fer_core.store import ModelStore, check_name


def test_names_list_default_first_and_load(model_store):
    assert model_store.names() == ["default", "tiny"]
    stored = model_store.load("default")
    assert stored.name == "default" and stored.card["arch"] == "ds_cnn"
    assert stored.model.output_shape == (None, 7)
    assert model_store.cards()[1]["arch"] == "mini_xception"


def test_store_follows_the_environment_variable(model_store):
    assert ModelStore().names() == ["default", "tiny"]


def test_load_by_path_and_card_written_beside(model_store):
    path = model_store.resolve("tiny")
    assert path.suffix == ".keras"
    assert model_store.load(str(path)).card["arch"] == "mini_xception"
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
    listed = {card["name"]: card for card in model_store.cards()}
    assert "error" in listed["tiny"] and listed["default"]["arch"] == "ds_cnn"
