"""What the job queue's tests share: a real redis-server they start and stop, workers run as
``python -m fer_core worker`` processes, and job work that crosses processes (files, not events)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from fer_core.base.errors import DataError
from fer_core.registry.cards import ModelCard
from fer_core.service.jobs import Job

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
    """``python -m fer_core worker`` in its own process group (so that killing it kills its work horse too)."""

    def __init__(self, url: str, store: Path, lanes: str = "train,finetune", log: Path | None = None) -> None:
        env = {**os.environ, "FER_LAB_REDIS_URL": url, "FER_LAB_MODELS": str(store),
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        self.log = log or store.parent / f"worker-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fer_core", "worker", "--lanes", lanes, "--threads", "1",
             "--maintenance-seconds", "2"], cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker and its work horse: a machine lost mid-job."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()


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
            if time.monotonic() > deadline:
                raise TimeoutError("the test never released this job")
            time.sleep(0.02)
        if (self.folder / f"{self.name}.fail").exists():
            raise DataError(f"{self.name} failed as asked")
        return None if job.cancel_event.is_set() else ModelCard(name=job.model_name)

    def started(self) -> bool:
        return (self.folder / f"{self.name}.started").exists()

    def release(self) -> None:
        (self.folder / f"{self.name}.release").write_text("")

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
