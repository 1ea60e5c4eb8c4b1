"""Class-folder trees of face images and zips of them (read in memory), with the persons their paths
name; every problem reported with its file path or zip entry."""

from __future__ import annotations

import lzma
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from fer_core.base.errors import DataError, ImageError, SettingError
from fer_core.base.labels import EMOTIONS, label_from_name
from fer_core.datasets.dataset import IMAGE_SIZE, FaceDataset, raise_problems
from fer_core.faces.images import load_image
from fer_core.faces.preprocess import resize_face, to_gray

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
    raise_problems(problems, source)
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
