import numpy as np
import pytest

from fer_core.base.errors import SettingError
from fer_core.faces.preprocess import Preprocessing
from fer_core.inference.explain import (
    EXPLANATIONS,
    _guided,
    _guided_gradients,
    explain_cropped,
    explain_face,
    grad_cam,
    guided_backprop,
    last_conv_layer,
    overlay,
)


def test_grad_cam_map_for_every_architecture_style(model_store, astronaut_bgr):
    for name in ("default", "tiny"):
        model = model_store.load(name).model
        assert last_conv_layer(model) is not None
        face = np.random.default_rng(0).random((48, 48, 1)).astype(np.float32)
        heat, explained = grad_cam(model, face)
        assert heat.shape == (48, 48)
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        assert explained == int(np.argmax(model.predict(face[None], verbose=0)))
        heat_sad, explained_sad = grad_cam(model, face, 4)
        assert explained_sad == 4


def test_overlay_and_explain_face(model_store, astronaut_bgr):
    model = model_store.load("default").model
    picture = explain_face(model, astronaut_bgr, (180, 60, 90, 110), Preprocessing(), "happy")
    assert picture.shape == (192, 192, 3) and picture.dtype == np.uint8
    assert overlay(np.zeros((48, 48, 1), np.float32), np.ones((48, 48), np.float32), size=96).shape == (96, 96, 3)


@pytest.mark.parametrize("method", ["guided_backprop", "guided_grad_cam"])
def test_guided_maps_for_single_networks_and_ensembles(model_store, method):
    from fer_core.training.networks import build_ensemble

    face = np.random.default_rng(1).random((48, 48, 1)).astype(np.float32)
    single = model_store.load("tiny").model
    pair = build_ensemble([model_store.load(name).model for name in ("default", "tiny")], "pair")
    for model in (single, pair):
        heat, explained = EXPLANATIONS[method](model, face, None)
        assert heat.shape == (48, 48) and heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
        assert explained == int(np.argmax(model.predict(face[None], verbose=0)))
        assert EXPLANATIONS[method](model, face, 5)[1] == 5
    assert _guided(single) is _guided(single)  # one guided copy per network


def _four_pixel_network(relu: str):
    """Dense(3) and a ReLU (fused, a layer of its own, or inside a nested model), then softmax."""
    import keras

    inputs = keras.Input((2, 2, 1))
    flat = keras.layers.Flatten()(inputs)
    if relu == "fused":
        hidden = keras.layers.Dense(3, activation="relu")(flat)
    elif relu == "layer":
        hidden = keras.layers.ReLU()(keras.layers.Dense(3)(flat))
    else:
        block_input = keras.Input((4,))
        block = keras.Model(block_input, keras.layers.ReLU()(keras.layers.Dense(3)(block_input)), name="block")
        hidden = block(flat)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(hidden))


@pytest.mark.parametrize("relu", ["fused", "layer", "nested"])
def test_guided_backprop_passes_back_only_positive_gradients_through_each_relu(relu):
    """A 4-pixel network, Dense(3) with a ReLU then softmax over 7 classes, checked against the rule by hand."""
    import tensorflow as tf

    model = _four_pixel_network(relu)
    c = 2
    w1 = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    b1 = np.array([5.0, 5.0, -5.0], np.float32)  # units 0 and 1 active, unit 2 off
    w2 = np.zeros((3, 7), np.float32)
    w2[:, c] = [2.0, -2.0, 3.0]  # class c's score rises with unit 0, falls with unit 1
    model.set_weights([w1, b1, w2, np.zeros(7, np.float32)])
    x = np.array([0.9, 0.1, 0.4, 0.7], np.float32)
    z = x @ w1 + b1
    logits = np.maximum(z, 0) @ w2
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    d_hidden = p[c] * (w2[:, c] - w2 @ p)
    assert d_hidden[0] > 0 > d_hidden[1] and z[2] < 0 < d_hidden[2]
    guided_by_hand = w1 @ (np.maximum(d_hidden, 0) * (z > 0))  # unit 0 only
    plain_by_hand = w1 @ (d_hidden * (z > 0))
    assert not np.allclose(guided_by_hand, plain_by_hand)

    batch = tf.constant(x.reshape(1, 2, 2, 1))
    assert np.allclose(_guided_gradients(model, batch, c).ravel(), guided_by_hand, atol=1e-6)
    heat, _ = guided_backprop(model, x.reshape(2, 2, 1), c)
    magnitude = np.abs(guided_by_hand)
    assert np.allclose(heat.ravel(), np.clip(magnitude / np.percentile(magnitude, 99), 0, 1), atol=1e-5)


def test_guided_backprop_needs_a_relu():
    import keras

    inputs = keras.Input((2, 2, 1))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="has no ReLU for guided backpropagation"):
        guided_backprop(model, np.ones((2, 2, 1), np.float32))


def test_explain_face_with_each_method_and_an_unknown_one(model_store, astronaut_bgr):
    model = model_store.load("tiny").model
    for method in EXPLANATIONS:
        picture = explain_face(model, astronaut_bgr, (180, 60, 90, 110), Preprocessing(), "sad", method=method)
        assert picture.shape == (192, 192, 3)
    with pytest.raises(SettingError, match="unknown explanation method 'lime'"):
        explain_face(model, astronaut_bgr, (180, 60, 90, 110), Preprocessing(), method="lime")


def test_a_cropped_dataset_face_is_explained_as_evaluation_reads_it(model_store):
    from conftest import synthetic_face

    model = model_store.load("tiny").model
    face = synthetic_face(3, np.random.default_rng(0))
    plain = Preprocessing()  # no margin: the whole image as a box is the same face as the crop
    np.testing.assert_array_equal(explain_cropped(model, face, plain, "happy"),
                                  explain_face(model, face, (0, 0, 48, 48), plain, "happy"))
    widened = Preprocessing(margin=0.2)  # a crop is not cropped again: its margin is in it already
    assert not np.array_equal(explain_cropped(model, face, widened, "happy"),
                              explain_face(model, face, (0, 0, 48, 48), widened, "happy"))
    with pytest.raises(SettingError, match="unknown explanation method 'lime'"):
        explain_cropped(model, face, plain, method="lime")
