"""Files written whole: a reader, or a process killed meanwhile, finds the old file or the new one,
never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` write a new file in ``target``'s folder (a hidden name with ``target``'s suffix,
    which Keras and NumPy need), then put it in ``target``'s place in one step; on failure the new
    file is deleted and ``target`` is left as it was."""
    handle, staged = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(handle)
    try:
        write(Path(staged))
        os.replace(staged, target)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
