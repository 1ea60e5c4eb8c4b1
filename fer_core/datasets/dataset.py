"""The dataset every loader returns: 48x48 uint8 gray faces with FER2013 labels and each row's usage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_core.base.errors import DataError

IMAGE_SIZE = 48
FER_PIXELS = IMAGE_SIZE * IMAGE_SIZE
#: Problems of one input listed in its error; the rest are counted.
MAX_PROBLEMS_SHOWN = 20


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


def raise_problems(problems: list[str], what: str) -> None:
    """Raise one DataError listing the first :data:`MAX_PROBLEMS_SHOWN` of ``problems`` (about ``what``), if any."""
    if not problems:
        return
    shown = problems[:MAX_PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise DataError(f"{what}: {len(problems)} problem(s)\n  " + "\n  ".join(shown) + tail)
