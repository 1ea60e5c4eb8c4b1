"""The job queue on Redis: every replica enqueues and shows jobs, workers on any machine run them.

Set ``$FER_LAB_REDIS_URL`` (``redis://host:6379/0``, or ``unix:///path/redis.sock``) on every
replica and worker. The engine is `RQ <https://python-rq.org>`_: each lane is an RQ queue of the
lane's name, and its slots are the workers that take its jobs (``python -m fer_core worker --lanes
train,finetune``, or RQ's own ``rq worker train finetune``). What pages show of a job, its
:class:`~fer_core.service.jobs.JobState`, is kept in Redis beside RQ's record:

- ``fer-lab:job:<id>``: the job's state as JSON, written by the replica that queued it, then every
  second by the worker that runs it (progress, epochs, the outcome); kept a day after it ends;
- ``fer-lab:control:<id>``: ``cancel`` or ``finish``, set by any replica, read by the worker;
- ``fer-lab:active``: the waiting and running jobs, scored by their order of submission
  (``fer-lab:seq``), so any replica sees every lane's queue and the models in use;
- ``fer-lab:lock``: held while a job is queued or a model deleted, so no two jobs save one model
  and a model in use is never deleted.

A job's work travels pickled in RQ's record (a fine-tune's class faces with it), which is deleted
when the job ends; the files it reads (an uploaded dataset) wait in the store folder's ``.inbox/``,
which every replica and worker must see at the same path (one shared model store folder,
``$FER_LAB_MODELS``), and are deleted when the job ends. A worker that stops
mid-job (killed, or its machine lost) leaves the job *abandoned*: RQ notices once its heartbeat has
lapsed (about 70 seconds) and queues it once more, and the next worker resumes a training
from its last epoch's checkpoint (``.checkpoints/<id>`` in the store folder); a job abandoned twice
fails with a message saying so. A job that runs past its time budget plus :data:`TIMEOUT_GRACE_MINUTES`
is stopped by RQ.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import redis
import rq
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.worker_registration import clean_worker_registry

from fer_core.base.errors import FerError, SettingError
from fer_core.registry.store import models_dir
from fer_core.service.jobs import (
    ACTIVE_STATES,
    DEFAULT_LANES,
    WAITING,
    Job,
    JobRequest,
    JobState,
    JobWork,
    local_now,
)
from fer_core.service.queue import (
    JobQueue,
    check_models,
    delete_inputs,
    run_work,
)
from fer_core.service.threads import cap_training_threads, training_threads

logger = logging.getLogger(__name__)

_PREFIX = "fer-lab:"
_ACTIVE = f"{_PREFIX}active"
_SEQ = f"{_PREFIX}seq"
_LOCK = f"{_PREFIX}lock"
#: How long (seconds) an ended job's state and RQ record stay, for its page to show the outcome.
KEEP_SECONDS = 24 * 3600
#: How long (seconds) RQ keeps the record of a job that failed in its hands (abandoned twice), work and all;
#: one that ends otherwise is deleted at once (its state says how it ended), so a class's faces leave Redis.
FAILED_RECORD_SECONDS = 600
#: How often (seconds) a worker writes its running job's state and looks for a cancel or finish.
REPORT_SECONDS = 1.0
#: What a job may take beyond its time budget (loading its data, evaluating and saving) before RQ stops it.
TIMEOUT_GRACE_MINUTES = 15
#: How long (seconds) a worker keeps trying to write a job's outcome while Redis is away.
OUTCOME_RETRY_SECONDS = 300
#: How often (seconds) a replica looks for jobs whose worker stopped.
ABANDONED_CHECK_SECONDS = 5.0
#: The store folder's subfolders for the files jobs read and the checkpoints they resume from.
INBOX_FOLDER, CHECKPOINT_FOLDER = ".inbox", ".checkpoints"


class QueueUnavailableError(FerError, ConnectionError):
    """Redis, which holds the job queue, cannot be reached: nothing can be queued or followed now."""


def _state_key(job_id: str) -> str:
    return f"{_PREFIX}job:{job_id}"


def _control_key(job_id: str) -> str:
    return f"{_PREFIX}control:{job_id}"


def connect(url: str) -> redis.Redis:
    """A Redis client for ``url``; a URL that is not one is a :class:`QueueUnavailableError`."""
    try:
        return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15)
    except ValueError as error:
        raise QueueUnavailableError(f"{url!r} is not a Redis URL ({error}); give redis://host:port/db or "
                                    "unix:///path/to/redis.sock") from error


def timeout_seconds(minutes: float | None) -> int:
    """RQ's time limit for a job of this time budget: the budget plus the grace; none (-1) without a budget."""
    return -1 if minutes is None else int((minutes + TIMEOUT_GRACE_MINUTES) * 60)


def read_state(connection: redis.Redis, job_id: str) -> JobState | None:
    """The job's state as Redis holds it; None when there is none (or it cannot be read)."""
    text = connection.get(_state_key(job_id))
    if text is None:
        return None
    try:
        return JobState.from_record(json.loads(text))
    except (KeyError, TypeError, ValueError):
        logger.warning("job %s: a state that cannot be read is left out", job_id)
        return None


def _queue_write(pipeline: redis.client.Pipeline, state: JobState) -> None:
    """Queue the commands that store the job's state on ``pipeline``: an active job among the active ones,
    an ended one off them, kept a day."""
    text = json.dumps(state.to_record())
    if state.active:
        pipeline.set(_state_key(state.job_id), text)
        pipeline.zadd(_ACTIVE, {state.job_id: state.seq})
    else:
        pipeline.set(_state_key(state.job_id), text, ex=KEEP_SECONDS)
        pipeline.zrem(_ACTIVE, state.job_id)
        pipeline.delete(_control_key(state.job_id))


def update_state(connection: redis.Redis, job_id: str,
                 change: Callable[[JobState | None], JobState | None]) -> JobState | None:
    """Store ``change(state now)`` unless it is None, in one step no other writer comes between (WATCH): a
    replica and a worker each change a job only from the state they saw. Returns what Redis then holds."""
    with connection.pipeline() as pipeline:
        while True:
            try:
                pipeline.watch(_state_key(job_id))
                text = pipeline.get(_state_key(job_id))
                now = None if text is None else JobState.from_record(json.loads(text))
                new = change(now)
                if new is None:
                    pipeline.unwatch()
                    return now
                pipeline.multi()
                _queue_write(pipeline, new)
                pipeline.execute()
                return new
            except redis.exceptions.WatchError:  # changed meanwhile: look again
                continue


class RedisJobQueue(JobQueue):
    """The job lanes on a Redis server, shared by every replica and worker that uses it."""

    resumes = True

    def __init__(self, url: str, lanes: tuple[str, ...] = tuple(DEFAULT_LANES), store_root: Path | None = None) -> None:
        """``url``: the Redis server; ``store_root``: the shared model store folder (``$FER_LAB_MODELS``)."""
        self.url = url
        self.lanes = lanes
        self.connection = connect(url)
        self.store_root = store_root or models_dir()
        self.inbox = self.store_root / INBOX_FOLDER
        with contextlib.suppress(OSError):  # a store that cannot be written says so when a job is queued
            self.inbox.mkdir(parents=True, exist_ok=True)
        self._queues = {lane: rq.Queue(lane, connection=self.connection) for lane in lanes}
        self._checked_abandoned = -ABANDONED_CHECK_SECONDS

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Redis's failures as a :class:`QueueUnavailableError` a page can show."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise QueueUnavailableError(
                f"the job queue (Redis at {self.url}) cannot be reached ({error}): jobs cannot be queued or "
                "followed now; running trainings go on and save their models. Try again in a moment.") from error
        except redis.exceptions.LockError as error:
            raise QueueUnavailableError("the job queue is busy (another replica holds it): try again in a moment") \
                from error
        except redis.exceptions.RedisError as error:  # out of memory, read-only, ...: Redis says why
            raise QueueUnavailableError(f"the job queue (Redis at {self.url}) refused: {error}") from error

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the queue's lock in Redis: no other replica queues a job or deletes a model meanwhile."""
        # A release that fails (the lock expired, Redis away) must not undo what was done under it.
        with self._reachable(), self.connection.lock(_LOCK, timeout=30, blocking_timeout=30,
                                                     raise_on_release_error=False):
            yield

    def submit(self, request: JobRequest) -> JobState:
        queued = False
        try:
            self._check_lane(request)
            job = Job(replace(request, owner=request.owner.strip() or "someone"))
            with self._locked():
                check_models(request, self._states())
                job.seq = int(self.connection.incr(_SEQ))
                state = job.state()
                with self.connection.pipeline() as pipeline:  # one transaction: no replica sees half a job
                    self._queues[request.lane].enqueue_call(  # RQ sets the pipeline up: its commands come first
                        run_queued_job, (request.work, [str(path) for path in request.inputs]), job_id=job.job_id,
                        description=request.description, timeout=timeout_seconds(request.minutes),
                        retry=rq.Retry(max=1, enqueue_at_front=True),  # a resumed job keeps its place
                        result_ttl=0, failure_ttl=FAILED_RECORD_SECONDS, pipeline=pipeline)
                    _queue_write(pipeline, state)
                    pipeline.execute()
                    queued = True
            return state
        except Exception:
            if not queued:
                delete_inputs(request.inputs)
            raise

    def get(self, job_id: str | None) -> JobState | None:
        if job_id is None:
            return None
        with self._reachable():
            state = read_state(self.connection, job_id)
            if state is None or not state.active:
                return state
            return self._reconciled([state])[0]

    def states(self) -> list[JobState]:
        with self._reachable():
            return self._states()

    def _states(self) -> list[JobState]:
        """The active jobs' states in order of submission, as their RQ records say they are."""
        job_ids: list[bytes] = self.connection.zrange(_ACTIVE, 0, -1)  # type: ignore[assignment]  # redis-py types every reply alike
        states = [read_state(self.connection, job_id.decode()) for job_id in job_ids]
        return sorted(self._reconciled([state for state in states if state is not None]), key=lambda state: state.seq)

    def _requeue_abandoned(self) -> None:
        """Every :data:`ABANDONED_CHECK_SECONDS`, have RQ queue again (or fail) the jobs whose worker stopped,
        as a worker's maintenance does: so a job shows as waiting to resume even while no worker runs."""
        now = time.monotonic()
        if now - self._checked_abandoned < ABANDONED_CHECK_SECONDS:
            return
        self._checked_abandoned = now
        for queue in self._queues.values():
            if queue.acquire_maintenance_lock():  # the lock workers take for the same cleaning
                try:
                    StartedJobRegistry(queue=queue).cleanup()
                    clean_worker_registry(queue)  # workers that stopped no longer count as the lane's slots
                finally:
                    queue.release_maintenance_lock()

    def _reconciled(self, states: list[JobState]) -> list[JobState]:
        """``states`` as RQ's records say: a job whose worker stopped waits again to resume (or has failed),
        and one asked to finish says so."""
        self._requeue_abandoned()
        records = rq.job.Job.fetch_many([state.job_id for state in states], connection=self.connection)
        controls = self.connection.mget([_control_key(state.job_id) for state in states]) if states else []
        result = []
        for state, record, control in zip(states, records, controls):
            status = None if record is None else record.get_status(refresh=False)
            if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED) and state.running:
                state = replace(state, status=WAITING, started_at=None, ends_at=None,
                                message="its worker stopped: it resumes from its last checkpoint")
            elif status is None or status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED,
                                              JobStatus.FINISHED):
                error = abandoned_error(state, status)
                state = update_state(self.connection, state.job_id, partial(_failed, error=error)) or state
                if state.status == "failed" and state.error == error:  # this replica ended it: it cleans up
                    self._clean_up(state.job_id, record)
            result.append(replace(state, finish_requested=control == b"finish"))
        return result

    def _clean_up(self, job_id: str, record: rq.job.Job | None) -> None:
        """Delete what an ended job that no worker finished left: its uploaded inputs and its checkpoint."""
        with contextlib.suppress(Exception):  # a record whose work cannot be read names no inputs
            delete_inputs(Path(path) for path in (record.args[1] if record is not None else []))
        shutil.rmtree(self.store_root / CHECKPOINT_FOLDER / job_id, ignore_errors=True)

    def slots(self, lane: str) -> int:
        with self._reachable():
            return rq.Worker.count(connection=self.connection, queue=self._queues[lane])

    def cancel(self, job_id: str) -> bool:
        with self._locked():
            state = self.get(job_id)
            if state is None or not state.active:
                return False
            record = rq.job.Job.fetch_many([job_id], connection=self.connection)[0]
            if state.running or record is None or record.get_status() not in (JobStatus.QUEUED, JobStatus.DEFERRED,
                                                                                JobStatus.SCHEDULED):
                self.connection.set(_control_key(job_id), "cancel", ex=KEEP_SECONDS)  # over a finish
                return True
            ended = update_state(self.connection, job_id, lambda now: (
                replace(now, status="cancelled") if now is not None and now.status == WAITING else None))
            if ended is None or ended.status != "cancelled":  # a worker took it meanwhile: it stops it
                self.connection.set(_control_key(job_id), "cancel", ex=KEEP_SECONDS)
                return True
            record.delete()  # out of its queue, and its work (a class's faces) out of Redis
        self._clean_up(job_id, record)
        return True

    def finish(self, job_id: str) -> bool:
        state = self.get(job_id)
        if state is None or not state.running:
            return False
        with self._reachable():
            self.connection.set(_control_key(job_id), "finish", ex=KEEP_SECONDS, nx=True)  # never over a cancel
        return True



def _failed(now: JobState | None, error: str) -> JobState | None:
    """The job failed with ``error``, if it is still active (else nothing to store)."""
    return None if now is None or not now.active else replace(now, status="failed", error=error)


def abandoned_error(state: JobState, status: JobStatus | None) -> str:
    """Why a job that RQ no longer runs, but that never said it ended, failed."""
    if status in (None, JobStatus.FAILED, JobStatus.STOPPED):
        return (f"the {state.description} stopped: the worker running it stopped ({state.attempts} time(s)) "
                "and it cannot be resumed again. Nothing was saved; queue it again.")
    return f"the {state.description} ended without a word from its worker ({status}); nothing was saved"


def run_queued_job(work: JobWork, inputs: list[str]) -> str:
    """RQ's job function, run by a worker: the job's work, reporting to Redis every
    :data:`REPORT_SECONDS` and stopping when asked; returns how it ended."""
    current = rq.get_current_job()
    assert current is not None  # RQ runs this function only as a job
    if "TF_NUM_INTRAOP_THREADS" not in os.environ:  # started by `rq worker`, not by run_worker
        cap_training_threads(training_threads())
    connection: redis.Redis = current.connection
    state = read_state(connection, current.id)
    if state is None or not state.active:  # cancelled while it was being dequeued, or forgotten
        delete_inputs(Path(path) for path in inputs)
        return "cancelled" if state is None else state.status
    request = JobRequest(lane=state.lane, model_name=state.model_name, description=state.description, work=work,
                         owner=state.owner, uses=state.uses, minutes=state.minutes,
                         inputs=tuple(Path(path) for path in inputs))
    job = Job(request, job_id=state.job_id, seq=state.seq, submitted_at=state.submitted_at, started_at=local_now(),
              status=ACTIVE_STATES[0], attempts=state.attempts + 1, history=list(state.history),
              checkpoint_dir=models_dir() / CHECKPOINT_FOLDER / state.job_id)
    claimed = update_state(connection, job.job_id, lambda now: _if_ours(now, job, state.attempts))
    if claimed is None or claimed.attempts != job.attempts:  # cancelled (or taken) between the read and now
        return "cancelled" if claimed is None else claimed.status
    reporter = _Reporter(connection, job)
    reporter.start()
    try:
        status = run_work(job)
    finally:
        reporter.stop()
    job.end(status)
    if not _write_outcome(connection, job):  # another worker runs it now: what it has is that worker's
        return status
    delete_inputs(request.inputs)
    if job.checkpoint_dir is not None:
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    return status


def _if_ours(now: JobState | None, job: Job, attempts: int) -> JobState | None:
    """The job's state to store if Redis still gives it to this run (active, and started ``attempts`` times
    before it); else None, store nothing."""
    return job.state() if now is not None and now.active and now.attempts == attempts else None


class _Reporter(threading.Thread):
    """Writes the running job's state to Redis and turns a replica's cancel or finish into the job's events;
    stops the work if the job is no longer this run's (ended by a replica, or taken by another worker)."""

    def __init__(self, connection: redis.Redis, job: Job) -> None:
        super().__init__(name=f"fer-lab-report-{job.job_id}", daemon=True)
        self.connection, self.job = connection, job
        self._stopped = threading.Event()
        self._failing = False

    def run(self) -> None:
        """Report every :data:`REPORT_SECONDS` until :meth:`stop`; Redis's failures are logged once and ridden out."""
        while True:
            try:
                control = self.connection.get(_control_key(self.job.job_id))
                if control == b"cancel":
                    self.job.cancel_event.set()
                elif control == b"finish":
                    self.job.finish_event.set()
                stored = update_state(self.connection, self.job.job_id,
                                      lambda now: _if_ours(now, self.job, self.job.attempts))
                if stored is None or stored.attempts != self.job.attempts or not stored.active:
                    logger.warning("job %s is no longer this worker's: it stops", self.job.job_id)
                    self.job.cancel_event.set()
                self._failing = False
            except redis.exceptions.RedisError as error:  # Redis away: train on, report when it is back
                if not self._failing:
                    logger.warning("job %s: cannot report to Redis (%s); it goes on", self.job.job_id, error)
                self._failing = True
            if self._stopped.wait(REPORT_SECONDS):
                return

    def stop(self) -> None:
        """End the reports (after the one under way) and wait for the thread."""
        self._stopped.set()
        self.join()


def _write_outcome(connection: redis.Redis, job: Job) -> bool:
    """Write how the job ended, retrying while Redis is away for up to :data:`OUTCOME_RETRY_SECONDS` (its model,
    if any, is saved already); False when the job is no longer this run's."""
    deadline = time.monotonic() + OUTCOME_RETRY_SECONDS
    while True:
        try:
            stored = update_state(connection, job.job_id, lambda now: (
                job.state() if now is not None and now.attempts == job.attempts else None))
            return stored is not None and stored.attempts == job.attempts and not stored.active
        except redis.exceptions.RedisError as error:
            if time.monotonic() > deadline:
                logger.error("job %s ended %s, but Redis could not be told (%s)", job.job_id, job.status, error)
                return True
            time.sleep(2.0)


def check_lanes(lanes: list[str]) -> None:
    """A :class:`SettingError` unless ``lanes`` names one or more of the queue's lanes, and no other."""
    unknown = sorted(set(lanes) - set(DEFAULT_LANES))
    if unknown or not lanes:
        given = f"unknown job lane(s) {', '.join(unknown)}" if unknown else "no job lane given"
        raise SettingError(f"{given}: choose from {', '.join(DEFAULT_LANES)}")


def run_worker(url: str, lanes: list[str], *, threads: int, name: str | None = None, burst: bool = False,
               maintenance_seconds: int = 30, heartbeat_seconds: int = 10) -> None:
    """Run jobs of ``lanes`` from the Redis at ``url`` until stopped (``burst``: until the lanes are empty),
    one at a time, each in a fresh process (RQ's work horse) whose TensorFlow uses ``threads`` threads.

    Every ``heartbeat_seconds`` the worker tells Redis its job still runs (RQ counts a job abandoned a
    minute after the last one); every ``maintenance_seconds`` it looks for abandoned jobs to queue again."""
    check_lanes(lanes)
    connection = connect(url)
    cap_training_threads(threads)  # each work horse's TensorFlow reads it
    handler = logging.StreamHandler()  # FER Lab's own lines, timed like RQ's
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger("fer_core").addHandler(handler)
    logging.getLogger("fer_core").setLevel(logging.INFO)
    logger.info("worker: lanes %s from %s, %d TensorFlow thread(s) per job", ", ".join(lanes), url, threads)
    queues = [rq.Queue(lane, connection=connection) for lane in lanes]
    # RQ waits for a job at most worker_ttl - 15 s, and only looks for abandoned jobs between waits.
    worker = rq.Worker(queues, connection=connection, name=name, maintenance_interval=maintenance_seconds,
                       job_monitoring_interval=heartbeat_seconds, worker_ttl=maintenance_seconds + 15)
    try:
        worker.work(burst=burst, with_scheduler=False)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise QueueUnavailableError(f"the job queue (Redis at {url}) cannot be reached ({error})") from error
