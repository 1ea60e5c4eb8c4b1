"""The app's job queue, picked by name from the queue backends: ``redis`` when ``$FER_LAB_REDIS_URL``
is set (shared by every replica and worker on that Redis), else ``embedded`` (this process's lanes,
their slots from ``$FER_LAB_LANES``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from fer_core.service.jobs import lane_slots
from fer_core.service.queue import EmbeddedJobQueue, JobQueue


def _redis(environ: Mapping[str, str]) -> JobQueue:
    from fer_core.service.redis_queue import RedisJobQueue  # redis and RQ load only where a Redis queue is set

    return RedisJobQueue(environ["FER_LAB_REDIS_URL"].strip())


#: The queue backends by name, each made from the environment.
QUEUE_BACKENDS: dict[str, Callable[[Mapping[str, str]], JobQueue]] = {
    "embedded": lambda environ: EmbeddedJobQueue(lane_slots(environ.get("FER_LAB_LANES"))),
    "redis": _redis,
}

_JOBS: JobQueue | None = None
_JOBS_LOCK = threading.Lock()


def backend_name(environ: Mapping[str, str] = os.environ) -> str:
    """The backend the environment asks for: ``redis`` with ``$FER_LAB_REDIS_URL``, else ``embedded``."""
    return "redis" if environ.get("FER_LAB_REDIS_URL", "").strip() else "embedded"


def job_queue() -> JobQueue:
    """The job queue shared by every session of this server process (made on first use)."""
    global _JOBS
    with _JOBS_LOCK:
        if _JOBS is None:
            _JOBS = QUEUE_BACKENDS[backend_name()](os.environ)
        return _JOBS
