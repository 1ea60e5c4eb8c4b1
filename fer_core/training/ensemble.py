"""Ensembles: stored models averaged into one model, stored and served like any other.

Two networks trained apart make partly different mistakes, so the mean of their probabilities
is more accurate than either. An ensemble is written with float16 weights, which halves its
file at no measurable cost in accuracy (checked when it is saved), or with int8 convolution
kernels, a quarter of the file, so that three networks of a few MB fit where two did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fer_core.base.errors import DataError, ModelNotFoundError
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.splits import train_validation
from fer_core.faces.preprocess import Preprocessing, images_to_input
from fer_core.registry.cards import Member, ModelCard, Training
from fer_core.registry.store import ModelStore, StoredModel
from fer_core.training.networks import ARCHITECTURES, build_ensemble, copy_in_precision, int8_copy
from fer_core.training.publish import save_evaluated

if TYPE_CHECKING:
    import keras

ENSEMBLE_ARCH = "ensemble"
#: Largest difference in any probability allowed between the stored weights and the float32 ensemble.
#: int8 rounding moves probabilities far more than float16 does, hence its looser bound.
STORAGE_TOLERANCE = {"float16": 5e-3, "int8": 0.1}


def ensemble_members(store: ModelStore, names: list[str], name: str) -> list[StoredModel]:
    """The stored members of a future ensemble ``name``, checked to be two or more different
    single networks, none stored under ``name``, that prepare faces the same way and answer with the
    same odds (trained with the same loss)."""
    keys = _keys(store, names)
    if len(names) < 2 or len(set(keys)) != len(names):
        raise DataError(f"an ensemble needs at least two different models, got {', '.join(names)}")
    if str((store.root / f"{name}.keras").resolve()).casefold() in keys:
        raise DataError(f"the ensemble cannot replace its member {name!r}: choose another name")
    members = single_networks(store, names, "an ensemble")
    if len({member.card.preprocessing for member in members}) != 1:
        raise DataError("the members prepare faces differently (their cards' preprocessing differ)")
    if len({member.card.training.balanced_by_loss for member in members}) != 1:
        raise DataError("the members answer with different odds: "
                        + ", ".join(member.name for member in members if member.card.training.balanced_by_loss)
                        + " learned the balanced ones (the logit-adjusted loss), the others their data's; "
                          "average networks trained with the same loss")
    return members


def _keys(store: ModelStore, names: list[str]) -> list[str]:
    """Where the named models are stored, comparable whatever the spelling of the names."""
    return [str(store.resolve(name).resolve()).casefold() for name in names]


def single_networks(store: ModelStore, names: list[str], role: str) -> list[StoredModel]:
    """The named stored models, each named once and each a single network of a known architecture."""

    if len(set(_keys(store, names))) != len(names):
        raise DataError(f"{role} names a model twice: {', '.join(names)}")
    members = [store.load(name) for name in names]
    for member in members:
        if member.card.arch not in ARCHITECTURES:
            raise DataError(f"{member.name} ({member.card.arch}) is not a single network of a known "
                            f"architecture; {role} is made of those (name the networks it is made of)")
    return members


def teacher_model(store: ModelStore, names: list[str], preprocessing: Preprocessing) -> keras.Model:
    """The float32 model of stored single networks (their mean, for several) that a student learns
    from (``distill.DistillationLoss``), checked to prepare faces as the student will."""

    if not names:
        raise DataError("name one or more stored models as the teacher")
    members = single_networks(store, names, "a teacher")
    _check_preprocessing(members, preprocessing, "teacher", "the student")
    if len(members) == 1:
        return _copy(members[0], "float32", name="teacher")
    return build_ensemble([_copy(member, "float32") for member in members], "teacher")


def starting_network(store: ModelStore, name: str, arch: str, preprocessing: Preprocessing) -> keras.Model:
    """The float32 copy of a stored network that a fine-tuning run of ``arch`` starts from, checked
    to be of that architecture and to prepare faces as the run will."""
    member = store.load(name)
    if member.card.arch != arch:
        raise DataError(f"{member.name} ({member.card.arch}) is not a {arch} network: a {arch} run starts "
                        f"from a stored {arch} network")
    _check_preprocessing([member], preprocessing, "starting model", "this run")
    return _copy(member, "float32")


def starting_networks(store: ModelStore, arch: str, preprocessing: Preprocessing) -> list[str]:
    """The stored networks a fine-tuning run of ``arch`` with ``preprocessing`` can start from."""
    return [card.name for card in store.cards() if card.arch == arch and card.preprocessing == preprocessing]


@dataclass(frozen=True)
class Lineage:
    """What a fine-tuned model owes the network it started from."""

    reproduce: str  #: the start's commands, then the model's own
    earlier_minutes: float | None  #: the start's whole training; None when its card is gone


def lineage(store: ModelStore, start: str | None, commands: list[str]) -> Lineage:
    """How a trained model came to be: the commands that reproduce it (those of the network it was
    fine-tuned from, ``start``, then its own) and the training minutes before its own runs."""
    if start is None:
        return Lineage(" && ".join(commands), 0.0)
    try:
        card = store.card(start)
    except ModelNotFoundError:
        return Lineage(" && ".join([f"(the stored model {start}, since removed)", *commands]), None)
    return Lineage(" && ".join([card.reproduce or f"(the stored model {start})", *commands]), card.training_minutes)


def _check_preprocessing(members: list[StoredModel], preprocessing: Preprocessing, role: str, user: str) -> None:
    different = [member.name for member in members if member.card.preprocessing != preprocessing]
    if different:
        raise DataError(f"{role} {', '.join(different)} does not prepare faces as {user} will ({preprocessing})")


def validation_faces(members: list[StoredModel], dataset: FaceDataset) -> FaceDataset:
    """The faces to score an ensemble on: FER2013's PublicTest rows, or else the validation split
    its members were selected on, which must then be one split (one seed), lest the ensemble be
    scored on faces a member trained on."""
    if "Training" in dataset.usages() and "PublicTest" in dataset.usages():
        return train_validation(dataset)[1]
    seeds = {member.card.training.seed for member in members}
    seed = seeds.pop() if len(seeds) == 1 else None
    if seed is None:
        raise DataError(f"{dataset.source} has no PublicTest rows and the members were validated on different "
                        "or unknown random splits; score an ensemble on FER2013 or on members trained with one --seed")
    return train_validation(dataset, seed)[1]


def stored_copy(network: keras.Model, arch: str, dtype: str, name: str | None = None) -> keras.Model:
    """The ``arch`` network computing in ``dtype``, as a model stores it; for ``int8``, in float32
    from int8 kernels."""

    if dtype == "int8":
        return int8_copy(copy_in_precision(network, arch, "float32", name))
    return copy_in_precision(network, arch, dtype, name)


def _copy(member: StoredModel, dtype: str, name: str | None = None):
    """The member's network computing in ``dtype`` (see :func:`stored_copy`)."""
    try:
        return stored_copy(member.model, member.card.arch, dtype, name or member.name)
    except ValueError as error:  # weights that no longer fit the architecture's builder
        raise DataError(f"{member.name}: its weights do not fit the {member.card.arch} architecture "
                        f"of this version ({error})") from error


def _check_dtype(weights_dtype: str) -> None:
    if weights_dtype not in STORAGE_TOLERANCE:
        raise DataError(f"weights are stored as {' or '.join(STORAGE_TOLERANCE)}, not {weights_dtype!r}")


def check_storage(full: keras.Model, compact: keras.Model, weights_dtype: str, validation: FaceDataset,
                  preprocessing: Preprocessing, what: str) -> None:
    """Refuse a compact copy whose probabilities move beyond ``STORAGE_TOLERANCE`` on validation faces."""
    sample = images_to_input(validation.images[:256], preprocessing)
    difference = float(np.max(np.abs(compact.predict(sample, verbose=0) - full.predict(sample, verbose=0))))
    tolerance = STORAGE_TOLERANCE[weights_dtype]
    if not difference <= tolerance:  # also catches weights beyond float16's range
        raise DataError(f"in {weights_dtype} {what}'s probabilities move by {difference:.4f} "
                        f"(more than {tolerance}); it does not survive that precision")


def save_compact(
    store: ModelStore,
    network: StoredModel,
    name: str,
    validation: FaceDataset,
    *,
    command: str,
    weights_dtype: str = "float16",
) -> ModelCard:
    """Store a single network again with ``weights_dtype`` weights (float16: half the file; int8
    kernels: a quarter), scored anew on ``validation``; its recipe, training and prior correction stay,
    and ``command`` is added to its ``reproduce``. Returns the card."""

    _check_dtype(weights_dtype)
    card = network.card
    full, compact = _copy(network, "float32"), _copy(network, weights_dtype)
    check_storage(full, compact, weights_dtype, validation, card.preprocessing, network.name)
    reproduce = " && ".join(part for part in (card.reproduce, command) if part)
    return save_evaluated(full, name, validation, store=store, compact_copy=compact, weights_dtype=weights_dtype,
                          preprocessing=card.preprocessing, arch=card.arch, training=card.training,
                          reproduce=reproduce, description=card.description, prior_correction=card.prior_correction)


def save_ensemble(
    store: ModelStore,
    members: list[StoredModel],
    name: str,
    validation: FaceDataset,
    *,
    data_description: str,
    command: str,
    weights_dtype: str = "float16",
) -> ModelCard:
    """Average ``members`` (see :func:`ensemble_members`) into the model ``name``, scored on
    ``validation``, and store it with ``weights_dtype`` weights (float16, or int8 kernels).

    The card lists the members with their own figures; its training minutes are theirs summed
    (each network's whole training, from the network it was fine-tuned from on),
    and its ``reproduce`` is their commands followed by ``command``. Returns the card.
    """

    _check_dtype(weights_dtype)
    preprocessing = members[0].card.preprocessing
    full = build_ensemble([_copy(member, "float32") for member in members], name)
    compact = build_ensemble([_copy(member, weights_dtype) for member in members], name)
    check_storage(full, compact, weights_dtype, validation, preprocessing, "the ensemble")

    minutes = round(sum(member.card.training_minutes or 0.0 for member in members), 1)
    counts = [member.card.training.class_counts for member in members]
    training = Training(data=data_description, validation_rows=len(validation), minutes=minutes,
                        total_minutes=minutes, members=[Member.of(member.card) for member in members],
                        class_counts=counts[0] if all(count == counts[0] for count in counts) else None)
    reproduce = " && ".join([m.card.reproduce for m in members if m.card.reproduce] + [command])
    description = f"Ensemble of {', '.join(m.name for m in members)}: the mean of their probabilities."
    return save_evaluated(full, name, validation, store=store, compact_copy=compact, weights_dtype=weights_dtype,
                          preprocessing=preprocessing, arch=ENSEMBLE_ARCH, training=training, reproduce=reproduce,
                          description=description)
