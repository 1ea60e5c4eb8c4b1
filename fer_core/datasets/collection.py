"""A class's own faces, collected in the browser to fine-tune a model on (``fer_core.training.finetune``).

A :class:`FaceCollection` holds 48x48 gray face crops per emotion in memory, grouped by
recording: a press of Record is one recording (its frames are near copies of one face), a
snapshot is a recording of one face. Fine-tuning holds out whole recordings, never single frames
of one. The collection goes out as a zip of class folders with a subfolder per recording
(``happy/rec-0003/0001.png``, the layout ``fer_core.datasets.folders`` reads, each subfolder then a person)
and comes back from such zips, several merged into one. A lock guards it: the webcam's callback
thread adds while the page reads.
"""

from __future__ import annotations

import io
import tempfile
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_core.base.errors import DataError
from fer_core.base.labels import EMOTIONS, label_from_name
from fer_core.datasets.dataset import IMAGE_SIZE, FaceDataset
from fer_core.datasets.folders import load_zip
from fer_core.faces.images import encode_png
from fer_core.faces.preprocess import resize_face, to_gray

#: Most faces a collection holds: some 12 MB of crops, far more than a minute of fine-tuning uses.
MAX_FACES = 5000


@dataclass(frozen=True)
class CollectedFace:
    """One face of a collection: its id (to delete it), its recording and its 48x48 gray crop."""

    face_id: int
    recording: str
    image: np.ndarray


def emotion_code(emotion: int | str) -> int:
    """The FER2013 code of an emotion given by code or name (synonyms allowed, e.g. ``happiness``)."""
    code = label_from_name(emotion) if isinstance(emotion, str) else int(emotion)
    if code is None or not 0 <= code < len(EMOTIONS):
        raise DataError(f"{emotion!r} is not an emotion; use one of {', '.join(EMOTIONS)}")
    return code


class FaceCollection:
    """Faces per emotion, each in a recording (see the module's docstring); safe to use from several threads."""

    def __init__(self, max_faces: int = MAX_FACES):
        self.max_faces = max_faces
        self._lock = threading.Lock()
        self._faces: dict[int, CollectedFace] = {}  # in the order added
        self._labels: dict[str, int] = {}  # recording -> emotion code
        self._next_face = 0
        self._next_recording = 0

    def add_recording(self, emotion: int | str, faces: Iterable[np.ndarray]) -> str:
        """Add the faces of one recording (gray or BGR crops, made 48x48) of ``emotion``; returns its id."""
        code = emotion_code(emotion)
        crops = [resize_face(to_gray(np.asarray(face)), IMAGE_SIZE) for face in faces]
        if not crops:
            raise DataError("a recording needs at least one face")
        with self._lock:
            return self._add(code, crops)

    def add_face(self, emotion: int | str, face: np.ndarray) -> str:
        """Add one face (a snapshot) as a recording of its own; returns the recording's id."""
        return self.add_recording(emotion, [face])

    def _add(self, code: int, crops: list[np.ndarray]) -> str:
        """Store a recording's crops (the caller holds the lock)."""
        if len(self._faces) + len(crops) > self.max_faces:
            raise DataError(f"the collection holds {len(self._faces)} faces and takes at most {self.max_faces}; "
                            "delete some or download the collection and start another")
        self._next_recording += 1
        recording = f"rec-{self._next_recording:04d}"
        self._labels[recording] = code
        for crop in crops:
            self._next_face += 1
            self._faces[self._next_face] = CollectedFace(self._next_face, recording, crop)
        return recording

    def delete_face(self, face_id: int) -> None:
        """Remove one face; a recording left without faces goes too. An unknown id is a DataError."""
        with self._lock:
            face = self._faces.pop(face_id, None)
            if face is None:
                raise DataError(f"no face {face_id} in the collection")
            if not any(other.recording == face.recording for other in self._faces.values()):
                del self._labels[face.recording]

    def clear(self) -> None:
        """Remove every face."""
        with self._lock:
            self._faces.clear()
            self._labels.clear()

    def faces(self, emotion: int | str) -> list[CollectedFace]:
        """The faces of one emotion, in the order they were added (a gallery)."""
        code = emotion_code(emotion)
        with self._lock:
            return [face for face in self._faces.values() if self._labels[face.recording] == code]

    def counts(self) -> dict[str, int]:
        """Faces per emotion, every emotion listed (0 where none)."""
        with self._lock:
            labels = [self._labels[face.recording] for face in self._faces.values()]
        totals = np.bincount(np.array(labels, dtype=np.int64), minlength=len(EMOTIONS))
        return {name: int(total) for name, total in zip(EMOTIONS, totals)}

    def recording_counts(self) -> dict[str, int]:
        """Recordings per emotion, every emotion listed (0 where none)."""
        with self._lock:
            codes = list(self._labels.values())
        totals = np.bincount(np.array(codes, dtype=np.int64), minlength=len(EMOTIONS))
        return {name: int(total) for name, total in zip(EMOTIONS, totals)}

    def __len__(self) -> int:
        with self._lock:
            return len(self._faces)

    def to_dataset(self) -> FaceDataset:
        """The faces as a dataset to fine-tune on; its ``groups`` are the recordings."""
        with self._lock:
            faces = list(self._faces.values())
            labels = [self._labels[face.recording] for face in faces]
        if not faces:
            raise DataError("the collection holds no faces yet: record some first")
        return FaceDataset(np.stack([face.image for face in faces]), np.array(labels, dtype=np.int64),
                           np.full(len(faces), "Training"), "collected faces",
                           np.array([face.recording for face in faces]))

    def to_zip(self) -> bytes:
        """The faces as a zip of class folders with one subfolder per recording, PNG files in them."""
        with self._lock:
            faces = list(self._faces.values())
            labels = dict(self._labels)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            numbers: dict[str, int] = {}
            for face in faces:
                numbers[face.recording] = numbers.get(face.recording, 0) + 1
                path = f"{EMOTIONS[labels[face.recording]]}/{face.recording}/{numbers[face.recording]:04d}.png"
                archive.writestr(path, encode_png(face.image))
        return buffer.getvalue()

    def merge_zip(self, content: bytes, name: str = "upload.zip") -> int:
        """Add the faces of a zip of class folders (:meth:`to_zip`'s or any; ``name`` names it in
        messages); returns how many. Each subfolder of a class folder becomes a recording of its own,
        distinct from every recording already held; when some face lies outside a subfolder, every
        face is a recording of its own. A zip that is not one of class folders of images is a DataError, and
        nothing of it is added."""
        dataset = _read_zip(content, name)
        groups = dataset.groups if dataset.groups is not None else np.arange(len(dataset)).astype(str)
        with self._lock:
            if len(self._faces) + len(dataset) > self.max_faces:
                raise DataError(f"{name}: its {len(dataset)} faces would make the collection's "
                                f"{len(self._faces)} more than the {self.max_faces} it takes")
            keys = dict.fromkeys(zip(groups.tolist(), dataset.labels.tolist()))  # recordings, in zip order
            for group, code in keys:
                chosen = (groups == group) & (dataset.labels == code)
                self._add(code, list(dataset.images[chosen]))
        return len(dataset)


def _read_zip(content: bytes, name: str) -> FaceDataset:
    """The faces of a zip's bytes, read by ``folders.load_zip``; its messages name the zip ``name``."""
    with tempfile.TemporaryDirectory(prefix="fer_lab_collection_") as folder:
        path = Path(folder) / "upload.zip"
        path.write_bytes(content)
        try:
            return load_zip(path)
        except DataError as error:
            raise DataError(str(error).replace(str(path), name)) from error
