"""Background jobs for the web app: trainings and fine-tunes wait their turn in first-in-first-out
lanes, and any page follows, stops or cancels them.

Training takes the CPU for minutes to hours, so a server runs few jobs at once, in *lanes*: ``train``
for FER2013-size trainings and ``finetune`` for short fine-tunes, each running one job at a time by
default (:data:`DEFAULT_LANES`, changed with ``$FER_LAB_LANES``, e.g. ``train=1,finetune=2``). The
lanes run side by side, so a short fine-tune never waits behind a long training. A job submitted to
a full lane waits in order; its :class:`QueuePlace` gives its position and when it should start: the
time the running jobs have left, plus the time budgets of the jobs ahead of it (unknown when one of
them has none: then only how many jobs come first is known). A waiting job that is cancelled leaves
the queue, and the jobs behind it move up; when a job ends, the next one of its lane starts.

Replicas of the app that share a store folder share one queue through its job board
(:mod:`fer_core.service.board`, given to :class:`TrainingJobs` as ``board``): each job publishes a
:class:`Ticket`, the order, places and expected starts count every replica's jobs, and no two
replicas together run more jobs in a lane than it has slots (every replica must be given the same
``$FER_LAB_LANES``). A job runs in the replica that accepted it; its session, held there by the load
balancer, follows it.

A job is a :class:`JobRequest`: what to run (a :class:`JobWork`, given the job to report progress
through and to watch its stop events, returning the stored model's card), who asked, which model it
saves and which stored models it reads. While a job waits or runs, those models cannot be deleted
(:meth:`TrainingJobs.delete_model`) nor saved over by another job. :meth:`TrainingJobs.submit_training`
queues the training service (``train.run_training``); a data file it was given to delete (an upload
spooled to disk) is deleted once read, or when the job is refused or cancelled before it starts.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import heapq
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fer_core.service.board import BOARD_FOLDER, JobBoard
from fer_core.registry.cards import ModelCard
from fer_core.base.errors import FerError, SettingError
from fer_core.training.recipe import TrainConfig
from fer_core.registry.store import ModelStore, models_dir

if TYPE_CHECKING:
    from fer_core.training.callbacks import TrainProgress
    from fer_core.training.train import TrainingData

logger = logging.getLogger(__name__)

WAITING = "waiting"
#: The stages of a training job: it starts loading, and its work moves it on (:meth:`TrainingJob.enter`).
ACTIVE_STATES = ("loading", "training", "saving")
FINAL_STATES = ("done", "failed", "cancelled")
#: How many jobs each lane runs at once: one FER2013-size training beside one short fine-tune.
DEFAULT_LANES = {"train": 1, "finetune": 1}
#: Jobs that ended and are still shown to their pages; older ones are forgotten.
KEEP_ENDED = 50
#: How often (seconds) a replica with jobs on a shared board refreshes their tickets and looks for its turn.
POLL_SECONDS = 1.0


class JobConflictError(FerError, ValueError):
    """A model that a waiting or running job saves or reads, and so cannot be saved over or deleted now."""


class JobWork(Protocol):
    """What a job runs: it reports through ``job`` (:meth:`TrainingJob.listen`, :meth:`TrainingJob.enter`),
    stops when ``job.cancel_event`` (save nothing) or ``job.finish_event`` (save what it has) is set,
    and returns the stored model's card, or None when cancelled."""

    def __call__(self, job: TrainingJob) -> ModelCard | None: ...


@dataclass(frozen=True)
class JobRequest:
    """A job to queue in the lane ``lane`` (a key of :attr:`TrainingJobs.lanes`)."""

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
        return None if self.ends_at is None else max(0.0, (self.ends_at - _now()).total_seconds())

    def describe(self) -> str:
        """What the job does, who asked, and since when (how long it should still take, when running)."""
        text = f"{self.description} by {self.owner}"
        if self.started_at is None:
            return f"{text}, submitted at {self.submitted_at:%H:%M} ({self.status})"
        text = f"{text}, started at {self.started_at:%H:%M} ({self.status})"
        left = self.seconds_left()
        return text if left is None else f"{text}; about {_minutes(left)} min left"

    def to_record(self) -> dict:
        """The ticket as JSON-ready data for the job board."""
        return {**asdict(self), "uses": sorted(self.uses), "submitted_at": self.submitted_at.isoformat(),
                **{name: None if getattr(self, name) is None else getattr(self, name).isoformat()
                   for name in ("started_at", "ends_at")}}

    @classmethod
    def from_record(cls, record: Mapping) -> Ticket:
        """A ticket read from the job board (:meth:`to_record`'s data); KeyError, TypeError or ValueError
        for data that is not one."""
        times = {name: None if record[name] is None else _dt.datetime.fromisoformat(record[name])
                 for name in ("submitted_at", "started_at", "ends_at")}
        return cls(job_id=str(record["job_id"]), seq=int(record["seq"]), lane=str(record["lane"]),
                   model_name=str(record["model_name"]), uses=frozenset(record["uses"]),
                   description=str(record["description"]), owner=str(record["owner"]), minutes=record["minutes"],
                   status=str(record["status"]), fraction=record["fraction"], **times)


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


def _now() -> _dt.datetime:
    return _dt.datetime.now().astimezone()


def _minutes(seconds: float) -> int:
    """Seconds as whole minutes, at least 1: what a person is told is left."""
    return max(1, round(seconds / 60))


@dataclass(eq=False)
class TrainingJob:
    """One queued job and everything a page shows about it; its work reports through it."""

    request: JobRequest
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seq: int = 0  #: its place in the order of submission (set when it is queued)
    submitted_at: _dt.datetime = field(default_factory=_now)
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
        return max(0.0, self.request.minutes * 60 - (_now() - self.started_at).total_seconds())

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
                      status=self.status, ends_at=None if left is None else _now() + _dt.timedelta(seconds=left),
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


class TrainingJobs:
    """The job lanes of this server process: their running and waiting jobs, and the jobs that ended lately;
    with a job board, in one queue with the jobs of the other replicas on that board."""

    def __init__(self, lanes: Mapping[str, int] = DEFAULT_LANES, board: JobBoard | None = None,
                 poll_seconds: float = POLL_SECONDS) -> None:
        """``lanes``: each lane's name and how many of its jobs run at once (1 or more), across the
        replicas of ``board`` when one is given; ``poll_seconds``: how often this process then looks
        for its waiting jobs' turn."""
        if not lanes or min(lanes.values()) < 1:
            raise SettingError(f"every job lane needs 1 or more slots, not {dict(lanes)}")
        self.lanes = dict(lanes)
        self.board = board
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._jobs: dict[str, TrainingJob] = {}  # this process's jobs, in the order they were submitted
        self._watcher: threading.Thread | None = None

    def submit(self, request: JobRequest) -> TrainingJob:
        """Queue ``request``: it starts now when its lane has a free slot, else after the jobs before it.

        Raises :class:`SettingError` for an unknown lane and :class:`JobConflictError` when it would
        save over a model that a waiting or running job saves or reads, or read one that such a job
        saves; a refused request's ``discard`` runs.
        """
        try:
            if request.lane not in self.lanes:
                raise SettingError(f"unknown job lane {request.lane!r} (choose from {', '.join(self.lanes)})")
            job = TrainingJob(replace(request, owner=request.owner.strip() or "someone"))
            with self._changing():
                tickets = self._tickets()
                self._check_models(request, tickets)
                job.seq = 1 + max((ticket.seq for ticket in tickets), default=0)
                self._publish(job)
                self._jobs[job.job_id] = job
                self._forget_ended()
                self._start_next(request.lane)
                self._watch_board()
        except Exception:
            if request.discard is not None:
                request.discard()
            raise
        return job

    def submit_training(self, data_path: str | Path, config: TrainConfig, model_name: str, *,
                        owner: str = "someone", data_description: str | None = None, delete_data: bool = False,
                        store: ModelStore | None = None) -> TrainingJob:
        """Queue training ``config`` on the data at ``data_path`` in the ``train`` lane (see :meth:`submit`).

        ``data_description`` is the data's name in the card and its reproduce command (by default
        the file name). Raises ``SettingError`` for a recipe or model name that ``TrainConfig.validate``
        refuses; with ``delete_data`` the data file is deleted even then.
        """
        from fer_core.training.train import TrainingData

        discard = (lambda: Path(data_path).unlink(missing_ok=True)) if delete_data else None
        try:
            config.validate(model_name)
        except Exception:
            if discard is not None:
                discard()
            raise
        data = TrainingData(Path(data_path), data_description or Path(data_path).name,
                            delete_after_loading=delete_data)
        uses = frozenset([*config.teacher, *([config.init_from] if config.init_from else [])])
        work = _TrainingWork(config, data, store or ModelStore())
        return self.submit(JobRequest(lane="train", model_name=model_name, work=work, owner=owner, uses=uses,
                                      description=f"training of '{model_name}' ({config.arch})",
                                      minutes=config.minutes, discard=discard))

    def get(self, job_id: str | None) -> TrainingJob | None:
        """This process's job ``job_id``, while it waits or runs and for a while after it ended; else None."""
        return self._jobs.get(job_id) if job_id is not None else None

    def queue(self, lane: str) -> list[Ticket]:
        """The jobs of ``lane`` that run (first started first), then those that wait, in order (every replica's)."""
        running, waiting = _lane(self.tickets(), lane)
        return running + waiting

    def tickets(self) -> list[Ticket]:
        """Every waiting and running job, of this process and of the other replicas on its board."""
        with self._lock:
            return self._tickets()

    def place(self, job_id: str) -> QueuePlace | None:
        """Where the waiting job ``job_id`` stands in its lane; None when it does not wait."""
        return self._place(job_id, self.tickets())

    def _place(self, job_id: str, tickets: list[Ticket]) -> QueuePlace | None:
        """:meth:`place` among ``tickets``."""
        ticket = next((ticket for ticket in tickets if ticket.job_id == job_id), None)
        if ticket is None or ticket.running or ticket.lane not in self.lanes:
            return None
        running, waiting = _lane(tickets, ticket.lane)
        ahead = waiting[:[other.job_id for other in waiting].index(job_id)]
        # Each job ahead takes the slot that frees first, for its time budget.
        free_at = [other.seconds_left() for other in running] + [0.0] * (self.lanes[ticket.lane] - len(running))
        durations = [None if other.minutes is None else other.minutes * 60 for other in ahead]
        expected = None
        if None not in free_at and None not in durations:
            heapq.heapify(free_at)
            for seconds in durations:
                heapq.heappush(free_at, heapq.heappop(free_at) + seconds)
            expected = _now() + _dt.timedelta(seconds=free_at[0])
        return QueuePlace(len(ahead) + 1, len(running) + len(ahead), expected)

    def overview(self) -> list[dict[str, str]]:
        """A table row for each running and waiting job of every lane (of every replica), in queue order:
        lane, place, what, who, since when, and when it should end (running) or start (waiting)."""
        rows, tickets = [], self.tickets()
        for lane in self.lanes:
            running, waiting = _lane(tickets, lane)
            for ticket in running + waiting:
                place = self._place(ticket.job_id, tickets)
                if place is None:  # running
                    left = ticket.seconds_left()
                    where = f"running ({ticket.status}{'' if ticket.fraction is None else f', {ticket.fraction:.0%}'})"
                    expected = "end unknown" if left is None else f"ends in about {_minutes(left)} min"
                else:
                    where = str(place.position)
                    expected = (f"starts after {place.jobs_ahead} job(s)" if place.expected_start is None
                                else f"starts at about {place.expected_start:%H:%M}")
                rows.append({"lane": lane, "place": where, "job": ticket.description, "by": ticket.owner,
                             "since": f"{ticket.started_at or ticket.submitted_at:%H:%M}", "expected": expected})
        return rows

    def cancel(self, job_id: str) -> bool:
        """Take the waiting job ``job_id`` out of its queue, or ask the running one to stop after its
        current batch and save nothing; False if it has ended (or is unknown)."""
        with self._changing():
            job = self._jobs.get(job_id)
            if job is None or not job.active:
                return False
            job.cancel_event.set()
            if job.status != WAITING:
                return True
            self._end(job, "cancelled")
        if job.request.discard is not None:
            job.request.discard()
        return True

    def finish(self, job_id: str) -> bool:
        """Ask the running job ``job_id`` to stop after its current batch and save its best weights so far
        (as when its time budget runs out); False if it is not running."""
        job = self.get(job_id)
        if job is None or not job.running:
            return False
        job.finish_event.set()
        return True

    def models_in_use(self) -> set[str]:
        """The models that waiting and running jobs (of every replica) save or read."""
        return {name for ticket in self.tickets() for name in ticket.models()}

    def delete_model(self, name: str, store: ModelStore | None = None) -> None:
        """Delete the stored model ``name`` (see ``ModelStore.delete``, which refuses shipped models);
        :class:`JobConflictError` while a waiting or running job (of any replica) saves or reads it."""
        with self._changing():
            user = next((ticket for ticket in self._tickets() if name.casefold() in _folded(ticket.models())), None)
            if user is not None:
                raise JobConflictError(f"'{name}' is used by the {user.describe()}: delete it once that job has ended")
            (store or ModelStore()).delete(name)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold this process's lock and, with a board, the board's: the queue does not change meanwhile."""
        with self._lock, (self.board.locked() if self.board is not None else contextlib.nullcontext()):
            yield

    def _tickets(self) -> list[Ticket]:
        """This process's active jobs and the board's other tickets, in the order they were submitted
        (under the lock)."""
        tickets = [job.ticket() for job in self._jobs.values() if job.active]
        for record in self.board.others() if self.board is not None else []:
            try:
                tickets.append(Ticket.from_record(record))
            except (KeyError, TypeError, ValueError):
                logger.warning("job board %s: a ticket that cannot be read is left out: %r", self.board.folder, record)
        return sorted(tickets, key=lambda ticket: ticket.seq)

    def _check_models(self, request: JobRequest, tickets: list[Ticket]) -> None:
        """Refuse a request that shares a model with an active job: one saves what the other saves or reads."""
        for ticket in tickets:
            clash = next((saved for saved, other in ((request.model_name, ticket.models()),
                                                     (ticket.model_name, request.uses))
                          if saved.casefold() in _folded(other)), None)
            if clash is not None:
                raise JobConflictError(f"'{clash}' is used by the {ticket.describe()}: choose another model, or "
                                       "wait until that job has ended")

    def _start_next(self, lane: str) -> None:
        """Start this process's waiting jobs of ``lane`` whose turn has come: those among the first
        waiting jobs (of every replica) that the lane's free slots can take (under the lock). Another
        replica's job among them is started by that replica."""
        running, waiting = _lane(self._tickets(), lane)
        for ticket in waiting[:max(0, self.lanes[lane] - len(running))]:
            job = self._jobs.get(ticket.job_id)
            if job is None:
                continue
            job.status, job.started_at = ACTIVE_STATES[0], _now()
            self._publish(job)
            threading.Thread(target=self._run, args=(job,), name=f"fer-lab-{lane}-{job.job_id}", daemon=True).start()

    def _run(self, job: TrainingJob) -> None:
        status = "failed"
        try:
            job.card = job.request.work(job)
            status = "cancelled" if job.card is None else "done"
        except FerError as error:
            job.error = str(error)
        except Exception as error:  # a crash must end the job, not hold its lane
            logger.exception("job %s failed", job.job_id)
            job.error = f"the {job.request.description} failed: {type(error).__name__}: {error}"
        finally:
            with self._changing():
                self._end(job, status)
                self._start_next(job.lane)

    def _end(self, job: TrainingJob, status: str) -> None:
        job.status = status
        job._ended.set()
        if self.board is not None:
            self.board.withdraw(job.job_id)

    def _publish(self, job: TrainingJob) -> None:
        """Write the job's ticket on the board, if there is one (under the lock)."""
        if self.board is not None:
            self.board.publish(job.job_id, job.ticket().to_record())

    def _watch_board(self) -> None:
        """With a board, start the thread that follows it while this process has jobs (under the lock)."""
        if self.board is not None and self._watcher is None:
            self._watcher = threading.Thread(target=self._follow_board, name="fer-lab-job-board", daemon=True)
            self._watcher.start()

    def _follow_board(self) -> None:
        """Every ``poll_seconds``: refresh the tickets of this process's running jobs (their progress, for
        the other replicas' tables) and start its waiting jobs whose turn has come because another
        replica's job ended or left; ends once this process has no job waiting or running."""
        while True:
            time.sleep(self._poll_seconds)
            try:
                with self._changing():
                    active = [job for job in self._jobs.values() if job.active]
                    if not active:
                        self._watcher = None
                        return
                    for job in active:
                        if job.running:
                            self._publish(job)
                    for lane in {job.lane for job in active if job.status == WAITING}:
                        self._start_next(lane)
            except OSError:  # the folder went away or is full: say so, and try again
                logger.exception("job board %s", self.board.folder)

    def _forget_ended(self) -> None:
        """Keep only the last :data:`KEEP_ENDED` jobs that ended (under the lock)."""
        ended = [job_id for job_id, job in self._jobs.items() if not job.active]
        for job_id in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self._jobs[job_id]


def _lane(tickets: list[Ticket], lane: str) -> tuple[list[Ticket], list[Ticket]]:
    """The running tickets of ``lane`` (first started first) and its waiting ones (in order)."""
    running = sorted((ticket for ticket in tickets if ticket.lane == lane and ticket.running),
                     key=lambda ticket: ticket.started_at)
    return running, [ticket for ticket in tickets if ticket.lane == lane and not ticket.running]


def _folded(names: set[str] | frozenset[str]) -> set[str]:
    """Model names as the store's file system may compare them: without case."""
    return {name.casefold() for name in names}


@dataclass(frozen=True)
class _TrainingWork:
    """The work of :meth:`TrainingJobs.submit_training`: the training service, reporting through the job."""

    config: TrainConfig
    data: TrainingData
    store: ModelStore

    def __call__(self, job: TrainingJob) -> ModelCard | None:
        from fer_core.training.train import run_training

        return run_training(self.config, self.data, job.model_name, store=self.store, listener=job.listen,
                            on_stage=job.enter, cancel=job.cancel_event, finish=job.finish_event).card


_JOBS: TrainingJobs | None = None
_JOBS_LOCK = threading.Lock()


def training_jobs() -> TrainingJobs:
    """The job lanes shared by every session of this server process (their slots from ``$FER_LAB_LANES``),
    in one queue with every replica that shares its model store folder: the job board in the folder's
    ``.queue/``. A store folder that cannot be written keeps the queue to this process."""
    global _JOBS
    with _JOBS_LOCK:
        if _JOBS is None:
            lanes = lane_slots(os.environ.get("FER_LAB_LANES"))
            try:
                board = JobBoard(models_dir() / BOARD_FOLDER)
            except SettingError as error:
                logger.warning("%s: training jobs queue in this process only", error)
                board = None
            _JOBS = TrainingJobs(lanes, board)
        return _JOBS
