"""Model cards: what a stored model is, how it was trained, and how well and fast it runs.

A card is a :class:`ModelCard` in memory and a JSON object in the ``NAME.json`` file beside the
model; this module alone turns one into the other. The JSON keys are the field names, so a card
stays readable by hand. A card without ``schema_version`` was written before cards had one
(version 1: the same keys, some of them missing, which read as unknown); keys this version does
not know are ignored, and a card of a newer schema is refused rather than misread.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_core.base.errors import FerError
from fer_core.base.labels import EMOTIONS
from fer_core.faces.preprocess import Preprocessing

if TYPE_CHECKING:
    from collections.abc import Callable

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
    def confusion_normalized(self) -> list[list[float]]:
        """The confusion matrix's rows as shares of their class (recall on the diagonal)."""
        return row_shares(self.confusion_matrix)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, with the normalised matrix written out for a reader of the file."""
        values = asdict(self)
        flip_tta = values.pop("flip_tta")
        return {**values, "confusion_matrix_normalized": self.confusion_normalized, "flip_tta": flip_tta}


def row_shares(counts: list[list[int]]) -> list[list[float]]:
    """A confusion matrix's rows divided by their totals, to 4 places; an empty row stays zero."""
    matrix = np.asarray(counts, dtype=np.float64).reshape(len(counts), len(counts))  # [] too
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0).round(4).tolist()


@dataclass(frozen=True, kw_only=True)
class Member:
    """A network of an ensemble, with its own figures as its card gave them."""

    name: str
    arch: str
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

    @property
    def seed(self) -> int | None:
        """The recipe's random seed (which validation split the run was selected on)."""
        seed = (self.recipe or {}).get("seed")
        return seed if isinstance(seed, int) else None


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
        card = _Json(values, "")
        version = card.integer("schema_version") or 1
        if version > SCHEMA_VERSION:
            raise CardError(f"the model card is of schema version {version}, newer than this version of FER Lab "
                            f"reads ({SCHEMA_VERSION}): update FER Lab to use this model")
        training, metrics = card.child("training"), card.child("metrics")
        return cls(name=name, arch=card.text("arch") or "unknown", description=card.text("description") or "",
                   labels=card.texts("labels") or list(EMOTIONS), input_size=card.integers("input_size"),
                   preprocessing=Preprocessing.from_dict(card.mapping("preprocessing") or {}),
                   parameters=card.integer("parameters"), weights_dtype=card.text("weights_dtype") or "float32",
                   training=Training() if training is None else _training(training),
                   metrics=None if metrics is None else _metrics(metrics),
                   ms_per_face=card.number("ms_per_face"), inference_backend=card.text("inference_backend"),
                   created=card.text("created"), keras_version=card.text("keras_version"),
                   reproduce=card.text("reproduce"), file_bytes=card.integer("file_bytes"),
                   sha256=card.mapping("sha256") or {})


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
    import keras

    return ModelCard(arch=arch, description=description, input_size=list(model.input_shape[1:]),
                     preprocessing=preprocessing, parameters=int(model.count_params()), weights_dtype=weights_dtype,
                     training=training, metrics=metrics,
                     ms_per_face=None if ms_per_face is None else round(ms_per_face, 3),
                     inference_backend=inference_backend,
                     created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     keras_version=keras.__version__, reproduce=reproduce)


def _metrics(values: _Json) -> Metrics:
    return Metrics(dataset=values.text("dataset"), usage=values.texts("usage") or [],
                   accuracy=values.number("accuracy", required=True),
                   macro_f1=values.number("macro_f1", required=True), n=values.integer("n", required=True),
                   per_class={name: _class_scores(row) for name, row in values.objects("per_class").items()},
                   confusion_matrix=values.matrix("confusion_matrix"), flip_tta=_scores(values.child("flip_tta")))


def _training(values: _Json) -> Training:
    minutes = values.number("minutes")
    return Training(data=values.text("data"), train_rows=values.integer("train_rows"),
                    validation_rows=values.integer("validation_rows"), precision=values.text("precision"),
                    epochs_run=values.integer("epochs_run"), stopped=values.text("stopped"), minutes=minutes,
                    # Cards from before fine-tuning have no total: their own minutes were the whole training.
                    total_minutes=values.number("total_minutes") if "total_minutes" in values else minutes,
                    averaged_epochs=values.integer("averaged_epochs"), recipe=values.mapping("recipe"),
                    members=[_member(member) for member in values.children("members")],
                    history=values.mapping("history") or {}, fine_tuning=_fine_tuning(values.child("fine_tuning")))


def _fine_tuning(values: _Json | None) -> FineTuning | None:
    if values is None:
        return None
    return FineTuning(start=values.text("start", required=True),
                      accuracy_before=values.number("accuracy_before", required=True),
                      held_out_recordings=values.integer("held_out_recordings", required=True),
                      untested_classes=values.texts("untested_classes") or [],
                      settings=values.mapping("settings") or {})


def _scores(values: _Json | None) -> Scores | None:
    if values is None:
        return None
    return Scores(accuracy=values.number("accuracy", required=True), macro_f1=values.number("macro_f1", required=True))


def _class_scores(values: _Json) -> ClassScores:
    return ClassScores(precision=values.number("precision", required=True),
                       recall=values.number("recall", required=True), f1=values.number("f1", required=True),
                       support=values.integer("support", required=True))


def _member(values: _Json) -> Member:
    return Member(name=values.text("name", required=True), arch=values.text("arch") or "unknown",
                  parameters=values.integer("parameters"), accuracy=values.number("accuracy"),
                  flip_tta=_scores(values.child("flip_tta")), minutes=values.number("minutes"),
                  recipe=values.mapping("recipe"))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Json:
    """One JSON object of a card, read key by key as the type each field needs. A missing or null
    key reads as None (or is a :class:`CardError` where ``required``); a value of another type
    is a CardError naming it by its path, e.g. ``metrics.accuracy``."""

    def __init__(self, values: object, path: str):
        if not isinstance(values, dict):
            raise CardError(f"the model card's {path} is not a JSON object" if path
                            else "the model card is not a JSON object")
        self.values, self.path = values, path

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, accepts: Callable[[object], bool], kind: str, required: bool = False) -> Any:
        value = self.values.get(key)
        if value is None:
            if required:
                raise CardError(f"the model card has no {self._where(key)}")
            return None
        if not accepts(value):
            raise CardError(f"the model card's {self._where(key)} is not {kind} ({json.dumps(value)[:60]})")
        return value

    def text(self, key: str, required: bool = False) -> str | None:
        return self._get(key, lambda value: isinstance(value, str), "a text", required)

    def number(self, key: str, required: bool = False) -> float | None:
        value = self._get(key, _is_number, "a number", required)
        return None if value is None else float(value)

    def integer(self, key: str, required: bool = False) -> int | None:
        return self._get(key, _is_integer, "a whole number", required)

    def texts(self, key: str) -> list[str] | None:
        return self._get(key, lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
                         "a list of texts")

    def integers(self, key: str) -> list[int] | None:
        return self._get(key, lambda value: isinstance(value, list) and all(map(_is_integer, value)),
                         "a list of whole numbers")

    def matrix(self, key: str) -> list[list[int]]:
        """A square table of whole numbers (a confusion matrix; required)."""
        return self._get(key, lambda value: isinstance(value, list) and all(
            isinstance(row, list) and len(row) == len(value) and all(map(_is_integer, row)) for row in value),
            "a square table of whole numbers", required=True)

    def mapping(self, key: str) -> dict[str, Any] | None:
        """A JSON object kept as it is (a recipe, a training history)."""
        return self._get(key, lambda value: isinstance(value, dict), "a JSON object")

    def child(self, key: str) -> _Json | None:
        """A nested object, to read key by key."""
        value = self.mapping(key)
        return None if value is None else _Json(value, self._where(key))

    def objects(self, key: str) -> dict[str, _Json]:
        """An object whose every value is an object, e.g. the per-class scores (required)."""
        values = self._get(key, lambda value: isinstance(value, dict), "a JSON object", required=True)
        return {name: _Json(value, f"{self._where(key)}.{name}") for name, value in values.items()}

    def children(self, key: str) -> list[_Json]:
        """A list of objects, e.g. an ensemble's members ([] when missing)."""
        values = self._get(key, lambda value: isinstance(value, list), "a list") or []
        return [_Json(value, f"{self._where(key)}[{index}]") for index, value in enumerate(values)]
