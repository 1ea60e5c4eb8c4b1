"""The logit-adjusted loss (Menon et al. 2021, "Long-tail learning via logit adjustment"): a network
that learns with it answers with balanced odds, every emotion as likely, instead of its training data's.

The loss adds the log of each class's training share to the network's log-probabilities before the
cross-entropy, so the network itself need not learn the prior: at inference its own answer is the
balanced one. For FER2013, where a quarter of the faces are happy and 1.5% disgusted, that trains the
rare classes harder than class weights do without reweighing any face.
"""

from __future__ import annotations

import keras
import numpy as np

from fer_core.base.errors import DataError
from fer_core.base.labels import EMOTIONS
from fer_core.inference.odds import prior_shift
from fer_core.registry.cards import count_classes


@keras.saving.register_keras_serializable(package="fer_core")
class LogitAdjustedLoss(keras.losses.Loss):
    """Cross-entropy (with label smoothing) of the network's log-probabilities plus ``log_prior``, the log
    of each class's share of the training faces."""

    def __init__(self, log_prior: list[float], label_smoothing: float = 0.0, name: str = "logit_adjusted",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.log_prior = [float(value) for value in log_prior]
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def for_labels(cls, labels: np.ndarray, label_smoothing: float = 0.0) -> LogitAdjustedLoss:
        """The loss for training faces with these labels (FER2013 codes)."""
        counts = count_classes(labels)
        if counts is None:
            seen = set(np.asarray(labels, dtype=np.int64).tolist())
            missing = ", ".join(name for code, name in enumerate(EMOTIONS) if code not in seen)
            raise DataError(f"the logit-adjusted loss needs training faces of every class; there are none of {missing}")
        return cls(prior_shift(list(counts.values()), 1.0).tolist(), label_smoothing)  # the log prior

    def call(self, y_true, y_pred):
        ops = keras.ops
        logits = ops.log(ops.maximum(ops.cast(y_pred, "float32"), 1e-7)) + ops.convert_to_tensor(self.log_prior)
        return keras.losses.categorical_crossentropy(y_true, logits, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "log_prior": self.log_prior, "label_smoothing": self.label_smoothing}
