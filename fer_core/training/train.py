"""Training with Keras, and the training service of the command line and the Train page.

:func:`train` runs one recipe (:class:`~fer_core.training.recipe.TrainConfig`) on faces: augmentation
layers, class weights, AdamW with a warm-up cosine (or constant) schedule, label smoothing,
knowledge distillation from a teacher (:mod:`fer_core.training.distill`), fine-tuning a stored model,
stochastic weight averaging (:mod:`fer_core.training.callbacks`), early stopping, checkpoints that resume
(:mod:`fer_core.training.checkpoints`), a time budget and progress reports. :func:`run_training` is the
whole job around it: data, split, teacher and starting networks, training, evaluation and the
stored model with its card.

A UI follows a run through a :class:`~fer_core.training.callbacks.ProgressListener` and stops it with an
event: ``cancel`` (nothing is kept) or ``finish`` (the run ends as if its time were up and keeps its
best weights); the command line prints the same reports.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from fer_core.base.errors import DataError
from fer_core.base.labels import NUM_CLASSES
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.load import load_dataset
from fer_core.datasets.splits import train_validation
from fer_core.faces.preprocess import Preprocessing, images_to_input
from fer_core.registry.cards import ModelCard, Training, count_classes
from fer_core.registry.store import ModelStore
from fer_core.training.callbacks import (
    CheckpointWriter,
    ProgressListener,
    RunMonitor,
    WarmupSchedule,
    WeightAverage,
    recompute_batch_norm,
)
from fer_core.training.checkpoints import (
    RunState,
    has_checkpoint,
    load_best,
    load_student,
    load_training_model,
    read_state,
    restore_optimizer,
)
from fer_core.training.distill import DistillationLoss, distillation_trainer, student_accuracy, weights_fingerprint
from fer_core.training.ensemble import lineage, starting_network, teacher_model
from fer_core.training.losses import LogitAdjustedLoss
from fer_core.training.networks import build_augmentation, build_model, copy_in_precision, describe, with_augmentation
from fer_core.training.publish import save_evaluated
from fer_core.training.recipe import TrainConfig, TrainingData, reproduce_command

#: Training faces (at most) on which batch-normalisation statistics are measured again for averaged weights.
BATCH_NORM_FACES = 8192


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
    """Per-class loss weights for a recipe's ``class_weight``: none, balanced (inverse frequency)
    or its square root."""
    if mode == "none":
        return None

    present = np.unique(labels)
    balanced = compute_class_weight("balanced", classes=present, y=labels)
    weights = {"balanced": balanced, "sqrt": np.sqrt(balanced)}[mode]
    return {int(c): float(w) for c, w in zip(present, weights)}


def dataset_inputs(dataset: FaceDataset, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and one-hot targets for the faces of a dataset."""
    x = images_to_input(dataset.images, preprocessing)
    y = keras.utils.to_categorical(dataset.labels, NUM_CLASSES).astype(np.float32)
    return x, y


def compile_trainer(trainer: keras.Model, config: TrainConfig, labels: np.ndarray) -> None:
    """Compile a training model with the recipe's optimizer and loss (the distillation loss for a
    recipe with teachers; the logit-adjusted one, from the training ``labels``' shares, if chosen)."""
    if config.teacher:
        loss = DistillationLoss(config.distill_weight, config.temperature, config.label_smoothing)
        metrics = [keras.metrics.MeanMetricWrapper(student_accuracy, name="accuracy")]
    elif config.loss == "logit_adjusted":
        loss, metrics = LogitAdjustedLoss.for_labels(labels, config.label_smoothing), ["accuracy"]
    else:
        loss, metrics = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing), ["accuracy"]
    trainer.compile(optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
                    loss=loss, metrics=metrics)


def _new_trainer(config: TrainConfig, network: keras.Model, teacher: keras.Model | None,
                 start_from: keras.Model | None, labels: np.ndarray) -> keras.Model:
    """The compiled training model of a new run around ``network``: augmentation, then the network
    (beside the frozen teacher, for distillation)."""
    if config.init_from:
        if start_from is None:
            raise ValueError(f"the recipe starts from {config.init_from}: pass that model (start_from) to a new run")
        try:
            network.set_weights(start_from.get_weights())
        except ValueError as error:
            raise DataError(f"{config.init_from}: its weights do not fit a fresh {network.name} ({error})") from error
    augmentation = build_augmentation(webcam=config.webcam_augment, seed=config.seed) if config.augment else None
    if teacher is not None:
        trainer = distillation_trainer(network, teacher, augmentation)
    else:
        trainer = with_augmentation(network, augmentation) if augmentation is not None else network
    compile_trainer(trainer, config, labels)
    return trainer


def _resumed_trainer(directory: Path, state: RunState, config: TrainConfig, teacher: keras.Model | None,
                     network_name: str, labels: np.ndarray) -> tuple[keras.Model, keras.Model]:
    """The training model of a checkpoint and the network inside it. A distillation checkpoint's
    student is put beside ``teacher`` again, with its optimizer's saved state."""
    if teacher is None:
        trainer = load_training_model(directory)
        return trainer, trainer if trainer.name == network_name else trainer.get_layer(network_name)
    student, optimizer_state = load_student(directory)
    augmentation = (build_augmentation(webcam=config.webcam_augment, seed=config.seed + state.epochs_done)
                    if config.augment else None)
    trainer = distillation_trainer(student, teacher, augmentation)
    compile_trainer(trainer, config, labels)
    restore_optimizer(trainer, optimizer_state, directory)
    return trainer, student


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
    ``ensemble.teacher_model``) is distilled into the network as it trains; a resumed run takes
    the same teacher again. ``start_from`` (the stored model ``config.init_from`` names) gives a
    new run its first weights; a resumed run needs none. With ``config.swa_epochs`` there is no
    early stopping: the last epochs are averaged, not selected. A run whose ``cancel`` is set
    before it starts trains nothing.
    """
    config.validate()
    if bool(config.teacher) != (teacher is not None):
        raise ValueError("pass the teacher model exactly when the recipe names teacher models")
    if start_from is not None and not config.init_from:
        raise ValueError("a starting model was given but the recipe names none (init_from)")
    if validation is None:
        dataset, validation = train_validation(dataset, config.seed)
    if len(dataset) == 0 or len(validation) == 0:
        raise DataError("training needs at least one training and one validation face")
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
        network = build_model(config.arch, (preprocessing.size, preprocessing.size, 1))
        teacher_weights = weights_fingerprint(teacher) if teacher is not None else None
        if has_checkpoint(directory):
            state = read_state(directory, config, teacher_weights)
            state.config = config.to_dict()  # this run's: its epochs, budget or averaging may differ
            trainer, network = _resumed_trainer(directory, state, config, teacher, network.name, dataset.labels)
        else:
            state = RunState(config.to_dict(), teacher_weights=teacher_weights)
            trainer = _new_trainer(config, network, teacher, start_from, dataset.labels)
        if command is not None and command not in state.commands:  # a crashed run started again is one run
            state.commands.append(command)
        start_epoch = state.epochs_done
        stop_events = {reason: event for reason, event in (("cancelled", cancel), ("finished", finish))
                       if event is not None}
        monitor = RunMonitor(config, steps_per_epoch, listener, stop_events, state)
        schedule = WarmupSchedule(config, steps_per_epoch, monitor)
        # Weight averaging runs every planned epoch (no early stopping); its best weights are kept
        # all the same, for a run asked to finish before its averaging began.
        patience = config.epochs if config.swa_epochs else config.patience
        early = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                              restore_best_weights=True, verbose=0)
        averager = None
        if config.swa_epochs:
            averager = WeightAverage(network, config.swa_epochs, schedule, monitor, directory, resume=start_epoch > 0)
        writer = CheckpointWriter(directory, network, monitor) if directory is not None else None
        if cancel is not None and cancel.is_set():
            monitor.stopped = "cancelled"  # before the first batch: nothing to train
        elif start_epoch < config.epochs:
            trainer.fit(
                x_train, y_train,
                batch_size=config.batch_size,
                epochs=config.epochs,
                initial_epoch=start_epoch,
                validation_data=(x_val, y_val),
                class_weight=class_weights(dataset.labels, config.class_weight),
                callbacks=[step for step in (averager, monitor, writer, schedule, early) if step is not None],
                verbose=0,
            )
        stopped = monitor.stopped
        if stopped == "completed" and early.stopped_epoch > 0:
            stopped = "early_stopping"
        val_accuracy, averaged = state.best_val_accuracy, 0
        if averager is not None and averager.count and stopped != "cancelled":
            shortened = averager.first_epoch < schedule.planned_epochs - config.swa_epochs
            if shortened and stopped != "finished":  # a run over, window shortened (one asked to finish: as it is)
                raise DataError(f"{directory}: its weight average began at epoch {averager.first_epoch + 1}, before "
                                f"the last {config.swa_epochs} epochs; average as many epochs as before, or train more")
            network.set_weights(averager.average)
            chosen = np.random.default_rng(config.seed).permutation(len(x_train))[:BATCH_NORM_FACES]
            recompute_batch_norm(network, x_train[chosen])
            val_accuracy = float(np.mean(network.predict(x_val, verbose=0).argmax(axis=1) == y_val.argmax(axis=1)))
            averaged = averager.count
        elif (best := load_best(directory)) is not None:
            network.set_weights(best.get_weights())
        elif early.best_weights is not None:
            trainer.set_weights(early.best_weights)
        minutes = monitor.minutes()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    model = network if precision == "float32" else copy_in_precision(network, config.arch)
    return TrainResult(model, config, state.history, len(state.history.get("loss", [])), stopped, minutes,
                       val_accuracy, len(dataset), len(validation), state.commands, averaged)


class StageListener(Protocol):
    """Told when a run moves on: ``training`` (the data split into these rows), then ``saving``."""

    def __call__(self, stage: str, train_rows: int, validation_rows: int) -> None: ...


@dataclass
class TrainingOutcome:
    """What :func:`run_training` did: the run, and the stored model's card (None when cancelled)."""

    result: TrainResult
    card: ModelCard | None


def run_training(
    config: TrainConfig,
    data: TrainingData,
    name: str,
    *,
    store: ModelStore | None = None,
    checkpoint_dir: Path | None = None,
    listener: ProgressListener | None = None,
    on_stage: StageListener | None = None,
    cancel: threading.Event | None = None,
    finish: threading.Event | None = None,
) -> TrainingOutcome:
    """Train ``config`` on ``data`` and store the model as ``name`` with its card: the training
    service of the command line and of the Train page.

    Checks the recipe and the name, loads the teachers and the starting network it names (a run
    resuming its checkpoint needs none), loads and splits the data (FER2013's PublicTest rows
    validate, else a stratified split), trains (see :func:`train`), then evaluates the model on the
    validation faces and stores it. The card's ``reproduce`` is the command of this recipe
    (:func:`~fer_core.training.recipe.reproduce_command`), after those of the network it was fine-tuned from
    and of the earlier runs of its checkpoint. A cancelled run stores nothing.
    """
    store = store or ModelStore()
    try:
        command = reproduce_command(config.validate(name), data.name, name)
        store.ensure_root()
        preprocessing = Preprocessing.from_dict(config.preprocessing)
        teacher = teacher_model(store, config.teacher, preprocessing) if config.teacher else None
        start_from = None
        if config.init_from and not has_checkpoint(checkpoint_dir):
            start_from = starting_network(store, config.init_from, config.arch, preprocessing)
        dataset = load_dataset(data.path, cache=data.cache)
    finally:
        if data.delete_after_loading:
            data.path.unlink(missing_ok=True)
    train_part, validation = train_validation(dataset, config.seed)
    if on_stage is not None:
        on_stage("training", len(train_part), len(validation))
    result = train(train_part, config, validation=validation, checkpoint_dir=checkpoint_dir, listener=listener,
                   cancel=cancel, finish=finish, command=command, teacher=teacher, start_from=start_from)
    if result.stopped == "cancelled":
        return TrainingOutcome(result, None)
    if on_stage is not None:
        on_stage("saving", len(train_part), len(validation))
    origin = lineage(store, config.init_from, result.commands)
    card = _store_result(result, name, validation, data.name, origin.reproduce, origin.earlier_minutes, store,
                         count_classes(train_part.labels))
    return TrainingOutcome(result, card)


def _store_result(result: TrainResult, name: str, validation: FaceDataset, data_name: str, reproduce: str,
                  earlier_minutes: float | None, store: ModelStore, class_counts: dict[str, int] | None) -> ModelCard:
    """Evaluate a finished run on its validation faces, time it, and save it with its card
    (see ``publish.save_evaluated``); returns the card. ``earlier_minutes`` is the training of
    the network the run was fine-tuned from (None when unknown): ``total_minutes`` adds it;
    ``class_counts`` are the faces of each class it was trained on."""

    training = Training(data=data_name, train_rows=result.train_rows, validation_rows=result.validation_rows,
                        precision=resolve_precision(result.config.precision), epochs_run=result.epochs_run,
                        stopped=result.stopped, minutes=round(result.minutes, 1),
                        total_minutes=None if earlier_minutes is None else round(result.minutes + earlier_minutes, 1),
                        averaged_epochs=result.averaged_epochs, recipe=result.config.to_dict(),
                        history=result.history, class_counts=class_counts)
    return save_evaluated(result.model, name, validation, store=store,
                          preprocessing=Preprocessing.from_dict(result.config.preprocessing),
                          arch=result.config.arch, training=training, reproduce=reproduce,
                          description=describe(result.config.arch))
