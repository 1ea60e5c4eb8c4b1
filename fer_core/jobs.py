"""Background training for the web app: one job per server process, followed, stopped or cancelled from any page.

Training a network takes the CPU for minutes to hours, so a server runs at most one training at a
time; a second request is refused with who started the running one, when, and when it should end.
The job runs the training service (``train.run_training``: data, split, training, evaluation and
the stored model with its card) in a background thread and keeps the latest progress and the
epoch history for live curves. A data file the job was given to delete (an upload spooled to
disk) is deleted once read, whatever happens.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fer_core.callbacks import TrainProgress
from fer_core.cards import ModelCard
from fer_core.errors import FerError
from fer_core.recipe import TrainConfig
from fer_core.store import ModelStore
from fer_core.train import TrainingData, run_training

logger = logging.getLogger(__name__)

#: Job states; the first three mean the job still holds the server's training slot.
ACTIVE_STATES = ("loading", "training", "saving")
FINAL_STATES = ("done", "failed", "cancelled")


class TrainingBusyError(FerError, RuntimeError):
    """A training job is already running on this server."""


@dataclass
class TrainingJob:
    """One training run in the background and everything a page shows about it."""

    model_name: str
    owner: str
    config: TrainConfig
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now().astimezone())
    status: str = "loading"
    progress: TrainProgress | None = None
    history: list[dict] = field(default_factory=list)
    train_rows: int = 0
    validation_rows: int = 0
    stopped: str | None = None
    card: ModelCard | None = None
    error: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finish_event: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATES

    @property
    def fraction(self) -> float:
        """Share of the batches of all epochs done (0 before the first batch)."""
        p = self.progress
        if p is None:
            return 0.0
        return min(1.0, ((p.epoch - 1) * p.batches + p.batch) / max(1, p.epochs * p.batches))

    @property
    def eta_seconds(self) -> float | None:
        return None if self.progress is None else self.progress.eta_seconds

    def epochs(self) -> list[dict]:
        """A copy of the per-epoch history: epoch, loss, accuracy, val_loss, val_accuracy."""
        with self._lock:
            return list(self.history)

    def describe(self) -> str:
        """Who trains what since when, and how long it should still take."""
        text = (f"training of '{self.model_name}' ({self.config.arch}) started by {self.owner} "
                f"at {self.started_at:%H:%M} ({self.status})")
        eta = self.eta_seconds
        return text if eta is None else f"{text}; about {max(1, round(eta / 60))} min left"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (or ``timeout`` passed); True if it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.active

    def listen(self, progress: TrainProgress) -> None:
        """The training's progress listener: keep the latest report and the epoch history."""
        self.progress = progress
        if progress.epoch_end:
            with self._lock:
                self.history.append({"epoch": progress.epoch, "loss": progress.loss,
                                     "accuracy": progress.accuracy, "val_loss": progress.val_loss,
                                     "val_accuracy": progress.val_accuracy})

    def enter(self, stage: str, train_rows: int, validation_rows: int) -> None:
        """The training service's stage listener: the job's status follows it."""
        self.train_rows, self.validation_rows, self.status = train_rows, validation_rows, stage


class TrainingJobs:
    """The training slot of this server process and the last job that held it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: TrainingJob | None = None

    def current(self) -> TrainingJob | None:
        """The running job, or the last one to finish (None before the first)."""
        return self._current

    def get(self, job_id: str | None) -> TrainingJob | None:
        """The current job if it has the id ``job_id``."""
        job = self._current
        return job if job is not None and job.job_id == job_id else None

    def start(self, data_path: str | Path, config: TrainConfig, model_name: str, *, owner: str = "someone",
              data_description: str | None = None, delete_data: bool = False,
              store: ModelStore | None = None) -> TrainingJob:
        """Start training ``config`` on the data at ``data_path`` in the background.

        ``data_description`` is the data's name in the card and its reproduce command (by default
        the file name). Raises :class:`TrainingBusyError` while another job runs and
        ``SettingError`` for a recipe or model name that ``TrainConfig.validate`` refuses; with
        ``delete_data`` the data file is deleted even then.
        """
        try:
            config.validate(model_name)
            data = TrainingData(Path(data_path), data_description or Path(data_path).name,
                                delete_after_loading=delete_data)
            with self._lock:
                running = self._current
                if running is not None and running.active:
                    raise TrainingBusyError(f"the server is busy with one training at a time: {running.describe()}")
                job = TrainingJob(model_name, owner.strip() or "someone", config)
                job._thread = threading.Thread(target=self._run, name=f"fer-lab-training-{job.job_id}",
                                               args=(job, data, store or ModelStore()), daemon=True)
                self._current = job
        except Exception:
            if delete_data:
                Path(data_path).unlink(missing_ok=True)
            raise
        job._thread.start()
        return job

    @staticmethod
    def _run(job: TrainingJob, data: TrainingData, store: ModelStore) -> None:
        try:
            outcome = run_training(job.config, data, job.model_name, store=store, listener=job.listen,
                                   on_stage=job.enter, cancel=job.cancel_event, finish=job.finish_event)
            job.stopped, job.card = outcome.result.stopped, outcome.card
            job.status = "cancelled" if outcome.card is None else "done"
        except FerError as error:
            job.error, job.status = str(error), "failed"
        except Exception as error:  # a crash must end the job, not leave the slot taken
            logger.exception("training job %s failed", job.job_id)
            job.error, job.status = f"training failed: {type(error).__name__}: {error}", "failed"

    def cancel(self, job_id: str) -> bool:
        """Ask the job ``job_id`` to stop after its current batch and save nothing; False if it is
        not running."""
        job = self._running(job_id)
        if job is not None:
            job.cancel_event.set()
        return job is not None

    def finish(self, job_id: str) -> bool:
        """Ask the job ``job_id`` to stop after its current batch and save its best weights so far
        (as when its time budget runs out); False if it is not running."""
        job = self._running(job_id)
        if job is not None:
            job.finish_event.set()
        return job is not None

    def _running(self, job_id: str) -> TrainingJob | None:
        job = self.get(job_id)
        return job if job is not None and job.active else None


_JOBS = TrainingJobs()


def training_jobs() -> TrainingJobs:
    """The training slot shared by every session of this server process."""
    return _JOBS
