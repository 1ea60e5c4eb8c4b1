"""How many CPU threads a training may take, so that live streams keep their share of the machine.

A training's TensorFlow would otherwise start a thread per core for its operations and starve the
live streams' analysis on the same machine (``$FER_LAB_ANALYSIS_CORES``, see
:mod:`fer_core.inference.streams`). Workers (``python -m fer_core worker``) and the app's own
process (which trains when no Redis queue is set) cap it with :func:`cap_training_threads` before
TensorFlow loads; the app's live analysis runs on LiteRT and OpenCV, which keep their own threads.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping

from fer_core.base.errors import SettingError
from fer_core.inference.streams import StreamBoard, usable_cores

logger = logging.getLogger(__name__)


def training_threads(environ: Mapping[str, str] = os.environ) -> int:
    """How many threads a training's TensorFlow may use: ``$FER_LAB_WORKER_THREADS``, else the cores
    left after the live streams' analysis budget on this machine (at least 1)."""
    text = environ.get("FER_LAB_WORKER_THREADS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise SettingError(f"FER_LAB_WORKER_THREADS: {text!r} is not a whole number of 1 or more")
        return int(text)
    return max(1, usable_cores() - math.ceil(StreamBoard.from_environment(environ).analysis_cores))


def cap_training_threads(threads: int) -> bool:
    """Have TensorFlow, once it loads in this process (or a process it starts), run each operation on at most
    ``threads`` threads and one operation at a time; False (and a warning) when it has loaded already."""
    if "tensorflow" in sys.modules:
        logger.warning("TensorFlow is loaded already: trainings here use its threads as they are")
        return False
    os.environ.update({"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"})
    return True
