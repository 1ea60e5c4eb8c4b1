"""The work of the queue's jobs: the training service in the ``train`` lane, fine-tuning on a
class's faces in the ``finetune`` lane, and the requests that queue them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fer_core.base.errors import DataError
from fer_core.base.labels import EMOTIONS
from fer_core.datasets.collection import FaceCollection
from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.evaluate import evaluate_classifier
from fer_core.inference.predict import EmotionClassifier
from fer_core.registry.cards import ModelCard
from fer_core.registry.store import ModelStore, check_name
from fer_core.service.jobs import Job, JobRequest, JobState
from fer_core.service.queue import JobQueue, delete_inputs
from fer_core.training.recipe import TrainConfig, TrainingData


@dataclass(frozen=True)
class TrainingWork:
    """The work of :func:`submit_training`: the training service, reporting through the job."""

    config: TrainConfig
    data: TrainingData
    store: ModelStore

    def __call__(self, job: Job) -> ModelCard | None:
        from fer_core.training.train import run_training  # Keras loads when the job runs, not when a page queues it

        return run_training(self.config, self.data, job.model_name, store=self.store, checkpoint_dir=job.checkpoint_dir,
                            listener=job.listen, on_stage=job.enter, cancel=job.cancel_event,
                            finish=job.finish_event).card


def submit_training(queue: JobQueue, data_path: str | Path, config: TrainConfig, model_name: str, *,
                    owner: str = "someone", data_description: str | None = None, delete_data: bool = False,
                    store: ModelStore | None = None) -> JobState:
    """Queue training ``config`` on the data at ``data_path`` in the ``train`` lane of ``queue`` (see
    :meth:`JobQueue.submit`).

    ``data_description`` is the data's name in the card and its reproduce command (by default
    the file name). Raises ``SettingError`` for a recipe or model name that ``TrainConfig.validate``
    refuses. With ``delete_data`` the data file is the job's (an upload spooled to ``queue.inbox``):
    deleted once loaded, or once the job ends on a queue whose jobs may resume, and also when refused.
    """
    inputs = (Path(data_path),) if delete_data else ()
    try:
        config.validate(model_name)
    except Exception:
        delete_inputs(inputs)
        raise
    data = TrainingData(Path(data_path), data_description or Path(data_path).name,
                        delete_after_loading=delete_data and not queue.resumes)
    uses = frozenset([*config.teacher, *([config.init_from] if config.init_from else [])])
    work = TrainingWork(config, data, store or ModelStore())
    return queue.submit(JobRequest(lane="train", model_name=model_name, work=work, owner=owner, uses=uses,
                                   description=f"training of '{model_name}' ({config.arch})",
                                   minutes=config.minutes, inputs=inputs))


def finetune_problem(collection: FaceCollection) -> str | None:
    """Why fine-tuning on the collection cannot work yet, or None when it can: it needs two emotions,
    and an emotion recorded twice, whose second recording is held out to score the models on (the
    rule ``fer_core.training.finetune`` checks)."""
    faces, recordings = collection.counts(), collection.recording_counts()
    shown = [name for name in EMOTIONS if faces[name]]
    if len(shown) < 2:
        return "Fine-tuning needs faces of two emotions or more."
    if max(recordings.values()) < 2:
        return ("Fine-tuning needs an emotion recorded twice or more: one of its recordings is held out to score "
                "the models on.")
    return None


@dataclass(frozen=True)
class FineTuneWork:
    """A job's work: ``fer_core.training.finetune.finetune`` of the stored model ``start`` on ``dataset``.

    While it runs it reports how far it has come (:meth:`Job.report`); at the end the job's ``baseline``
    holds the starting model's scores on the faces held out from training (the stored model's card
    holds its own, on the same faces).
    """

    store: ModelStore
    start: str
    dataset: FaceDataset
    minutes: float
    seed: int = 0

    def __call__(self, job: Job) -> ModelCard | None:
        from fer_core.training.finetune import finetune, hold_out  # Keras loads when the job runs

        split = hold_out(self.dataset, seed=self.seed)  # the recordings finetune holds out with this seed

        def report(done: float, message: str) -> None:
            if job.status == "loading":
                job.enter("training", len(split.train), len(split.held_out))
            if done >= 1.0:
                job.enter("saving", len(split.train), len(split.held_out))
            job.report(done, message)

        job.report(0.0, "loading the starting model")
        result = finetune(self.store, self.start, self.dataset, name=job.model_name, minutes=self.minutes,
                          seed=self.seed, progress=report, cancel=job.cancel_event)
        if result is None:
            return None
        stored = self.store.load(self.start)
        classifier = EmotionClassifier.from_stored(stored, flip_tta=False, odds="fer2013")
        job.baseline = evaluate_classifier(classifier, stored.card.preprocessing, result.split.held_out).as_metrics(
            dataset="held-out class faces")
        return result.card


def submit_finetune(queue: JobQueue, collection: FaceCollection, start: str, name: str, *, minutes: float,
                    owner: str = "someone", store: ModelStore | None = None) -> JobState:
    """Queue fine-tuning ``start`` on the collection's faces (as they are now) as ``name`` in the
    ``finetune`` lane; a collection that cannot be fine-tuned on is a DataError."""
    problem = finetune_problem(collection)
    if problem is not None:
        raise DataError(problem)
    if check_name(name).casefold() == start.casefold():
        raise DataError(f"fine-tuning {start} cannot save over it: choose another name")
    if not minutes > 0:
        raise DataError(f"the time budget must be above 0 minutes, not {minutes}")
    work = FineTuneWork(store or ModelStore(), start, collection.to_dataset(), minutes)
    return queue.submit(JobRequest(lane="finetune", model_name=name, work=work, owner=owner, uses=frozenset([start]),
                                   description=f"fine-tuning of '{start}' on class faces as '{name}'", minutes=minutes))
