"""Any labelled-face source by what its path is (FER2013 CSV, class folders, zip), with a parsed copy
kept on disk for the next load."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from fer_core.base.errors import DataError, FerError
from fer_core.base.files import write_atomically
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.fer2013 import load_fer2013_csv
from fer_core.datasets.folders import FaceCrop, load_image_folder, load_zip


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
        arrays = {"images": dataset.images, "labels": dataset.labels, "usage": dataset.usage}
        if dataset.groups is not None:
            arrays["groups"] = dataset.groups
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            # allow_pickle is numpy's default, named so that no array can be taken for it
            write_atomically(cache_file, lambda path: np.savez(path, allow_pickle=True, **arrays))
        except OSError as error:
            raise FerError(f"{cache_file.parent}: cannot write the dataset cache ({error.strerror or error}); "
                           "set FER_LAB_CACHE to a writable folder or leave out the cache") from error
    return dataset
