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


def grad_cam(model: keras.Model, face: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Heat map in [0, 1] at the face's size for ``class_index`` (default: the predicted class).

    ``face`` is one prepared input (size, size, 1). Returns the map and the class explained.
    An ensemble's map is the mean of its members' maps for the ensemble's class.
    """
    batch = tf.convert_to_tensor(face[np.newaxis], tf.float32)
    networks = _networks(model)
    if class_index is None and networks != [model]:
        class_index = int(np.argmax(model(batch, training=False)[0]))
    maps = []
    for network in networks:
        cam, class_index = _class_activation(network, batch, class_index)
        maps.append(cam)
    return _scaled_to_one(np.mean(maps, axis=0)), class_index


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
