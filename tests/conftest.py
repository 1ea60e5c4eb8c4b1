"""Shared fixtures: synthetic faces, generated datasets and a temporary model store.

Nothing here reads ../shared or the project's models/: a new user's checkout runs the suite.
"""

from __future__ import annotations

import os

# aiortc's libsrtp (under streamlit-webrtc) crashes the process when it initialises after
# TensorFlow: load it first, before any test module imports TensorFlow.
import streamlit_webrtc  # noqa: F401, I001

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fer_core.base.labels import EMOTIONS  # noqa: E402
from fer_core.faces.samples import ASTRONAUT_FACE  # noqa: E402, F401  (the tests import it from here)


def synthetic_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A cartoon face whose mouth and brows depend on the class, with noise: learnable, not real."""
    face = np.full((size, size), 40, np.uint8)
    centre = (size // 2, size // 2)
    cv2.ellipse(face, centre, (size * 3 // 8, size * 7 // 16), 0, 0, 360, 170, -1)
    for eye_x in (size // 3, size * 2 // 3):
        cv2.circle(face, (eye_x, size * 5 // 12), max(1, size // 16), 30, -1)
    mouth_y = size * 3 // 4
    curve = (label - 3) * 2
    cv2.ellipse(face, (size // 2, mouth_y), (size // 6, abs(curve) + 1), 0,
                0 if curve >= 0 else 180, 180 if curve >= 0 else 360, 30, 2)
    brow_tilt = label - 3
    cv2.line(face, (size // 4, size // 3 - brow_tilt), (size * 5 // 12, size // 3 + brow_tilt), 30, 2)
    noise = rng.normal(0, 8, face.shape)
    return np.clip(face + noise, 0, 255).astype(np.uint8)


def synthetic_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic faces with labels cycling through all seven classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(EMOTIONS)
    return np.stack([synthetic_face(int(label), rng) for label in labels]), labels


def write_fer_csv(path, images: np.ndarray, labels: np.ndarray, usages: list[str] | None = None) -> None:
    """Write faces in FER2013's Kaggle format."""
    lines = ["emotion,pixels,Usage"]
    for index, (image, label) in enumerate(zip(images, labels)):
        usage = usages[index] if usages else "Training"
        lines.append(f"{label},{' '.join(map(str, image.ravel().tolist()))},{usage}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def fer_csv(tmp_path):
    """A small FER2013-format CSV: 56 Training, 21 PublicTest and 14 PrivateTest rows."""
    images, labels = synthetic_dataset(91)
    usages = ["Training"] * 56 + ["PublicTest"] * 21 + ["PrivateTest"] * 14
    path = tmp_path / "fer_small.csv"
    write_fer_csv(path, images, labels, usages)
    return path


@pytest.fixture
def model_store(tmp_path, monkeypatch):
    """A temporary store holding untrained ``default`` (ds_cnn) and ``tiny`` (mini_xception) models."""
    from fer_core.faces.preprocess import Preprocessing
    from fer_core.registry.cards import Training, make_card
    from fer_core.registry.store import ModelStore
    from fer_core.training.networks import build_model

    root = tmp_path / "models"
    monkeypatch.setenv("FER_LAB_MODELS", str(root))
    store = ModelStore(root)
    for name, arch in (("default", "ds_cnn"), ("tiny", "mini_xception")):
        model = build_model(arch)
        card = make_card(arch=arch, model=model, preprocessing=Preprocessing(size=48), training=Training(data="none"),
                         metrics=None, ms_per_face=None, reproduce="(untrained test model)")
        store.save(name, model, card)
    return store


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    from fer_core.faces.samples import astronaut

    return astronaut()


@pytest.fixture
def astronaut_png(tmp_path, astronaut_bgr):
    """The astronaut photo as a PNG file."""
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), astronaut_bgr)
    return path


def overlap(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / float(aw * ah + bw * bh - inter)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip archive, made in memory, holding ``entries`` (name: content)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def mp4_bytes(frame: np.ndarray, frames: int = 10, rate: int = 5) -> bytes:
    """An H.264 MP4, made in memory, showing ``frame`` ``frames`` times at ``rate`` frames per second."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frame.shape[:2]
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())
    return buffer.getvalue()
