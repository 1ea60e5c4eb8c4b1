"""A photo's faces numbered as a class reads them, with the summary a teacher looks at first.

Faces are numbered in reading order: row by row from the top, left to right within a row, so face 1 is
the top left person of a group photo and the numbers on the picture, in the list and in the downloads
agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.inference.annotate import Rect, annotate
from fer_core.inference.predict import FaceResult

#: A face whose top emotion has less probability than this is one to check.
UNCERTAIN_BELOW = 0.5


def reading_order(boxes: Sequence[Rect]) -> list[int]:
    """Indices of ``boxes`` row by row from the top, left to right in each row.

    Boxes are taken by their vertical middle, and a box joins the first row whose vertical span it
    shares for at least half the height of the smaller of the two (the box, or the row's shortest
    face); so the staggered, slightly tilted rows of a group photo, small faces among large ones
    included, read as rows.
    """
    rows: list[tuple[list[int], float, float, float]] = []  # members, top, bottom, shortest height
    for index in sorted(range(len(boxes)), key=lambda i: boxes[i][1] + boxes[i][3] / 2):
        _, y, _, h = boxes[index]
        for place, (members, top, bottom, shortest) in enumerate(rows):
            if min(bottom, y + h) - max(top, y) >= 0.5 * min(h, shortest):
                rows[place] = ([*members, index], min(top, y), max(bottom, y + h), min(shortest, h))
                break
        else:
            rows.append(([index], y, y + h, h))
    rows.sort(key=lambda row: (row[1] + row[2]) / 2)
    return [index for members, *_ in rows for index in sorted(members, key=lambda i: boxes[i][0])]


def network_view(face: FaceResult, size: int = 96) -> np.ndarray:
    """The face as the network saw it (gray, cropped, aligned and equalised as its recipe says), scaled
    to ``size`` pixels with its pixels kept square."""
    if face.network_input is None:
        raise ValueError("this face was not analysed here: it carries no network input")
    gray = (np.squeeze(face.network_input, axis=-1) * 255.0).round().clip(0, 255).astype(np.uint8)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_NEAREST)


@dataclass
class PhotoFaces:
    """The faces of one photo in reading order: face ``n`` is ``faces[n - 1]``. Made with :meth:`of`, which
    puts an analysis's faces in that order."""

    faces: list[FaceResult]

    @classmethod
    def of(cls, results: Sequence[FaceResult]) -> PhotoFaces:
        """The faces of an analysis (largest first) put in reading order."""
        return cls([results[i] for i in reading_order([face.box for face in results])])

    @property
    def numbers(self) -> list[int]:
        """The faces' numbers, 1 to the number of faces."""
        return list(range(1, len(self.faces) + 1))

    def annotated(self, image: np.ndarray) -> np.ndarray:
        """The photo with each face's box, number and label (BGR)."""
        return annotate(image, self.faces, self.numbers)

    def counts(self) -> dict[str, int]:
        """How many faces have each top emotion, most frequent first (ties in the labels' order)."""
        counted = Counter(face.label for face in self.faces)
        return {label: counted[label] for label in sorted(counted, key=lambda k: (-counted[k], EMOTIONS.index(k)))}

    def to_check(self, below: float = UNCERTAIN_BELOW) -> list[int]:
        """Numbers of the faces whose top emotion is less likely than ``below``, least certain first."""
        unsure = [number for number, face in zip(self.numbers, self.faces) if face.score < below]
        return sorted(unsure, key=lambda number: self.faces[number - 1].score)

    def summary(self) -> str:
        """One line: how many faces, and how many read as each emotion."""
        if not self.faces:
            return "No face found."
        found = "1 face" if len(self.faces) == 1 else f"{len(self.faces)} faces"
        return f"{found}: " + ", ".join(f"{count} {DISPLAY_NAMES[label].lower()}"
                                        for label, count in self.counts().items())

    def rows(self, file_name: str) -> list[dict]:
        """One flat row per face with its number, for a CSV."""
        return [{"file": file_name, "face": number, **face.to_row()} for number, face in zip(self.numbers, self.faces)]

    def to_dicts(self) -> list[dict]:
        """Each face's JSON (:meth:`FaceResult.to_dict`) with its number first."""
        return [{"face": number, **face.to_dict()} for number, face in zip(self.numbers, self.faces)]
