"""Explanation maps: which parts of a face drove the network's decision for a class.

- ``grad_cam``: the last convolution's activations weighted by their mean gradients (Selvaraju
  et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
  ICCV 2017): coarse regions.
- ``guided_backprop``: the gradient of the class score down to the pixels, where each ReLU passes
  back only positive gradients (Springenberg et al., "Striving for Simplicity: The All
  Convolutional Net", ICLR 2015): fine edges, not tied to one class.
- ``guided_grad_cam``: the two multiplied (Selvaraju et al.): fine edges inside the regions of
  the class.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import cv2
import keras
import numpy as np
import tensorflow as tf

from fer_core.base.errors import SettingError
from fer_core.base.labels import EMOTIONS
from fer_core.faces.preprocess import Preprocessing, images_to_input, prepare_faces

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)


def last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The last layer with a spatial (4-D) output: where Grad-CAM reads activations."""
    for layer in reversed(model.layers):
        if isinstance(layer, _CONVOLUTIONS) and len(layer.output.shape) == 4:
            return layer
    raise ValueError(f"model {model.name} has no convolution layer for Grad-CAM")


def _has_convolution(model: keras.Model) -> bool:
    return any(isinstance(layer, _CONVOLUTIONS) for layer in model.layers)


def _networks(model: keras.Model) -> list[keras.Model]:
    """The networks to explain: the members of an ensemble (nested models with convolutions of
    their own), else the model itself."""
    if _has_convolution(model):
        return [model]
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and _has_convolution(layer)]
    return nested or [model]


def _scaled_to_one(cam: np.ndarray) -> np.ndarray:
    return cam / cam.max() if cam.max() > 0 else cam


def _clipped_to_one(saliency: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """A sparse pixel map scaled so its ``percentile`` is 1 and clipped there: a few extreme
    pixels would otherwise leave the rest of the map invisible."""
    top = np.percentile(saliency, percentile)
    return np.clip(saliency / top, 0.0, 1.0) if top > 0 else _scaled_to_one(saliency)


def _class_activation(network: keras.Model, batch: tf.Tensor, class_index: int | None) -> tuple[np.ndarray, int]:
    """Grad-CAM of one network at the input's size, in [0, 1], and the class it explains (its
    prediction when ``class_index`` is None): the last convolution's activations weighted by
    their mean gradients."""
    layer = last_conv_layer(network)
    probe = keras.Model(network.inputs, [layer.output, network.output])
    with tf.GradientTape() as tape:
        activations, probabilities = probe(batch, training=False)
        if class_index is None:
            class_index = int(tf.argmax(probabilities[0]))
        score = probabilities[:, class_index]
    gradients = tape.gradient(score, activations)
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(tf.cast(activations, tf.float32) * weights[:, None, None, :], axis=-1))[0]
    height, width = batch.shape[1:3]
    cam = cv2.resize(cam.numpy(), (width, height), interpolation=cv2.INTER_CUBIC).clip(0, None)
    return _scaled_to_one(cam), class_index


@tf.custom_gradient
def _positive_gradient_gate(values: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """Identity forward; backward only the positive part of the gradient passes."""

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(upstream)

    return tf.identity(values), gradient


class _GuidedReLU(keras.layers.Layer):
    """A ReLU-activated layer whose output passes back only positive gradients. The ReLU itself
    masks where its input was negative, so the two together are guided backpropagation's rule."""

    def __init__(self, wrapped: keras.layers.Layer, **kwargs):
        super().__init__(name=f"{wrapped.name}_guided", dtype=wrapped.dtype_policy, **kwargs)
        self.wrapped = wrapped

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return _positive_gradient_gate(self.wrapped(inputs))


def _is_relu(layer: keras.layers.Layer) -> bool:
    """A ReLU layer, or a layer with the ReLU as its activation (Conv2D(activation="relu"), ...)."""
    return isinstance(layer, keras.layers.ReLU) or getattr(layer, "activation", None) is keras.activations.relu


_guided_copies: weakref.WeakKeyDictionary[keras.Model, keras.Model] = weakref.WeakKeyDictionary()
_guided_lock = threading.Lock()


def _guided(network: keras.Model) -> keras.Model:
    """The network with guided ReLUs, nested models' too, sharing its layers and weights (made once
    per network)."""
    with _guided_lock:
        if network not in _guided_copies:
            wrapped = []

            def guide(layer: keras.layers.Layer) -> keras.layers.Layer:
                if not _is_relu(layer):
                    return layer
                wrapped.append(layer)
                return _GuidedReLU(layer)

            guided = keras.models.clone_model(network, clone_function=guide, recursive=True)
            if not wrapped:
                raise ValueError(f"model {network.name} has no ReLU for guided backpropagation")
            _guided_copies[network] = guided
        return _guided_copies[network]


def _guided_gradients(network: keras.Model, batch: tf.Tensor, class_index: int) -> np.ndarray:
    """Guided backpropagation of one network: d score / d pixels (size, size), signed."""
    guided = _guided(network)
    with tf.GradientTape() as tape:
        tape.watch(batch)
        score = guided(batch, training=False)[:, class_index]
    return tape.gradient(score, batch)[0, :, :, 0].numpy()


def _explained_class(model: keras.Model, batch: tf.Tensor, class_index: int | None) -> int:
    """``class_index``, or the model's prediction when it is None."""
    return int(np.argmax(model(batch, training=False)[0])) if class_index is None else class_index


def grad_cam(model: keras.Model, face: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Heat map in [0, 1] at the face's size for ``class_index`` (default: the predicted class).

    ``face`` is one prepared input (size, size, 1). Returns the map and the class explained.
    An ensemble's map is the mean of its members' maps for the ensemble's class.
    """
    batch = tf.convert_to_tensor(face[np.newaxis], tf.float32)
    networks = _networks(model)
    if networks != [model]:
        class_index = _explained_class(model, batch, class_index)
    maps = []
    for network in networks:
        cam, class_index = _class_activation(network, batch, class_index)
        maps.append(cam)
    assert class_index is not None  # set by the first network's map: there is always one
    return _scaled_to_one(np.mean(maps, axis=0)), class_index


def _guided_magnitude(model: keras.Model, face: np.ndarray, class_index: int | None) -> tuple[np.ndarray, int]:
    """The magnitude of the guided gradients (an ensemble's: of the mean of its members') and the class."""
    batch = tf.convert_to_tensor(face[np.newaxis], tf.float32)
    class_index = _explained_class(model, batch, class_index)
    gradients = np.mean([_guided_gradients(network, batch, class_index) for network in _networks(model)], axis=0)
    return np.abs(gradients), class_index


def guided_backprop(model: keras.Model, face: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Guided backpropagation's map in [0, 1] (the gradients' magnitude) for ``class_index``
    (default: the predicted class); an ensemble's is the mean of its members' gradients."""
    magnitude, class_index = _guided_magnitude(model, face, class_index)
    return _clipped_to_one(magnitude), class_index


def guided_grad_cam(model: keras.Model, face: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Guided backpropagation's magnitudes weighted by Grad-CAM's map, in [0, 1]."""
    cam, class_index = grad_cam(model, face, class_index)
    magnitude, _ = _guided_magnitude(model, face, class_index)
    return _clipped_to_one(cam * magnitude), class_index


#: Explanation methods by name: each maps (model, prepared face, class or None) to (map, class).
EXPLANATIONS: dict[str, Callable[[keras.Model, np.ndarray, int | None], tuple[np.ndarray, int]]] = {
    "grad_cam": grad_cam,
    "guided_backprop": guided_backprop,
    "guided_grad_cam": guided_grad_cam,
}


def overlay(face: np.ndarray, heat: np.ndarray, size: int = 192, alpha: float = 0.45) -> np.ndarray:
    """A BGR picture of the face with the heat map blended over it in the JET colour map."""
    gray: np.ndarray = (np.squeeze(face) * 255).clip(0, 255).astype(np.uint8)
    gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
    colours = cv2.applyColorMap(
        (cv2.resize(heat, (size, size), interpolation=cv2.INTER_CUBIC) * 255).astype(np.uint8),
        cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 1 - alpha, colours, alpha, 0)


def explain_face(model: keras.Model, image: np.ndarray, box: tuple[int, int, int, int],
                 preprocessing: Preprocessing, label: str | None = None, method: str = "grad_cam") -> np.ndarray:
    """Overlay (BGR) of the ``method`` map (see :data:`EXPLANATIONS`) for the face in ``box`` of
    ``image`` and the class ``label`` (default: the predicted class)."""
    return explain_prepared(model, prepare_faces(image, [box], preprocessing)[0], label, method)


def explain_cropped(model: keras.Model, face: np.ndarray, preprocessing: Preprocessing, label: str | None = None,
                    method: str = "grad_cam") -> np.ndarray:
    """As :func:`explain_face`, for a face already cropped (a labelled dataset's gray face), prepared
    as evaluation prepares it: resized, not cropped again."""
    return explain_prepared(model, images_to_input(face[np.newaxis], preprocessing)[0], label, method)


def explain_prepared(model: keras.Model, face: np.ndarray, label: str | None = None,
                     method: str = "grad_cam") -> np.ndarray:
    """Overlay (BGR) of the ``method`` map of a prepared face (``FaceResult.network_input``) for the class
    ``label`` (default: the predicted class)."""
    if method not in EXPLANATIONS:
        raise SettingError(f"unknown explanation method {method!r} (known: {', '.join(EXPLANATIONS)})")
    heat, _ = EXPLANATIONS[method](model, face, None if label is None else EMOTIONS.index(label))
    return overlay(face, heat)
