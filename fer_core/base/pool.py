"""A pool of objects that are not thread-safe (OpenCV cascades, LiteRT interpreters).

Each call borrows one for its own use and gives it back, so threads never share one at the same
time, and no thread pays for building a new one when a free one is waiting (Streamlit runs every
page rerun in a new thread).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class ObjectPool(Generic[T]):
    """Objects made by ``factory`` on demand, lent to one caller at a time and reused."""

    def __init__(self, factory: Callable[[], T]):
        self._factory = factory
        self._free: queue.SimpleQueue[T] = queue.SimpleQueue()

    @contextmanager
    def borrow(self) -> Iterator[T]:
        """A free object, or a new one when all are lent out."""
        try:
            item = self._free.get_nowait()
        except queue.Empty:
            item = self._factory()
        try:
            yield item
        finally:
            self._free.put(item)
