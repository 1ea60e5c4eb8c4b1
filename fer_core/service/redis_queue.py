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
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import redis
import rq
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from fer_core.base.errors import FerError, SettingError
from fer_core.registry.store import ModelStore, models_dir
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
    refuse_deleting_in_use,
    run_work,
)
from fer_core.service.threads import cap_training_threads

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


def write_state(connection: redis.Redis, state: JobState) -> None:
    """Store the job's state; once it has ended, take it off the active jobs and keep it a day."""
    text = json.dumps(state.to_record())
    with connection.pipeline() as pipeline:
        if state.active:
            pipeline.set(_state_key(state.job_id), text)
        else:
            pipeline.set(_state_key(state.job_id), text, ex=KEEP_SECONDS)
            pipeline.zrem(_ACTIVE, state.job_id)
            pipeline.delete(_control_key(state.job_id))
        pipeline.execute()


class RedisJobQueue(JobQueue):
    """The job lanes on a Redis server, shared by every replica and worker that uses it."""

    resumes = True

    def __init__(self, url: str, lanes: tuple[str, ...] = tuple(DEFAULT_LANES), store_root: Path | None = None) -> None:
        """``url``: the Redis server; ``store_root``: the shared model store folder (``$FER_LAB_MODELS``)."""
        self.url = url
        self.lanes = lanes
        self.connection = connect(url)
        self.inbox = (store_root or models_dir()) / INBOX_FOLDER
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

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the queue's lock in Redis: no other replica queues a job or deletes a model meanwhile."""
        with self._reachable(), self.connection.lock(_LOCK, timeout=30, blocking_timeout=30):
            yield

    def submit(self, request: JobRequest) -> JobState:
        try:
            self._check_lane(request)
            job = Job(replace(request, owner=request.owner.strip() or "someone"))
            with self._locked():
                check_models(request, self._states())
                job.seq = int(self.connection.incr(_SEQ))
                state = job.state()
                with self.connection.pipeline() as pipeline:  # one transaction: no replica sees half a job
                    self._queues[request.lane].enqueue_call(  # RQ opens the transaction (MULTI): it comes first
                        run_queued_job, (request.work, [str(path) for path in request.inputs]), job_id=job.job_id,
                        description=request.description, timeout=timeout_seconds(request.minutes),
                        retry=rq.Retry(max=1), result_ttl=0, failure_ttl=FAILED_RECORD_SECONDS, pipeline=pipeline)
                    pipeline.set(_state_key(job.job_id), json.dumps(state.to_record()))
                    pipeline.zadd(_ACTIVE, {job.job_id: job.seq})
                    pipeline.execute()
            return state
        except Exception:
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
                fresh = read_state(self.connection, state.job_id)  # its worker may have ended it meanwhile
                if fresh is not None and not fresh.active:
                    state = fresh
                else:
                    state = replace(state, status="failed", error=abandoned_error(state, status))
                    write_state(self.connection, state)
            result.append(replace(state, finish_requested=control == b"finish"))
        return result

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
                self.connection.set(_control_key(job_id), "cancel", ex=KEEP_SECONDS)
                return True
            inputs = [Path(path) for path in record.args[1]]
            record.delete()  # out of its queue, and its work (a class's faces) out of Redis
            write_state(self.connection, replace(state, status="cancelled"))
        delete_inputs(inputs)
        return True

    def finish(self, job_id: str) -> bool:
        state = self.get(job_id)
        if state is None or not state.running:
            return False
        with self._reachable():
            self.connection.set(_control_key(job_id), "finish", ex=KEEP_SECONDS)
        return True

    def delete_model(self, name: str, store: ModelStore | None = None) -> None:
        with self._locked():
            refuse_deleting_in_use(name, self._states())
            (store or ModelStore()).delete(name)


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
    reporter = _Reporter(connection, job)
    reporter.start()
    try:
        status = run_work(job)
    finally:
        reporter.stop()
    job.end(status)
    _write_outcome(connection, job.state())
    delete_inputs(request.inputs)
    if job.checkpoint_dir is not None:
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    return status


class _Reporter(threading.Thread):
    """Writes the running job's state to Redis and turns a replica's cancel or finish into the job's events."""

    def __init__(self, connection: redis.Redis, job: Job) -> None:
        super().__init__(name=f"fer-lab-report-{job.job_id}", daemon=True)
        self.connection, self.job = connection, job
        self._stopped = threading.Event()
        self._failing = False

    def run(self) -> None:
        while True:
            try:
                control = self.connection.get(_control_key(self.job.job_id))
                if control == b"cancel":
                    self.job.cancel_event.set()
                elif control == b"finish":
                    self.job.finish_event.set()
                write_state(self.connection, self.job.state())
                self._failing = False
            except redis.exceptions.RedisError as error:  # Redis away: train on, report when it is back
                if not self._failing:
                    logger.warning("job %s: cannot report to Redis (%s); it goes on", self.job.job_id, error)
                self._failing = True
            if self._stopped.wait(REPORT_SECONDS):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def _write_outcome(connection: redis.Redis, state: JobState) -> None:
    """Write how the job ended, retrying while Redis is away (its model, if any, is saved already)."""
    deadline = local_now().timestamp() + OUTCOME_RETRY_SECONDS
    stop = threading.Event()
    while True:
        try:
            write_state(connection, state)
            return
        except redis.exceptions.RedisError as error:
            if local_now().timestamp() > deadline:
                logger.error("job %s ended %s, but Redis could not be told (%s)", state.job_id, state.status, error)
                return
            stop.wait(2.0)


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
    handler = logging.StreamHandler()  # FER Lab's own warnings and errors, timed like RQ's lines
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger("fer_core").addHandler(handler)
    queues = [rq.Queue(lane, connection=connection) for lane in lanes]
    # RQ waits for a job at most worker_ttl - 15 s, and only looks for abandoned jobs between waits.
    worker = rq.Worker(queues, connection=connection, name=name, maintenance_interval=maintenance_seconds,
                       job_monitoring_interval=heartbeat_seconds, worker_ttl=maintenance_seconds + 15)
    try:
        worker.work(burst=burst, with_scheduler=False)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise QueueUnavailableError(f"the job queue (Redis at {url}) cannot be reached ({error})") from error
