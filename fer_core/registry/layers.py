"""The custom Keras layers that stored models may hold, registered with Keras when this module loads.

The store imports it just before it loads a Keras file, so a compact model (int8 kernels) loads
without the training code; it imports Keras, so nothing on the serving path imports it otherwise.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="fer_core")
class Int8Conv2D(layers.Conv2D):
    """A Conv2D whose kernel is stored as int8 with one float scale per output channel.

    Weight-only quantisation, to store a model in a quarter of the space: the kernel is expanded
    back to floats when the layer runs, so the layer computes as the float one it was made from
    (:func:`int8_copy`) within rounding. It is for inference only; its weights do not train.
    """

    def build(self, input_shape):
        channels = input_shape[-1] if self.data_format == "channels_last" else input_shape[1]
        shape = (*self.kernel_size, channels // self.groups, self.filters)
        self._kernel = self.add_weight(name="kernel", shape=shape, initializer="zeros", dtype="int8", trainable=False)
        self.kernel_scale = self.add_weight(name="kernel_scale", shape=(self.filters,), initializer="ones",
                                            trainable=False)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros", trainable=False)
                     if self.use_bias else None)
        self.built = True

    @property
    def kernel(self):
        return ops.multiply(ops.cast(self._kernel, self.compute_dtype), ops.cast(self.kernel_scale, self.compute_dtype))

    # Store the variables themselves (int8 kernel, scales, bias), not the expanded kernel.
    save_own_variables = layers.Layer.save_own_variables
    load_own_variables = layers.Layer.load_own_variables
