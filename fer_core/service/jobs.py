"""What a queued job is: its request and work, the live record its work reports through, the state
every page and replica sees of it (:class:`JobState`) and its place in a lane.

A job is a :class:`JobRequest`: what to run (a :class:`JobWork`, given the :class:`Job` to report
progress through and to watch its stop events, returning the stored model's card), who asked,
which model it saves and which stored models it reads. A job queue (:mod:`fer_core.service.queue`)
runs jobs in lanes, in this process or on workers (:mod:`fer_core.service.redis_queue`); pages only
ever read :class:`JobState` snapshots, whichever process runs the job. :mod:`fer_core.service.work`
makes the requests of trainings and fine-tunes.
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fer_core.base.errors import FerError, SettingError
from fer_core.registry.cards import Metrics, ModelCard
from fer_core.training.progress import TrainProgress

WAITING = "waiting"
#: The stages of a training job: it starts loading, and its work moves it on (:meth:`Job.enter`).
ACTIVE_STATES = ("loading", "training", "saving")
FINAL_STATES = ("done", "failed", "cancelled")
#: How many jobs each lane runs at once: one FER2013-size training beside one short fine-tune.
DEFAULT_LANES = {"train": 1, "finetune": 1}


class JobConflictError(FerError, ValueError):
    """A model that a waiting or running job saves or reads, and so cannot be saved over or deleted now."""


class JobWork(Protocol):
    """What a job runs: it reports through ``job`` (:meth:`Job.listen`, :meth:`Job.enter`, :meth:`Job.report`),
    stops when ``job.cancel_event`` (save nothing) or ``job.finish_event`` (save what it has) is set,
    and returns the stored model's card, or None when cancelled. On a worker it travels pickled, so
    it holds plain data: its inputs, not open files or locks."""

    def __call__(self, job: Job) -> ModelCard | None: ...


@dataclass(frozen=True)
class JobRequest:
    """A job to queue in the lane ``lane`` (a lane of the queue)."""

    lane: str
    model_name: str  #: the model the job saves
    description: str  #: what it does, for people: "training of 'happy_v2' (fer_vgg)"
    work: JobWork
    owner: str = "someone"
    uses: frozenset[str] = frozenset()  #: stored models it reads: its starting network, its teachers
    minutes: float | None = None  #: its time budget, which gives the jobs behind it an expected start
    inputs: tuple[Path, ...] = ()  #: files handed over to the job (a spooled upload): deleted once it ends


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting job stands in its lane."""

    position: int  #: 1 for the next job to start
    jobs_ahead: int  #: running and waiting jobs of the lane that come before it
    expected_start: _dt.datetime | None  #: None while a job ahead has no time budget nor estimate yet
    no_worker: bool = False  #: no worker takes the lane's jobs now (a queue on Redis)

    def describe(self) -> str:
        """Its position and expected start, in words."""
        text = f"number {self.position} in the queue"
        if self.no_worker:
            return f"{text}; no worker takes these jobs now: it starts once one does"
        if self.expected_start is None:
            return f"{text}; it starts after {self.jobs_ahead} job(s) ahead of it"
        return f"{text}; expected to start at about {self.expected_start:%H:%M}"


@dataclass(frozen=True)
class JobState:
    """A job as every page and replica sees it, at one moment: what its lane's order, its place and the
    models in use need, what the queue's table shows, and the progress and outcome its page follows."""

    job_id: str
    seq: int  #: its place in the order of submission, across replicas
    lane: str
    model_name: str
    uses: frozenset[str]
    description: str
    owner: str
    minutes: float | None
    submitted_at: _dt.datetime
    started_at: _dt.datetime | None = None
    status: str = WAITING
    ends_at: _dt.datetime | None = None  #: when a running job should end; None when unknown
    fraction: float | None = None  #: share of a running job's work done, once it reports
    message: str = ""  #: what a running job does now, in words (a fine-tune's step)
    progress: TrainProgress | None = None  #: a training's latest report
    history: tuple[dict, ...] = ()  #: a training's epochs: epoch, loss, accuracy, val_loss, val_accuracy
    train_rows: int = 0
    validation_rows: int = 0
    card: ModelCard | None = None  #: the saved model's card, once done
    baseline: Metrics | None = None  #: the starting model's scores on the same held-out faces (a fine-tune)
    error: str | None = None  #: why it failed
    finish_requested: bool = False  #: someone asked it to stop and save
    attempts: int = 0  #: how many times a worker started it (a second: resumed after its worker stopped)

    @property
    def active(self) -> bool:
        """Waiting or running: not ended yet."""
        return self.status not in FINAL_STATES

    @property
    def running(self) -> bool:
        """Started and not ended: it holds one of its lane's slots, whatever stage its work reports."""
        return self.started_at is not None and self.active

    @property
    def stopped(self) -> str | None:
        """Why the job ended: the card's reason (completed, early_stopping, time_budget, finished), or cancelled."""
        if self.status == "cancelled":
            return "cancelled"
        return None if self.card is None else self.card.training.stopped

    def models(self) -> set[str]:
        """The models the job saves or reads."""
        return {self.model_name, *self.uses}

    def seconds_left(self) -> float | None:
        """How long the running job should still take; None when unknown (and for a job that does not run)."""
        if not self.running or self.ends_at is None:
            return None
        return max(0.0, (self.ends_at - local_now()).total_seconds())

    def epochs(self) -> list[dict]:
        """The per-epoch history: epoch, loss, accuracy, val_loss, val_accuracy."""
        return list(self.history)

    def describe(self) -> str:
        """What the job does, who asked, and since when (how long it should still take, when running)."""
        text = f"{self.description} by {self.owner}"
        if self.started_at is None:
            return f"{text}, submitted at {self.submitted_at:%H:%M} ({self.status})"
        text = f"{text}, started at {self.started_at:%H:%M} ({self.status})"
        left = self.seconds_left()
        return text if left is None else f"{text}; about {whole_minutes(left)} min left"

    def to_record(self) -> dict[str, Any]:
        """The state as JSON-ready data (what a shared queue stores)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {**values, "uses": sorted(self.uses), "history": list(self.history),
                "progress": None if self.progress is None else asdict(self.progress),
                "card": None if self.card is None else self.card.to_dict(),
                "baseline": None if self.baseline is None else self.baseline.to_dict(),
                **{name: None if values[name] is None else values[name].isoformat()
                   for name in ("submitted_at", "started_at", "ends_at")}}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> JobState:
        """A state from :meth:`to_record`'s data; KeyError, TypeError or ValueError (a CardError among them)
        for data that is not one."""
        times = {name: None if record.get(name) is None else _dt.datetime.fromisoformat(record[name])
                 for name in ("submitted_at", "started_at", "ends_at")}
        if times["submitted_at"] is None:
            raise ValueError("a job state without its submission time")
        progress, card, baseline = record.get("progress"), record.get("card"), record.get("baseline")
        return cls(**{**{name: record[name] for name in cls.__dataclass_fields__ if name in record}, **times,
                      "job_id": str(record["job_id"]), "seq": int(record["seq"]), "uses": frozenset(record["uses"]),
                      "history": tuple(record.get("history") or ()),
                      "progress": None if progress is None else TrainProgress(**progress),
                      "card": None if card is None else ModelCard.from_dict(card, str(record["model_name"])),
                      "baseline": None if baseline is None else Metrics.from_dict(baseline)})


def lane_slots(setting: str | None) -> dict[str, int]:
    """:data:`DEFAULT_LANES` with the slots of ``setting`` (``$FER_LAB_LANES``: ``train=1,finetune=2``)."""
    lanes = dict(DEFAULT_LANES)
    for entry in filter(None, (part.strip() for part in (setting or "").split(","))):
        lane, _, slots = entry.partition("=")
        if lane.strip() not in lanes or not slots.strip().isdigit() or int(slots) < 1:
            raise SettingError(f"FER_LAB_LANES: {entry!r} is not LANE=SLOTS with a lane of {', '.join(lanes)} "
                               "and 1 or more slots")
        lanes[lane.strip()] = int(slots)
    return lanes


def local_now() -> _dt.datetime:
    """Now, in the local time zone: the times people are shown."""
    return _dt.datetime.now().astimezone()


def whole_minutes(seconds: float) -> int:
    """Seconds as whole minutes, at least 1: what a person is told is left."""
    return max(1, round(seconds / 60))


@dataclass(eq=False)
class Job:
    """One job, live, in the process that runs it (or keeps it waiting): its work reports through it,
    and :meth:`state` is what pages see of it."""

    request: JobRequest
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seq: int = 0  #: its place in the order of submission (set when it is queued)
    submitted_at: _dt.datetime = field(default_factory=local_now)
    started_at: _dt.datetime | None = None
    status: str = WAITING
    progress: TrainProgress | None = None
    history: list[dict] = field(default_factory=list)
    train_rows: int = 0
    validation_rows: int = 0
    card: ModelCard | None = None
    baseline: Metrics | None = None  #: set by a fine-tune: the starting model's scores on the held-out faces
    error: str | None = None
    attempts: int = 0
    checkpoint_dir: Path | None = None  #: where a training checkpoints, to resume on another worker (or None)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finish_event: threading.Event = field(default_factory=threading.Event)
    _fraction: float | None = field(default=None, repr=False)  # a fine-tune's own report (a training's comes
    _message: str = field(default="", repr=False)              # from its progress)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model_name(self) -> str:
        return self.request.model_name

    @property
    def lane(self) -> str:
        return self.request.lane

    @property
    def active(self) -> bool:
        """Waiting or running: not ended yet."""
        return self.status not in FINAL_STATES

    @property
    def running(self) -> bool:
        """Started and not ended."""
        return self.started_at is not None and self.active

    def fraction(self) -> float | None:
        """Share of the work done: a fine-tune's report, or the batches of all epochs done; None before either."""
        if self._fraction is not None:
            return self._fraction
        p = self.progress
        if p is None:
            return None
        return min(1.0, ((p.epoch - 1) * p.batches + p.batch) / max(1, p.epochs * p.batches))

    def seconds_left(self) -> float | None:
        """How long the running job should still take: its progress's estimate, else what is left of its
        time budget; None when neither is known (and for a job that does not run)."""
        if not self.running:
            return None
        if self.progress is not None and self.progress.eta_seconds is not None:
            return self.progress.eta_seconds
        if self.request.minutes is None or self.started_at is None:
            return None
        return max(0.0, self.request.minutes * 60 - (local_now() - self.started_at).total_seconds())

    def state(self) -> JobState:
        """The job as every page and replica sees it, now."""
        left = self.seconds_left()
        with self._lock:
            history = tuple(self.history)
        return JobState(job_id=self.job_id, seq=self.seq, lane=self.lane, model_name=self.model_name,
                        uses=self.request.uses, description=self.request.description, owner=self.request.owner,
                        minutes=self.request.minutes, submitted_at=self.submitted_at, started_at=self.started_at,
                        status=self.status, ends_at=None if left is None else local_now() + _dt.timedelta(seconds=left),
                        fraction=self.fraction(), message=self._message, progress=self.progress, history=history,
                        train_rows=self.train_rows, validation_rows=self.validation_rows, card=self.card,
                        baseline=self.baseline, error=self.error, finish_requested=self.finish_event.is_set(),
                        attempts=self.attempts)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (or ``timeout`` passed); True if it has ended."""
        return self._ended.wait(timeout)

    def end(self, status: str) -> None:
        """Mark the job ended with ``status`` (one of :data:`FINAL_STATES`) and wake its waiters."""
        self.status = status
        self._ended.set()

    def listen(self, progress: TrainProgress) -> None:
        """A training's progress listener: keep the latest report and the epoch history."""
        self.progress = progress
        if progress.epoch_end:
            with self._lock:  # a resumed run may report again an epoch its checkpoint missed
                self.history[:] = [epoch for epoch in self.history if epoch["epoch"] < progress.epoch]
                self.history.append({"epoch": progress.epoch, "loss": progress.loss,
                                     "accuracy": progress.accuracy, "val_loss": progress.val_loss,
                                     "val_accuracy": progress.val_accuracy})

    def enter(self, stage: str, train_rows: int, validation_rows: int) -> None:
        """The work's stage listener (a training's ``training``, then ``saving``): the job's status follows it."""
        self.train_rows, self.validation_rows, self.status = train_rows, validation_rows, stage

    def report(self, fraction: float, message: str) -> None:
        """Work without epochs (a fine-tune) says how far it has come (0-1) and what it does now."""
        self._fraction, self._message = fraction, message
