"""Checkpoints of a training run: after every epoch, a folder holds what a later run with the same
recipe needs to go on where this one stopped.

The folder holds ``state.json`` (:class:`RunState`: epochs done, best validation accuracy, minutes,
history, recipe and the command of every run), ``best.keras`` (the network of the best epoch) and
the training model as it is now: ``last.keras``, or for a distillation run ``student.keras`` and
``optimizer.npz`` (the student and its optimizer's state, not the teachers: they are stored models
that the resuming run loads again, checked unchanged by their weights' fingerprint). Every file is
written whole, so a run killed meanwhile leaves the last complete checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeGuard

import keras
import numpy as np

from fer_core.base.errors import DataError
from fer_core.training.recipe import TrainConfig

STATE_FILE, BEST_FILE, LAST_FILE = "state.json", "best.keras", "last.keras"
STUDENT_FILE, OPTIMIZER_FILE = "student.keras", "optimizer.npz"

#: Recipe entries that must match to resume a checkpoint (epochs, budget, patience, precision, seed and
#: the weight averaging window may change).
RESUME_KEYS = ("arch", "batch_size", "learning_rate", "weight_decay", "label_smoothing", "augment",
               "class_weight", "preprocessing", "teacher", "distill_weight", "temperature", "init_from",
               "schedule")


@dataclass
class RunState:
    """How far a run has come (a new run's, by default), as ``state.json`` keeps it."""

    config: dict  #: the recipe (``TrainConfig.to_dict``)
    epochs_done: int = 0
    best_val_accuracy: float | None = None
    minutes: float = 0.0  #: training minutes of every run so far
    history: dict[str, list[float]] = field(default_factory=dict)  #: Keras' logs, one entry per epoch
    commands: list[str] = field(default_factory=list)  #: the command of each run, in order
    teacher_weights: str | None = None  #: ``distill.weights_fingerprint`` of a distillation run's teacher


def has_checkpoint(directory: Path | None) -> TypeGuard[Path]:
    """A checkpoint folder (so not None) holding a run's state."""
    return directory is not None and (directory / STATE_FILE).exists()


def read_state(directory: Path, config: TrainConfig, teacher_weights: str | None) -> RunState:
    """The state of a checkpoint folder, checked to fit the run resuming it: its recipe (see
    :data:`RESUME_KEYS`) and, for distillation, the fingerprint of its teacher's weights."""
    path = directory / STATE_FILE
    expected = {entry.name for entry in fields(RunState)}
    try:
        saved = json.loads(path.read_text())
        missing = expected - set(saved)
    except (OSError, ValueError, TypeError) as error:
        missing = {f"readable JSON ({error})"}
    if missing:
        raise DataError(f"{path}: not a checkpoint state (no {', '.join(sorted(missing))}); delete {directory} "
                        "to start over")
    state = RunState(**{key: saved[key] for key in expected})
    recipe = config.to_dict()
    changed = [key for key in RESUME_KEYS if state.config.get(key) != recipe[key]]
    if changed:
        raise DataError(f"{directory} holds a checkpoint trained with another recipe ({', '.join(changed)} "
                        "differ); use another checkpoint folder or delete it to start over")
    if state.teacher_weights != teacher_weights:
        raise DataError(f"{directory}: the teacher models ({', '.join(config.teacher)}) changed since this "
                        "checkpoint was trained; restore them, or delete the folder to start over")
    return state


def _unreadable(directory: Path, error: Exception) -> DataError:
    return DataError(f"{directory}: cannot resume from this checkpoint ({error}); delete the folder to start over")


def load_training_model(directory: Path) -> keras.Model:
    """The training model of a checkpoint that is not a distillation run's (compiled, with its optimizer)."""
    try:
        return keras.saving.load_model(directory / LAST_FILE)
    except Exception as error:  # Keras raises many types for a damaged file
        raise _unreadable(directory, error) from error


def load_student(directory: Path) -> tuple[keras.Model, dict[str, np.ndarray]]:
    """The student network of a distillation checkpoint and its optimizer's state (see :func:`restore_optimizer`)."""
    try:
        student = keras.saving.load_model(directory / STUDENT_FILE)
        with np.load(directory / OPTIMIZER_FILE) as arrays:
            return student, {key: arrays[key] for key in arrays.files}
    except Exception as error:  # Keras and NumPy raise many types for a damaged file
        raise _unreadable(directory, error) from error


def restore_optimizer(trainer: keras.Model, optimizer_state: dict[str, np.ndarray], directory: Path) -> None:
    """Give a compiled training model's optimizer the state a distillation checkpoint saved."""
    trainer.optimizer.build(trainer.trainable_variables)
    expected = {str(i): tuple(variable.shape) for i, variable in enumerate(trainer.optimizer.variables)}
    if {key: array.shape for key, array in optimizer_state.items()} != expected:
        raise DataError(f"{directory / OPTIMIZER_FILE}: the optimizer state does not fit the student; "
                        "delete the folder to start over")
    trainer.optimizer.load_own_variables(optimizer_state)


def load_best(directory: Path | None) -> keras.Model | None:
    """The network of a checkpoint's best epoch, or None without a checkpoint folder or one."""
    if directory is None or not (directory / BEST_FILE).exists():
        return None
    return keras.saving.load_model(directory / BEST_FILE)
