"""Speed measurements: classifier milliseconds per face and whole-pipeline frames per second."""

from __future__ import annotations

import time

import numpy as np

from fer_core.predict import EmotionAnalyser, EmotionClassifier, annotate


def classifier_ms_per_face(classifier: EmotionClassifier, batch: int = 1, seconds: float = 2.0) -> float:
    """Median milliseconds per face of the compiled classifier at a batch size."""
    size = classifier.input_size
    faces = np.random.default_rng(0).random((batch, size, size, 1), dtype=np.float32)
    for _ in range(5):
        classifier(faces)
    timings = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(timings) < 10:
        start = time.perf_counter()
        classifier(faces)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings)) * 1000.0 / batch


def pipeline_fps(analyser: EmotionAnalyser, frame: np.ndarray, seconds: float = 5.0) -> dict:
    """Frames per second of detect, preprocess, classify and annotate on one frame."""
    for _ in range(3):
        annotate(frame, analyser.analyse(frame))
    frames, faces = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or frames < 5:
        results = analyser.analyse(frame)
        annotate(frame, results)
        frames += 1
        faces += len(results)
    elapsed = time.perf_counter() - start
    return {"fps": frames / elapsed, "ms_per_frame": elapsed * 1000 / frames,
            "faces_per_frame": faces / frames, "frames": frames}
