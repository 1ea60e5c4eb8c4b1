"""Group photos: faces numbered in reading order, tags placed apart on crowded boxes, the summary and the
downloads' face numbers."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS, color_bgr
from fer_core.cli import main
from fer_core.faces.detect import get_detector
from fer_core.faces.samples import group_photo
from fer_core.inference.annotate import NUMBER_ONLY, annotate, overlaps, place_tags, text_height
from fer_core.inference.photos import PhotoFaces, network_view, reading_order
from fer_core.inference.predict import FaceResult


def face(box: tuple[int, int, int, int], label: str = "happy", score: float = 0.9) -> FaceResult:
    """A face of ``box`` whose top emotion is ``label`` with probability ``score`` (the rest shared out)."""
    rest = (1.0 - score) / (len(EMOTIONS) - 1)
    return FaceResult(box, {name: score if name == label else rest for name in EMOTIONS})


# ---------------------------------------------------------------- numbering


def test_reading_order_is_row_by_row_from_the_top_and_left_to_right():
    back = [(300, 20, 50, 50), (100, 28, 50, 50), (200, 14, 50, 50)]  # a slightly uneven row
    front = [(250, 120, 80, 80), (60, 110, 80, 80)]
    boxes = [front[0], back[0], front[1], back[1], back[2]]  # largest first, as the analyser gives them
    assert [boxes[i] for i in reading_order(boxes)] == [back[1], back[2], back[0], front[1], front[0]]


def test_a_small_face_beside_large_ones_stays_in_their_row():
    boxes = [(300, 140, 10, 10), (0, 112, 100, 100), (150, 100, 100, 100)]
    assert reading_order(boxes) == [1, 2, 0]


def test_reading_order_of_no_face_one_face_and_a_column():
    assert reading_order([]) == []
    assert reading_order([(5, 5, 10, 10)]) == [0]
    column = [(0, 200, 40, 40), (0, 0, 40, 40), (0, 100, 40, 40)]
    assert reading_order(column) == [1, 2, 0]


def test_photo_faces_number_the_faces_in_reading_order_and_count_them():
    results = [face((200, 150, 90, 90), "sad", 0.45), face((10, 10, 60, 60), "happy", 0.95),
               face((120, 12, 60, 60), "happy", 0.30), face((10, 150, 90, 90), "neutral", 0.8)]
    photo = PhotoFaces.of(results)
    assert [f.box for f in photo.faces] == [(10, 10, 60, 60), (120, 12, 60, 60), (10, 150, 90, 90),
                                            (200, 150, 90, 90)]
    assert photo.numbers == [1, 2, 3, 4]
    assert photo.counts() == {"happy": 2, "sad": 1, "neutral": 1}  # most first, ties in the labels' order
    assert photo.summary() == "4 faces: 2 happy, 1 sad, 1 neutral"
    assert photo.to_check() == [2, 4]  # 30% before 45%; the others are 50% or more sure
    assert PhotoFaces.of([]).summary() == "No face found." and PhotoFaces.of([]).to_check() == []


def test_downloads_carry_the_numbers_written_on_the_photo():
    photo = PhotoFaces.of([face((200, 10, 50, 50), "sad"), face((10, 10, 50, 50), "fear")])
    rows = photo.rows("class.jpg")
    assert [(row["file"], row["face"], row["x"], row["label"]) for row in rows] == [("class.jpg", 1, 10, "fear"),
                                                                                   ("class.jpg", 2, 200, "sad")]
    assert [(entry["face"], entry["box"][0]) for entry in photo.to_dicts()] == [(1, 10), (2, 200)]
    tags = place_tags([f.box for f in photo.faces], ["Fear 90%", "Sad 90%"], (100, 300), photo.numbers)
    assert [(tag.number, tag.rect[0]) for tag in tags] == [(1, 10), (2, 200)]


def test_network_view_is_the_network_input_scaled_up():
    network_input = np.linspace(0.0, 1.0, 48 * 48, dtype=np.float32).reshape(48, 48, 1)
    seen = FaceResult((0, 0, 10, 10), {name: 1 / 7 for name in EMOTIONS}, network_input=network_input)
    view = network_view(seen, 96)
    assert view.shape == (96, 96) and view.dtype == np.uint8
    assert np.array_equal(view[::2, ::2], np.round(network_input[:, :, 0] * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="no network input"):
        network_view(face((0, 0, 10, 10)))


# ---------------------------------------------------------------- placement


def test_a_lone_face_gets_its_number_and_label_above_its_box():
    (tag,) = place_tags([(100, 100, 80, 80)], ["Happy 90%"], (400, 400), [1])
    assert (tag.number, tag.label, tag.placement) == (1, "Happy 90%", "above")
    assert tag.rect[0] == 100 and tag.rect[1] + tag.rect[3] == 100


def test_a_face_at_the_top_edge_gets_its_tag_inside_the_box_and_a_short_one_below():
    (inside,) = place_tags([(100, 0, 80, 80)], ["Happy 90%"], (400, 400), [1])
    assert inside.placement == "inside" and inside.rect[1] == 0
    (below,) = place_tags([(100, 0, 80, 12)], ["Happy 90%"], (400, 400), [1])
    assert below.placement == "below" and below.rect[1] == 12


def test_a_tag_near_the_right_edge_moves_left_to_stay_in_the_photo():
    (tag,) = place_tags([(370, 100, 30, 30)], ["Surprise 90%"], (400, 400), [1])
    assert tag.rect[0] + tag.rect[2] <= 400 and tag.label == "Surprise 90%"


def test_crowded_faces_get_tags_that_cover_no_other_face_and_no_other_tag():
    boxes = [(20 + 34 * column, 40 + 36 * row, 30, 30) for row, column in itertools.product(range(3), range(8))]
    tags = place_tags(boxes, ["Surprise 55%"] * len(boxes), (160, 320), list(range(1, len(boxes) + 1)))
    assert [tag.number for tag in tags] == list(range(1, len(boxes) + 1))
    for first, second in itertools.combinations(tags, 2):
        assert not overlaps(first.rect, second.rect), (first, second)
    for index, tag in enumerate(tags):
        covered = [box for other, box in enumerate(boxes) if other != index and overlaps(tag.rect, box)]
        assert not covered or tag.placement == NUMBER_ONLY, (tag, covered)
    shortened = [tag for tag in tags if tag.placement == NUMBER_ONLY]
    assert shortened and all(tag.label is None for tag in shortened)  # no room for labels: numbers only
    assert any(tag.label is not None for tag in tags)


def test_in_a_picture_narrower_than_the_label_the_tag_is_the_number_in_the_picture():
    (tag,) = place_tags([(0, 0, 48, 48)], ["Surprise 90%"], (48, 48), [12])
    assert tag.placement == NUMBER_ONLY and tag.rect[0] >= 0 and tag.rect[0] + tag.rect[2] <= 48
    (unnumbered,) = place_tags([(0, 0, 64, 64)], ["Surprise 90%"], (64, 64))
    assert unnumbered.label == "Surprise 90%" and unnumbered.rect[2] <= 64  # smaller letters, still inside
    assert unnumbered.text_height < text_height((64, 64), (0, 0, 64, 64))


def test_place_tags_wants_a_label_and_a_number_for_every_box():
    with pytest.raises(ValueError, match="2 boxes need as many labels"):
        place_tags([(0, 0, 10, 10), (20, 0, 10, 10)], ["Sad 50%"], (100, 100))
    with pytest.raises(ValueError, match="and numbers \\(not 1\\)"):
        place_tags([(0, 0, 10, 10), (20, 0, 10, 10)], ["Sad 50%"] * 2, (100, 100), [1])


def test_tags_read_at_page_width_and_grow_with_the_face_up_to_a_limit():
    assert text_height((480, 640), (0, 0, 20, 20)) == 11  # a small face: still readable (640 / 60)
    assert text_height((480, 640), (0, 0, 80, 80)) == 16  # a fifth of the face
    assert text_height((480, 640), (0, 0, 400, 400)) == 18  # at most 1.6 times the readable height
    assert text_height((3000, 4000), (0, 0, 20, 20)) == 67  # a big photo shown at page width


def test_annotate_draws_on_a_copy(astronaut_bgr):
    face = FaceResult((180, 60, 90, 110), {name: 1 / 7 for name in EMOTIONS} | {"happy": 0.4})
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    for image, unmarked in ((astronaut_bgr, astronaut_bgr), (gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)),
                            (cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA), astronaut_bgr)):
        before = image.copy()
        drawn = annotate(image, [face])
        assert drawn.shape == astronaut_bgr.shape
        np.testing.assert_array_equal(image, before)
        assert not np.array_equal(drawn, unmarked)  # the box and its label are drawn


def test_annotate_writes_each_number_on_a_dark_chip_and_the_label_on_the_emotion_colour():
    image = np.full((300, 400, 3), 255, np.uint8)
    results = [face((40, 100, 100, 100), "sad"), face((220, 100, 100, 100), "happy")]
    drawn = annotate(image, results, [1, 2])
    for result, tag in zip(results, place_tags([r.box for r in results], ["Sad 90%", "Happy 90%"], image.shape,
                                               [1, 2])):
        x, y, w, h = tag.rect
        assert tuple(drawn[y + 1, x + 1]) == (20, 20, 20)  # the number's chip
        assert tuple(drawn[y + 1, x + w - 2]) == color_bgr(result.label)  # the label's
    swapped = annotate(image, results, [2, 1])
    alone = annotate(image, results[:1], [1])
    tag = place_tags([results[0].box], ["Sad 90%"], image.shape, [1])[0]
    x, y, w, h = tag.rect
    assert np.array_equal(drawn[y:y + h, x:x + w], alone[y:y + h, x:x + w])  # face 1's tag says 1
    assert not np.array_equal(drawn[y:y + h, x:x + w], swapped[y:y + h, x:x + w])  # and not 2
    unnumbered = annotate(image, results)
    (x, y, _, _) = place_tags([results[0].box], ["Sad 90%"], image.shape)[0].rect
    assert tuple(unnumbered[y + 1, x + 1]) == color_bgr("sad")  # live frames: the label alone


# ---------------------------------------------------------------- the group photo


@pytest.fixture(scope="module")
def group_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("group") / "group.png"
    Image.fromarray(group_photo()[:, :, ::-1]).save(path)
    return path


def test_the_shipped_group_photo_has_twelve_faces_both_detectors_find():
    photo = group_photo()
    assert photo.shape[2] == 3 and photo.shape[1] == 960
    for detector in ("haar", "mtcnn"):
        assert len(get_detector(detector).detect(photo)) == 12, detector


def test_predict_numbers_the_faces_in_the_output_the_json_and_the_annotated_file(model_store, group_png, tmp_path,
                                                                                capsys):
    out = tmp_path / "annotated.png"
    assert main(["predict", str(group_png), "--detector", "haar", "--annotate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert main(["predict", str(group_png), "--detector", "haar", "--json"]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert [entry["face"] for entry in faces] == list(range(1, 13))
    boxes = [tuple(entry["box"]) for entry in faces]
    assert reading_order(boxes) == list(range(12))  # the numbers go row by row
    assert [box[0] for box in boxes[:5]] == sorted(box[0] for box in boxes[:5])  # the back row, left to right
    for entry in faces:
        assert f"face {entry['face']} {entry['label']} {entry['score']:.2f} at {entry['box']}" in printed
    drawn = np.asarray(Image.open(out))[:, :, ::-1]
    labels = [f"{DISPLAY_NAMES[entry['label']]} {round(entry['score'] * 100)}%" for entry in faces]
    tags = place_tags(boxes, labels, drawn.shape, list(range(1, 13)))
    assert all(tuple(drawn[tag.rect[1] + 1, tag.rect[0] + 1]) == (20, 20, 20) for tag in tags)
