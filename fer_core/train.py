"""Training with Keras: augmentation layers, class weights, AdamW with a warm-up cosine (or constant)
schedule, label smoothing, knowledge distillation from a teacher, fine-tuning a stored model,
stochastic weight averaging, early stopping, checkpoints that resume, a time budget and progress
reports.

A UI follows a run through a :class:`ProgressListener` and stops it with an event: ``cancel``
(nothing is kept) or ``finish`` (the run ends as if its time were up and keeps its best weights);
the command line prints the same reports.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import keras
import numpy as np

from fer_core.data import FaceDataset, train_validation
from fer_core.errors import DataError
from fer_core.labels import NUM_CLASSES
from fer_core.models import build_augmentation, build_model, copy_in_precision, with_augmentation
from fer_core.preprocess import Preprocessing, images_to_input


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the model card as its recipe)."""

    arch: str = "fer_vgg"
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 2.0
    augment: bool = True
    class_weight: str = "none"  # none | balanced | sqrt
    patience: int = 15
    minutes: float | None = None
    precision: str = "auto"  # auto | float32 | mixed_bfloat16
    seed: int = 0
    preprocessing: dict = field(default_factory=lambda: Preprocessing().to_dict())
    teacher: list[str] = field(default_factory=list)  # stored models whose mean answer is learnt from
    distill_weight: float = 0.5  # share of the loss that follows the teacher rather than the labels
    temperature: float = 2.0  # softens both answers before they are compared
    init_from: str | None = None  # stored model whose weights start the run (fine-tuning)
    schedule: str = "cosine"  # cosine (anneals to 1% of the peak) | constant (holds the peak)
    swa_epochs: int = 0  # the last N epochs' weights are averaged into the result (SWA)

    def to_dict(self) -> dict:
        return asdict(self)


@keras.saving.register_keras_serializable(package="fer_core")
class DistillationLoss(keras.losses.Loss):
    """Knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
    Network", 2015): cross-entropy with the labels, blended with the cross-entropy between the
    teacher's and the student's probabilities softened by ``temperature`` (scaled by its square).

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


#: A distillation checkpoint keeps the student network and its optimizer's state, not the whole
#: training model: its teachers are stored models that the resuming run loads again (checked to
#: be unchanged by ``teacher_weights`` in the state), so it takes the student's size, not theirs.
STUDENT_FILE, OPTIMIZER_FILE = "student.keras", "optimizer.npz"


def weights_fingerprint(model: keras.Model) -> str:
    """A digest of a model's weights, to tell whether a teacher changed between two runs."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def _write_whole(target: Path, write: Callable[[Path], object]) -> None:
    """Write ``target`` through a file beside it that then replaces it, so that a run killed
    meanwhile leaves the last whole file, not a broken one."""
    partial = target.with_name(f"{target.stem}.partial{target.suffix}")
    write(partial)
    os.replace(partial, target)


def _save_distillation_checkpoint(trainer: keras.Model, student: keras.Model, directory: Path) -> None:
    _write_whole(directory / STUDENT_FILE, student.save)
    optimizer_state: dict[str, np.ndarray] = {}
    trainer.optimizer.save_own_variables(optimizer_state)
    _write_whole(directory / OPTIMIZER_FILE, lambda path: np.savez(path, **optimizer_state))


def _resume_distillation(directory: Path, state: dict, config: TrainConfig, teacher: keras.Model,
                         teacher_weights: str, augmentation: keras.Sequential | None) -> keras.Model:
    """The training model of a distillation checkpoint: its student and optimizer state beside
    ``teacher`` (whose :func:`weights_fingerprint` is ``teacher_weights``), which must be the
    teacher the checkpoint was trained with."""
    saved_teacher = state.get("teacher_weights")  # None right after a whole training model's checkpoint
    if saved_teacher is not None and saved_teacher != teacher_weights:
        raise DataError(f"{directory}: the teacher models ({', '.join(config.teacher)}) changed since this "
                        "checkpoint was trained; restore them, or delete the folder to start over")
    try:
        student = keras.saving.load_model(directory / STUDENT_FILE)
        with np.load(directory / OPTIMIZER_FILE) as arrays:
            optimizer_state = {key: arrays[key] for key in arrays.files}
    except Exception as error:  # Keras and NumPy raise many types for a damaged file
        raise DataError(f"{directory}: cannot resume from this checkpoint ({error}); "
                        "delete the folder to start over") from error
    trainer = distillation_trainer(student, teacher, augmentation)
    _compile(trainer, config)
    trainer.optimizer.build(trainer.trainable_variables)
    expected = {str(i): tuple(variable.shape) for i, variable in enumerate(trainer.optimizer.variables)}
    if {key: array.shape for key, array in optimizer_state.items()} != expected:
        raise DataError(f"{directory / OPTIMIZER_FILE}: the optimizer state does not fit the student; "
                        "delete the folder to start over")
    trainer.optimizer.load_own_variables(optimizer_state)
    return trainer


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


class ProgressListener(Protocol):
    """Receives progress reports; called from the training thread."""

    def __call__(self, progress: TrainProgress) -> None: ...


@dataclass
class TrainResult:
    """A finished run: the inference model (best or averaged weights) and how the run went."""

    model: keras.Model
    config: TrainConfig
    history: dict[str, list[float]]
    epochs_run: int
    stopped: str  # completed | early_stopping | time_budget | finished (asked to) | cancelled
    minutes: float
    val_accuracy: float | None  # of the returned weights
    train_rows: int
    validation_rows: int
    commands: list[str] = field(default_factory=list)  # one per run of a resumed checkpoint
    averaged_epochs: int = 0  # epochs whose weights were averaged into the model (SWA)


def resolve_precision(choice: str) -> str:
    """``auto`` picks mixed_bfloat16 only on CPUs with AMX, where it measured faster.

    On CPUs with AVX-512 BF16 but no AMX, bfloat16 trained slower than float32 here.
    """
    if choice != "auto":
        return choice
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if "amx_bf16" in flags else "float32"


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """Per-class loss weights: none, balanced (inverse frequency) or its square root."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise ValueError(f"class_weight must be none, balanced or sqrt, not {mode!r}")
    return {int(c): float(w) for c, w in zip(present, weights)}


class _RunMonitor(keras.callbacks.Callback):
    """Reports progress, honours the stop events (by reason) and the time budget, and checkpoints."""

    def __init__(self, config: TrainConfig, batches: int, listener: ProgressListener | None,
                 stop_events: dict[str, threading.Event], checkpoint_dir: Path | None, base_name: str,
                 history: dict[str, list[float]], start_epoch: int, best: float | None,
                 earlier_minutes: float = 0.0, commands: list[str] | None = None,
                 teacher_weights: str | None = None):
        super().__init__()
        self.earlier_minutes, self.commands = earlier_minutes, commands or []
        self.teacher_weights = teacher_weights  # fingerprint of a distillation run's teacher
        self.config, self.batches, self.listener, self.stop_events = config, batches, listener, stop_events
        self.checkpoint_dir, self.base_name = checkpoint_dir, base_name
        self.history, self.start_epoch, self.best = history, start_epoch, best
        self.stopped = "completed"
        self.epoch = start_epoch
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

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if self.listener is not None:
            self.listener(TrainProgress(
                self.epoch + 1, self.config.epochs, batch + 1, self.batches,
                float(logs.get("loss", math.nan)), float(logs.get("accuracy", math.nan)),
                time.monotonic() - self.started, self._eta(batch)))
        requested = next((reason for reason, event in self.stop_events.items() if event.is_set()), None)
        if requested is not None:
            self._stop(requested)
        budget = self.budget_seconds()
        if budget is not None and time.monotonic() - self.started > budget:
            self._stop("time_budget")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.epoch_seconds.append(time.monotonic() - self.epoch_started)
        val_accuracy = logs.get("val_accuracy")
        improved = val_accuracy is not None and (self.best is None or val_accuracy > self.best)
        if improved:
            self.best = float(val_accuracy)
        if self.checkpoint_dir is not None:
            self._checkpoint(epoch + 1, improved)
        if self.listener is not None:
            self.listener(TrainProgress(
                epoch + 1, self.config.epochs, self.batches, self.batches,
                float(logs.get("loss", math.nan)), float(logs.get("accuracy", math.nan)),
                time.monotonic() - self.started, self._eta(self.batches - 1),
                logs.get("val_loss"), val_accuracy, epoch_end=True))
        budget = self.budget_seconds()
        if budget is not None and self.stopped == "completed":
            elapsed = time.monotonic() - self.started
            if elapsed + float(np.mean(self.epoch_seconds)) > budget and epoch + 1 < self.config.epochs:
                self._stop("time_budget")

    def _checkpoint(self, epochs_done: int, improved: bool) -> None:
        directory = self.checkpoint_dir
        network = _base_model(self.model, self.base_name)
        state = {"epochs_done": epochs_done, "best_val_accuracy": self.best, "minutes": round(self.minutes(), 2),
                 "history": self.history, "config": self.config.to_dict(), "commands": self.commands}
        if self.teacher_weights is None:
            _write_whole(directory / "last.keras", self.model.save)
        else:
            _save_distillation_checkpoint(self.model, network, directory)
            state["teacher_weights"] = self.teacher_weights
        if improved:
            _write_whole(directory / "best.keras", network.save)
        _write_whole(directory / "state.json", lambda path: path.write_text(json.dumps(state, indent=1)))
        if self.teacher_weights is not None:  # the whole training model an older version saved
            (directory / "last.keras").unlink(missing_ok=True)


#: Training faces (at most) on which batch-normalisation statistics are measured again for averaged weights.
BATCH_NORM_FACES = 8192

#: Recipe entries that must match to resume a checkpoint (epochs, budget, patience and the weight
#: averaging window may change).
_RESUME_KEYS = ("arch", "batch_size", "learning_rate", "weight_decay", "label_smoothing", "augment",
                "class_weight", "preprocessing", "teacher", "distill_weight", "temperature", "init_from",
                "schedule")


def _read_checkpoint_state(directory: Path, config: TrainConfig) -> dict:
    """The saved state of a checkpoint folder, checked against the recipe of the run resuming it."""
    path = directory / "state.json"
    try:
        state = json.loads(path.read_text())
        missing = {"config", "epochs_done", "best_val_accuracy", "history"} - set(state)
    except (OSError, ValueError, TypeError) as error:
        missing = {f"readable JSON ({error})"}
    if missing:
        raise DataError(f"{path}: not a checkpoint state (no {', '.join(sorted(missing))}); "
                        f"delete {directory} to start over")
    defaults = TrainConfig().to_dict()  # for entries that checkpoints of older versions lack
    changed = [key for key in _RESUME_KEYS if state["config"].get(key, defaults[key]) != config.to_dict()[key]]
    if changed:
        raise DataError(f"{directory} holds a checkpoint trained with another recipe ({', '.join(changed)} "
                        "differ); use another checkpoint folder or delete it to start over")
    return state


def _base_model(trainer: keras.Model, name: str) -> keras.Model:
    """The network inside a training model (itself when there is no augmentation wrapper)."""
    return trainer if trainer.name == name else trainer.get_layer(name)


def dataset_inputs(dataset: FaceDataset, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and one-hot targets for the faces of a dataset."""
    x = images_to_input(dataset.images, preprocessing)
    y = keras.utils.to_categorical(dataset.labels, NUM_CLASSES).astype(np.float32)
    return x, y


def _compile(model: keras.Model, config: TrainConfig) -> None:
    if config.teacher:
        loss = DistillationLoss(config.distill_weight, config.temperature, config.label_smoothing)
        metrics = [keras.metrics.MeanMetricWrapper(student_accuracy, name="accuracy")]
    else:
        loss, metrics = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing), ["accuracy"]
    model.compile(optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
                  loss=loss, metrics=metrics)


class _WarmupSchedule(keras.callbacks.Callback):
    """Linear warm-up to the peak learning rate, then cosine decay to 1% of it (or, for the
    ``constant`` schedule, the peak held to the end).

    The decay spans the epochs that will really run: with a time budget, the plan shrinks to the
    epochs that fit, measured after each epoch, so a budgeted run still ends fully annealed.
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int, monitor: _RunMonitor):
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


class _WeightAverage(keras.callbacks.Callback):
    """Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and
    Better Generalization", UAI 2018): the running mean of the network's weights at the end of each
    of the last ``epochs`` epochs of the schedule's plan (which a time budget shortens). An epoch
    cut short (cancel, time budget) is left out. With a checkpoint folder the mean is saved there
    after each epoch, for a resumed run to go on with. A resumed run whose window starts at or
    before the mean's first epoch (more epochs and as many more averaged) adds to it; one whose
    window starts later starts the mean afresh, as its last epochs are others."""

    FILE = "average.npz"

    def __init__(self, network: keras.Model, epochs: int, schedule: _WarmupSchedule, monitor: _RunMonitor,
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
        if self.directory is not None:
            _write_whole(self.directory / self.FILE, lambda path: np.savez(
                path, count=self.count, first_epoch=self.first_epoch, last_epoch=epoch,
                **{f"w{i}": mean for i, mean in enumerate(self.average)}))


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


def train(
    dataset: FaceDataset,
    config: TrainConfig,
    *,
    validation: FaceDataset | None = None,
    checkpoint_dir: str | Path | None = None,
    listener: ProgressListener | None = None,
    cancel: threading.Event | None = None,
    finish: threading.Event | None = None,
    command: str | None = None,
    teacher: keras.Model | None = None,
    start_from: keras.Model | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``dataset`` and return the model with the best validation accuracy
    (or, with ``config.swa_epochs``, the mean of the last epochs' weights).

    Without ``validation``, FER2013's PublicTest rows are used when present, else a stratified
    10% split. With ``checkpoint_dir``, every epoch is checkpointed and a later call with the
    same directory resumes where the last one stopped. ``command`` (how this run was started) is
    kept in the checkpoint, so a model trained over several runs lists every one of them. A
    ``teacher`` (the float32 model of the stored models ``config.teacher`` names, e.g. from
    ``ensemble.teacher_model``) is distilled into the network as it trains; its checkpoints keep
    the student and its optimizer's state, and a resumed run takes the same teacher again.
    ``start_from`` (the stored model ``config.init_from`` names) gives a new run its first
    weights; a resumed run needs none. With ``config.swa_epochs`` there is no early stopping:
    the last epochs are averaged, not selected.
    """
    if bool(config.teacher) != (teacher is not None):
        raise ValueError("pass the teacher model exactly when the recipe names teacher models")
    if config.teacher and not (0.0 <= config.distill_weight <= 1.0 and config.temperature > 0):
        raise ValueError(f"the distillation weight must lie in 0-1 and the temperature be above 0, not "
                         f"{config.distill_weight} and {config.temperature}")
    if start_from is not None and not config.init_from:
        raise ValueError("a starting model was given but the recipe names none (init_from)")
    if config.schedule not in ("cosine", "constant"):
        raise ValueError(f"the schedule must be cosine or constant, not {config.schedule!r}")
    if not 0 <= config.swa_epochs <= config.epochs:
        raise ValueError(f"the averaged epochs must lie in 0-{config.epochs} (the epochs), not {config.swa_epochs}")
    if validation is None:
        dataset, validation = train_validation(dataset, config.seed)
    if len(dataset) == 0 or len(validation) == 0:
        raise ValueError("training needs at least one training and one validation face")
    preprocessing = Preprocessing.from_dict(config.preprocessing)
    x_train, y_train = dataset_inputs(dataset, preprocessing)
    x_val, y_val = dataset_inputs(validation, preprocessing)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)

    keras.utils.set_random_seed(config.seed)
    precision = resolve_precision(config.precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
        history: dict[str, list[float]] = {}
        start_epoch, best, earlier_minutes, commands = 0, None, 0.0, []
        input_shape = (preprocessing.size, preprocessing.size, 1)
        base = build_model(config.arch, input_shape)
        teacher_weights = weights_fingerprint(teacher) if teacher is not None else None
        if directory is not None and (directory / "state.json").exists():
            state = _read_checkpoint_state(directory, config)
            if teacher is not None and (directory / STUDENT_FILE).exists():
                augmentation = build_augmentation(seed=config.seed + state["epochs_done"]) if config.augment else None
                trainer = _resume_distillation(directory, state, config, teacher, teacher_weights, augmentation)
            else:
                try:
                    trainer = keras.saving.load_model(directory / "last.keras")
                except Exception as error:  # Keras raises many types for a damaged file
                    raise DataError(f"{directory / 'last.keras'}: cannot resume from this checkpoint ({error}); "
                                    "delete the folder to start over") from error
            base = _base_model(trainer, base.name)
            start_epoch, best, history = state["epochs_done"], state["best_val_accuracy"], state["history"]
            earlier_minutes = float(state.get("minutes", 0.0))
            commands = list(state.get("commands", []))
        else:
            if config.init_from:
                _start_from(base, start_from, config.init_from)
            augmentation = build_augmentation(seed=config.seed) if config.augment else None
            if teacher is not None:
                trainer = distillation_trainer(base, teacher, augmentation)
            else:
                trainer = with_augmentation(base, augmentation) if augmentation is not None else base
            _compile(trainer, config)
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)

        if command is not None and command not in commands:  # a crashed run started again is one run
            commands.append(command)
        stop_events = {reason: event for reason, event in (("cancelled", cancel), ("finished", finish))
                       if event is not None}
        monitor = _RunMonitor(config, steps_per_epoch, listener, stop_events, directory, base.name,
                              history, start_epoch, best, earlier_minutes, commands, teacher_weights)
        schedule = _WarmupSchedule(config, steps_per_epoch, monitor)
        # Weight averaging runs every planned epoch (no early stopping); its best weights are kept
        # all the same, for a run asked to finish before its averaging began.
        patience = config.epochs if config.swa_epochs else config.patience
        early = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                              restore_best_weights=True, verbose=0)
        averager = None
        if config.swa_epochs:
            averager = _WeightAverage(base, config.swa_epochs, schedule, monitor, directory, resume=start_epoch > 0)
        if start_epoch < config.epochs:
            trainer.fit(
                x_train, y_train,
                batch_size=config.batch_size,
                epochs=config.epochs,
                initial_epoch=start_epoch,
                validation_data=(x_val, y_val),
                class_weight=class_weights(dataset.labels, config.class_weight),
                callbacks=[callback for callback in (averager, monitor, schedule, early) if callback is not None],
                verbose=0,
            )
        stopped = monitor.stopped
        if stopped == "completed" and early.stopped_epoch > 0:
            stopped = "early_stopping"
        val_accuracy, averaged = monitor.best, 0
        if averager is not None and averager.count and stopped != "cancelled":
            shortened = averager.first_epoch < schedule.planned_epochs - config.swa_epochs
            if shortened and stopped != "finished":  # a run over, window shortened (one asked to finish: as it is)
                raise DataError(f"{directory}: its weight average began at epoch {averager.first_epoch + 1}, before "
                                f"the last {config.swa_epochs} epochs; average as many epochs as before, or train more")
            base.set_weights(averager.average)
            chosen = np.random.default_rng(config.seed).permutation(len(x_train))[:BATCH_NORM_FACES]
            recompute_batch_norm(base, x_train[chosen])
            val_accuracy = float(np.mean(base.predict(x_val, verbose=0).argmax(axis=1) == y_val.argmax(axis=1)))
            averaged = averager.count
        elif directory is not None and (directory / "best.keras").exists():
            best_model = keras.saving.load_model(directory / "best.keras")
            base.set_weights(best_model.get_weights())
        elif early.best_weights is not None:
            trainer.set_weights(early.best_weights)
        minutes = monitor.minutes()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    model = base
    if precision != "float32":
        model = copy_in_precision(base, config.arch)
    epochs_run = len(history.get("loss", []))
    return TrainResult(model, config, history, epochs_run, stopped, minutes, val_accuracy,
                       len(dataset), len(validation), commands, averaged)


def check_target_name(name: str, config: TrainConfig) -> None:
    """Refuse to save a fine-tuned network over the network it starts from (its recipe would
    then point at itself)."""
    if config.init_from and name.casefold() == config.init_from.casefold():
        raise DataError(f"fine-tuning {config.init_from} cannot save over it: choose another name")


def _start_from(network: keras.Model, start: keras.Model | None, name: str) -> None:
    if start is None:
        raise ValueError(f"the recipe starts from {name}: pass that model (start_from) to a new run")
    try:
        network.set_weights(start.get_weights())
    except ValueError as error:
        raise DataError(f"{name}: its weights do not fit a fresh {network.name} ({error})") from error


def store_result(
    result: TrainResult,
    name: str,
    validation: FaceDataset,
    *,
    data_description: str,
    reproduce: str,
    earlier_minutes: float | None = 0.0,
    store=None,
) -> dict:
    """Evaluate a finished run on its validation faces, time it, and save it with its card
    (see ``evaluate.save_evaluated``); returns the card. ``earlier_minutes`` is the training of
    the network the run was fine-tuned from (None when unknown): ``total_minutes`` adds it."""
    from fer_core.evaluate import save_evaluated
    from fer_core.models import describe

    training = {"data": data_description, "train_rows": result.train_rows,
                "validation_rows": result.validation_rows, "recipe": result.config.to_dict(),
                "precision": resolve_precision(result.config.precision),
                "epochs_run": result.epochs_run, "stopped": result.stopped,
                "minutes": round(result.minutes, 1),
                "total_minutes": None if earlier_minutes is None else round(result.minutes + earlier_minutes, 1),
                "averaged_epochs": result.averaged_epochs,
                "history": result.history}
    return save_evaluated(result.model, name, validation, store=store,
                          preprocessing=Preprocessing.from_dict(result.config.preprocessing),
                          card_fields={"arch": result.config.arch, "training": training, "reproduce": reproduce,
                                       "description": describe(result.config.arch)})
