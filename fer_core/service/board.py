"""The job board: one training queue for every app replica that shares a model store folder.

Replicas of the web app (see ``deploy/``) share the store folder (``$FER_LAB_MODELS``), and with it
this board in the folder's ``.queue/``, so their jobs take turns in one queue per lane
(:class:`fer_core.service.queue.JobQueue` keeps the queue; this module only keeps the files):

- each waiting or running job is a *ticket*: one JSON file, ``job-<id>.json``, written atomically
  (a reader sees the old or the new ticket, never half of one);
- each process that publishes tickets holds an exclusive ``flock`` on a file of its own,
  ``<host>-<pid>-<token>.alive``, for as long as it runs. The kernel releases it when the process
  ends, however it ends, and the next reader deletes that process's tickets: a crashed replica
  never holds a lane, and no clock or heartbeat decides who is alive;
- changes (a job submitted, started or ended) are made under the board's lock, an exclusive
  ``flock`` on ``board.lock``, so two replicas never start more jobs than a lane has slots, nor two
  jobs that save the same model.

A job runs in the process that accepted it; the others only read its ticket. On a network file
system the folder needs working ``flock`` (Linux maps it onto NFS v4 byte-range locks; a lost
client's locks are released when its lease runs out, about 90 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from fer_core.base.errors import SettingError
from fer_core.base.files import write_atomically

try:
    import fcntl
except ImportError:  # Windows has no flock: there the queue stays in one process
    fcntl = None  # type: ignore[assignment]  # mypy's idiom for an optional module: None stands for "missing"

#: The board's folder inside a model store folder (a leading '.' is never a model name).
BOARD_FOLDER = ".queue"
_LOCK_FILE = "board.lock"
_TICKET_GLOB = "job-*.json"
_ALIVE_SUFFIX = ".alive"


class JobBoard:
    """The tickets of every live process in one folder, and the lock under which they change."""

    def __init__(self, folder: str | os.PathLike) -> None:
        """Join the board in ``folder`` (made if missing); one that cannot be written, or a system without
        flock, is a :class:`SettingError`."""
        self.folder = Path(folder)
        if fcntl is None:
            raise SettingError("a training queue shared by several processes needs flock (Linux or macOS)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.process, self._alive = self._announce()
            for path in self.folder.glob(f"*{_ALIVE_SUFFIX}"):  # the files of processes that ended, deleted
                self._alive_process(path.name.removesuffix(_ALIVE_SUFFIX))
        except OSError as error:
            raise SettingError(f"{self.folder}: cannot hold the shared training queue "
                               f"({error.strerror or error})") from error

    def _announce(self) -> tuple[str, int]:
        """This process's name on the board and the open file whose lock says it is alive.

        The file is locked under a temporary name and then renamed: a reader never finds it unlocked.
        """
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        handle, staged = tempfile.mkstemp(prefix=".joining-", dir=self.folder)
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.replace(staged, self.folder / f"{name}{_ALIVE_SUFFIX}")
        return name, handle

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the board's lock: no other process or thread changes the board meanwhile."""
        with (self.folder / _LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield

    def publish(self, job_id: str, record: dict) -> None:
        """Write (or rewrite) the ticket of this process's job ``job_id``, atomically."""
        text = json.dumps({**record, "process": self.process})
        write_atomically(self.folder / f"job-{job_id}.json", lambda path: path.write_text(text))

    def withdraw(self, job_id: str) -> None:
        """Delete the ticket of this process's job ``job_id`` (once it has ended or left the queue)."""
        (self.folder / f"job-{job_id}.json").unlink(missing_ok=True)

    def others(self) -> list[dict]:
        """The tickets of the other live processes; those of processes that have ended are deleted."""
        records, alive = [], {self.process: True}
        for path in self.folder.glob(_TICKET_GLOB):
            try:
                record = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):  # withdrawn meanwhile, or not a ticket
                continue
            process = record.get("process", "")
            if process not in alive:
                alive[process] = self._alive_process(process)
            if not alive[process]:
                path.unlink(missing_ok=True)
            elif process != self.process:
                records.append(record)
        return records

    def _alive_process(self, process: str) -> bool:
        """Whether ``process`` still holds the lock on its file; the file of one that ended is deleted."""
        path = self.folder / f"{process}{_ALIVE_SUFFIX}"
        try:
            handle = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(handle)
        path.unlink(missing_ok=True)
        return False

    def close(self) -> None:
        """Leave the board: this process's tickets and its file are deleted and its lock released."""
        for path in self.folder.glob(_TICKET_GLOB):
            with contextlib.suppress(FileNotFoundError, ValueError):
                if json.loads(path.read_text()).get("process") == self.process:
                    path.unlink(missing_ok=True)
        (self.folder / f"{self.process}{_ALIVE_SUFFIX}").unlink(missing_ok=True)
        os.close(self._alive)
