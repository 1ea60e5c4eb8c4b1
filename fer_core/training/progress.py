"""What a running training reports, without Keras: the job queue's pages read it in processes
that never load TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainProgress:
    """One report from a running training: after a batch, or with validation after an epoch."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    accuracy: float
    elapsed_seconds: float
    eta_seconds: float | None
    val_loss: float | None = None
    val_accuracy: float | None = None
    epoch_end: bool = False
