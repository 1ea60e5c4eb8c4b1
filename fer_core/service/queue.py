"""The job queue: trainings and fine-tunes wait their turn in first-in-first-out lanes, and any
page follows, stops or cancels them.

Training takes the CPU for minutes to hours, so a server runs few jobs at once, in *lanes*: ``train``
for FER2013-size trainings and ``finetune`` for short fine-tunes, each running one job at a time by
default. The lanes run side by side, so a short fine-tune never waits behind a long training. A job
submitted to a full lane waits in order; its :class:`~fer_core.service.jobs.QueuePlace` gives its
position and when it should start: the time the running jobs have left, plus the time budgets of the
jobs ahead of it (unknown when one of them has none: then only how many jobs come first is known).
A waiting job that is cancelled leaves the queue, and the jobs behind it move up; when a job ends,
the next one of its lane starts. While a job waits or runs, the models it saves and reads cannot be
deleted (:meth:`JobQueue.delete_model`) nor saved over by another job.

:class:`JobQueue` is the interface the pages use; it has two backends, chosen by
:func:`fer_core.service.queues.job_queue`:

- :class:`EmbeddedJobQueue`, the default: the lanes live in the app's process and jobs run as its
  threads (slots from ``$FER_LAB_LANES``, e.g. ``train=1,finetune=2``); nothing to install;
- :class:`fer_core.service.redis_queue.RedisJobQueue`, with ``$FER_LAB_REDIS_URL``: the lanes are RQ
  queues on Redis, replicas only enqueue and show jobs, and workers (``python -m fer_core worker``)
  run them on any machine; a lane's slots are the workers that take its jobs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import heapq
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from fer_core.base.errors import FerError, SettingError
from fer_core.registry.store import ModelStore
from fer_core.service.jobs import (
    ACTIVE_STATES,
    DEFAULT_LANES,
    WAITING,
    Job,
    JobConflictError,
    JobRequest,
    JobState,
    QueuePlace,
    local_now,
    whole_minutes,
)

logger = logging.getLogger(__name__)

#: Jobs that ended and are still shown to their pages; older ones are forgotten.
KEEP_ENDED = 50
#: How often (seconds) :meth:`JobQueue.wait` looks again at a job that runs elsewhere.
WAIT_POLL_SECONDS = 0.2


class JobQueue(ABC):
    """The job lanes every page uses: submit, follow, stop and cancel jobs, see every lane's queue."""

    #: The lanes, in the order the queue's table shows them.
    lanes: tuple[str, ...] = tuple(DEFAULT_LANES)
    #: Where files handed over to a job wait until it loads them (None: this machine's temporary folder).
    inbox: Path | None = None
    #: Whether a job whose worker stopped runs again, from its checkpoint: its inputs then stay until it ends.
    resumes: bool = False

    @abstractmethod
    def submit(self, request: JobRequest) -> JobState:
        """Queue ``request``: it starts when its lane has a free slot, after the jobs before it.

        Raises :class:`SettingError` for an unknown lane and :class:`JobConflictError` when it would
        save over a model that a waiting or running job saves or reads, or read one that such a job
        saves; a refused request's inputs are deleted.
        """

    @abstractmethod
    def get(self, job_id: str | None) -> JobState | None:
        """The job ``job_id`` now, while it waits or runs and for a while after it ended; else None."""

    @abstractmethod
    def states(self) -> list[JobState]:
        """Every waiting and running job, in the order they were submitted."""

    @abstractmethod
    def slots(self, lane: str) -> int:
        """How many jobs of ``lane`` may run at once now."""

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Take the waiting job ``job_id`` out of its queue, or ask the running one to stop after its
        current batch and save nothing; False if it has ended (or is unknown)."""

    @abstractmethod
    def finish(self, job_id: str) -> bool:
        """Ask the running job ``job_id`` to stop after its current batch and save its best weights so far
        (as when its time budget runs out); False if it is not running."""

    def delete_model(self, name: str, store: ModelStore | None = None) -> None:
        """Delete the stored model ``name`` (see ``ModelStore.delete``, which refuses shipped models);
        :class:`JobConflictError` while a waiting or running job saves or reads it."""
        with self._locked():
            refuse_deleting_in_use(name, self._states())
            (store or ModelStore()).delete(name)

    @abstractmethod
    def _locked(self) -> contextlib.AbstractContextManager:
        """The queue's lock: no job is queued nor a model deleted meanwhile."""

    @abstractmethod
    def _states(self) -> list[JobState]:
        """:meth:`states`, under :meth:`_locked`."""

    def wait(self, job_id: str, timeout: float | None = None) -> JobState | None:
        """The job once it has ended, or as it is when ``timeout`` seconds have passed; None if unknown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.get(job_id)
            if state is None or not state.active or (deadline is not None and time.monotonic() >= deadline):
                return state
            time.sleep(WAIT_POLL_SECONDS)

    def queue(self, lane: str) -> list[JobState]:
        """The jobs of ``lane`` that run (first started first), then those that wait, in order."""
        running, waiting = _lane(self.states(), lane)
        return running + waiting

    def models_in_use(self) -> set[str]:
        """The models that waiting and running jobs save or read."""
        return {name for state in self.states() for name in state.models()}

    def place(self, job_id: str) -> QueuePlace | None:
        """Where the waiting job ``job_id`` stands in its lane; None when it does not wait."""
        states = self.states()
        state = next((state for state in states if state.job_id == job_id), None)
        return None if state is None else self._place(state, states, self.slots(state.lane))

    @staticmethod
    def _place(state: JobState, states: list[JobState], slots: int) -> QueuePlace | None:
        """Where the waiting ``state`` stands among ``states`` in a lane of ``slots`` slots (None: it runs)."""
        if state.running:
            return None
        running, waiting = _lane(states, state.lane)
        ahead = waiting[:[other.job_id for other in waiting].index(state.job_id)]
        if slots < 1:
            return QueuePlace(len(ahead) + 1, len(running) + len(ahead), None, no_worker=True)
        # Each job ahead takes the slot that frees first, for its time budget.
        free_at = _all_known([other.seconds_left() for other in running] + [0.0] * max(0, slots - len(running)))
        durations = _all_known([None if other.minutes is None else other.minutes * 60 for other in ahead])
        expected = None
        if free_at and durations is not None:
            heapq.heapify(free_at)
            for seconds in durations:
                heapq.heappush(free_at, heapq.heappop(free_at) + seconds)
            expected = local_now() + _dt.timedelta(seconds=free_at[0])
        return QueuePlace(len(ahead) + 1, len(running) + len(ahead), expected)

    def overview(self) -> list[dict[str, str]]:
        """A table row for each running and waiting job of every lane, in queue order: lane, place,
        what, who, since when, and when it should end (running) or start (waiting)."""
        rows, states = [], self.states()
        for lane in self.lanes:
            running, waiting = _lane(states, lane)
            slots = self.slots(lane) if waiting else 0
            for state in running + waiting:
                place = self._place(state, states, slots)
                if place is None:  # running
                    left = state.seconds_left()
                    where = f"running ({state.status}{'' if state.fraction is None else f', {state.fraction:.0%}'})"
                    expected = "end unknown" if left is None else f"ends in about {whole_minutes(left)} min"
                else:
                    where = str(place.position)
                    expected = ("waits for a worker" if place.no_worker
                                else f"starts after {place.jobs_ahead} job(s)" if place.expected_start is None
                                else f"starts at about {place.expected_start:%H:%M}")
                rows.append({"lane": lane, "place": where, "job": state.description, "by": state.owner,
                             "since": f"{state.started_at or state.submitted_at:%H:%M}", "expected": expected})
        return rows

    def _check_lane(self, request: JobRequest) -> None:
        """Refuse a request for a lane this queue does not have."""
        if request.lane not in self.lanes:
            raise SettingError(f"unknown job lane {request.lane!r} (choose from {', '.join(self.lanes)})")


class EmbeddedJobQueue(JobQueue):
    """The job lanes of this server process: jobs run as its threads, one lane's jobs at most ``slots`` at once."""

    def __init__(self, lanes: Mapping[str, int] = DEFAULT_LANES) -> None:
        """``lanes``: each lane's name and how many of its jobs run at once (1 or more)."""
        if not lanes or min(lanes.values()) < 1:
            raise SettingError(f"every job lane needs 1 or more slots, not {dict(lanes)}")
        self.lanes = tuple(lanes)
        self._slots = dict(lanes)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}  # the jobs, in the order they were submitted

    def submit(self, request: JobRequest) -> JobState:
        try:
            self._check_lane(request)
            job = Job(replace(request, owner=request.owner.strip() or "someone"))
            with self._lock:
                states = self._states()
                check_models(request, states)
                job.seq = 1 + max((state.seq for state in states), default=0)
                self._jobs[job.job_id] = job
                self._forget_ended()
                self._start_next(request.lane)
                return job.state()
        except Exception:
            delete_inputs(request.inputs)
            raise

    def get(self, job_id: str | None) -> JobState | None:
        job = self.job(job_id)
        return None if job is None else job.state()

    def job(self, job_id: str | None) -> Job | None:
        """The live job ``job_id`` (its events, its work), while this queue remembers it; else None."""
        return self._jobs.get(job_id) if job_id is not None else None

    def states(self) -> list[JobState]:
        with self._lock:
            return self._states()

    def slots(self, lane: str) -> int:
        return self._slots[lane]

    def wait(self, job_id: str, timeout: float | None = None) -> JobState | None:
        job = self.job(job_id)
        if job is not None:
            job.wait(timeout)
        return self.get(job_id)

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.active:
                return False
            job.cancel_event.set()
            if job.status != WAITING:
                return True
            job.end("cancelled")
        delete_inputs(job.request.inputs)
        return True

    def finish(self, job_id: str) -> bool:
        job = self.job(job_id)
        if job is None or not job.running:
            return False
        job.finish_event.set()
        return True

    def _locked(self) -> contextlib.AbstractContextManager:
        return self._lock

    def _states(self) -> list[JobState]:
        """The active jobs' states, in the order they were submitted (under the lock)."""
        return [job.state() for job in self._jobs.values() if job.active]

    def _start_next(self, lane: str) -> None:
        """Start the waiting jobs of ``lane`` that its free slots can take (under the lock)."""
        jobs = [job for job in self._jobs.values() if job.lane == lane and job.active]
        free = self._slots[lane] - sum(job.running for job in jobs)
        for job in [job for job in jobs if not job.running][:max(0, free)]:
            job.started_at = local_now()  # first: a page reading meanwhile sees it waiting, not neither
            job.status = ACTIVE_STATES[0]
            threading.Thread(target=self._run, args=(job,), name=f"fer-lab-{lane}-{job.job_id}", daemon=True).start()

    def _run(self, job: Job) -> None:
        status = run_work(job)
        delete_inputs(job.request.inputs)
        with self._lock:
            job.end(status)
            self._start_next(job.lane)

    def _forget_ended(self) -> None:
        """Keep only the last :data:`KEEP_ENDED` jobs that ended (under the lock)."""
        ended = [job_id for job_id, job in self._jobs.items() if not job.active]
        for job_id in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self._jobs[job_id]


def run_work(job: Job) -> str:
    """Run the job's work, keeping its card or its error; the status it ended with (done, cancelled, failed)."""
    try:
        job.card = job.request.work(job)
        return "cancelled" if job.card is None else "done"
    except FerError as error:
        job.error = str(error)
    except Exception as error:  # a crash must end the job, not hold its lane
        logger.exception("job %s failed", job.job_id)
        job.error = f"the {job.request.description} failed: {type(error).__name__}: {error}"
    return "failed"


def check_models(request: JobRequest, states: Iterable[JobState]) -> None:
    """Refuse a request that shares a model with an active job: one saves what the other saves or reads."""
    for state in states:
        clash = next((saved for saved, other in ((request.model_name, state.models()),
                                                 (state.model_name, request.uses))
                      if saved.casefold() in _folded(other)), None)
        if clash is not None:
            raise JobConflictError(f"'{clash}' is used by the {state.describe()}: choose another model, or "
                                   "wait until that job has ended")


def refuse_deleting_in_use(name: str, states: Iterable[JobState]) -> None:
    """:class:`JobConflictError` when a waiting or running job saves or reads the model ``name``."""
    user = next((state for state in states if name.casefold() in _folded(state.models())), None)
    if user is not None:
        raise JobConflictError(f"'{name}' is used by the {user.describe()}: delete it once that job has ended")


def delete_inputs(paths: Iterable[Path]) -> None:
    """Delete files handed over to a job (a spooled upload), once it has ended or was refused."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _lane(states: list[JobState], lane: str) -> tuple[list[JobState], list[JobState]]:
    """The running jobs of ``lane`` (first started first) and its waiting ones (in order)."""
    running = sorted((state for state in states if state.lane == lane and state.running), key=_started_at)
    return running, sorted((state for state in states if state.lane == lane and not state.running),
                           key=lambda state: state.seq)


def _started_at(state: JobState) -> _dt.datetime:
    """When a running job started."""
    assert state.started_at is not None  # what running means
    return state.started_at


def _all_known(values: list[float | None]) -> list[float] | None:
    """``values``, or None when one of them is None (unknown)."""
    known = [value for value in values if value is not None]
    return known if len(known) == len(values) else None


def _folded(names: set[str] | frozenset[str]) -> set[str]:
    """Model names as the store's file system may compare them: without case."""
    return {name.casefold() for name in names}
