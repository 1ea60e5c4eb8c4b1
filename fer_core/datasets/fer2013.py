"""FER2013 in Kaggle's format: a CSV (plain or gzip) of ``emotion,pixels[,Usage]`` rows, every bad row
reported with its line."""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np

from fer_core.base.errors import DataError
from fer_core.base.labels import NUM_CLASSES
from fer_core.datasets.dataset import FER_PIXELS, IMAGE_SIZE, FaceDataset, raise_problems

_LABEL_CODES = {str(code) for code in range(NUM_CLASSES)}


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
    raise_problems(problems, str(path))
    if not images:
        raise DataError(f"{path}: the CSV has a header but no data rows")
    return FaceDataset(
        np.stack(images), np.array(labels, dtype=np.int64), np.array(usage), str(path)
    )
