"""fer_core.datasets.collection: faces collected per emotion and recording, their zip, and zips merged back."""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest
from conftest import synthetic_face, zip_bytes

from fer_core.base.errors import DataError
from fer_core.datasets.collection import FaceCollection
from fer_core.datasets.folders import load_zip
from fer_core.faces.images import encode_png


def faces(count: int, label: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthetic_face(label, rng) for _ in range(count)]


def test_recordings_and_snapshots_are_counted_per_emotion():
    collection = FaceCollection()
    first = collection.add_recording("happy", faces(5))
    second = collection.add_recording(4, faces(3, label=4))
    snapshot = collection.add_face("surprised", faces(1, label=5)[0])
    assert len({first, second, snapshot}) == 3
    assert collection.counts() == {"angry": 0, "disgust": 0, "fear": 0, "happy": 5, "sad": 3, "surprise": 1,
                                   "neutral": 0}
    assert collection.recording_counts()["happy"] == 1 and collection.recording_counts()["surprise"] == 1
    assert len(collection) == 9
    assert [face.recording for face in collection.faces("sad")] == [second] * 3


def test_crops_of_any_size_or_colour_are_kept_as_48x48_gray():
    collection = FaceCollection()
    collection.add_recording("fear", [np.zeros((96, 96, 3), np.uint8), np.full((30, 30), 200, np.uint8)])
    images = [face.image for face in collection.faces("fear")]
    assert all(image.shape == (48, 48) and image.dtype == np.uint8 for image in images)
    assert images[1].min() == 200


def test_deleting_faces_and_clearing():
    collection = FaceCollection()
    recording = collection.add_recording("happy", faces(2))
    snapshot = collection.add_face("sad", faces(1, label=4)[0])
    first, second = collection.faces("happy")
    collection.delete_face(first.face_id)
    assert [face.face_id for face in collection.faces("happy")] == [second.face_id]
    assert collection.recording_counts()["happy"] == 1
    collection.delete_face(second.face_id)  # the recording's last face: the recording goes
    assert collection.recording_counts()["happy"] == 0 and collection.counts()["happy"] == 0
    with pytest.raises(DataError, match="no face"):
        collection.delete_face(second.face_id)
    assert collection.to_dataset().groups.tolist() == [snapshot]
    collection.clear()
    assert len(collection) == 0 and recording not in collection.to_zip().decode("latin-1")
    with pytest.raises(DataError, match="no faces"):
        collection.to_dataset()


def test_unknown_emotions_and_empty_recordings_are_refused():
    collection = FaceCollection()
    with pytest.raises(DataError, match="not an emotion"):
        collection.add_recording("bored", faces(1))
    with pytest.raises(DataError, match="not an emotion"):
        collection.add_recording(7, faces(1))
    with pytest.raises(DataError, match="at least one face"):
        collection.add_recording("happy", [])


def test_zip_round_trip_keeps_faces_labels_and_recordings(tmp_path):
    collection = FaceCollection()
    happy = collection.add_recording("happy", faces(4))
    sad = collection.add_recording("sad", faces(2, label=4))
    content = collection.to_zip()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert sorted(archive.namelist())[0] == f"happy/{happy}/0001.png"
    path = tmp_path / "collected.zip"
    path.write_bytes(content)
    read = load_zip(path)  # the data loader reads each recording as a person
    assert sorted(read.groups.tolist()) == sorted([happy] * 4 + [sad] * 2)
    back = FaceCollection()
    assert back.merge_zip(content) == 6
    original, merged = collection.to_dataset(), back.to_dataset()
    assert back.counts() == collection.counts()
    assert sorted(image.tobytes() for image in original.images) == sorted(image.tobytes() for image in merged.images)
    assert len(set(merged.groups.tolist())) == 2


def test_merged_zips_keep_their_recordings_apart():
    volunteer = FaceCollection()
    volunteer.add_recording("happy", faces(3))
    teacher = FaceCollection()
    teacher.add_recording("happy", faces(2, seed=1))
    teacher.merge_zip(volunteer.to_zip(), "alice.zip")
    teacher.merge_zip(volunteer.to_zip(), "bob.zip")  # the same recording names: still three recordings
    assert teacher.counts()["happy"] == 8
    assert teacher.recording_counts()["happy"] == 3
    assert len(set(teacher.to_dataset().groups.tolist())) == 3


def test_a_zip_without_recording_folders_makes_each_face_a_recording():
    png = encode_png(faces(1)[0])
    collection = FaceCollection()
    collection.merge_zip(zip_bytes({"happy/1.png": png, "happy/2.png": png, "sad/1.png": png}))
    assert collection.recording_counts() == {**dict.fromkeys(collection.counts(), 0), "happy": 2, "sad": 1}


@pytest.mark.parametrize(("content", "message"), [
    (b"not a zip at all", "class.zip: not a readable zip file"),
    (zip_bytes({"readme.txt": b"hello"}), "class.zip: no images found in class folders"),
    (zip_bytes({"bored/rec-1/1.png": encode_png(np.zeros((48, 48), np.uint8))}),
     "folder 'bored/rec-1' is not an emotion class"),
    (zip_bytes({"happy/rec-1/1.png": b"this is no png"}), "class.zip:happy/rec-1/1.png"),
], ids=["not a zip", "no class folders", "unknown class", "not an image"])
def test_bad_zips_are_refused_with_the_reason_and_nothing_is_added(content, message):
    collection = FaceCollection()
    collection.add_face("happy", faces(1)[0])
    with pytest.raises(DataError, match=message) as caught:
        collection.merge_zip(content, "class.zip")
    assert "fer_lab_collection_" not in str(caught.value)  # the zip's name, not where it was spooled
    assert len(collection) == 1


def test_the_collection_refuses_faces_beyond_its_limit():
    collection = FaceCollection(max_faces=4)
    collection.add_recording("happy", faces(3))
    with pytest.raises(DataError, match="at most 4"):
        collection.add_recording("sad", faces(2, label=4))
    with pytest.raises(DataError, match="more than the 4"):
        collection.merge_zip(collection.to_zip())
    assert len(collection) == 3


def test_faces_added_from_several_threads_are_all_kept():
    collection = FaceCollection()
    crops = faces(5)

    def record() -> None:
        for _ in range(20):
            collection.add_recording("happy", crops)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(collection) == 400 and collection.recording_counts()["happy"] == 80
    assert len({face.face_id for face in collection.faces("happy")}) == 400
