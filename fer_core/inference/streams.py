"""How many live streams a server takes at once, and how they share its analysis time.

Every live stream costs the server video decoding and encoding on each frame, and analysis on the
frames it analyses. A :class:`StreamBoard` is shared by every session of a server process:

- **A limit**: at most ``limit`` streams at once (``$FER_LAB_MAX_STREAMS``, by default
  :data:`STREAMS_PER_CORE` per CPU core the process may use). A stream holds its slot while its
  frames keep coming (each frame renews a lease of ``lease_seconds``), so a closed tab frees its
  slot within seconds. A stream that finds the server full is refused: the pages then say so and
  offer the Snapshot fallback instead of a stream that would starve the others.
- **Fair analysis**: the server gives analysis at most ``analysis_cores`` of CPU
  (``$FER_LAB_ANALYSIS_CORES``, by default :data:`ANALYSIS_SHARE` of its cores); the streams of the
  moment split it equally (:meth:`StreamBoard.share`). A :class:`fer_core.inference.live.LiveAnalyser` rests
  after each analysed frame long enough to stay within its share, so every stream is analysed at a
  similar rate, however many frames it sends, and frames in between are passed through with the
  last boxes. The rest of the CPU keeps the video itself flowing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

from fer_core.base.errors import SettingError

#: Streams a server takes per CPU core by default (measured: ``scripts/load_test.py``, README).
STREAMS_PER_CORE = 4
#: The share of the server's cores that analysis of all streams together may take by default.
ANALYSIS_SHARE = 0.4
#: At most this share of wall time goes to one stream's analysis, however few streams there are.
MAX_STREAM_SHARE = 0.8


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. under ``taskset``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _positive(environ: Mapping[str, str], name: str, default: float, kind: Callable[[str], float]) -> float:
    text = environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise SettingError(f"{name} must be a positive number, not {text!r}")
    return value


class StreamBoard:
    """The live streams of one server process: a limit on how many at once, and fair analysis shares."""

    def __init__(self, limit: int, analysis_cores: float, *, lease_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        if limit < 1:
            raise SettingError(f"the limit of live streams must be at least 1, not {limit}")
        if analysis_cores <= 0:
            raise SettingError(f"the analysis cores must be positive, not {analysis_cores}")
        self.limit = limit
        self.analysis_cores = analysis_cores
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, float] = {}  # stream owner -> when its slot ends unless renewed

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> StreamBoard:
        """A board with ``$FER_LAB_MAX_STREAMS`` and ``$FER_LAB_ANALYSIS_CORES``, or defaults from the CPU count."""
        cores = usable_cores()
        limit = int(_positive(environ, "FER_LAB_MAX_STREAMS", STREAMS_PER_CORE * cores, int))
        analysis = _positive(environ, "FER_LAB_ANALYSIS_CORES", ANALYSIS_SHARE * cores, float)
        return cls(limit, analysis)

    def _expire(self, now: float) -> None:
        for owner in [owner for owner, until in self._leases.items() if until <= now]:
            del self._leases[owner]

    def claim(self, owner: str) -> bool:
        """Hold or renew ``owner``'s slot for ``lease_seconds``; False when the server is full."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if owner not in self._leases and len(self._leases) >= self.limit:
                return False
            self._leases[owner] = now + self.lease_seconds
            return True

    def admits(self, owner: str) -> bool:
        """Whether ``owner`` streams now or a slot is free for it (nothing is held)."""
        with self._lock:
            self._expire(self._clock())
            return owner in self._leases or len(self._leases) < self.limit

    def release(self, owner: str) -> None:
        """Free ``owner``'s slot (its stream ended)."""
        with self._lock:
            self._leases.pop(owner, None)

    def streams(self) -> int:
        """How many streams hold a slot now."""
        with self._lock:
            self._expire(self._clock())
            return len(self._leases)

    def share(self) -> float:
        """The share of wall time each stream's analysis may take now: the analysis cores split
        equally between the streams, at most :data:`MAX_STREAM_SHARE`."""
        return min(MAX_STREAM_SHARE, self.analysis_cores / max(1, self.streams()))
