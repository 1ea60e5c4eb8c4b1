"""Boxes, numbers and labels drawn on photos and frames, sized to the picture and kept apart when faces crowd.

Each face gets a tag: its number (when the faces are numbered) on a dark chip, then its label and score
on the emotion's colour. A tag goes above its box, else inside the box's top, else below it, wherever it
covers no other face and no other tag; where none of those is free, the number alone is written, and the
label is left to the list of faces beside the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fer_core.base.labels import DISPLAY_NAMES, color_bgr
from fer_core.inference.predict import FaceResult

#: x, y, width, height in pixels.
Rect = tuple[int, int, int, int]
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Where a tag may go, tried in this order.
PLACEMENTS = ("above", "inside", "below")
NUMBER_ONLY = "number only"
#: The smallest letters a tag shrinks to in a picture too narrow for it.
MIN_TEXT_HEIGHT = 5


@dataclass(frozen=True)
class Tag:
    """What is written at one face: its number and label, the rectangle they fill and how it was placed."""

    number: int | None
    label: str | None
    rect: Rect
    placement: str
    text_height: int


def text_height(image_shape: tuple[int, ...], box: Rect) -> int:
    """The height of a tag's letters in pixels: a fifth of the face, but at least what reads when the whole
    picture is shown about 700 pixels wide, and at most 1.6 times that."""
    readable = max(10, round(max(image_shape[:2]) / 60))
    return int(np.clip(round(box[3] * 0.2), readable, round(readable * 1.6)))


def _font_scale(height: int) -> float:
    (_, unit), _ = cv2.getTextSize("H", FONT, 1.0, 1)
    return height / unit


def _descent(height: int) -> int:
    """How far letters such as g and y reach below the line, at ``height``."""
    _, baseline = cv2.getTextSize("gy", FONT, _font_scale(height), _stroke(height))
    return baseline + _stroke(height)


def _text_size(text: str, height: int) -> tuple[int, int]:
    """Width and height of ``text`` drawn ``height`` pixels tall (capital letters), with a margin each side."""
    (width, _), _ = cv2.getTextSize(text, FONT, _font_scale(height), _stroke(height))
    pad = _padding(height)
    return width + 2 * pad, height + _descent(height) + 2 * pad


def _stroke(height: int) -> int:
    return max(1, round(height / 12))


def _padding(height: int) -> int:
    return max(2, round(height / 4))


def overlaps(a: Rect, b: Rect) -> bool:
    """Whether two rectangles share any pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def face_label(face: FaceResult) -> str:
    """What a tag says after the number: the top emotion and its probability ("Happy 88%")."""
    return f"{DISPLAY_NAMES[face.label]} {face.score:.0%}"


def _candidates(box: Rect, size: tuple[int, int], image_shape: tuple[int, ...]) -> list[tuple[str, Rect]]:
    """The tag's possible rectangles, in the order of :data:`PLACEMENTS`, moved sideways to stay in the
    picture; those that do not fit in it are dropped."""
    x, y, w, h = box
    tag_width, tag_height = size
    image_height, image_width = image_shape[:2]
    if tag_width > image_width:
        return []
    left = int(np.clip(x, 0, image_width - tag_width))
    tops = dict(zip(PLACEMENTS, (y - tag_height, y, y + h)))
    return [(placement, (left, top, tag_width, tag_height)) for placement, top in tops.items()
            if top >= 0 and top + tag_height <= image_height and (placement != "inside" or tag_height <= h)]


def tag_size(number: int | None, label: str | None, height: int) -> tuple[int, int]:
    """Width and height of a tag: the number's chip, then the label's."""
    parts = [text for text in (None if number is None else str(number), label) if text is not None]
    return sum(_text_size(text, height)[0] for text in parts), _text_size("H", height)[1]


def place_tags(boxes: Sequence[Rect], labels: Sequence[str], image_shape: tuple[int, ...],
               numbers: Sequence[int] | None = None) -> list[Tag]:
    """Where each face's tag goes (in the order of ``boxes``): the first placement that overlaps no other
    face's box and no tag placed before it, else the number alone. Where even that finds no room, the
    number (or an unnumbered face's label) takes the first placement that fits in the picture, whatever
    it covers, in smaller letters if the picture is too narrow for it. ``labels`` are the texts after
    the number ("Happy 88%")."""
    if len(labels) != len(boxes) or (numbers is not None and len(numbers) != len(boxes)):
        raise ValueError(f"{len(boxes)} boxes need as many labels (not {len(labels)}) and numbers "
                         f"(not {'none' if numbers is None else len(numbers)})")
    tags: list[Tag] = []
    for index, (box, label) in enumerate(zip(boxes, labels)):
        number = None if numbers is None else numbers[index]
        height = text_height(image_shape, box)
        taken = [other for position, other in enumerate(boxes) if position != index]
        contents = [(number, label)] if number is None else [(number, label), (number, None)]
        tag = next((Tag(number, shown, rect, placement if shown is not None else NUMBER_ONLY, height)
                    for _, shown in contents
                    for placement, rect in _candidates(box, tag_size(number, shown, height), image_shape)
                    if not any(overlaps(rect, other) for other in [*taken, *(t.rect for t in tags)])), None)
        if tag is None:  # crowded on every side, or a picture narrower than the tag
            shown = contents[-1][1]
            while height > MIN_TEXT_HEIGHT and tag_size(number, shown, height)[0] > image_shape[1]:
                height -= 1
            size = tag_size(number, shown, height)
            placement, rect = (_candidates(box, size, image_shape) or [("inside", (box[0], box[1], *size))])[0]
            tag = Tag(number, shown, rect, placement if shown is not None else NUMBER_ONLY, height)
        tags.append(tag)
    return tags


def _write(canvas: np.ndarray, text: str, rect: Rect, height: int, background: tuple[int, int, int],
           ink: tuple[int, int, int]) -> None:
    x, y, w, h = rect
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), background, -1)
    pad = _padding(height)
    cv2.putText(canvas, text, (x + pad, y + pad + height), FONT, _font_scale(height), ink, _stroke(height),
                cv2.LINE_AA)


def annotate(image: np.ndarray, results: Sequence[FaceResult], numbers: Sequence[int] | None = None) -> np.ndarray:
    """A BGR copy of ``image`` with each face's box and tag (:func:`place_tags`): ``numbers[i]`` is the
    number written at ``results[i]``, or with None, the faces carry their label alone (the live stream)."""
    if image.ndim == 2:
        canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        canvas = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    else:
        canvas = image.copy()
    boxes: list[Rect] = [(int(x), int(y), int(w), int(h)) for x, y, w, h in (face.box for face in results)]
    labels = [face_label(face) for face in results]
    thickness = max(2, round(max(canvas.shape[:2]) / 400) + 1)
    for face, (x, y, w, h) in zip(results, boxes):
        cv2.rectangle(canvas, (x, y), (x + w, y + h), color_bgr(face.label), thickness)
    for face, tag in zip(results, place_tags(boxes, labels, canvas.shape, numbers)):
        x, y, _, h = tag.rect
        color = color_bgr(face.label)
        if tag.number is None:
            _write(canvas, tag.label or "", tag.rect, tag.text_height, color, (0, 0, 0))
            continue
        number_width = _text_size(str(tag.number), tag.text_height)[0]
        _write(canvas, str(tag.number), (x, y, number_width, h), tag.text_height, (20, 20, 20), (255, 255, 255))
        if tag.label is not None:
            label_rect = (x + number_width, y, tag.rect[2] - number_width, h)
            _write(canvas, tag.label, label_rect, tag.text_height, color, (0, 0, 0))
    return canvas
