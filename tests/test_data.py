import gzip
import io
import zipfile

import numpy as np
import pytest
from conftest import synthetic_dataset, write_fer_csv, zip_bytes
from PIL import Image

from fer_core.base.errors import DataError, FerError
from fer_core.base.labels import label_from_name
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.fer2013 import load_fer2013_csv
from fer_core.datasets.folders import load_image_folder, load_zip
from fer_core.datasets.load import load_dataset
from fer_core.datasets.splits import stratified_folds, stratified_split, train_validation
from fer_core.service.uploads import spool_upload


def _row(label="3", pixels=None):
    values = pixels if pixels is not None else " ".join(["128"] * 2304)
    return f"{label},{values},Training"


@pytest.mark.parametrize(("bad_row", "message"), [
    (_row(pixels=" ".join(["1"] * 100)), "expected 2304 pixel values (48x48), found 100"),
    (_row(pixels=" ".join(["1"] * 2303 + ["x"])), "non-numeric pixel value 'x'"),
    (_row(label="9"), "emotion label '9' is not 0-6"),
    (_row(label="happy"), "emotion label 'happy' is not 0-6"),
    (_row(pixels=" ".join(["300"] * 2304)), "pixel values must lie between 0 and 255"),
])
def test_bad_csv_row_is_reported_with_its_line_number(tmp_path, bad_row, message):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(["emotion,pixels,Usage", _row(), _row(), bad_row, _row()]) + "\n")
    with pytest.raises(DataError) as error:
        load_fer2013_csv(path)
    assert f"line 4: {message}" in str(error.value)
    assert str(path) in str(error.value)


def test_csv_missing_column_and_empty_file(tmp_path):
    path = tmp_path / "nopixels.csv"
    path.write_text("emotion,Usage\n3,Training\n")
    with pytest.raises(DataError, match="line 1: missing column"):
        load_fer2013_csv(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_fer2013_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataError, match="no data rows"):
        load_fer2013_csv(header_only)


def test_csv_gzip_and_without_usage(tmp_path):
    images, labels = synthetic_dataset(14)
    plain = tmp_path / "plain.csv"
    write_fer_csv(plain, images, labels)
    text = plain.read_text().replace(",Training", "").replace(",Usage", "")
    gz = tmp_path / "faces.csv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(text)
    dataset = load_dataset(gz)
    assert len(dataset) == 14
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.usages() == ["Training"]


def test_csv_usage_column_and_cache(fer_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    first = load_dataset(fer_csv, cache=True)
    assert list((tmp_path / "cache").glob("*.npz"))
    second = load_dataset(fer_csv, cache=True)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.usages() == ["PrivateTest", "PublicTest", "Training"]
    train, validation = train_validation(first)
    assert len(train) == 56 and len(validation) == 21


def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_with_synonym_class_names_loads(tmp_path):
    images, _ = synthetic_dataset(7)
    names = {"Anger": 0, "disgusted": 1, "scared": 2, "HAPPINESS": 3, "sadness": 4, "Surprised": 5, "neutral": 6}
    for index, (folder, _code) in enumerate(names.items()):
        _save_png(tmp_path / "train" / folder / f"{index}.png", images[index])
        # A colour image of another size is made gray 48x48.
        big = np.repeat(np.kron(images[index], np.ones((2, 2), np.uint8))[..., None], 3, axis=2)
        _save_png(tmp_path / "test" / folder / f"{index}_big.png", big)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    dataset = load_image_folder(tmp_path)
    assert len(dataset) == 14
    assert dataset.images.shape == (14, 48, 48)
    assert sorted(dataset.labels.tolist()) == sorted(list(names.values()) * 2)
    assert dataset.usages() == ["PublicTest", "Training"]


def test_folder_problems_name_the_path(tmp_path):
    images, _ = synthetic_dataset(2)
    _save_png(tmp_path / "happy" / "a.png", images[0])
    _save_png(tmp_path / "bored" / "b.png", images[1])
    (tmp_path / "sad").mkdir()
    (tmp_path / "sad" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path)
    text = str(error.value)
    assert "2 problem(s)" in text
    assert "'bored' is not an emotion class" in text
    assert str(tmp_path / "sad" / "broken.jpg") in text


def _png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_zip_of_class_folders_loads_in_memory(tmp_path):
    images, _ = synthetic_dataset(3)
    path = tmp_path / "faces.zip"
    path.write_bytes(zip_bytes({
        "dataset/train/happy/1.png": _png_bytes(images[0]),
        "dataset/train/fearful/2.png": _png_bytes(images[1]),
        "dataset/validation/sad/3.png": _png_bytes(images[2]),
        "__MACOSX/dataset/train/happy/._1.png": b"junk",
        "dataset/readme.txt": b"hello",
    }))
    dataset = load_dataset(path)
    assert sorted(dataset.labels.tolist()) == [2, 3, 4]
    assert dataset.usages() == ["PublicTest", "Training"]


def test_zip_with_path_traversal_is_refused(tmp_path):
    path = tmp_path / "evil.zip"
    path.write_bytes(zip_bytes({"happy/ok.png": _png_bytes(np.zeros((48, 48), np.uint8)),
                                 "../../escaped.png": b"x"}))
    with pytest.raises(DataError, match="outside the archive"):
        load_zip(path)
    assert not (tmp_path.parent / "escaped.png").exists()


def test_zip_with_a_damaged_entry_names_it(tmp_path):
    face = np.random.default_rng(0).integers(0, 4, (48, 48)).astype(np.uint8) * 60
    image = io.BytesIO()
    Image.fromarray(face).save(image, format="BMP")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
        writer.writestr("happy/1.bmp", image.getvalue())
    damaged = bytearray(archive.getvalue())
    start = 30 + len("happy/1.bmp")  # the entry's compressed bytes follow its local header
    damaged[start + 5:start + 40] = bytes(byte ^ 0xFF for byte in damaged[start + 5:start + 40])
    path = tmp_path / "damaged.zip"
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"happy/1\.bmp: cannot read"):
        load_zip(path)


def test_not_a_zip_nor_csv(tmp_path):
    path = tmp_path / "random.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError):
        load_dataset(path)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.csv")


def test_label_synonyms():
    assert label_from_name("Happiness") == 3
    assert label_from_name("3_happy") == 3
    assert label_from_name("fearful") == 2
    assert label_from_name("bored") is None
    assert label_from_name("not_happy") is None


def test_stratified_split_and_folds():
    images, labels = synthetic_dataset(140)
    dataset = FaceDataset(images, labels, np.array(["Training"] * 140))
    train, validation = stratified_split(dataset, 0.2, seed=1)
    assert len(validation) == 28
    assert np.bincount(validation.labels).tolist() == [4] * 7
    folds = stratified_folds(dataset, 5)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(140))
    for train_index, test_index in folds:
        assert not set(train_index) & set(test_index)
        assert np.bincount(labels[test_index]).tolist() == [4] * 7


def test_server_paths_are_confined_to_the_data_folders(tmp_path, monkeypatch):
    from fer_core.service.uploads import resolve_server_path

    monkeypatch.delenv("FER_LAB_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="set FER_LAB_DATA_DIR"):
        resolve_server_path("/etc/passwd")
    data = tmp_path / "data"
    (data / "fer").mkdir(parents=True)
    (data / "fer" / "faces.csv").write_text("emotion,pixels\n")
    monkeypatch.setenv("FER_LAB_DATA_DIR", str(data))
    assert resolve_server_path("fer/faces.csv") == (data / "fer" / "faces.csv").resolve()
    assert resolve_server_path(str(data / "fer")) == (data / "fer").resolve()
    for outside in ("/etc/passwd", "../outside.csv", str(data / ".." / "x.csv")):
        with pytest.raises(DataError, match="outside the data folder"):
            resolve_server_path(outside)
    with pytest.raises(DataError, match="no such file"):
        resolve_server_path("fer/missing.csv")


def test_damaged_gzip_bom_and_odd_digits(tmp_path):
    images, labels = synthetic_dataset(7)
    plain = tmp_path / "plain.csv"
    write_fer_csv(plain, images, labels)
    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert len(load_fer2013_csv(bom)) == 7
    damaged = tmp_path / "damaged.csv.gz"
    damaged.write_bytes(gzip.compress(plain.read_bytes())[:300] + b"\x00" * 50)
    with pytest.raises(DataError, match="damaged.csv.gz: not a readable CSV"):
        load_fer2013_csv(damaged)
    odd = tmp_path / "odd.csv"
    odd.write_text("emotion,pixels\n\u00b2," + " ".join(["1"] * 2304) + "\n")
    with pytest.raises(DataError, match="line 2: emotion label"):
        load_fer2013_csv(odd)


def test_damaged_cache_is_rebuilt(fer_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    first = load_dataset(fer_csv, cache=True)
    (cache_file,) = (tmp_path / "cache").glob("*.npz")
    cache_file.write_bytes(b"half written")
    again = load_dataset(fer_csv, cache=True)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert cache_file.stat().st_size > 1000


def test_private_test_rows_are_never_trained_on_and_tiny_sets_are_refused():
    images, labels = synthetic_dataset(70)
    usage = np.array(["Training"] * 56 + ["PrivateTest"] * 14)
    train, validation = train_validation(FaceDataset(images, labels, usage, "set.csv"))
    assert len(train) + len(validation) == 56
    assert "PrivateTest" not in train.usages() + validation.usages()
    with pytest.raises(DataError, match="set.csv: 5 faces"):
        train_validation(FaceDataset(images[:5], labels[:5], np.array(["Training"] * 5), "set.csv"))


def test_zip_beyond_the_size_limit_or_with_a_bomb_is_refused(tmp_path):
    big = tmp_path / "big.zip"
    noise = np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)
    big.write_bytes(zip_bytes({f"happy/{i}.png": _png_bytes(noise) for i in range(3)}))
    with pytest.raises(DataError, match="exceeds the limit"):
        load_zip(big, max_uncompressed=50_000)
    bomb = tmp_path / "bomb.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("happy/zeros.png", b"\0" * 5_000_000)
    bomb.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="zip bomb"):
        load_zip(bomb)


def test_photos_are_cropped_to_their_largest_face_when_asked(tmp_path, astronaut_bgr, fer_csv):
    """Labelled photos from another source (not face crops): the detector's largest face is kept,
    cropped as the live path crops it, and a photo without a face is kept whole and counted."""
    import cv2

    from fer_core.faces.detect import LargestFaceCropper, get_detector
    from fer_core.faces.preprocess import Preprocessing, crop_face, resize_face, to_gray

    (tmp_path / "photos" / "happy").mkdir(parents=True)
    (tmp_path / "photos" / "sad").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "happy" / "astronaut.png"), astronaut_bgr)
    cv2.imwrite(str(tmp_path / "photos" / "sad" / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    detector = get_detector("haar")
    cropper = LargestFaceCropper(detector, Preprocessing(margin=0.1))
    dataset = load_dataset(tmp_path / "photos", crop=cropper)
    assert (cropper.found, cropper.missed) == (1, 1)
    face = detector.detect(astronaut_bgr)[0]
    expected = resize_face(crop_face(to_gray(astronaut_bgr), face.box, 0.1), 48)
    np.testing.assert_array_equal(dataset.images[list(dataset.labels).index(3)], expected)
    whole = load_dataset(tmp_path / "photos")
    assert not np.array_equal(whole.images[list(whole.labels).index(3)], expected)
    np.testing.assert_array_equal(dataset.images[list(dataset.labels).index(4)], np.full((48, 48), 90, np.uint8))

    with pytest.raises(DataError, match="already cropped"):
        load_dataset(fer_csv, crop=cropper)


def test_failed_upload_copy_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    class BrokenUpload(io.BytesIO):
        def read(self, size=-1):
            raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        spool_upload(BrokenUpload(b"x"), ".zip")
    assert list(tmp_path.iterdir()) == []
    copied = spool_upload(io.BytesIO(b"faces"), ".zip")
    assert copied.parent == tmp_path and copied.read_bytes() == b"faces"


def test_a_cache_that_cannot_be_written_is_reported(fer_csv, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("FER_LAB_CACHE", str(blocker / "cache"))
    with pytest.raises(FerError, match=f"{blocker / 'cache'}: cannot write the dataset cache"):
        load_dataset(fer_csv, cache=True)
    assert len(load_dataset(fer_csv)) == 91  # without the cache the same file loads
