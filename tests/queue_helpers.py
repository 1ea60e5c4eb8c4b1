"""What the job queue's tests share: a real redis-server they start and stop, workers run as
``python -m fer_core worker`` processes, and job work that crosses processes (files, not events)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from fer_core.base.errors import DataError
from fer_core.registry.cards import ModelCard
from fer_core.service.jobs import Job
from fer_core.training.progress import TrainProgress

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20


class RedisServer:
    """Debian's redis-server on a unix socket in ``folder``, its data kept there (append-only file) so
    that a restart keeps the queue, as a deployed Redis with persistence does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        """Start it and wait until it answers; the test is skipped where Debian's redis-server is missing."""
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is missing (apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.folder), "--appendonly", "yes", "--save", "", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                if redis.Redis(unix_socket_path=str(self.socket)).ping():
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(TIMEOUT)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))


class Worker:
    """``python -m fer_core worker`` in a process group of its own; its work horse (RQ's child process that runs
    a job) puts itself in another, which :meth:`kill` finds and kills too."""

    def __init__(self, url: str, store: Path, lanes: str = "train,finetune", log: Path | None = None) -> None:
        env = {**os.environ, "FER_LAB_REDIS_URL": url, "FER_LAB_MODELS": str(store),
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        self.log = log or store.parent / f"worker-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fer_core", "worker", "--lanes", lanes, "--threads", "1",
             "--maintenance-seconds", "2", "--heartbeat-seconds", "2"],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker and its work horse (RQ starts it in a session of its own): a machine lost mid-job."""
        horses = children(self.process.pid)
        os.killpg(self.process.pid, signal.SIGKILL)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@dataclass(frozen=True)
class FileGate:
    """A job's work that crosses processes: it says it started (a file), waits until released (another
    file) or stopped, then saves (returns a card), stops (cancelled: None), or fails (a ``fail`` file)."""

    folder: Path
    name: str

    def __call__(self, job: Job) -> ModelCard | None:
        (self.folder / f"{self.name}.started").write_text(str(os.getpid()))
        deadline = time.monotonic() + TIMEOUT
        while not (self.folder / f"{self.name}.release").exists():
            if job.cancel_event.is_set() or job.finish_event.is_set():
                break
            if (self.folder / f"{self.name}.progress").exists() and job.progress is None:
                job.listen(TrainProgress(epoch=1, epochs=2, batch=1, batches=10, loss=1.0, accuracy=0.5,
                                         elapsed_seconds=6.0, eta_seconds=120.0))
            if time.monotonic() > deadline:
                raise TimeoutError("the test never released this job")
            time.sleep(0.02)
        if (self.folder / f"{self.name}.fail").exists():
            raise DataError(f"{self.name} failed as asked")
        if (self.folder / f"{self.name}.crash").exists():
            raise RuntimeError(f"{self.name} crashed")
        return None if job.cancel_event.is_set() else ModelCard(name=job.model_name)

    def started(self) -> bool:
        return (self.folder / f"{self.name}.started").exists()

    def release(self) -> None:
        (self.folder / f"{self.name}.release").write_text("")

    def report_progress(self) -> None:
        """Have the job report a training's progress: epoch 1 of 2, batch 1 of 10, 2 minutes left."""
        (self.folder / f"{self.name}.progress").write_text("")

    def crash(self) -> None:
        (self.folder / f"{self.name}.crash").write_text("")
        self.release()

    def fail(self) -> None:
        (self.folder / f"{self.name}.fail").write_text("")
        self.release()


def until(condition, timeout: float = TIMEOUT, message: str = "condition not met"):
    """Poll ``condition`` until it returns something true (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)
