"""What a queued job is: its request and work, its record while it waits and runs, its ticket
(what every replica sees of it) and its place in a lane.

A job is a :class:`JobRequest`: what to run (a :class:`JobWork`, given the :class:`Job` to report
progress through and to watch its stop events, returning the stored model's card), who asked,
which model it saves and which stored models it reads. :class:`fer_core.service.queue.JobQueue` runs
jobs in lanes; :mod:`fer_core.service.work` makes the requests of trainings and fine-tunes.
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

from fer_core.base.errors import FerError, SettingError
from fer_core.registry.cards import ModelCard

if TYPE_CHECKING:
    from fer_core.training.callbacks import TrainProgress

WAITING = "waiting"
#: The stages of a training job: it starts loading, and its work moves it on (:meth:`Job.enter`).
ACTIVE_STATES = ("loading", "training", "saving")
FINAL_STATES = ("done", "failed", "cancelled")
#: How many jobs each lane runs at once: one FER2013-size training beside one short fine-tune.
DEFAULT_LANES = {"train": 1, "finetune": 1}


class JobConflictError(FerError, ValueError):
    """A model that a waiting or running job saves or reads, and so cannot be saved over or deleted now."""


class JobWork(Protocol):
    """What a job runs: it reports through ``job`` (:meth:`Job.listen`, :meth:`Job.enter`),
    stops when ``job.cancel_event`` (save nothing) or ``job.finish_event`` (save what it has) is set,
    and returns the stored model's card, or None when cancelled."""

    def __call__(self, job: Job) -> ModelCard | None: ...


@dataclass(frozen=True)
class JobRequest:
    """A job to queue in the lane ``lane`` (a key of :attr:`JobQueue.lanes`)."""

    lane: str
    model_name: str  #: the model the job saves
    description: str  #: what it does, for people: "training of 'happy_v2' (fer_vgg)"
    work: JobWork
    owner: str = "someone"
    uses: frozenset[str] = frozenset()  #: stored models it reads: its starting network, its teachers
    minutes: float | None = None  #: its time budget, which gives the jobs behind it an expected start
    discard: Callable[[], None] | None = None  #: frees what it holds if it never runs (a spooled upload)


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting job stands in its lane."""

    position: int  #: 1 for the next job to start
    jobs_ahead: int  #: running and waiting jobs of the lane that come before it
    expected_start: _dt.datetime | None  #: None while a job ahead has no time budget nor estimate yet

    def describe(self) -> str:
        """Its position and expected start, in words."""
        text = f"number {self.position} in the queue"
        if self.expected_start is None:
            return f"{text}; it starts after {self.jobs_ahead} job(s) ahead of it"
        return f"{text}; expected to start at about {self.expected_start:%H:%M}"


@dataclass(frozen=True)
class Ticket:
    """A waiting or running job as every replica sees it: what its lane's order, its place and the
    models in use need, and what the queue's table shows."""

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
    fraction: float | None = None  #: share of a running training's batches done, once it reports

    @property
    def running(self) -> bool:
        """It holds one of its lane's slots (a ticket is only ever of a job that waits or runs)."""
        return self.started_at is not None

    def models(self) -> set[str]:
        """The models the job saves or reads."""
        return {self.model_name, *self.uses}

    def seconds_left(self) -> float | None:
        """How long the running job should still take; None when unknown (and for a waiting job)."""
        return None if self.ends_at is None else max(0.0, (self.ends_at - local_now()).total_seconds())

    def describe(self) -> str:
        """What the job does, who asked, and since when (how long it should still take, when running)."""
        text = f"{self.description} by {self.owner}"
        if self.started_at is None:
            return f"{text}, submitted at {self.submitted_at:%H:%M} ({self.status})"
        text = f"{text}, started at {self.started_at:%H:%M} ({self.status})"
        left = self.seconds_left()
        return text if left is None else f"{text}; about {whole_minutes(left)} min left"

    def to_record(self) -> dict:
        """The ticket as JSON-ready data for the job board."""
        return {**asdict(self), "uses": sorted(self.uses), "submitted_at": self.submitted_at.isoformat(),
                **{name: None if getattr(self, name) is None else getattr(self, name).isoformat()
                   for name in ("started_at", "ends_at")}}

    @classmethod
    def from_record(cls, record: Mapping) -> Ticket:
        """A ticket read from the job board (:meth:`to_record`'s data); KeyError, TypeError or ValueError
        for data that is not one."""
        started_at, ends_at = (None if record[name] is None else _dt.datetime.fromisoformat(record[name])
                               for name in ("started_at", "ends_at"))
        return cls(job_id=str(record["job_id"]), seq=int(record["seq"]), lane=str(record["lane"]),
                   model_name=str(record["model_name"]), uses=frozenset(record["uses"]),
                   description=str(record["description"]), owner=str(record["owner"]), minutes=record["minutes"],
                   submitted_at=_dt.datetime.fromisoformat(record["submitted_at"]), started_at=started_at,
                   status=str(record["status"]), ends_at=ends_at, fraction=record["fraction"])


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
    """One queued job and everything a page shows about it; its work reports through it."""

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
    error: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finish_event: threading.Event = field(default_factory=threading.Event)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model_name(self) -> str:
        return self.request.model_name

    @property
    def owner(self) -> str:
        return self.request.owner

    @property
    def lane(self) -> str:
        return self.request.lane

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

    @property
    def fraction(self) -> float:
        """Share of the batches of all epochs done (0 before the first batch)."""
        p = self.progress
        if p is None:
            return 0.0
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

    def epochs(self) -> list[dict]:
        """A copy of the per-epoch history: epoch, loss, accuracy, val_loss, val_accuracy."""
        with self._lock:
            return list(self.history)

    def describe(self) -> str:
        """What the job does, who asked, and since when (how long it should still take, when running)."""
        return self.ticket().describe()

    def ticket(self) -> Ticket:
        """The job as every replica sees it, now."""
        left = self.seconds_left()
        return Ticket(job_id=self.job_id, seq=self.seq, lane=self.lane, model_name=self.model_name,
                      uses=self.request.uses, description=self.request.description, owner=self.owner,
                      minutes=self.request.minutes, submitted_at=self.submitted_at, started_at=self.started_at,
                      status=self.status, ends_at=None if left is None else local_now() + _dt.timedelta(seconds=left),
                      fraction=None if self.progress is None else self.fraction)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (or ``timeout`` passed); True if it has ended."""
        return self._ended.wait(timeout)

    def listen(self, progress: TrainProgress) -> None:
        """The work's progress listener: keep the latest report and the epoch history."""
        self.progress = progress
        if progress.epoch_end:
            with self._lock:
                self.history.append({"epoch": progress.epoch, "loss": progress.loss,
                                     "accuracy": progress.accuracy, "val_loss": progress.val_loss,
                                     "val_accuracy": progress.val_accuracy})

    def enter(self, stage: str, train_rows: int, validation_rows: int) -> None:
        """The work's stage listener (a training's ``training``, then ``saving``): the job's status follows it."""
        self.train_rows, self.validation_rows, self.status = train_rows, validation_rows, stage


