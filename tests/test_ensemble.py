"""Ensembles: averaging stored models into one, stored in float16 or int8 and served like any model."""

import io
import zipfile
from dataclasses import replace

import h5py
import numpy as np
import pytest
from conftest import synthetic_dataset, write_fer_csv

from fer_core.cli import main
from fer_core.faces.preprocess import Preprocessing
from fer_core.inference.explain import grad_cam
from fer_core.inference.predict import EmotionClassifier
from fer_core.registry.cards import Training
from fer_core.registry.layers import Int8Conv2D
from fer_core.training.networks import (
    build_augmentation,
    build_ensemble,
    build_model,
    copy_in_precision,
    int8_copy,
    with_augmentation,
)


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


def test_int8_copy_rounds_each_kernel_channel_to_int8_and_survives_the_store(model_store, faces):
    model = copy_in_precision(build_model("fer_vgg"), "fer_vgg", name="member")
    model.layers[1].set_weights([model.layers[1].get_weights()[0] * np.linspace(0, 2, 32)])  # a zero channel too
    compact = int8_copy(model)
    assert compact.name == "member"
    convolutions = [(s, t) for s, t in zip(model.layers, compact.layers, strict=True) if isinstance(t, Int8Conv2D)]
    assert len(convolutions) == 8
    for source, target in convolutions:
        kernel, scale = target.get_weights()[:2]
        assert kernel.dtype == np.int8 and np.abs(kernel).max() == 127
        error = np.abs(np.asarray(target.kernel) - source.get_weights()[0])
        assert np.all(error <= scale / 2 + 1e-6)  # rounding to the nearest step of each channel
    np.testing.assert_allclose(compact.predict(faces, verbose=0), model.predict(faces, verbose=0), atol=0.02)

    card = model_store.card("default")
    model_store.save("compact", compact, card)
    reloaded = model_store.load("compact").model
    assert {str(v.dtype) for layer in reloaded.layers if isinstance(layer, Int8Conv2D) for v in layer.weights} \
        == {"int8", "float32"}
    np.testing.assert_allclose(reloaded.predict(faces, verbose=0), compact.predict(faces, verbose=0), atol=1e-6)


@pytest.mark.parametrize(("weights", "stored_dtypes", "tolerance"), [
    ("float16", {"float16"}, 5e-3),
    ("int8", {"int8", "float32"}, 0.03),
])
def test_ensemble_command_stores_a_compact_ensemble_with_its_members_card(model_store, fer_csv, faces, capsys,
                                                                         weights, stored_dtypes, tolerance):
    for name, own, total in (("default", 12.0, 12.0), ("tiny", 5.0, 45.0)):
        stored = model_store.load(name)
        training = Training(data="none", minutes=own, total_minutes=total)
        model_store.save(name, stored.model, replace(stored.card, training=training))
    command = ["ensemble", "default", "tiny", "--name", "pair", "--data", str(fer_csv), "--weights", weights]
    assert main(command) == 0
    assert "saved pair: validation accuracy" in capsys.readouterr().out
    card = model_store.card("pair")
    assert card.arch == "ensemble" and card.weights_dtype == weights
    assert [member.name for member in card.training.members] == ["default", "tiny"]
    # each member's whole training, a fine-tuned one's start included
    assert [member.minutes for member in card.training.members] == [12.0, 45.0]
    assert card.training.minutes == card.training_minutes == 57.0
    assert card.faces_scored == 21 and card.metrics.usage == ["PublicTest"]
    recorded = [fer_csv.name if word == str(fer_csv) else word for word in command]  # the data by its file name
    assert card.reproduce.endswith("python -m fer_core " + " ".join(recorded))
    members = [model_store.load(name).model for name in ("default", "tiny")]
    assert card.parameters == sum(member.count_params() for member in members)

    stored = model_store.load("pair")
    assert stored.lite is not None
    with zipfile.ZipFile(stored.path) as archive:  # compact weights, deflated
        assert archive.getinfo("model.weights.h5").compress_type == zipfile.ZIP_DEFLATED
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as stored_weights:
            dtypes = set()
            stored_weights.visititems(
                lambda _, item: dtypes.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
    assert dtypes == stored_dtypes
    expected = np.mean([member.predict(faces, verbose=0) for member in members], axis=0)
    for backend in ("litert", "tensorflow"):
        classifier = EmotionClassifier.from_stored(stored, flip_tta=False, backend=backend)
        np.testing.assert_allclose(classifier(faces), expected, atol=tolerance)
    heat, explained = grad_cam(stored.model, faces[0])
    assert heat.shape == (48, 48) and heat.min() >= 0.0 and heat.max() <= 1.0
    assert explained == int(np.argmax(stored.model.predict(faces[:1], verbose=0)))


def test_compact_stores_a_network_again_in_float16_keeping_its_recipe(model_store, fer_csv, faces, capsys):
    stored = model_store.load("tiny")
    expected = stored.model.predict(faces, verbose=0)
    model_store.save("tiny", stored.model, replace(stored.card, training=Training(data="fer.csv", minutes=7.0)))
    assert main(["compact", "tiny", "--data", str(fer_csv)]) == 0
    assert "saved tiny: validation accuracy" in capsys.readouterr().out
    card = model_store.card("tiny")
    assert card.arch == "mini_xception" and card.weights_dtype == "float16"
    assert card.training.minutes == 7.0 and card.faces_scored == 21
    assert card.reproduce == f"(untrained test model) && python -m fer_core compact tiny --data {fer_csv.name}"
    compact = model_store.load("tiny")
    assert {str(weight.dtype) for weight in compact.model.weights} == {"float16"}
    for backend in ("litert", "tensorflow"):
        classifier = EmotionClassifier.from_stored(compact, flip_tta=False, backend=backend)
        np.testing.assert_allclose(classifier(faces), expected, atol=5e-3)


def test_compact_refuses_an_ensemble(model_store, fer_csv, capsys):
    assert main(["ensemble", "default", "tiny", "--name", "pair", "--data", str(fer_csv)]) == 0
    assert main(["compact", "pair", "--data", str(fer_csv)]) == 2
    assert "not a single network" in capsys.readouterr().err


def test_an_ensemble_is_stored_only_in_float16_or_int8(model_store, fer_csv):
    from fer_core.base.errors import DataError
    from fer_core.datasets.load import load_dataset
    from fer_core.training.ensemble import ensemble_members, save_ensemble

    members = ensemble_members(model_store, ["default", "tiny"], "pair")
    with pytest.raises(DataError, match="stored as float16 or int8, not 'int4'"):
        save_ensemble(model_store, members, "pair", load_dataset(fer_csv), data_description="x", command="x",
                      weights_dtype="int4")
    assert not model_store.root.joinpath("pair.keras").exists()


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
    (["default", "balanced"], "the members answer with different odds: balanced learned the balanced ones"),
])
def test_ensemble_command_rejects_bad_members_and_names(model_store, fer_csv, capsys, arguments, message):
    tiny = model_store.load("tiny")
    model_store.save("pair", tiny.model, replace(tiny.card, arch="ensemble"))
    model_store.save("wide", tiny.model, replace(tiny.card, preprocessing=Preprocessing(margin=0.2)))
    model_store.save("balanced", tiny.model, replace(tiny.card, training=replace(
        tiny.card.training, recipe={"arch": "mini_xception", "loss": "logit_adjusted"})))
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
        model_store.save(name, stored.model, replace(stored.card, training=Training(data="x", recipe={"seed": 3})))
    assert main(["ensemble", "default", "tiny", "--name", "pair", "--data", str(path)]) == 0
    assert model_store.card("pair").faces_scored == 7  # the members' 10% split of seed 3


def test_grad_cam_of_a_network_inside_a_training_model_skips_the_augmentation(faces):
    base = build_model("ds_cnn")
    heat, explained = grad_cam(with_augmentation(base, build_augmentation(seed=0)), faces[0])
    assert heat.shape == (48, 48)
    assert explained == int(np.argmax(base.predict(faces[:1], verbose=0)))
