"""The shared model and detectors give the same answers under many threads as one by one."""

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from fer_core.faces.samples import sample_frame
from fer_core.inference.predict import EmotionAnalyser


@pytest.mark.parametrize(("detector", "lite"), [("haar", True), ("mtcnn", False)])
def test_sixteen_threads_match_sequential_results(model_store, detector, lite):
    if lite:
        from fer_core.inference.predict import to_tflite

        stored = model_store.load("default")
        model_store.save("default", stored.model, stored.card, to_tflite(stored.model))
    analyser = EmotionAnalyser.from_store("default", detector, store=model_store)
    assert analyser.classifier.backend == ("litert" if lite else "tensorflow")
    frames = [sample_frame(), sample_frame(1280, 720, faces=3), cv2.flip(sample_frame(), 1),
              np.full((240, 320, 3), 128, np.uint8)] * 4
    expected = [[face.to_dict() for face in analyser.analyse(frame)] for frame in frames]
    assert [len(faces) for faces in expected[:4]] == [1, 3, 1, 0]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda f: [face.to_dict() for face in analyser.analyse(f)], frames * 2))
    for got, want in zip(results, expected * 2):
        assert [g["box"] for g in got] == [w["box"] for w in want]
        for g, w in zip(got, want):
            for name, value in w["probabilities"].items():
                assert g["probabilities"][name] == pytest.approx(value, abs=1e-3)
