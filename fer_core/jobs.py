"""Background training for the web app: one job per server process, followed, stopped or cancelled from any page.

Training a network takes the CPU for minutes to hours, so a server runs at most one training at a
time; a second request is refused with who started the running one, when, and when it should end.
The job loads the data, trains in a background thread, keeps the latest progress and the epoch
history for live curves, and saves the model with its card when done. A data file the job was
given to delete (an upload spooled to disk) is deleted whatever happens.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fer_core.errors import FerError
from fer_core.store import ModelStore, check_name
from fer_core.train import TrainConfig, TrainProgress, check_target_name

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
    data_description: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now().astimezone())
    status: str = "loading"
    progress: TrainProgress | None = None
    history: list[dict] = field(default_factory=list)
    train_rows: int = 0
    validation_rows: int = 0
    stopped: str | None = None
    card: dict | None = None
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


def reproduce_command(config: TrainConfig, data_name: str, model_name: str) -> str:
    """The command line that repeats a run made in the app."""
    args = ["python", "-m", "fer_core", "train", "--arch", config.arch, "--data", data_name,
            "--epochs", str(config.epochs), "--batch-size", str(config.batch_size),
            "--lr", str(config.learning_rate), "--class-weight", config.class_weight, "--name", model_name]
    if config.minutes is not None:
        args += ["--minutes", str(config.minutes)]
    if not config.augment:
        args.append("--no-augment")
    if config.init_from:
        args += ["--init-from", config.init_from]
    if config.schedule != "cosine":
        args += ["--schedule", config.schedule]
    if config.swa_epochs:
        args += ["--swa-epochs", str(config.swa_epochs)]
    return shlex.join(args)


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

        Raises :class:`TrainingBusyError` while another job runs, ``ValueError`` for a bad model
        name and ``DataError`` for a fine-tuned network named as the one it starts from; with
        ``delete_data`` the data file is deleted even then.
        """
        try:
            check_name(model_name)
            check_target_name(model_name, config)
            with self._lock:
                running = self._current
                if running is not None and running.active:
                    raise TrainingBusyError(f"the server is busy with one training at a time: {running.describe()}")
                job = TrainingJob(model_name, owner.strip() or "someone", config,
                                  data_description or Path(data_path).name)
                job._thread = threading.Thread(target=self._run, name=f"fer-lab-training-{job.job_id}",
                                               args=(job, Path(data_path), delete_data, store or ModelStore()),
                                               daemon=True)
                self._current = job
        except Exception:
            if delete_data:
                Path(data_path).unlink(missing_ok=True)
            raise
        job._thread.start()
        return job

    @staticmethod
    def _run(job: TrainingJob, data_path: Path, delete_data: bool, store: ModelStore) -> None:
        from fer_core.data import load_dataset, train_validation
        from fer_core.ensemble import lineage, starting_network
        from fer_core.preprocess import Preprocessing
        from fer_core.train import store_result, train

        try:
            start_from = None
            if job.config.init_from:
                start_from = starting_network(store, job.config.init_from, job.config.arch,
                                              Preprocessing.from_dict(job.config.preprocessing))
            dataset = load_dataset(data_path)
            if delete_data:
                data_path.unlink(missing_ok=True)
            train_part, validation = train_validation(dataset, job.config.seed)
            job.train_rows, job.validation_rows = len(train_part), len(validation)
            if job.cancel_event.is_set():
                job.stopped, job.status = "cancelled", "cancelled"
                return
            job.status = "training"
            result = train(train_part, job.config, validation=validation, listener=job.listen,
                           cancel=job.cancel_event, finish=job.finish_event, start_from=start_from)
            job.stopped = result.stopped
            if result.stopped == "cancelled":
                job.status = "cancelled"
                return
            job.status = "saving"
            origin = lineage(store, job.config.init_from,
                             [reproduce_command(job.config, job.data_description, job.model_name)])
            job.card = store_result(result, job.model_name, validation, data_description=job.data_description,
                                    reproduce=origin.reproduce, earlier_minutes=origin.earlier_minutes,
                                    store=store)
            job.status = "done"
        except (FerError, ValueError) as error:
            job.error, job.status = str(error), "failed"
        except Exception as error:  # a crash must end the job, not leave the slot taken
            logger.exception("training job %s failed", job.job_id)
            job.error, job.status = f"training failed: {type(error).__name__}: {error}", "failed"
        finally:
            if delete_data:
                data_path.unlink(missing_ok=True)

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
