"""How the face tags of a group photo are placed, against 0add411's labels: letter heights and overlaps.

    python scripts/tag_placement.py

Runs the shipped ``default`` model with MTCNN on ``fer_core.faces.samples.group_photo()`` scaled to 960,
1920 and 3840 pixels wide. For each it prints the letter heights of the labels drawn before issue 34
(scale ``max(0.4, w / 220)``, above the box) and of today's tags, and how many label rectangles overlap
each other or another face's box; then the same for today's tag sizes put above every box with no
placement, which is why placement is needed. docs/experiments.md, "Group photos", has the figures.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_core.faces.samples import group_photo  # noqa: E402
from fer_core.inference.annotate import Rect, face_label, overlaps, place_tags, tag_size, text_height  # noqa: E402
from fer_core.inference.photos import PhotoFaces  # noqa: E402
from fer_core.inference.predict import EmotionAnalyser, FaceResult  # noqa: E402

#: The width of the page's main column, to say how tall letters look there.
PAGE_WIDTH = 700


def labels_before(image_width: int, faces: list[FaceResult]) -> list[tuple[Rect, int]]:
    """Each face's label rectangle and letter height as 0add411's ``annotate`` drew them."""
    thickness = max(1, round(image_width / 400))
    drawn = []
    for face in faces:
        x, y, w, _ = face.box
        (text_width, letters), base = cv2.getTextSize(face_label(face), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, w / 220),
                                                      thickness)
        drawn.append(((x, max(0, y - letters - base - 4), text_width + 4, letters + base + 4), letters))
    return drawn


def count_overlaps(rects: list[Rect], boxes: list[Rect]) -> str:
    pairs = sum(overlaps(a, b) for a, b in itertools.combinations(rects, 2))
    covering = sum(overlaps(rect, box) for i, rect in enumerate(rects) for j, box in enumerate(boxes) if i != j)
    return f"{pairs} overlapping pairs, {covering} covering another face"


def main() -> None:
    analyser = EmotionAnalyser.from_store("default", "mtcnn")
    for width in (960, 1920, 3840):
        image = group_photo()
        image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])))
        photo = PhotoFaces.of(analyser.analyse(image))
        boxes = [face.box for face in photo.faces]
        before = labels_before(width, photo.faces)
        tags = place_tags(boxes, [face_label(face) for face in photo.faces], image.shape, photo.numbers)
        print(f"{width} px wide, {len(boxes)} faces")
        for name, rects, heights in (("before", [r for r, _ in before], [h for _, h in before]),
                                     ("after", [t.rect for t in tags], [t.text_height for t in tags])):
            print(f"  {name}: letters {min(heights)}-{max(heights)} px ({min(heights) * PAGE_WIDTH / width:.1f} px "
                  f"on a {PAGE_WIDTH} px page), {count_overlaps(rects, boxes)}")
        print(f"  after: placements {dict(Counter(tag.placement for tag in tags))}")
        above = []
        for number, face in zip(photo.numbers, photo.faces):
            tag_width, tag_height = tag_size(number, face_label(face), text_height(image.shape, face.box))
            above.append((face.box[0], max(0, face.box[1] - tag_height), tag_width, tag_height))
        print(f"  today's tags, always above the box: {count_overlaps(above, boxes)}")


if __name__ == "__main__":
    main()
