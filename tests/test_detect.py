import numpy as np
import pytest
from conftest import ASTRONAUT_FACE, overlap

from fer_core.base.errors import SettingError
from fer_core.faces.detect import DETECTORS, get_detector


@pytest.fixture(scope="module", params=["haar", "mtcnn"])
def detector(request):
    return get_detector(request.param)


def test_both_detectors_find_the_astronaut_face(detector, astronaut_bgr):
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    assert overlap(faces[0].box, ASTRONAUT_FACE) > 0.5
    assert faces[0].score > 0


def test_no_face_in_blank_noise_or_tiny_images(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((480, 640, 3), 200, np.uint8)) == []
    assert detector.detect(rng.integers(0, 255, (240, 320), dtype=np.uint8)) == []
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_no_phantom_faces_on_textured_photos(detector):
    from skimage import data

    for photo in (data.coins(), data.moon(), data.cell(), data.coffee()[:, :, ::-1].copy()):
        assert detector.detect(np.ascontiguousarray(photo)) == []


def test_large_image_is_searched_downscaled_and_boxes_scaled_back(astronaut_bgr):
    import cv2

    detector = get_detector("haar", max_side=640)
    large = cv2.resize(astronaut_bgr, (2048, 2048))
    faces = detector.detect(large)
    assert len(faces) == 1
    expected = tuple(v * 4 for v in ASTRONAUT_FACE)
    assert overlap(faces[0].box, expected) > 0.5


def test_mtcnn_gives_eyes_and_gray_input_works(astronaut_bgr):
    import cv2

    detector = get_detector("mtcnn")
    face = detector.detect(cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY))[0]
    (lx, ly), (rx, ry) = face.eyes
    assert lx < rx and abs(ly - ry) < 20


def test_registry_and_unknown_name():
    assert {"haar", "mtcnn", "none"} <= set(DETECTORS)
    assert get_detector("none").detect(np.zeros((10, 20), np.uint8))[0].box == (0, 0, 20, 10)
    with pytest.raises(SettingError, match="unknown face detector 'yolo'; choose one of haar, mtcnn, none"):
        get_detector("yolo")


def test_live_settings_find_the_same_faces(astronaut_bgr):
    from fer_core.faces.detect import LIVE_OPTIONS
    from fer_core.faces.samples import sample_frame

    for name in LIVE_OPTIONS:
        full, live = get_detector(name), get_detector(name, live=True)
        assert live.max_side < full.max_side
        for image in (astronaut_bgr, sample_frame()):  # webcam-sized faces (80 px and more)
            full_boxes = [d.box for d in full.detect(image)]
            live_boxes = [d.box for d in live.detect(image)]
            assert len(live_boxes) == len(full_boxes) >= 1
            assert all(overlap(a, b) > 0.6 for a, b in zip(full_boxes, live_boxes))


def test_live_settings_still_find_the_face_when_webrtc_scales_the_stream_down():
    """WebRTC sends 320x240 on a slow link or CPU: the smallest face scales with the frame."""
    import cv2

    from fer_core.faces.detect import LIVE_OPTIONS
    from fer_core.faces.samples import sample_frame

    for name in LIVE_OPTIONS:
        live = get_detector(name, live=True)
        for width, height in ((640, 480), (480, 360), (320, 240)):
            frame = cv2.resize(sample_frame(), (width, height), interpolation=cv2.INTER_AREA)
            found = live.detect(frame)
            assert len(found) == 1, (name, width, found)
            assert found[0].box[2] > height / 8  # the astronaut's face, not a small phantom


def test_min_face_fraction_ignores_faces_small_for_the_image(astronaut_bgr):
    detector = get_detector("haar")
    face = detector.detect(astronaut_bgr)[0].box  # about 100 px in a 512 px photo
    assert not get_detector("haar", min_face_fraction=(face[2] + 20) / 512).detect(astronaut_bgr)
    assert get_detector("haar", min_face_fraction=(face[2] - 20) / 512).detect(astronaut_bgr)


def test_haar_finds_most_faces_of_scikit_image_lfw_sample():
    """The figure in HaarDetector's docstring: 91 of 100 LFW faces (upscaled to 150 px) found."""
    import cv2
    from skimage import data

    detector = get_detector("haar")
    found = 0
    for face in data.lfw_subset()[:100]:
        image = cv2.resize((face * 255).astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        found += len(detector.detect(cv2.copyMakeBorder(image, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=128))) > 0
    assert found >= 88


def test_mtcnn_box_cut_by_the_image_edge_keeps_its_visible_part(monkeypatch):
    class EdgeFace:
        """What MTCNN reports for a face partly outside the image: a box starting before its corner."""

        def detect_faces(self, rgb, threshold_onet):
            return [{"box": [-10, -5, 100, 80], "confidence": 0.99, "keypoints": {}},
                    {"box": [-95, 100, 100, 90], "confidence": 0.99, "keypoints": {}}]  # a 5-pixel strip

    detector = get_detector("mtcnn")
    monkeypatch.setattr(detector, "_mtcnn", EdgeFace())
    assert [face.box for face in detector.detect(np.zeros((200, 200, 3), np.uint8))] == [(0, 0, 90, 75)]
