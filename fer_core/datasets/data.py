"""Labelled face datasets: FER2013 CSVs (plain or gzip), class-folder trees and zips of them.

Every loader returns a :class:`FaceDataset` of 48x48 uint8 gray faces with FER2013 labels, and
every problem in the input is reported with its place (CSV line, file path or zip entry).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from fer_core.base.errors import DataError, FerError, ImageError, SettingError
from fer_core.faces.images import load_image
from fer_core.base.labels import EMOTIONS, NUM_CLASSES, label_from_name
from fer_core.faces.preprocess import resize_face, to_gray

IMAGE_SIZE = 48
FER_PIXELS = IMAGE_SIZE * IMAGE_SIZE
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".pgm"}
#: Usage values of FER2013 and the folder names that mean the same split.
USAGE_BY_FOLDER = {
    "training": "Training",
    "train": "Training",
    "publictest": "PublicTest",
    "public_test": "PublicTest",
    "validation": "PublicTest",
    "val": "PublicTest",
    "valid": "PublicTest",
    "test": "PublicTest",
    "privatetest": "PrivateTest",
    "private_test": "PrivateTest",
}
#: Limits on a zip's content, against zip bombs.
MAX_ZIP_UNCOMPRESSED = 4 * 1024**3
MAX_ZIP_RATIO = 200
MAX_PROBLEMS_SHOWN = 20
_LABEL_CODES = {str(code) for code in range(NUM_CLASSES)}


@dataclass
class FaceDataset:
    """Gray faces (N, 48, 48) uint8 with labels (N,) in FER2013 codes, and each row's usage.

    ``groups`` (N,) names the person each face shows where the data says so (folder datasets, see
    :func:`face_person`), else is None (FER2013 CSVs name no persons); cross-validation keeps each
    person's faces in one fold, so no fold is tested on a person it was trained on.
    """

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    source: str = ""
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask_or_index: np.ndarray) -> FaceDataset:
        """Rows picked by a boolean mask or an index array."""
        return FaceDataset(
            self.images[mask_or_index],
            self.labels[mask_or_index],
            self.usage[mask_or_index],
            self.source,
            None if self.groups is None else self.groups[mask_or_index],
        )

    def with_usage(self, *usages: str) -> FaceDataset:
        """Rows whose ``Usage`` is one of ``usages``."""
        return self.subset(np.isin(self.usage, usages))

    def usages(self) -> list[str]:
        """The distinct usage values present, in a stable order."""
        return sorted(set(self.usage.tolist()))


def _raise_problems(problems: list[str], what: str) -> None:
    if not problems:
        return
    shown = problems[:MAX_PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise DataError(f"{what}: {len(problems)} problem(s)\n  " + "\n  ".join(shown) + tail)


# ---------------------------------------------------------------- FER2013 CSV


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # -sig: spreadsheet programs write a BOM


def _parse_pixels(text: str) -> np.ndarray | str:
    """Pixels of one row, or the reason they are unusable."""
    tokens = text.split()
    if len(tokens) != FER_PIXELS:
        return f"expected {FER_PIXELS} pixel values (48x48), found {len(tokens)}"
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        return f"non-numeric pixel value {bad!r}"
    if values.min() < 0 or values.max() > 255 or not np.all(np.isfinite(values)):
        return "pixel values must lie between 0 and 255"
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def load_fer2013_csv(path: str | os.PathLike) -> FaceDataset:
    """Read a FER2013 CSV (``emotion,pixels[,Usage]``; plain or gzip).

    Rows without a ``Usage`` column are marked ``Training``. Raises :class:`DataError` naming
    the line of every bad row.
    """
    path = Path(path)
    try:
        handle = _open_text(path)
    except OSError as error:
        raise DataError(f"{path}: cannot open ({error.strerror or error})") from error
    images: list[np.ndarray] = []
    labels: list[int] = []
    usage: list[str] = []
    problems: list[str] = []
    try:
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty")
            columns = [name.strip().lower() for name in header]
            missing = [name for name in ("emotion", "pixels") if name not in columns]
            if missing:
                raise DataError(
                    f"{path}, line 1: missing column(s) {', '.join(missing)}; a FER2013 CSV "
                    f"has the header 'emotion,pixels,Usage' (found {','.join(header)!r})"
                )
            emotion_col, pixels_col = columns.index("emotion"), columns.index("pixels")
            usage_col = columns.index("usage") if "usage" in columns else None
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) <= max(emotion_col, pixels_col):
                    problems.append(f"line {line}: expected {len(header)} columns, found {len(row)}")
                    continue
                label_text = row[emotion_col].strip()
                if label_text not in _LABEL_CODES:
                    problems.append(f"line {line}: emotion label {label_text!r} is not 0-6")
                    continue
                pixels = _parse_pixels(row[pixels_col])
                if isinstance(pixels, str):
                    problems.append(f"line {line}: {pixels}")
                    continue
                images.append(pixels)
                labels.append(int(label_text))
                row_usage = row[usage_col].strip() if usage_col is not None and usage_col < len(row) else ""
                usage.append(row_usage or "Training")
    except (UnicodeDecodeError, EOFError, OSError, zlib.error, csv.Error) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from error
    _raise_problems(problems, str(path))
    if not images:
        raise DataError(f"{path}: the CSV has a header but no data rows")
    return FaceDataset(
        np.stack(images), np.array(labels, dtype=np.int64), np.array(usage), str(path)
    )


# ---------------------------------------------------------------- class folders and zips


def _usage_and_label(parts: tuple[str, ...]) -> tuple[str, int | None]:
    """The split and class of an image from the folder names on its path (file name excluded)."""
    usage = "Training"
    label = None
    for part in parts:
        key = part.strip().lower()
        if key in USAGE_BY_FOLDER:
            usage = USAGE_BY_FOLDER[key]
        code = label_from_name(part)
        if code is not None:
            label = code
    return usage, label


def _person_pattern(text: str | None) -> re.Pattern[str] | None:
    """A regular expression that finds the person in a face's file path (see :func:`face_person`)."""
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as error:
        raise SettingError(f"person pattern {text!r} is not a regular expression ({error})") from error


def face_person(parts: tuple[str, ...], pattern: re.Pattern[str] | None = None) -> str | None:
    """The person an image shows, from its path inside the dataset (``parts``, file name last).

    With ``pattern``: its first group (or the whole match when it has none) searched in the path
    joined by ``/``, e.g. ``^(S\\d+)_`` for CK+'s ``S005_001_00000011.png``. Without: the first folder
    below the class folder that is not a split folder (``happy/alice/1.png`` and
    ``happy/train/alice/1.png`` both show alice). None when nothing names a person.
    """
    if pattern is not None:
        match = pattern.search("/".join(parts))
        if match is None:
            return None
        return match.group(1 if pattern.groups else 0) or None  # an empty or unmatched group names no one
    folders = parts[:-1]
    classes = [index for index, part in enumerate(folders) if label_from_name(part) is not None]
    below = folders[classes[-1] + 1:] if classes else ()
    return next((part for part in below if part.strip().lower() not in USAGE_BY_FOLDER), None)


#: Turns a decoded photo (gray or BGR) into the gray face to keep, e.g. ``detect.LargestFaceCropper``.
FaceCrop = Callable[[np.ndarray], np.ndarray]


def _face_from_bytes(data: bytes, name: str, crop: FaceCrop | None) -> np.ndarray:
    image = load_image(data, name=name)
    return resize_face(crop(image) if crop is not None else to_gray(image), IMAGE_SIZE)


def _collect(entries: Iterator[tuple[tuple[str, ...], str, bytes | Exception]], source: str,
             crop: FaceCrop | None = None, persons: re.Pattern[str] | None = None) -> FaceDataset:
    """Build a dataset from (path parts inside the dataset, display name, bytes or read error) entries.

    Faces get persons (``groups``) when every one has one, by :func:`face_person` with ``persons``;
    with ``persons`` given, a path it does not match is a problem.
    """
    images, labels, usage, people, problems = [], [], [], [], []
    for parts, name, data in entries:
        split, label = _usage_and_label(parts[:-1])
        if label is None:
            folder = "/".join(parts[:-1]) or "(top level)"
            problems.append(
                f"{name}: folder {folder!r} is not an emotion class; use one of "
                f"{', '.join(EMOTIONS)} (or a synonym such as happiness, sadness, surprised)"
            )
            continue
        person = face_person(parts, persons)
        if persons is not None and person is None:
            problems.append(f"{name}: the person pattern {persons.pattern!r} finds no person in {'/'.join(parts)!r}")
            continue
        if isinstance(data, Exception):
            problems.append(f"{name}: cannot read ({data})")
            continue
        try:
            images.append(_face_from_bytes(data, name, crop))
        except ImageError as error:
            problems.append(str(error))
            continue
        labels.append(label)
        usage.append(split)
        people.append(person)
    _raise_problems(problems, source)
    if not images:
        raise DataError(f"{source}: no images found in class folders ({', '.join(EMOTIONS)})")
    groups = np.array(people) if all(people) else None
    return FaceDataset(np.stack(images), np.array(labels, dtype=np.int64), np.array(usage), source, groups)


def load_image_folder(root: str | os.PathLike, *, crop: FaceCrop | None = None,
                      persons: str | None = None) -> FaceDataset:
    """Read a tree with one subfolder per class (optionally inside train/test folders).

    Images of any size or mode are made gray 48x48 (after ``crop``, for photos that are not face
    crops); files that are not images (by extension) are skipped, hidden files too. Persons come
    from folders below the class folders, or from the regular expression ``persons`` (see
    :func:`face_person`).
    """
    pattern = _person_pattern(persons)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")

    def entries() -> Iterator[tuple[tuple[str, ...], str, bytes | Exception]]:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if any(part.startswith(".") or part == "__MACOSX" for part in relative.parts):
                continue
            if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                data: bytes | Exception = path.read_bytes()
            except OSError as error:
                data = error
            yield relative.parts, str(path), data

    return _collect(entries(), str(root), crop, pattern)


def load_zip(path: str | os.PathLike, *, max_uncompressed: int = MAX_ZIP_UNCOMPRESSED,
             crop: FaceCrop | None = None, persons: str | None = None) -> FaceDataset:
    """Read a zip of a class-folder tree in memory (as :func:`load_image_folder`); nothing is
    extracted to disk, and persons as there.

    Entries with absolute paths or ``..`` are refused, and so is a zip whose content exceeds
    ``max_uncompressed`` bytes or is compressed suspiciously well (a zip bomb).
    """
    pattern = _person_pattern(persons)
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path}: not a readable zip file ({error})") from error
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        unsafe = [
            info.filename
            for info in infos
            if info.filename.startswith(("/", "\\"))
            or ".." in PurePosixPath(info.filename.replace("\\", "/")).parts
            or ":" in PurePosixPath(info.filename).parts[0]
        ]
        if unsafe:
            raise DataError(
                f"{path}: refusing entries that point outside the archive: {', '.join(unsafe[:5])}"
            )
        total = sum(info.file_size for info in infos)
        if total > max_uncompressed:
            raise DataError(
                f"{path}: content of {total / 1e6:.0f} MB exceeds the limit of "
                f"{max_uncompressed / 1e6:.0f} MB"
            )
        bombs = [i.filename for i in infos if i.compress_size and i.file_size / i.compress_size > MAX_ZIP_RATIO]
        if bombs:
            raise DataError(f"{path}: entry {bombs[0]} is compressed {MAX_ZIP_RATIO}x or more (a zip bomb?)")

        def entries() -> Iterator[tuple[tuple[str, ...], str, bytes | Exception]]:
            for info in infos:
                member = PurePosixPath(info.filename.replace("\\", "/"))
                if any(part.startswith(".") or part == "__MACOSX" for part in member.parts):
                    continue
                if member.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                try:
                    data: bytes | Exception = archive.read(info)
                except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError,
                        NotImplementedError) as error:  # damaged, or compressed in a way Python cannot read
                    data = error
                yield member.parts, f"{path}:{info.filename}", data

        return _collect(entries(), str(path), crop, pattern)


# ---------------------------------------------------------------- any source, with a cache


def _cache_file(path: Path, persons: str | None) -> Path:
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|persons:{persons}"
    key = hashlib.sha1(identity.encode()).hexdigest()[:16]
    base = Path(os.environ.get("FER_LAB_CACHE", Path.home() / ".cache" / "fer_lab"))
    return base / f"dataset-{key}.npz"


def load_dataset(path: str | os.PathLike, *, cache: bool = False, crop: FaceCrop | None = None,
                 persons: str | None = None) -> FaceDataset:
    """Load a FER2013 CSV(.gz), a class-folder tree or a zip of one, by what ``path`` is.

    With ``cache``, a parsed copy is kept under ``$FER_LAB_CACHE`` (default ~/.cache/fer_lab)
    so the next load of the same unchanged file takes a second instead of tens. ``crop`` (for
    folders and zips of photos) picks the face out of each photo; such loads are not cached.
    ``persons``, a regular expression, finds each face's person in its file path (folders and
    zips; see :func:`face_person`).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return load_image_folder(path, crop=crop, persons=persons)
    if persons is not None and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: a FER2013 CSV names no files, so no persons; a person pattern is for a "
                        "folder or zip of images")
    if crop is not None:
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path}: a FER2013 CSV holds faces already cropped; finding faces is for a "
                            "folder or zip of photos")
        return load_zip(path, crop=crop, persons=persons)
    cache_file = _cache_file(path, persons) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file) as stored:
                groups = stored["groups"] if "groups" in stored.files else None
                return FaceDataset(stored["images"], stored["labels"], stored["usage"], str(path), groups)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cache_file.unlink(missing_ok=True)  # a damaged cache is rebuilt below
    dataset = load_zip(path, persons=persons) if zipfile.is_zipfile(path) else load_fer2013_csv(path)
    if cache_file is not None:
        partial = cache_file.with_suffix(".partial.npz")
        arrays = {"images": dataset.images, "labels": dataset.labels, "usage": dataset.usage}
        if dataset.groups is not None:
            arrays["groups"] = dataset.groups
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(partial, **arrays)
            os.replace(partial, cache_file)  # never leave a half-written cache under the final name
        except OSError as error:
            raise FerError(f"{cache_file.parent}: cannot write the dataset cache ({error.strerror or error}); "
                           "set FER_LAB_CACHE to a writable folder or leave out the cache") from error
    return dataset


# ---------------------------------------------------------------- splits


def stratified_split(
    dataset: FaceDataset, validation_fraction: float = 0.1, seed: int = 0
) -> tuple[FaceDataset, FaceDataset]:
    """Split into train and validation parts with the same class proportions."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(dataset.labels, minlength=NUM_CLASSES)
    test_size = max(int(round(validation_fraction * len(dataset))), np.count_nonzero(counts))
    # Stratify when every class has two faces and the validation part can hold one of each.
    stratify = dataset.labels if counts[counts > 0].min() >= 2 and test_size < len(dataset) else None
    train_index, val_index = train_test_split(
        np.arange(len(dataset)), test_size=test_size if stratify is not None else validation_fraction,
        random_state=seed, stratify=stratify
    )
    return dataset.subset(train_index), dataset.subset(val_index)


def stratified_folds(dataset: FaceDataset, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (train, test) of ``k`` folds, each test part with the class proportions of the whole.

    Where the dataset names persons (``groups``), each person's faces fall in one test part
    (scikit-learn's StratifiedGroupKFold, whose proportions are then as close as whole persons allow).
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if k < 2:
        raise SettingError(f"cross-validation needs 2 folds or more, not {k}")
    where = dataset.source or "the dataset"
    counts = np.bincount(dataset.labels, minlength=NUM_CLASSES)
    if not counts.any():
        raise DataError(f"{where}: no faces to split into folds")
    smallest = int(counts[counts > 0].min())
    if k > smallest:
        name = EMOTIONS[int(np.flatnonzero(counts == smallest)[0])]
        raise DataError(f"{where}: {k} folds need {k} or more faces of each class present, but {name} has "
                        f"{smallest}; use fewer folds, or more {name} faces")
    if dataset.groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        persons = len(np.unique(dataset.groups))
        if k > persons:
            raise DataError(f"{where}: {k} folds that keep each person's faces together need {k} persons or "
                            f"more, but the data names {persons}; use fewer folds")
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(dataset)), dataset.labels, dataset.groups))


def train_validation(dataset: FaceDataset, seed: int = 0) -> tuple[FaceDataset, FaceDataset]:
    """FER2013's own Training/PublicTest split when present, else a stratified 10% split.

    PrivateTest rows are never trained or selected on: they are kept for the final test.
    """
    if "Training" in dataset.usages() and "PublicTest" in dataset.usages():
        return dataset.with_usage("Training"), dataset.with_usage("PublicTest")
    usable = dataset.subset(dataset.usage != "PrivateTest")
    counts = np.bincount(usable.labels, minlength=NUM_CLASSES)
    if len(usable) < 2 * NUM_CLASSES or np.count_nonzero(counts) < 2:
        raise DataError(f"{dataset.source}: {len(usable)} faces in {np.count_nonzero(counts)} class(es) are too few "
                        f"to train and validate on; give at least {2 * NUM_CLASSES} faces of two or more classes")
    return stratified_split(usable, 0.1, seed)


def server_data_roots() -> list[Path]:
    """Folders whose datasets the app may open by path: ``$FER_LAB_DATA_DIR`` (os.pathsep-separated).

    Unset, no server path is allowed: a hosted app must not open any file a visitor names.
    """
    text = os.environ.get("FER_LAB_DATA_DIR", "")
    return [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]


def resolve_server_path(text: str) -> Path:
    """A dataset path typed by an app user, checked to lie inside one of :func:`server_data_roots`."""
    roots = server_data_roots()
    if not roots:
        raise DataError("opening datasets by path is off; set FER_LAB_DATA_DIR on the server to allow a folder")
    candidate = Path(text.strip()).expanduser()
    path = (candidate if candidate.is_absolute() else roots[0] / candidate).resolve()
    if not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise DataError(f"{text.strip()}: outside the data folder(s) this server allows ({allowed})")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder on the server")
    return path


def spool_upload(upload: BinaryIO, suffix: str) -> Path:
    """Copy an uploaded file to a private temporary file (loaders need a path); the caller deletes it."""
    with tempfile.NamedTemporaryFile(prefix="fer_lab_upload_", suffix=suffix, delete=False) as handle:
        try:
            shutil.copyfileobj(upload, handle, length=1 << 20)
        except BaseException:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)  # a partial upload is not left behind
            raise
    return Path(handle.name)
