"""Grad-CAM: which parts of a face drove the network's decision for a class.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf

from fer_core.labels import EMOTIONS
from fer_core.preprocess import Preprocessing, prepare_faces


def last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The last layer with a spatial (4-D) output: where Grad-CAM reads activations."""
    for layer in reversed(model.layers):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D,
                              keras.layers.DepthwiseConv2D)) and len(layer.output.shape) == 4:
            return layer
    raise ValueError(f"model {model.name} has no convolution layer for Grad-CAM")


def _networks(model: keras.Model) -> list[keras.Model]:
    """The networks to explain: the members of an ensemble, else the model itself."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model)] or [model]


def _class_activation(network: keras.Model, batch: tf.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM of one network at the input's size, in [0, 1]: its last convolution's activations
    weighted by their mean gradients."""
    layer = last_conv_layer(network)
    probe = keras.Model(network.inputs, [layer.output, network.output])
    with tf.GradientTape() as tape:
        activations, probabilities = probe(batch, training=False)
        score = probabilities[:, class_index]
    gradients = tape.gradient(score, activations)
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(tf.cast(activations, tf.float32) * weights[:, None, None, :], axis=-1))[0]
    cam = cv2.resize(cam.numpy(), batch.shape[1:3][::-1], interpolation=cv2.INTER_CUBIC).clip(0, None)
    return cam / cam.max() if cam.max() > 0 else cam


def grad_cam(model: keras.Model, face: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Heat map in [0, 1] at the face's size for ``class_index`` (default: the predicted class).

    ``face`` is one prepared input (size, size, 1). Returns the map and the class explained.
    An ensemble's map is the mean of its members' maps for the ensemble's class.
    """
    batch = tf.convert_to_tensor(face[np.newaxis], tf.float32)
    if class_index is None:
        class_index = int(np.argmax(model(batch, training=False)[0]))
    cam = np.mean([_class_activation(network, batch, class_index) for network in _networks(model)], axis=0)
    return (cam / cam.max() if cam.max() > 0 else cam), class_index


def overlay(face: np.ndarray, heat: np.ndarray, size: int = 192, alpha: float = 0.45) -> np.ndarray:
    """A BGR picture of the face with the heat map blended over it in the JET colour map."""
    gray = (np.squeeze(face) * 255).clip(0, 255).astype(np.uint8)
    gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
    colours = cv2.applyColorMap(
        (cv2.resize(heat, (size, size), interpolation=cv2.INTER_CUBIC) * 255).astype(np.uint8),
        cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 1 - alpha, colours, alpha, 0)


def explain_face(model: keras.Model, image: np.ndarray, box: tuple[int, int, int, int],
                 preprocessing: Preprocessing, label: str | None = None) -> np.ndarray:
    """Grad-CAM overlay (BGR) for the face in ``box`` of ``image`` and the class ``label``."""
    face = prepare_faces(image, [box], preprocessing)[0]
    heat, _ = grad_cam(model, face, None if label is None else EMOTIONS.index(label))
    return overlay(face, heat)
