"""Model cards: what a stored model is, how it was trained, and how well and fast it runs.

A card is a :class:`ModelCard` in memory and a JSON object in the ``NAME.json`` file beside the
model; this module alone turns one into the other. The JSON keys are the field names, so a card
stays readable by hand. A card without ``schema_version`` was written before cards had one
(version 1: the same keys, some of them missing, which read as unknown); keys this version does
not know are ignored, and a card of a newer schema is refused rather than misread.

cattrs reads a card into the dataclasses by their fields' types, each held to its JSON kind by the
hooks at the end (a number is not a text nor ``true``, 1.5 is not a whole number); a null key
reads as a missing one. A wrong value is a :class:`CardError` naming its key, e.g. ``metrics.accuracy``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import TYPE_CHECKING, Any

import cattrs
import numpy as np
from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory
from cattrs.errors import AttributeValidationNote, BaseValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn

from fer_core.base.errors import FerError
from fer_core.base.labels import EMOTIONS
from fer_core.faces.preprocess import Preprocessing

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import keras

#: The card layout this version writes (and the newest it reads).
SCHEMA_VERSION = 2


class CardError(FerError, ValueError):
    """A model card whose JSON does not hold what a card holds (the message names the key)."""


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Accuracy and macro-F1 of one way of running a model (e.g. with flip TTA)."""

    accuracy: float
    macro_f1: float
    balanced_accuracy: float | None = None  #: the mean of the classes' recalls (None: not measured)


@dataclass(frozen=True, kw_only=True)
class ClassScores:
    """Precision, recall and F1 of one class, and how many faces of it were scored (support)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """How well a model did on labelled faces: plain inference in full, and accuracy and macro-F1
    with the mirrored face averaged in (``flip_tta``)."""

    dataset: str | None = None  #: the data the faces came from (a file name)
    usage: list[str] = field(default_factory=list)  #: FER2013 rows scored (``PublicTest``), if any
    accuracy: float
    macro_f1: float
    n: int  #: faces scored
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]  #: rows: true class, columns: predicted
    flip_tta: Scores | None = None

    @property
    def flip_accuracy(self) -> float | None:
        """Accuracy with flip TTA, when it was measured."""
        return None if self.flip_tta is None else self.flip_tta.accuracy

    @property
    def balanced_accuracy(self) -> float:
        """The mean of the recalls of the classes that have faces: what a class posing every emotion equally
        often would see as accuracy."""
        recalls = [scores.recall for scores in self.per_class.values() if scores.support > 0]
        return round(sum(recalls) / len(recalls), 4) if recalls else 0.0

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """The confusion matrix's rows as shares of their class (recall on the diagonal)."""
        return row_shares(self.confusion_matrix)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, with the normalised matrix written out for a reader of the file."""
        values = asdict(self)
        flip_tta = values.pop("flip_tta")
        return {**values, "confusion_matrix_normalized": self.confusion_normalized, "flip_tta": flip_tta}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Metrics:
        """Metrics from :meth:`to_dict`'s object (the normalised matrix is worked out again);
        :class:`CardError` says what is wrong with one that is not."""
        try:
            return _READER.structure({key: value for key, value in values.items()
                                      if key != "confusion_matrix_normalized"}, cls)
        except BaseValidationError as error:
            raise _card_error(error) from None


def count_classes(labels: np.ndarray) -> dict[str, int] | None:
    """Faces of each class among FER2013 codes, for ``Training.class_counts``; None when a class has none
    (a prior with a class never seen would make the balanced odds name it for every face)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(EMOTIONS))
    return dict(zip(EMOTIONS, map(int, counts))) if counts.min() > 0 else None


def row_shares(counts: list[list[int]]) -> list[list[float]]:
    """A confusion matrix's rows divided by their totals, to 4 places; an empty row stays zero."""
    matrix = np.asarray(counts, dtype=np.float64).reshape(len(counts), len(counts))  # [] too
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0).round(4).tolist()


@dataclass(frozen=True, kw_only=True)
class Member:
    """A network of an ensemble, with its own figures as its card gave them."""

    name: str
    arch: str = "unknown"
    parameters: int | None = None
    accuracy: float | None = None
    flip_tta: Scores | None = None
    minutes: float | None = None  #: its whole training (see :attr:`ModelCard.training_minutes`)
    recipe: dict[str, Any] | None = None

    @classmethod
    def of(cls, card: ModelCard) -> Member:
        """A stored network as a member of an ensemble."""
        return cls(name=card.name, arch=card.arch, parameters=card.parameters, accuracy=card.accuracy,
                   flip_tta=None if card.metrics is None else card.metrics.flip_tta,
                   minutes=card.training_minutes, recipe=card.training.recipe)


@dataclass(frozen=True, kw_only=True)
class FineTuning:
    """How a model was fine-tuned on a class's own faces (``python -m fer_core finetune``).

    The card's ``metrics`` score the fine-tuned model on the faces held out from its training (whole
    recordings); ``accuracy_before`` is the starting model's accuracy on the same faces, plain
    inference as ``metrics.accuracy``.
    """

    start: str  #: the stored model it started from
    accuracy_before: float
    held_out_recordings: int  #: whole recordings held out (their faces: ``Training.validation_rows``)
    #: classes with faces but a single recording: trained on, no held-out faces to score them
    untested_classes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  #: the method's settings (``finetune.FineTuneSettings``)


@dataclass(frozen=True, kw_only=True)
class Training:
    """How a model came to be. A trained network fills the run's fields; an ensemble has
    ``members`` instead, and its minutes are theirs summed."""

    data: str | None = None  #: the training data, described by its file name
    train_rows: int | None = None
    validation_rows: int | None = None
    precision: str | None = None  #: the compute precision the run used (``float32``, ``mixed_bfloat16``)
    epochs_run: int | None = None
    stopped: str | None = None  #: why the run ended: completed, early_stopping, time_budget, finished
    minutes: float | None = None  #: the run's own minutes (over every resumed run of one checkpoint)
    #: its whole training: with the minutes of the network it was fine-tuned from (None: unknown)
    total_minutes: float | None = None
    averaged_epochs: int | None = None  #: epochs whose weights were averaged into the model (SWA)
    recipe: dict[str, Any] | None = None  #: the run's ``TrainConfig`` as it was recorded
    members: list[Member] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)  #: per-epoch loss and accuracy
    fine_tuning: FineTuning | None = None  #: set for a model fine-tuned on a class's faces
    #: faces of each class the model learned from (its training prior; None: unknown)
    class_counts: dict[str, int] | None = None

    @property
    def balanced_by_loss(self) -> bool:
        """Whether the network learned the balanced odds itself, with the logit-adjusted loss: its own
        recipe says so, or every member's of an ensemble."""
        recipes = [self.recipe] if self.recipe else [member.recipe for member in self.members]
        return bool(recipes) and all((recipe or {}).get("loss") == "logit_adjusted" for recipe in recipes)

    @property
    def seed(self) -> int | None:
        """The recipe's random seed (which validation split the run was selected on)."""
        seed = (self.recipe or {}).get("seed")
        return seed if isinstance(seed, int) else None


@dataclass(frozen=True, kw_only=True)
class PriorCorrection:
    """How strongly the balanced odds undo the model's training prior (logit adjustment, Menon et al.
    2021): ``strength`` times the log of each class's training share is taken from its log-probability.
    Chosen where it gave the highest mean per-class recall, with the scores there."""

    strength: float
    chosen_on: str  #: the faces it was chosen on, e.g. "fer2013.csv.gz [PublicTest], with flip TTA"
    accuracy: float  #: accuracy there with the correction
    balanced_accuracy: float  #: mean per-class recall there with the correction
    accuracy_before: float  #: the same two without it
    balanced_accuracy_before: float


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """Everything known about a stored model, as its card file holds it.

    ``name`` is the name the model is stored under (set by ``ModelStore``). ``error`` is set only
    on the stand-in a listing shows for a model whose card cannot be read (:meth:`unreadable`).
    """

    name: str = ""
    arch: str = "unknown"
    description: str = ""
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    input_size: list[int] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    parameters: int | None = None
    weights_dtype: str = "float32"  #: how the weights are stored: float32, float16 or int8 kernels
    training: Training = field(default_factory=Training)
    metrics: Metrics | None = None  #: None for a model never scored
    ms_per_face: float | None = None
    inference_backend: str | None = None  #: what ``ms_per_face`` was measured with (litert, tensorflow)
    created: str | None = None
    keras_version: str | None = None
    reproduce: str | None = None  #: the commands that make the model again, joined by ``&&``
    file_bytes: int | None = None
    sha256: dict[str, str] = field(default_factory=dict)  #: of the ``keras`` and ``tflite`` files; {} before hashes
    prior_correction: PriorCorrection | None = None  #: for the balanced odds; None: the model is used as trained
    error: str | None = None

    @classmethod
    def unreadable(cls, name: str, error: str) -> ModelCard:
        """What a listing shows for a model whose card cannot be read: its name and why."""
        return cls(name=name, error=error)

    @property
    def accuracy(self) -> float | None:
        """Accuracy of plain inference on the validation faces."""
        return None if self.metrics is None else self.metrics.accuracy

    @property
    def flip_accuracy(self) -> float | None:
        """Accuracy with each face averaged with its mirror image (flip TTA)."""
        return None if self.metrics is None else self.metrics.flip_accuracy

    @property
    def macro_f1(self) -> float | None:
        """Macro-F1 of plain inference: the mean of the classes' F1, rare classes counting as much."""
        return None if self.metrics is None else self.metrics.macro_f1

    @property
    def faces_scored(self) -> int | None:
        """How many labelled faces the figures were measured on."""
        return None if self.metrics is None else self.metrics.n

    @property
    def scored_on(self) -> str | None:
        """The data the figures were measured on (a file name)."""
        return None if self.metrics is None else self.metrics.dataset

    @property
    def recommends_flip(self) -> bool:
        """Whether the model is best run with the mirrored face averaged in: when that scored
        higher on its validation faces. It costs a second face per face."""
        flipped = self.flip_accuracy
        return flipped is not None and self.accuracy is not None and flipped > self.accuracy

    @property
    def class_prior(self) -> list[float] | None:
        """Each class's share of the training faces, in the order of ``EMOTIONS`` (the networks' outputs);
        None when the card does not have every class's count."""
        counts = self.training.class_counts
        if not counts or any(counts.get(label, 0) <= 0 for label in EMOTIONS):
            return None
        total = sum(counts[label] for label in EMOTIONS)
        return [counts[label] / total for label in EMOTIONS]

    @property
    def training_minutes(self) -> float | None:
        """The whole training in minutes: the model's own runs and those of the network it was
        fine-tuned from (an ensemble's: its members'); None when unknown."""
        return self.training.total_minutes

    def to_dict(self) -> dict[str, Any]:
        """The card as its JSON object, ``schema_version`` first."""
        values = asdict(self)
        values["metrics"] = None if self.metrics is None else self.metrics.to_dict()
        if self.error is None:
            del values["error"]
        return {"schema_version": SCHEMA_VERSION, **values}

    def to_json(self) -> str:
        """The text of the card file."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, name: str) -> ModelCard:
        """The card of the model stored as ``name`` from the text of its card file (written by
        this version or an earlier one); :class:`CardError` says what is wrong with it."""
        try:
            values = json.loads(text)
        except ValueError as error:
            raise CardError(f"the model card is not readable JSON ({error})") from error
        return cls.from_dict(values, name)

    @classmethod
    def from_dict(cls, values: object, name: str) -> ModelCard:
        """The card of the model stored as ``name`` from its JSON object (see :meth:`from_json`)."""
        if not isinstance(values, dict):
            raise CardError("the model card is not a JSON object")
        version = values.get("schema_version") or 1
        if not _is_integer(version):
            raise CardError(f"the model card's schema_version is not a whole number ({json.dumps(version)[:60]})")
        if version > SCHEMA_VERSION:
            raise CardError(f"the model card is of schema version {version}, newer than this version of FER Lab "
                            f"reads ({SCHEMA_VERSION}): update FER Lab to use this model")
        try:
            card = _READER.structure({**values, "name": name, "error": None}, cls)
        except BaseValidationError as error:
            raise _card_error(error) from None
        counts = card.training.class_counts
        if counts is not None and (set(counts) != set(EMOTIONS) or min(counts.values()) <= 0):
            raise CardError("the model card's training.class_counts must give each of "
                            f"{', '.join(EMOTIONS)} a count of at least 1 ({json.dumps(counts)[:80]})")
        matrix = [] if card.metrics is None else card.metrics.confusion_matrix
        if any(len(row) != len(matrix) for row in matrix):
            raise CardError("the model card's metrics.confusion_matrix is not a square table of whole numbers "
                            f"({json.dumps(matrix)[:60]})")
        if "total_minutes" in (values.get("training") or {}):
            return card
        # Cards from before fine-tuning have no total: their own minutes were the whole training.
        return replace(card, training=replace(card.training, total_minutes=card.training.minutes))


def make_card(
    *,
    arch: str,
    model: keras.Model,
    preprocessing: Preprocessing,
    training: Training,
    metrics: Metrics | None,
    ms_per_face: float | None,
    reproduce: str,
    description: str = "",
    inference_backend: str | None = None,
    weights_dtype: str = "float32",
) -> ModelCard:
    """The card of a model about to be stored: what it is (read from ``model``), how it was
    trained, and how well and fast it runs. ``ModelStore.save`` adds its name, size and hashes."""
    import keras  # Keras and TensorFlow: only a model being stored needs them, not a card being read

    return ModelCard(arch=arch, description=description, input_size=list(model.input_shape[1:]),
                     preprocessing=preprocessing, parameters=int(model.count_params()), weights_dtype=weights_dtype,
                     training=training, metrics=metrics,
                     ms_per_face=None if ms_per_face is None else round(ms_per_face, 3),
                     inference_backend=inference_backend,
                     created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     keras_version=keras.__version__, reproduce=reproduce)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Wrong(TypeError):
    """A card's value not of the JSON kind its field needs (``kind``, e.g. "a number")."""

    def __init__(self, kind: str, value: object):
        super().__init__(kind)
        self.kind, self.value = kind, value


def _only(kind: str, accepts: Callable[[Any], bool],
          read: Callable[[Any, Any], Any] = lambda value, _: value) -> Callable[[Any, Any], Any]:
    """A cattrs hook that reads the values ``accepts`` with ``read`` and refuses others as not ``kind``."""

    def hook(value: Any, type_: Any) -> Any:
        if not accepts(value):
            raise _Wrong(kind, value)
        return read(value, type_)

    return hook


def _object_hook(type_: Any, reader: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """The hook of a dataclass: a JSON object, whose null keys read as missing ones (their defaults)."""
    read = make_dict_structure_fn(type_, reader)
    return _only("a JSON object", lambda value: isinstance(value, dict),
                 lambda values, _: read({key: value for key, value in values.items() if value is not None}, type_))


#: Reads a card's JSON objects into the dataclasses above by their fields' types (keys without a
#: field are ignored); its detailed validation says where a wrong value is.
_READER = cattrs.Converter()
_READER.register_structure_hook(str, _only("a text", lambda value: isinstance(value, str)))
_READER.register_structure_hook(bool, _only("true or false", lambda value: isinstance(value, bool)))
_READER.register_structure_hook(int, _only("a whole number", _is_integer))
_READER.register_structure_hook(float, _only("a number", _is_number, lambda value, _: float(value)))
_READER.register_structure_hook_factory(is_sequence, lambda type_, reader: _only(
    "a list", lambda value: isinstance(value, list), list_structure_factory(type_, reader)))
_READER.register_structure_hook_factory(is_mapping, lambda type_, reader: _only(
    "a JSON object", lambda value: isinstance(value, dict), mapping_structure_factory(type_, reader)))
_READER.register_structure_hook_factory(is_dataclass, _object_hook)


def _card_error(error: BaseException, path: str = "") -> CardError:
    """The first wrong value of cattrs' nested errors, named by its key's path (``metrics.accuracy``)."""
    for note in getattr(error, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            path += f".{note.name}"
        elif isinstance(note, IterableValidationNote):  # a list's index or an object's key
            path += f"[{note.index}]" if isinstance(note.index, int) else f".{note.index}"
    if isinstance(error, BaseValidationError):
        return _card_error(error.exceptions[0], path)
    if isinstance(error, _Wrong):
        return CardError(f"the model card's {path[1:]} is not {error.kind} ({json.dumps(error.value)[:60]})")
    if isinstance(error, KeyError):
        return CardError(f"the model card has no {path[1:]}")
    raise error  # not the card's fault: a bug here
