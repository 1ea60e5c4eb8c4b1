"""A training recipe (:class:`TrainConfig`): its settings, their rules, the command line that
repeats it, and the data a run learns from (:class:`TrainingData`).

Kept apart from the training code so that the command line's parser and the Train page read the
choices and defaults without importing Keras. Every caller (command line, Train page, the
training service) checks a recipe with :meth:`TrainConfig.validate`; the command a model card
records is :func:`reproduce_command`, made from the recipe itself.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fer_core.base.errors import SettingError
from fer_core.faces.preprocess import Preprocessing
from fer_core.registry.store import check_name

CLASS_WEIGHTS = ("none", "balanced", "sqrt")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
SCHEDULES = ("cosine", "constant")
#: The losses a network can learn with: cross-entropy, or the logit-adjusted loss (Menon et al. 2021), whose
#: network answers with balanced odds (every emotion as likely) instead of its training data's.
LOSSES = ("cross_entropy", "logit_adjusted")


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
    webcam_augment: bool = False  # also vary brightness, contrast, gamma and focus (blur) as classroom webcams do
    class_weight: str = "none"  # one of CLASS_WEIGHTS: none, balanced (inverse frequency) or its square root
    patience: int = 15
    minutes: float | None = None
    precision: str = "auto"  # one of PRECISIONS
    seed: int = 0
    preprocessing: dict = field(default_factory=lambda: Preprocessing().to_dict())
    teacher: list[str] = field(default_factory=list)  # stored models whose mean answer is learnt from
    distill_weight: float = 0.5  # share of the loss that follows the teacher rather than the labels
    temperature: float = 2.0  # softens both answers before they are compared
    init_from: str | None = None  # stored model whose weights start the run (fine-tuning)
    schedule: str = "cosine"  # one of SCHEDULES: cosine (anneals to 1% of the peak) | constant (holds the peak)
    swa_epochs: int = 0  # the last N epochs' weights are averaged into the result (SWA)
    loss: str = "cross_entropy"  # one of LOSSES

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, name: str | None = None) -> TrainConfig:
        """Raise :class:`SettingError` naming the first setting out of range; with ``name``, the
        model the run is saved as, also check that name. Returns the recipe."""
        from fer_core.training.networks import ARCHITECTURES  # loads Keras: parsers and pages read recipes without it

        problems = [
            (self.arch not in ARCHITECTURES,
             f"unknown architecture {self.arch!r} (choose from {', '.join(sorted(ARCHITECTURES))})"),
            (self.epochs < 1, f"the epochs must be 1 or more, not {self.epochs}"),
            (self.batch_size < 1, f"the batch size must be 1 or more, not {self.batch_size}"),
            (not self.learning_rate > 0, f"the learning rate must be above 0, not {self.learning_rate}"),
            (not self.weight_decay >= 0, f"the weight decay must be 0 or more, not {self.weight_decay}"),
            (not 0 <= self.label_smoothing < 1, f"the label smoothing must lie in 0-1, not {self.label_smoothing}"),
            (not self.warmup_epochs >= 0, f"the warm-up epochs must be 0 or more, not {self.warmup_epochs}"),
            (self.class_weight not in CLASS_WEIGHTS,
             f"the class weight must be {', '.join(CLASS_WEIGHTS)}, not {self.class_weight!r}"),
            (self.patience < 1, f"the early-stopping patience must be 1 or more epochs, not {self.patience}"),
            (self.minutes is not None and not self.minutes > 0,
             f"the time budget must be above 0 minutes (or none), not {self.minutes}"),
            (self.precision not in PRECISIONS,
             f"the precision must be {', '.join(PRECISIONS)}, not {self.precision!r}"),
            (self.schedule not in SCHEDULES, f"the schedule must be {' or '.join(SCHEDULES)}, not {self.schedule!r}"),
            (self.swa_epochs < 0, f"the averaged epochs must be 0 or more, not {self.swa_epochs}"),
            (self.swa_epochs > self.epochs,
             f"averaging the last {self.swa_epochs} epochs needs at least as many epochs (not {self.epochs})"),
            (self.loss not in LOSSES, f"the loss must be {' or '.join(LOSSES)}, not {self.loss!r}"),
            (self.loss == "logit_adjusted" and self.class_weight != "none",
             "the logit-adjusted loss balances the classes itself: leave the class weight at none"),
            (self.loss == "logit_adjusted" and bool(self.teacher),
             "the logit-adjusted loss does not go with distillation (--teacher): choose one"),
            (self.webcam_augment and not self.augment, "webcam augmentation adds to the augmentation: do not turn "
                                                        "that off"),
            (not self.teacher and (self.distill_weight, self.temperature) != (TrainConfig.distill_weight,
                                                                               TrainConfig.temperature),
             "the distillation weight and temperature go with teacher models (--teacher): name them, or leave "
             "both settings out"),
            (not 0 <= self.distill_weight <= 1, f"the distillation weight must lie in 0-1, not {self.distill_weight}"),
            (not self.temperature > 0, f"the distillation temperature must be above 0, not {self.temperature}"),
            (name is not None and self.init_from is not None and name.casefold() == self.init_from.casefold(),
             f"fine-tuning {self.init_from} cannot save over it: choose another name"),
        ]
        problem = next((message for failed, message in problems if failed), None)
        if problem is not None:
            raise SettingError(problem)
        if name is not None:
            check_name(name)
        return self


#: The option of ``python -m fer_core train`` that sets each recipe entry (``--arch`` is always given).
OPTIONS = {"epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--lr",
           "weight_decay": "--weight-decay", "augment": "--no-augment", "webcam_augment": "--webcam-augment",
           "class_weight": "--class-weight",
           "patience": "--patience", "minutes": "--minutes", "precision": "--precision", "seed": "--seed",
           "teacher": "--teacher", "distill_weight": "--distill-weight", "temperature": "--temperature",
           "init_from": "--init-from", "schedule": "--schedule", "swa_epochs": "--swa-epochs",
           "loss": "--loss"}


def reproduce_command(config: TrainConfig, data_name: str, model_name: str) -> str:
    """The command line that trains ``config`` on the data file ``data_name`` and saves the model as
    ``model_name``: every setting that differs from its default, in the recipe's order. Parsed by
    the command line it gives ``config`` back; a setting it has no option for is a SettingError."""
    defaults = TrainConfig()
    words = ["python", "-m", "fer_core", "train", "--arch", config.arch, "--data", data_name, "--name", model_name]
    for entry in fields(TrainConfig):
        value = getattr(config, entry.name)
        if entry.name == "arch" or value == getattr(defaults, entry.name):
            continue
        option = OPTIONS.get(entry.name)
        if option is None:
            raise SettingError(f"the command line has no option for {entry.name} ({value!r}): train with the "
                               f"default {getattr(defaults, entry.name)!r} to get a reproducible command")
        if isinstance(value, bool):
            words.append(option)  # a flag: --no-augment (on by default) or --webcam-augment (off by default)
        elif isinstance(value, list):
            words += [option, *value]
        else:
            words += [option, str(value)]
    return shlex.join(words)


@dataclass(frozen=True)
class TrainingData:
    """The faces a run learns from: a dataset file (see ``datasets.load.load_dataset``) and the name its
    card and reproduce command give it, the file name the user chose (not a server path, nor the
    name of an upload spooled to disk)."""

    path: Path
    name: str
    cache: bool = False  #: keep a parsed copy for later runs (``load_dataset(cache=True)``)
    delete_after_loading: bool = False  #: a spooled upload: deleted once read, or when the run ends before
