"""Ensembles: averaging stored models into one, stored in float16 and served like any model."""

import io
import json
import zipfile

import h5py
import numpy as np
import pytest
from conftest import synthetic_dataset, write_fer_csv

from fer_core.cli import main
from fer_core.explain import grad_cam
from fer_core.models import build_augmentation, build_ensemble, build_model, copy_in_precision, with_augmentation
from fer_core.predict import EmotionClassifier


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return np.random.default_rng(1).random((16, 48, 48, 1), dtype=np.float32)


def test_ensemble_outputs_the_mean_of_its_members(faces):
    first = copy_in_precision(build_model("ds_cnn"), "ds_cnn", name="first")
    second = copy_in_precision(build_model("mini_xception"), "mini_xception", name="second")
    ensemble = build_ensemble([first, second])
    expected = (first.predict(faces, verbose=0) + second.predict(faces, verbose=0)) / 2
    np.testing.assert_allclose(ensemble.predict(faces, verbose=0), expected, atol=1e-6)
    assert ensemble.count_params() == first.count_params() + second.count_params()


def test_ensemble_needs_two_distinctly_named_members_of_one_input_size():
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble([build_model("ds_cnn")])
    with pytest.raises(ValueError, match="distinct names"):
        build_ensemble([build_model("ds_cnn"), build_model("ds_cnn")])
    with pytest.raises(ValueError, match="different inputs"):
        build_ensemble([build_model("ds_cnn"), build_model("mini_xception", (64, 64, 1))])


def test_float16_copy_keeps_the_predictions(faces):
    model = build_model("fer_vgg")
    half = copy_in_precision(model, "fer_vgg", "float16")
    assert {variable.dtype for variable in half.weights} == {"float16"}
    predictions = half.predict(faces, verbose=0)
    assert predictions.dtype == np.float32  # the softmax stays float32
    np.testing.assert_allclose(predictions, model.predict(faces, verbose=0), atol=2e-3)


def test_ensemble_command_stores_a_float16_ensemble_with_its_members_card(model_store, fer_csv, faces, capsys):
    for name, training in (("default", {"minutes": 12.0}), ("tiny", {"minutes": 5.0, "total_minutes": 45.0})):
        stored = model_store.load(name)
        model_store.save(name, stored.model, {**stored.card, "training": {"data": "none", **training}})
    assert main(["ensemble", "default", "tiny", "--name", "pair", "--data", str(fer_csv)]) == 0
    assert "saved pair: validation accuracy" in capsys.readouterr().out
    card = model_store.card("pair")
    assert card["arch"] == "ensemble" and card["weights_dtype"] == "float16"
    assert [member["name"] for member in card["training"]["members"]] == ["default", "tiny"]
    # each member's whole training, a fine-tuned one's start included
    assert [member["minutes"] for member in card["training"]["members"]] == [12.0, 45.0]
    assert card["training"]["minutes"] == 57.0
    assert card["metrics"]["n"] == 21 and card["metrics"]["usage"] == ["PublicTest"]
    assert card["reproduce"].endswith("python -m fer_core ensemble default tiny --name pair --data " + str(fer_csv))
    members = [model_store.load(name).model for name in ("default", "tiny")]
    assert card["parameters"] == sum(member.count_params() for member in members)

    stored = model_store.load("pair")
    assert stored.lite is not None
    with zipfile.ZipFile(stored.path) as archive:  # float16 weights, deflated
        assert archive.getinfo("model.weights.h5").compress_type == zipfile.ZIP_DEFLATED
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
            dtypes = set()
            weights.visititems(lambda _, item: dtypes.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
    assert dtypes == {"float16"}
    expected = np.mean([member.predict(faces, verbose=0) for member in members], axis=0)
    for backend in ("litert", "tensorflow"):
        classifier = EmotionClassifier.from_stored(stored, flip_tta=False, backend=backend)
        np.testing.assert_allclose(classifier(faces), expected, atol=5e-3)
    heat, explained = grad_cam(stored.model, faces[0])
    assert heat.shape == (48, 48) and heat.min() >= 0.0 and heat.max() <= 1.0
    assert explained == int(np.argmax(stored.model.predict(faces[:1], verbose=0)))


@pytest.mark.parametrize(("arguments", "message"), [
    (["default"], "at least two different models"),
    (["default", "default"], "at least two different models"),
    (["default", "{root}/default.keras"], "at least two different models"),
    (["default", "pair"], "not a single network"),
    (["default", "nothing"], "no model 'nothing'"),
    (["default", "tiny", "--name", "tiny"], "cannot replace its member 'tiny'"),
    (["default", "{root}/tiny.keras", "--name", "tiny"], "cannot replace its member 'tiny'"),
    (["default", "tiny", "--name", "no/slash"], "invalid model name"),
    (["default", "wide"], "prepare faces differently"),
])
def test_ensemble_command_rejects_bad_members_and_names(model_store, fer_csv, capsys, arguments, message):
    card = json.loads(model_store.root.joinpath("tiny.json").read_text())
    model_store.save("pair", model_store.load("tiny").model, {**card, "arch": "ensemble"})
    model_store.save("wide", model_store.load("tiny").model, {**card, "preprocessing": {"size": 48, "margin": 0.2}})
    arguments = [argument.format(root=model_store.root) for argument in arguments]
    if "--name" not in arguments:
        arguments += ["--name", "other"]
    assert main(["ensemble", *arguments, "--data", str(fer_csv)]) == 2
    assert message in capsys.readouterr().err
    assert not model_store.root.joinpath("other.keras").exists()


def test_without_public_test_rows_the_members_validation_split_is_required(model_store, tmp_path, capsys):
    path = tmp_path / "training_only.csv"
    write_fer_csv(path, *synthetic_dataset(70))
    assert main(["ensemble", "default", "tiny", "--name", "pair", "--data", str(path)]) == 2
    assert "validated on different or unknown random splits" in capsys.readouterr().err
    for name in ("default", "tiny"):
        stored = model_store.load(name)
        model_store.save(name, stored.model, {**stored.card, "training": {"data": "x", "recipe": {"seed": 3}}})
    assert main(["ensemble", "default", "tiny", "--name", "pair", "--data", str(path)]) == 0
    assert model_store.card("pair")["metrics"]["n"] == 7  # the members' 10% split of seed 3


def test_grad_cam_of_a_network_inside_a_training_model_skips_the_augmentation(faces):
    base = build_model("ds_cnn")
    heat, explained = grad_cam(with_augmentation(base, build_augmentation(seed=0)), faces[0])
    assert heat.shape == (48, 48)
    assert explained == int(np.argmax(base.predict(faces[:1], verbose=0)))
