"""Fine-tuning a stored model on a class's own faces in about a minute, keeping what it knew.

A model trained on FER2013 meets another camera, light and faces in a classroom; a few hundred of
the class's own faces (``fer_core.datasets.collection``) teach it the new look. Trained on them alone, a
network forgets: classes the class did not record fade, and FER2013's faces score far lower.
:func:`finetune` therefore, for each network (each member of an ensemble):

- trains all but the first block (the layers up to the first pooling, which see the raw
  pixels) for a fixed number of steps, the faces augmented in geometry and in brightness and
  contrast, with the loss over the classes the faces show only, so that classes without faces
  are not taught away;
- stores the weights halfway between the starting and the fine-tuned ones (WiSE-FT:
  Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022).

The settings (:class:`FineTuneSettings`) were measured and chosen on a proxy of another source
(docs/experiments.md, "Fine-tuning on a class's own faces"). Before training, whole recordings
are held out (:func:`hold_out`); the starting and the fine-tuned model are both scored on them,
and the stored model's card keeps both figures (``cards.FineTuning``).
"""

from __future__ import annotations

import math
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

from fer_core.base.errors import DataError
from fer_core.base.labels import EMOTIONS, NUM_CLASSES
from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.evaluate import evaluate_classifier
from fer_core.inference.predict import EmotionClassifier
from fer_core.registry.cards import FineTuning, Member, ModelCard, Training
from fer_core.registry.store import ModelStore, StoredModel, check_name
from fer_core.training.ensemble import ENSEMBLE_ARCH, check_storage, lineage, stored_copy
from fer_core.training.networks import (
    ARCHITECTURES,
    build_augmentation,
    build_ensemble,
    float32_copy,
    with_augmentation,
)
from fer_core.training.publish import save_evaluated
from fer_core.training.train import dataset_inputs

if TYPE_CHECKING:
    from fer_core.faces.preprocess import Preprocessing

#: Share of each class's recordings held out to score the models on (at least one where a class has two).
HELD_OUT_SHARE = 0.2


@dataclass(frozen=True)
class FineTuneSettings:
    """How each network is fine-tuned (kept in the card, ``fine_tuning.settings``)."""

    #: share of the fine-tuned weights in the stored ones, the rest the starting weights (WiSE-FT)
    interpolation: float = 0.5
    learning_rate: float = 1e-3  #: AdamW, constant
    steps: int = 72  #: optimizer steps per network (8 epochs of 288 faces), fewer when the time is up
    batch_size: int = 32
    label_smoothing: float = 0.1
    brightness: float = 0.3  #: random brightness change, a share of the pixel range
    contrast: float = 0.5  #: random contrast change, a share
    freeze_first_block: bool = True  #: keep the layers up to the first pooling as they were


@dataclass(frozen=True)
class HoldOut:
    """Faces split into those to train on and those held out, whole recordings on each side."""

    train: FaceDataset
    held_out: FaceDataset
    recordings: int  #: recordings held out
    untested_classes: list[str]  #: classes with faces but a single recording, all of it trained on


def hold_out(dataset: FaceDataset, share: float = HELD_OUT_SHARE, seed: int = 0) -> HoldOut:
    """Hold out about ``share`` of each class's recordings (``dataset.groups``; without them each face
    is a recording of its own), at least one where a class has two or more, chosen at random by
    ``seed``. A recording's frames are near copies, so a recording is never split; a recording
    showing several classes (a person's folder) counts for each. A class with a single recording
    keeps it for training and has no held-out faces (``untested_classes``): the fine-tuned model
    then learns it without a figure for it. Every class keeps a recording to train on."""
    groups = dataset.groups if dataset.groups is not None else np.arange(len(dataset)).astype(str)
    order = np.random.default_rng(seed).permutation(np.unique(groups))
    classes_of: dict[str, set[int]] = {group: set() for group in order}
    for group, label in zip(groups.tolist(), dataset.labels.tolist()):
        classes_of[group].add(label)
    present = sorted({label for labels in classes_of.values() for label in labels})
    recordings_of = {code: [group for group in order if code in classes_of[group]] for code in present}
    training = {code: len(recordings_of[code]) for code in present}  # recordings per class left to train on
    held: set[str] = set()
    for code in sorted(present, key=lambda code: (len(recordings_of[code]), code)):  # scarcest first
        total = len(recordings_of[code])
        wanted = max(1, round(share * total)) if total > 1 else 0
        for group in recordings_of[code]:
            if total - training[code] >= wanted:
                break
            if group not in held and all(training[other] > 1 for other in classes_of[group]):
                held.add(group)
                for other in classes_of[group]:
                    training[other] -= 1
    mask = np.isin(groups, sorted(held))
    untested = [EMOTIONS[code] for code in present if not mask[dataset.labels == code].any()]
    return HoldOut(dataset.subset(~mask), dataset.subset(mask), len(held), untested)


@dataclass(frozen=True)
class FineTuneResult:
    """A stored fine-tuned model: its card, and both models' accuracy on the held-out faces."""

    card: ModelCard
    accuracy_before: float
    accuracy_after: float
    split: HoldOut
    stopped: str  #: completed, or time_budget when a network's steps were cut short
    seconds: float  #: the whole fine-tuning, from loading the starting model to the stored card


#: Told how far fine-tuning has come: the share done (0-1) and what it is doing.
ProgressListener = Callable[[float, str], None]


def finetune_command(start: str, data_name: str, name: str, minutes: float, seed: int) -> str:
    """The command line that fine-tunes ``start`` on the faces of ``data_name`` as :func:`finetune` did."""
    return shlex.join(["python", "-m", "fer_core", "finetune", "--from", start, "--data", data_name, "--name", name,
                       "--minutes", f"{minutes:g}", "--seed", str(seed)])


def finetune(
    store: ModelStore,
    start_name: str,
    dataset: FaceDataset,
    *,
    name: str | None = None,
    minutes: float = 1.0,
    seed: int = 0,
    data_name: str = "class_faces.zip",
    settings: FineTuneSettings = FineTuneSettings(),
    progress: ProgressListener | None = None,
    cancel: threading.Event | None = None,
) -> FineTuneResult | None:
    """Fine-tune the stored model ``start_name`` (a single network, or an ensemble: each member) on
    ``dataset`` and store it as ``name`` (default: ``START_tuned``) with its card; see the module's
    docstring for the method.

    ``minutes`` bounds the training (all networks together); the steps cut short by it are recorded
    (``stopped``). ``seed`` fixes the held-out recordings and the training (a run cut short by the
    time budget also depends on the machine's speed). ``data_name`` names the faces in the card's
    reproduce command (a zip of the collection). A set ``cancel`` stops at the next step and stores
    nothing (returns None). ``progress`` is told the share done and what is being done.
    """
    started = time.monotonic()
    if not minutes > 0:
        raise DataError(f"the time budget must be above 0 minutes, not {minutes}")
    stored = store.load(start_name)
    name = check_name(name or f"{stored.name}_tuned")
    if name.casefold() == stored.name.casefold():
        raise DataError(f"fine-tuning {stored.name} cannot save over it: choose another name")
    split = hold_out(dataset, seed=seed)
    _check_split(split)
    preprocessing = stored.card.preprocessing
    networks = _float32_networks(stored)
    before = _accuracy(stored, preprocessing, split.held_out)

    training_started = time.monotonic()
    deadline = training_started + 60.0 * minutes
    epochs_run, stopped = [], "completed"
    for index, (member, _, network) in enumerate(networks):
        if cancel is not None and cancel.is_set():
            return None
        share = (deadline - time.monotonic()) / (len(networks) - index)
        report = None if progress is None else _part_reporter(progress, index, len(networks), member)
        epochs, reason = _train(network, split.train, preprocessing, settings, seed + index,
                                time.monotonic() + share, report, cancel)
        if reason == "cancelled":
            return None
        epochs_run.append(epochs)
        stopped = reason if reason != "completed" else stopped
    if progress is not None:
        progress(1.0, "scoring and storing the fine-tuned model")
    training_minutes = (time.monotonic() - training_started) / 60.0
    card = _store(store, stored, networks, name, split, before, settings,
                  command=finetune_command(stored.name, data_name, name, minutes, seed), dataset_size=len(dataset),
                  epochs=min(epochs_run), stopped=stopped, minutes=training_minutes)
    assert card.accuracy is not None  # save_evaluated scores the model on the held-out faces
    return FineTuneResult(card, before, card.accuracy, split, stopped, time.monotonic() - started)


def _check_split(split: HoldOut) -> None:
    """Refuse faces that cannot both teach and score: held-out faces are needed, and training faces
    of two classes or more (the loss is over the classes shown; one class teaches nothing)."""
    if not len(split.held_out):
        raise DataError("no recording can be held out to score the models on: give an emotion two recordings "
                        "or more (each Record press is one)")
    shown = np.unique(split.train.labels)
    if len(shown) < 2:
        raise DataError(f"the faces show {EMOTIONS[shown[0]] if len(shown) else 'no emotion'} only; fine-tuning "
                        "needs faces of two emotions or more")


def _float32_networks(stored: StoredModel) -> list[tuple[str, str, keras.Model]]:
    """The stored model's networks in float32 to train (name, architecture, network): itself, or
    each member of an ensemble (found by name inside it)."""

    card = stored.card
    if card.arch == ENSEMBLE_ARCH:
        nested = {layer.name: layer for layer in stored.model.layers if isinstance(layer, keras.Model)}
        parts = [(member.name, member.arch, nested.get(member.name)) for member in card.training.members]
        if not parts or any(network is None for _, _, network in parts):
            raise DataError(f"{stored.name}: its card does not name the networks inside it, so they cannot be "
                            "fine-tuned")
    else:
        parts = [(stored.name, card.arch, stored.model)]
    networks = []
    for member, arch, network in parts:
        if arch not in ARCHITECTURES:
            raise DataError(f"{member} ({arch}) is not a network of a known architecture, nor an ensemble of "
                            "them: it cannot be fine-tuned")
        try:
            networks.append((member, arch, float32_copy(network, arch, f"{member}_tuned")))
        except ValueError as error:  # weights that no longer fit the architecture's builder
            raise DataError(f"{member}: its weights do not fit the {arch} architecture of this version "
                            f"({error})") from error
    return networks


def _accuracy(stored: StoredModel, preprocessing: Preprocessing, faces: FaceDataset) -> float:
    """The stored model's accuracy on ``faces``, plain inference as a card's ``metrics.accuracy``."""

    classifier = EmotionClassifier.from_stored(stored, flip_tta=False, odds="fer2013")
    return evaluate_classifier(classifier, preprocessing, faces).accuracy


def _part_reporter(progress: ProgressListener, index: int, parts: int, member: str) -> ProgressListener:
    """Progress of one network's training as a share of the whole fine-tuning."""
    return lambda done, message: progress((index + done) / parts, f"{member}: {message}")


def present_classes_loss(present: np.ndarray, label_smoothing: float) -> Callable:
    """Cross-entropy over the classes in ``present`` (a 0/1 mask) only: the probabilities of those
    classes renormalised to sum to one, the same as a softmax over their logits. Classes without
    faces get no gradient pushing them down, so fine-tuning does not teach the model never to
    answer them."""

    mask = np.asarray(present, dtype=np.float32)
    smoothing = label_smoothing * mask / mask.sum()

    def loss(y_true, y_pred):
        shown = ops.multiply(ops.cast(y_pred, "float32"), mask)
        shown = ops.divide(shown, ops.sum(shown, axis=-1, keepdims=True))
        target = ops.add(ops.multiply(y_true, 1.0 - label_smoothing), smoothing)
        return -ops.sum(ops.multiply(target, ops.log(ops.clip(shown, 1e-7, 1.0))), axis=-1)

    return loss


def _first_block(network: keras.Model) -> list:
    """The layers up to and including the first pooling layer: those that see the raw pixels."""
    for index, layer in enumerate(network.layers):
        if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
            return network.layers[:index + 1]
    return []


def _train(network: keras.Model, faces: FaceDataset, preprocessing: Preprocessing, settings: FineTuneSettings,
           seed: int, deadline: float, progress: ProgressListener | None,
           cancel: threading.Event | None) -> tuple[int, str]:
    """Fine-tune ``network`` in place and leave it at the interpolation of its starting and its
    fine-tuned weights; returns the epochs run and why training ended (completed, time_budget,
    cancelled)."""

    keras.utils.set_random_seed(seed)
    x, y = dataset_inputs(faces, preprocessing)
    present = np.bincount(faces.labels, minlength=NUM_CLASSES) > 0
    starting = network.get_weights()
    frozen = _first_block(network) if settings.freeze_first_block else []
    for layer in frozen:
        layer.trainable = False
    augmentation = keras.Sequential([
        keras.layers.RandomBrightness(settings.brightness, value_range=(0.0, 1.0), seed=seed),
        keras.layers.RandomContrast(settings.contrast, seed=seed),
        *build_augmentation(erasing=False, seed=seed).layers,
    ], name="augmentation")
    trainer = with_augmentation(network, augmentation)
    trainer.compile(optimizer=keras.optimizers.AdamW(settings.learning_rate),
                    loss=present_classes_loss(present, settings.label_smoothing), jit_compile=False)
    steps_per_epoch = math.ceil(len(x) / settings.batch_size)
    epochs = max(1, round(settings.steps / steps_per_epoch))
    stop = _Stop(deadline, cancel, progress, epochs * steps_per_epoch)
    history = trainer.fit(x, y, batch_size=settings.batch_size, epochs=epochs, callbacks=[stop], verbose=0)
    for layer in frozen:
        layer.trainable = True
    alpha = settings.interpolation
    network.set_weights([(1.0 - alpha) * start + alpha * tuned
                         for start, tuned in zip(starting, network.get_weights(), strict=True)])
    return len(history.history.get("loss", [])), stop.reason


class _Stop(keras.callbacks.Callback):
    """Ends training when the time is up or it is cancelled (``reason``), and reports each step."""

    def __init__(self, deadline: float, cancel: threading.Event | None, progress: ProgressListener | None,
                 steps: int):
        super().__init__()
        self.deadline, self.cancel, self.progress, self.steps = deadline, cancel, progress, steps
        self.done, self.reason = 0, "completed"

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.cancel is not None and self.cancel.is_set():
            self.reason = "cancelled"
        elif time.monotonic() > self.deadline and self.done < self.steps:
            self.reason = "time_budget"
        if self.reason != "completed":
            self.model.stop_training = True
        if self.progress is not None:
            self.progress(min(1.0, self.done / self.steps), f"step {self.done} of {self.steps}")


def _store(store: ModelStore, start: StoredModel, networks: list[tuple[str, str, keras.Model]], name: str,
           split: HoldOut, before: float, settings: FineTuneSettings, *, command: str, dataset_size: int,
           epochs: int, stopped: str, minutes: float) -> ModelCard:
    """Store the fine-tuned networks as ``name`` (an ensemble of them for an ensemble), their weights
    stored as the starting model's were, scored on the held-out faces; returns the card."""

    card = start.card
    dtype = card.weights_dtype if card.weights_dtype in ("float16", "int8") else "float32"
    if card.arch == ENSEMBLE_ARCH:
        full = build_ensemble([network for _, _, network in networks], name)
    else:
        [(_, _, full)] = networks
    compact = None
    if dtype != "float32":
        copies = [stored_copy(network, arch, dtype, network.name) for _, arch, network in networks]
        compact = build_ensemble(copies, name) if card.arch == ENSEMBLE_ARCH else copies[0]
        check_storage(full, compact, dtype, split.held_out, card.preprocessing, name)
    origin = lineage(store, start.name, [command])
    total = None if origin.earlier_minutes is None else round(origin.earlier_minutes + minutes, 1)
    members = [Member(name=network.name, arch=arch, parameters=int(network.count_params()))
               for _, arch, network in networks] if card.arch == ENSEMBLE_ARCH else []
    training = Training(data=f"{dataset_size} class faces", train_rows=len(split.train),
                        validation_rows=len(split.held_out), precision="float32", epochs_run=epochs, stopped=stopped,
                        minutes=round(minutes, 1), total_minutes=total, members=members,
                        fine_tuning=FineTuning(start=start.name, accuracy_before=before,
                                               held_out_recordings=split.recordings,
                                               untested_classes=split.untested_classes, settings=asdict(settings)))
    description = (f"{start.name} fine-tuned on {dataset_size} class faces, its weights {settings.interpolation:g} "
                   "of the way from the starting to the fine-tuned ones (WiSE-FT).")
    return save_evaluated(full, name, split.held_out, store=store, compact_copy=compact, weights_dtype=dtype,
                          preprocessing=card.preprocessing, arch=card.arch, training=training,
                          reproduce=origin.reproduce, description=description)
