"""Network architectures, one builder function per model, registered by name.

Every builder takes the input shape and the number of classes and returns an uncompiled
functional Keras model whose input is a gray face scaled to [0, 1] and whose output is the
softmax over the seven emotions (kept in float32 under a mixed-precision policy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import layers

from fer_core.base.errors import SettingError
from fer_core.base.labels import NUM_CLASSES
from fer_core.registry.layers import Int8Conv2D

Builder = Callable[..., keras.Model]
ARCHITECTURES: dict[str, Builder] = {}
INPUT_SHAPE = (48, 48, 1)


def register(name: str) -> Callable[[Builder], Builder]:
    """Add a builder to :data:`ARCHITECTURES` under ``name``."""

    def decorate(builder: Builder) -> Builder:
        ARCHITECTURES[name] = builder
        return builder

    return decorate


def build_model(arch: str, input_shape: tuple[int, int, int] = INPUT_SHAPE,
                num_classes: int = NUM_CLASSES) -> keras.Model:
    """Build the registered architecture ``arch``."""
    return _builder(arch)(input_shape=input_shape, num_classes=num_classes)


def _builder(arch: str) -> Builder:
    """The builder registered as ``arch``; an unknown name is a :class:`SettingError` listing the known ones."""
    if arch not in ARCHITECTURES:
        raise SettingError(f"unknown architecture {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]


def copy_in_precision(model: keras.Model, arch: str, dtype: str = "float32", name: str | None = None) -> keras.Model:
    """A fresh ``arch`` network with ``model``'s weights, its layers computing in ``dtype``.

    Training under ``mixed_bfloat16`` returns a plain float32 copy this way; an ensemble is stored
    in ``float16`` to halve its file. The softmax stays float32 whatever ``dtype``.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(dtype)
    try:
        copy = build_model(arch, model.input_shape[1:], model.output_shape[-1])
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights([np.asarray(weight, dtype=variable.dtype)
                      for weight, variable in zip(model.get_weights(), copy.weights, strict=True)])
    return copy if name is None else keras.Model(copy.input, copy.output, name=name)


def int8_copy(model: keras.Model) -> keras.Model:
    """A copy of a float32 network whose ``Conv2D`` kernels (most of a VGG's weights) are
    :class:`Int8Conv2D`: symmetric int8, scaled per output channel. Other layers are unchanged."""

    def clone(layer: layers.Layer) -> layers.Layer:
        kind = Int8Conv2D if type(layer) is layers.Conv2D else type(layer)
        return kind.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, copy.layers, strict=True):
        weights = source.get_weights()
        if isinstance(target, Int8Conv2D):
            kernel = weights[0]
            scale = np.abs(kernel).max(axis=(0, 1, 2)) / 127.0
            scale[scale == 0] = 1.0  # an all-zero channel stays zero
            weights = [np.round(kernel / scale).astype(np.int8), scale.astype(np.float32), *weights[1:]]
        target.set_weights(weights)
    return copy


def float32_copy(model: keras.Model, arch: str, name: str | None = None) -> keras.Model:
    """A float32 ``arch`` network with ``model``'s weights however they are stored: float32, float16
    or int8 kernels (:class:`Int8Conv2D`, expanded back to floats), e.g. to train it further."""
    weights = []
    for layer in model.layers:
        layer_weights = layer.get_weights()
        if isinstance(layer, Int8Conv2D):
            layer_weights = [layer_weights[0].astype(np.float32) * layer_weights[1], *layer_weights[2:]]
        weights += layer_weights
    copy = build_model(arch, model.input_shape[1:], model.output_shape[-1])
    copy.set_weights([np.asarray(weight, dtype=np.float32) for weight in weights])
    return copy if name is None else keras.Model(copy.input, copy.output, name=name)


def build_ensemble(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of its members' class probabilities.

    Averaging networks trained apart cancels part of their independent errors, the usual way
    to gain a point or two of accuracy on FER2013. The members keep their own names (which must
    differ) inside it, so each can still be explained with Grad-CAM.
    """
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two models")
    names = [member.name for member in members]
    if len(set(names)) != len(names):
        raise ValueError(f"ensemble members need distinct names, got {names}")
    shapes = {tuple(member.input_shape[1:]) for member in members}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members take different inputs: {sorted(shapes)}")
    inputs = keras.Input(shapes.pop())
    probabilities = layers.Average(dtype="float32", name="mean_probabilities")([member(inputs) for member in members])
    return keras.Model(inputs, probabilities, name=name)


def describe(arch: str) -> str:
    """First line of the builder's docstring, for menus."""
    return (_builder(arch).__doc__ or arch).strip().splitlines()[0]


def _softmax_head(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    x = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def _pooled_head(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Global average pooling, then a small dropout-regularised dense layer and the softmax."""
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.4)(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    return _softmax_head(x, num_classes)


def _batch_norm() -> layers.BatchNormalization:
    """Batch normalisation whose running statistics settle within a few hundred steps.

    Keras' default momentum (0.99) leaves them unsettled after the few epochs of a small dataset,
    and the model then predicts one class at inference.
    """
    return layers.BatchNormalization(momentum=0.9)


def _conv_bn_relu(x: keras.KerasTensor, filters: int, kernel: int = 3, **kwargs) -> keras.KerasTensor:
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, **kwargs)(x)
    x = _batch_norm()(x)
    return layers.ReLU()(x)


@register("mini_xception")
def mini_xception(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """mini-Xception: residual depthwise-separable blocks and global average pooling (~60K).

    Arriaga, Ploeger and Valdenegro, "Real-time Convolutional Neural Networks for Emotion and
    Gender Classification", arXiv:1710.07557, 2017.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, 8)
    x = _conv_bn_relu(x, 8)
    for filters in (16, 32, 64, 128):
        # The paper's strided 1x1 shortcut, written as subsampling then a 1x1 convolution (the
        # same function): TensorFlow's oneDNN kernel for a strided 1x1 convolution corrupts
        # memory in its backward pass on a batch of one face.
        residual = layers.MaxPooling2D(1, strides=2)(x)
        residual = layers.Conv2D(filters, 1, use_bias=False)(residual)
        residual = _batch_norm()(residual)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = _batch_norm()(x)
        x = layers.ReLU()(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = _batch_norm()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add()([x, residual])
    x = layers.Conv2D(num_classes, 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mini_xception")


@register("ds_cnn")
def ds_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """Depthwise-separable CNN: 4 blocks of separable convolutions with BN+ReLU, GAP (~60K).

    After Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
    Applications", arXiv:1704.04861, 2017, as used for FER in lightweight real-time systems.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, 16)
    for filters in (32, 64, 96, 128):
        for _ in range(2):
            x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
            x = _batch_norm()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="ds_cnn")


@register("simple_cnn")
def simple_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """Simple CNN: 4 plain convolution layers with max-pooling, dropout and dense layers (~1.4M).

    The baseline of Tang, "Deep Learning using Linear Support Vector Machines", ICML 2013
    workshop (FER2013 challenge), in the common Keras form.
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="simple_cnn")


@register("alexnet_small")
def alexnet_small(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """Reduced AlexNet: 5 convolutions (5x5, 5x5, three 3x3), 3 max-pools, two dense layers (~4.6M).

    Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NeurIPS 2012, with widths cut for 48x48 gray input; as in AlexNet, most
    parameters sit in the dense layers.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, 64, 5)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, 96, 5)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, 192)
    x = _conv_bn_relu(x, 192)
    x = _conv_bn_relu(x, 96)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(256, activation="relu")(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="alexnet_small")


@register("modified_cnn")
def modified_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """Modified CNN: max-pooling and dropout after each of 4 convolutions, then 2 dense layers (~1.7M).

    After the "modified CNN" of Mehendale, "Facial emotion recognition using convolutional
    neural networks (FERC)", SN Applied Sciences 2, 446, 2020, in its common Keras form. The
    dense layers are batch-normalised: without it, 96% of the first one's ReLUs died in the first
    epoch and the network only ever predicted the class prior.
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in (32, 64, 128, 256):
        x = _conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    for units in (512, 256):
        x = layers.Dense(units, use_bias=False)(x)
        x = _batch_norm()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="modified_cnn")


@register("fer_vgg")
def fer_vgg(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """FER Lab VGG: 4 VGG blocks (32-256) with BN, GAP and a small head (~1.2M); three make the default.

    In the line of Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale
    Image Recognition", ICLR 2015, and Khaireddin and Chen, "Facial Emotion Recognition:
    State of the Art Performance on FER2013", arXiv:2105.03588, 2021; sized to train on two CPU
    cores and classify a face in about a millisecond.
    """
    return _vgg(input_shape, num_classes, (32, 64, 128, 256), name="fer_vgg")


@register("fer_vgg_wide")
def fer_vgg_wide(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """FER Lab VGG, wide: ``fer_vgg`` with 1.5 times the channels (48-384, ~2.7M).

    The same design with more capacity, for when a stronger single network is worth about
    twice the training and inference time.
    """
    return _vgg(input_shape, num_classes, (48, 96, 192, 384), name="fer_vgg_wide")


def _vgg(input_shape: tuple[int, int, int], num_classes: int, widths: Sequence[int], name: str) -> keras.Model:
    """Four VGG blocks (two 3x3 convolutions with BN and ReLU, then max-pooling) and the pooled head."""
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in widths:
        for _ in range(2):
            x = _conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
    return keras.Model(inputs, _pooled_head(x, num_classes), name=name)


@register("fer_resnet")
def fer_resnet(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES) -> keras.Model:
    """FER Lab ResNet: 4 residual stages (32-256), strided, with BN, GAP and a small head (~1.3M).

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, sized like ``fer_vgg``
    but built another way (shortcuts, strided convolutions instead of pooling), so that the two
    make different mistakes and an ensemble of both gains more than one of two alike networks.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, 32)
    for filters, stride in ((32, 1), (64, 2), (128, 2), (256, 2)):
        x = _residual_block(x, filters, stride)
    return keras.Model(inputs, _pooled_head(x, num_classes), name="fer_resnet")


def _residual_block(x: keras.KerasTensor, filters: int, stride: int) -> keras.KerasTensor:
    """Two 3x3 convolutions added to their input (projected by a 1x1 convolution where the shape changes)."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
        shortcut = _batch_norm()(shortcut)
    x = _conv_bn_relu(x, filters, strides=stride)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = _batch_norm()(x)
    return layers.ReLU()(layers.Add()([x, shortcut]))


@keras.saving.register_keras_serializable(package="fer_core")
class RandomGamma(layers.Layer):
    """Raises each training face (values in 0-1) to its own power between ``1 / limit`` and ``limit``, drawn
    on a log scale: the darker mid-tones and washed-out ones of webcams' exposure curves. An identity
    at inference."""

    def __init__(self, limit: float = 1.5, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.limit, self.seed = float(limit), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        ops = keras.ops
        spread = float(np.log(self.limit))
        power = ops.exp(keras.random.uniform((ops.shape(images)[0], 1, 1, 1), -spread, spread,
                                             seed=self.seed_generator))
        return ops.power(ops.clip(images, 0.0, 1.0), ops.cast(power, images.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "limit": self.limit, "seed": self.seed}


def build_augmentation(rotation_degrees: float = 10.0, shift: float = 0.1, zoom: float = 0.1,
                       erasing: bool = True, webcam: bool = False, seed: int | None = None) -> keras.Sequential:
    """Training-time augmentation as Keras layers: flip, rotation, shift, zoom and erasing; with
    ``webcam``, also the light and focus of a classroom webcam: brightness, contrast, gamma and blur.

    The layers are identities at inference, so they can stay inside a saved model.
    """
    steps: list[layers.Layer] = [
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(rotation_degrees / 360.0, fill_mode="nearest", seed=seed),
        layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed),
        layers.RandomZoom((-zoom, zoom), fill_mode="nearest", seed=seed),
    ]
    if webcam:
        steps += [
            layers.RandomBrightness(0.2, value_range=(0.0, 1.0), seed=seed),
            layers.RandomContrast(0.4, value_range=(0.0, 1.0), seed=seed),
            RandomGamma(1.5, seed=seed),
            layers.RandomGaussianBlur(0.5, kernel_size=3, sigma=(0.1, 1.2), value_range=(0.0, 1.0), seed=seed),
        ]
    if erasing:
        steps.append(layers.RandomErasing(factor=0.5, scale=(0.02, 0.15), value_range=(0.0, 1.0), seed=seed))
    return keras.Sequential(steps, name="augmentation")


def with_augmentation(model: keras.Model, augmentation: keras.Sequential) -> keras.Model:
    """A training model that augments its input, then runs ``model`` (weights shared)."""
    inputs = keras.Input(model.input_shape[1:])
    return keras.Model(inputs, model(augmentation(inputs)), name=f"{model.name}_train")
