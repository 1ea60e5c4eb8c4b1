"""The Keras callbacks of a training run and what they need: progress reports, stops and the time
budget (:class:`RunMonitor`), the checkpoint after every epoch (:class:`CheckpointWriter`), the
learning-rate schedule (:class:`WarmupSchedule`), stochastic weight averaging (:class:`WeightAverage`)
and the batch-normalisation statistics of averaged weights (:func:`recompute_batch_norm`).
"""

from __future__ import annotations

import json
import math
import threading
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import keras
import numpy as np

from fer_core.base.errors import DataError, SettingError
from fer_core.base.files import write_atomically
from fer_core.training.checkpoints import BEST_FILE, LAST_FILE, OPTIMIZER_FILE, STATE_FILE, STUDENT_FILE, RunState
from fer_core.training.progress import TrainProgress
from fer_core.training.recipe import TrainConfig


class ProgressListener(Protocol):
    """Receives progress reports; called from the training thread."""

    def __call__(self, progress: TrainProgress) -> None: ...


class RunMonitor(keras.callbacks.Callback):
    """Counts each epoch into the run's :class:`RunState` (history, best validation accuracy,
    minutes), reports progress, and stops the run when a stop event is set (the event's name is
    the reason) or the time budget is used up."""

    def __init__(self, config: TrainConfig, batches: int, listener: ProgressListener | None,
                 stop_events: dict[str, threading.Event], state: RunState):
        super().__init__()
        self.config, self.batches, self.listener, self.stop_events = config, batches, listener, stop_events
        self.state = state
        self.start_epoch, self.earlier_minutes = state.epochs_done, state.minutes
        self.stopped = "completed"
        self.improved = False  # whether the last epoch was the best so far
        self.epoch = self.start_epoch
        self.started = time.monotonic()
        self.epoch_started = self.started
        self.epoch_seconds: list[float] = []

    def minutes(self) -> float:
        """Training minutes so far, those of the runs this one resumes included."""
        return self.earlier_minutes + (time.monotonic() - self.started) / 60.0

    def budget_seconds(self) -> float | None:
        return None if self.config.minutes is None else self.config.minutes * 60.0

    def _stop(self, reason: str) -> None:
        self.stopped = reason
        self.model.stop_training = True

    def _eta(self, batch: int) -> float | None:
        done_batches = (self.epoch - self.start_epoch) * self.batches + batch + 1
        elapsed = time.monotonic() - self.started
        remaining = (self.config.epochs - self.epoch) * self.batches - batch - 1
        eta = elapsed / done_batches * remaining
        budget = self.budget_seconds()
        return eta if budget is None else min(eta, max(0.0, budget - elapsed))

    def _report(self, batch: int, logs: dict, **validation) -> None:
        if self.listener is not None:
            self.listener(TrainProgress(
                self.epoch + 1, self.config.epochs, batch + 1, self.batches,
                float(logs.get("loss", math.nan)), float(logs.get("accuracy", math.nan)),
                time.monotonic() - self.started, self._eta(batch), **validation))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self._report(batch, logs or {})
        requested = next((reason for reason, event in self.stop_events.items() if event.is_set()), None)
        if requested is not None:
            self._stop(requested)
        budget = self.budget_seconds()
        if budget is not None and time.monotonic() - self.started > budget:
            self._stop("time_budget")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        state = self.state
        for key, value in logs.items():
            state.history.setdefault(key, []).append(float(value))
        self.epoch_seconds.append(time.monotonic() - self.epoch_started)
        val_accuracy = logs.get("val_accuracy")
        self.improved = val_accuracy is not None and (state.best_val_accuracy is None
                                                      or val_accuracy > state.best_val_accuracy)
        if self.improved:
            state.best_val_accuracy = float(val_accuracy)
        state.epochs_done, state.minutes = epoch + 1, round(self.minutes(), 2)
        self._report(self.batches - 1, logs, val_loss=logs.get("val_loss"), val_accuracy=val_accuracy,
                     epoch_end=True)
        budget = self.budget_seconds()
        if budget is not None and self.stopped == "completed":
            elapsed = time.monotonic() - self.started
            if elapsed + float(np.mean(self.epoch_seconds)) > budget and epoch + 1 < self.config.epochs:
                self._stop("time_budget")


class CheckpointWriter(keras.callbacks.Callback):
    """Writes the checkpoint after every epoch (after ``monitor`` has counted it): the training
    model, or a distillation run's student and optimizer state; the network when its epoch is the
    best so far; then the state."""

    def __init__(self, directory: Path, network: keras.Model, monitor: RunMonitor):
        super().__init__()
        self.directory, self.network, self.monitor = directory, network, monitor
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SettingError(f"{directory}: cannot be the checkpoint folder ({error.strerror or error})") from error

    def on_epoch_end(self, epoch, logs=None):
        state = self.monitor.state
        if state.teacher_weights is None:
            write_atomically(self.directory / LAST_FILE, self.model.save)
        else:
            write_atomically(self.directory / STUDENT_FILE, self.network.save)
            optimizer_state: dict[str, np.ndarray] = {}
            self.model.optimizer.save_own_variables(optimizer_state)
            # allow_pickle is numpy's default, named so that no array can be taken for it
            write_atomically(self.directory / OPTIMIZER_FILE,
                             lambda path: np.savez(path, allow_pickle=True, **optimizer_state))
        if self.monitor.improved:
            write_atomically(self.directory / BEST_FILE, self.network.save)
        write_atomically(self.directory / STATE_FILE, lambda path: path.write_text(json.dumps(asdict(state), indent=1)))


class WarmupSchedule(keras.callbacks.Callback):
    """Linear warm-up to the peak learning rate, then cosine decay to 1% of it (or, for the
    ``constant`` schedule, the peak held to the end).

    The decay spans the epochs that will really run: with a time budget, the plan shrinks to the
    epochs that fit, measured after each epoch, so a budgeted run still ends fully annealed.
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int, monitor: RunMonitor):
        super().__init__()
        self.config, self.steps_per_epoch, self.monitor = config, steps_per_epoch, monitor
        self.planned_epochs = config.epochs

    def learning_rate(self, step: int) -> float:
        peak = self.config.learning_rate
        warmup = int(min(self.planned_epochs / 2, self.config.warmup_epochs) * self.steps_per_epoch)
        if step < warmup:
            return peak * (0.1 + 0.9 * step / warmup)
        if self.config.schedule == "constant":
            return peak
        total = max(warmup + 1, self.planned_epochs * self.steps_per_epoch)
        progress = min(1.0, (step - warmup) / (total - warmup))
        return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.model.optimizer.learning_rate.assign(self.learning_rate(step))

    def on_epoch_end(self, epoch, logs=None):
        budget = self.monitor.budget_seconds()
        if budget is None or not self.monitor.epoch_seconds:
            return
        remaining = budget - (time.monotonic() - self.monitor.started)
        fitting = int(remaining // float(np.mean(self.monitor.epoch_seconds)))
        self.planned_epochs = max(epoch + 1, min(self.config.epochs, epoch + 1 + fitting))


class WeightAverage(keras.callbacks.Callback):
    """Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and
    Better Generalization", UAI 2018): the running mean of the network's weights at the end of each
    of the last ``epochs`` epochs of the schedule's plan (which a time budget shortens). An epoch
    cut short (cancel, time budget) is left out. With a checkpoint folder the mean is saved there
    after each epoch, for a resumed run to go on with. A resumed run whose window starts at or
    before the mean's first epoch (more epochs and as many more averaged) adds to it; one whose
    window starts later starts the mean afresh, as its last epochs are others."""

    FILE = "average.npz"

    def __init__(self, network: keras.Model, epochs: int, schedule: WarmupSchedule, monitor: RunMonitor,
                 directory: Path | None, resume: bool):
        super().__init__()
        self.network, self.epochs, self.schedule, self.monitor = network, epochs, schedule, monitor
        self.directory = directory
        self.average: list[np.ndarray] | None = None
        self.count, self.first_epoch, self.last_epoch = 0, -1, -1
        if resume and directory is not None and (directory / self.FILE).exists():
            self._load(directory / self.FILE)

    def _load(self, path: Path) -> None:
        shapes = [tuple(weight.shape) for weight in self.network.weights]
        try:
            with np.load(path) as arrays:
                self.count, self.first_epoch, self.last_epoch = (
                    int(arrays[key]) for key in ("count", "first_epoch", "last_epoch"))
                self.average = [arrays[f"w{i}"] for i in range(len(shapes))]
                fits = len(arrays.files) == len(shapes) + 3 and [a.shape for a in self.average] == shapes
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a readable weight average ({error}); delete {path.parent} to start "
                            "over") from error
        if not fits:
            raise DataError(f"{path}: the weight average does not fit this network; delete {path.parent} to start over")

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor.stopped != "completed" or epoch <= self.last_epoch:
            return  # cut short, or run again after a crash (counted already)
        window = self.schedule.planned_epochs - self.epochs
        if epoch < window:
            return
        weights = self.network.get_weights()
        if self.average is None or self.first_epoch < window:
            self.average, self.count, self.first_epoch = [np.array(w, dtype=np.float64) for w in weights], 1, epoch
        else:
            self.count += 1
            self.average = [mean + (w - mean) / self.count for mean, w in zip(self.average, weights)]
        self.last_epoch = epoch
        average = self.average  # set just above (the lambda would see the attribute as possibly None)
        if self.directory is not None:
            write_atomically(self.directory / self.FILE, lambda path: np.savez(
                path, count=self.count, first_epoch=self.first_epoch, last_epoch=epoch, allow_pickle=True,
                **{f"w{i}": mean for i, mean in enumerate(average)}))


def _batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_batch_norms(layer))
    return found


def recompute_batch_norm(model: keras.Model, faces: np.ndarray, batch_size: int = 256) -> None:
    """Set every batch normalisation's moving mean and variance to the mean of its batch statistics
    over ``faces`` (each batch weighted by its faces). Averaged weights never ran in training, so
    the statistics gathered there do not fit them (the SWA paper's ``bn_update``)."""
    norms = _batch_norms(model)
    momenta = [norm.momentum for norm in norms]
    try:
        for start in range(0, len(faces) if norms else 0, batch_size):
            batch = faces[start:start + batch_size]
            for norm in norms:  # moving = moving * seen/(seen+n) + batch * n/(seen+n): the mean so far
                norm.momentum = start / (start + len(batch))
            model(batch, training=True)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
