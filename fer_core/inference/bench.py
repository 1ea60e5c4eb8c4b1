"""Speed and memory measurements: classifier faces per second, whole-pipeline frames per second
on one stream and on several concurrent streams, and the process's resident memory."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from fer_core.inference.annotate import annotate
from fer_core.inference.live import LiveAnalyser
from fer_core.inference.predict import EmotionAnalyser


def _frames_per_second(step, seconds: float) -> tuple[float, int]:
    for _ in range(3):
        step()
    frames = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or frames < 5:
        step()
        frames += 1
    return frames / (time.perf_counter() - start), frames


def pipeline_fps(analyser: EmotionAnalyser, frame: np.ndarray, seconds: float = 5.0) -> dict:
    """Frames per second of detect, preprocess, classify and annotate, detecting on every frame."""
    faces = len(analyser.analyse(frame))
    fps, frames = _frames_per_second(lambda: annotate(frame, analyser.analyse(frame)), seconds)
    return {"fps": fps, "ms_per_frame": 1000.0 / fps, "faces_per_frame": faces, "frames": frames}


def live_fps(analyser: EmotionAnalyser, frame: np.ndarray, seconds: float = 5.0, detect_every: int = 3) -> dict:
    """Frames per second of the live path: detection every k-th frame, tracking in between,
    every frame classified and annotated (no frame is skipped)."""
    live = LiveAnalyser(analyser, detect_every=detect_every, smoothing=0.0, max_load=1.0)
    fps, frames = _frames_per_second(lambda: live.process(frame), seconds)
    stats = live.stats()
    return {"fps": fps, "ms_per_frame": 1000.0 / fps, "frames": frames,
            "faces_per_frame": stats.faces_analysed / max(1, stats.analysed)}


def streams_fps(analyser: EmotionAnalyser, frame: np.ndarray, streams: int, seconds: float = 5.0,
                detect_every: int = 3) -> list[float]:
    """Frames per second of each of ``streams`` threads running the live path at once.

    All streams share the analyser (one model, one detector), as the sessions of one app do.
    """
    rates = [0.0] * streams
    errors: list[BaseException] = []
    barrier = threading.Barrier(streams, timeout=120)

    def run(index: int) -> None:
        try:
            live = LiveAnalyser(analyser, detect_every=detect_every, smoothing=0.0, max_load=1.0)
            for _ in range(3):
                live.process(frame)
            barrier.wait()
            frames, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                live.process(frame)
                frames += 1
            rates[index] = frames / (time.perf_counter() - start)
        except BaseException as error:  # let the other streams go on, then report it
            barrier.abort()
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), None)
    if first is not None:
        raise first
    return rates


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux); the peak on macOS; NaN on Windows, which
    has no ``resource`` module (imported here, so that timing a model works everywhere)."""
    try:
        import resource  # Unix only: Windows has none
    except ImportError:
        return float("nan")
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize() / 1e6
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


def memory_over_frames(analyser: EmotionAnalyser, frame: np.ndarray, frames: int,
                       report_every: int = 500) -> list[tuple[int, float]]:
    """Resident memory after every ``report_every`` frames of the live path."""
    live = LiveAnalyser(analyser, detect_every=3, max_load=1.0)
    readings = [(0, resident_mb())]
    for index in range(1, frames + 1):
        live.process(frame)
        live.latest()
        if index % report_every == 0:
            readings.append((index, resident_mb()))
    return readings
