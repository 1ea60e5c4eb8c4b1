"""The job queue: trainings and fine-tunes wait their turn in first-in-first-out lanes, and any
page follows, stops or cancels them.

Training takes the CPU for minutes to hours, so a server runs few jobs at once, in *lanes*: ``train``
for FER2013-size trainings and ``finetune`` for short fine-tunes, each running one job at a time by
default (:data:`~fer_core.service.jobs.DEFAULT_LANES`, changed with ``$FER_LAB_LANES``, e.g.
``train=1,finetune=2``). The lanes run side by side, so a short fine-tune never waits behind a long
training. A job submitted to a full lane waits in order; its :class:`~fer_core.service.jobs.QueuePlace`
gives its position and when it should start: the time the running jobs have left, plus the time
budgets of the jobs ahead of it (unknown when one of them has none: then only how many jobs come
first is known). A waiting job that is cancelled leaves the queue, and the jobs behind it move up;
when a job ends, the next one of its lane starts.

Replicas of the app that share a store folder share one queue through its job board
(:mod:`fer_core.service.board`, given to :class:`JobQueue` as ``board``): each job publishes a
:class:`~fer_core.service.jobs.Ticket`, the order, places and expected starts count every replica's
jobs, and no two replicas together run more jobs in a lane than it has slots (every replica must be
given the same ``$FER_LAB_LANES``). A job runs in the replica that accepted it; its session, held
there by the load balancer, follows it. While a job waits or runs, the models it saves and reads
cannot be deleted (:meth:`JobQueue.delete_model`) nor saved over by another job.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import heapq
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace

from fer_core.base.errors import FerError, SettingError
from fer_core.registry.store import ModelStore, models_dir
from fer_core.service.board import BOARD_FOLDER, JobBoard
from fer_core.service.jobs import (
    ACTIVE_STATES,
    DEFAULT_LANES,
    WAITING,
    Job,
    JobConflictError,
    JobRequest,
    QueuePlace,
    Ticket,
    lane_slots,
    local_now,
    whole_minutes,
)

logger = logging.getLogger(__name__)

#: Jobs that ended and are still shown to their pages; older ones are forgotten.
KEEP_ENDED = 50
#: How often (seconds) a replica with jobs on a shared board refreshes their tickets and looks for its turn.
POLL_SECONDS = 1.0


class JobQueue:
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
        self._jobs: dict[str, Job] = {}  # this process's jobs, in the order they were submitted
        self._watcher: threading.Thread | None = None

    def submit(self, request: JobRequest) -> Job:
        """Queue ``request``: it starts now when its lane has a free slot, else after the jobs before it.

        Raises :class:`SettingError` for an unknown lane and :class:`JobConflictError` when it would
        save over a model that a waiting or running job saves or reads, or read one that such a job
        saves; a refused request's ``discard`` runs.
        """
        try:
            if request.lane not in self.lanes:
                raise SettingError(f"unknown job lane {request.lane!r} (choose from {', '.join(self.lanes)})")
            job = Job(replace(request, owner=request.owner.strip() or "someone"))
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

    def get(self, job_id: str | None) -> Job | None:
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
        free_at = _all_known([other.seconds_left() for other in running]
                             + [0.0] * (self.lanes[ticket.lane] - len(running)))
        durations = _all_known([None if other.minutes is None else other.minutes * 60 for other in ahead])
        expected = None
        if free_at is not None and durations is not None:
            heapq.heapify(free_at)
            for seconds in durations:
                heapq.heappush(free_at, heapq.heappop(free_at) + seconds)
            expected = local_now() + _dt.timedelta(seconds=free_at[0])
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
                    expected = "end unknown" if left is None else f"ends in about {whole_minutes(left)} min"
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
        if self.board is not None:
            for record in self.board.others():
                try:
                    tickets.append(Ticket.from_record(record))
                except (KeyError, TypeError, ValueError):
                    logger.warning("job board %s: a ticket that cannot be read is left out: %r", self.board.folder,
                                   record)
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
            job.status, job.started_at = ACTIVE_STATES[0], local_now()
            self._publish(job)
            threading.Thread(target=self._run, args=(job,), name=f"fer-lab-{lane}-{job.job_id}", daemon=True).start()

    def _run(self, job: Job) -> None:
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

    def _end(self, job: Job, status: str) -> None:
        job.status = status
        job._ended.set()
        if self.board is not None:
            self.board.withdraw(job.job_id)

    def _publish(self, job: Job) -> None:
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
        assert self.board is not None  # _watch_board starts this thread only for a queue with a board
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
    running = sorted((ticket for ticket in tickets if ticket.lane == lane and ticket.running), key=_started_at)
    return running, [ticket for ticket in tickets if ticket.lane == lane and not ticket.running]


def _started_at(ticket: Ticket) -> _dt.datetime:
    """When a running ticket's job started."""
    assert ticket.started_at is not None  # what running means
    return ticket.started_at


def _all_known(values: list[float | None]) -> list[float] | None:
    """``values``, or None when one of them is None (unknown)."""
    known = [value for value in values if value is not None]
    return known if len(known) == len(values) else None


def _folded(names: set[str] | frozenset[str]) -> set[str]:
    """Model names as the store's file system may compare them: without case."""
    return {name.casefold() for name in names}


_JOBS: JobQueue | None = None
_JOBS_LOCK = threading.Lock()


def job_queue() -> JobQueue:
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
            _JOBS = JobQueue(lanes, board)
        return _JOBS
