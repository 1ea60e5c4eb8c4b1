"""Knowledge distillation: a student network learns from the labels and from a frozen teacher's
answers (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015).

The training model (:func:`distillation_trainer`) outputs the student's probabilities beside the
teacher's for the same (augmented) faces, and :class:`DistillationLoss` compares both with the
labels; the student inside it is the network that is saved.
"""

from __future__ import annotations

import hashlib

import keras
import numpy as np

from fer_core.base.labels import NUM_CLASSES


@keras.saving.register_keras_serializable(package="fer_core")
class DistillationLoss(keras.losses.Loss):
    """Cross-entropy with the labels, blended with the cross-entropy between the teacher's and the
    student's probabilities softened by ``temperature`` (scaled by its square).

    ``y_pred`` holds the student's probabilities, then the teacher's (see :func:`distillation_trainer`).
    """

    def __init__(self, weight: float = 0.5, temperature: float = 2.0, label_smoothing: float = 0.0,
                 name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight, self.temperature, self.label_smoothing = float(weight), float(temperature), float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        student, teacher = y_pred[:, :NUM_CLASSES], y_pred[:, NUM_CLASSES:]
        hard = keras.losses.categorical_crossentropy(y_true, student, label_smoothing=self.label_smoothing)

        def softened(probabilities):
            return ops.softmax(ops.log(ops.maximum(probabilities, 1e-7)) / self.temperature, axis=-1)

        soft = keras.losses.categorical_crossentropy(softened(teacher), softened(student))
        return (1.0 - self.weight) * hard + self.weight * self.temperature ** 2 * soft

    def get_config(self) -> dict:
        return {**super().get_config(), "weight": self.weight, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="fer_core")
def student_accuracy(y_true, y_pred):
    """Accuracy of the student's part of a distillation trainer's output."""
    return keras.metrics.categorical_accuracy(y_true, y_pred[:, :NUM_CLASSES])


@keras.saving.register_keras_serializable(package="fer_core")
class FrozenTeacher(keras.layers.Layer):
    """A teacher network that neither learns nor drops out: its answer is the same in a training
    step as at inference. (A nested model called with ``training=False`` inside a functional model
    would still follow the outer model's training flag.)"""

    def __init__(self, teacher: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.trainable = False

    def call(self, faces):
        return keras.ops.stop_gradient(self.teacher(faces, training=False))

    def get_config(self) -> dict:
        return {**super().get_config(), "teacher": keras.saving.serialize_keras_object(self.teacher)}

    @classmethod
    def from_config(cls, config: dict) -> FrozenTeacher:
        return cls(keras.saving.deserialize_keras_object(config.pop("teacher")), **config)


def distillation_trainer(student: keras.Model, teacher: keras.Model,
                         augmentation: keras.Sequential | None = None) -> keras.Model:
    """A training model whose output is the student's probabilities beside the frozen teacher's,
    both on the same (augmented) faces, for :class:`DistillationLoss`."""
    if teacher.name == student.name:
        raise ValueError(f"the teacher needs another name than the student ({student.name!r})")
    inputs = keras.Input(student.input_shape[1:])
    faces = augmentation(inputs) if augmentation is not None else inputs
    both = keras.layers.Concatenate(dtype="float32", name="student_and_teacher")(
        [student(faces), FrozenTeacher(teacher, name="frozen_teacher")(faces)])
    return keras.Model(inputs, both, name=f"{student.name}_distillation")


def weights_fingerprint(model: keras.Model) -> str:
    """A digest of a model's weights, to tell whether a teacher changed between two runs."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]
