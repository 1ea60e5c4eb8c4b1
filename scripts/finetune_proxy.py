"""Build the stand-in for "faces from another source, split by person" that fine-tuning is measured on.

FER Lab has no classroom recordings, so this makes a proxy of them from FER2013's PublicTest rows:
every face goes through one strong, fixed change of look, the kind a cheap classroom webcam and
another face detector make (a tighter, shifted crop; dim, low-contrast light from one side; blur;
sensor noise; heavy JPEG). FER2013 names no persons, so the "persons" are pseudo-recordings: runs
of ``--recording`` faces of one class, in a random order. A stratified draw of ``--faces`` faces,
as whole recordings, is the half to fine-tune on; every other PublicTest face is the half to test on.

    python scripts/finetune_proxy.py fer2013.csv.gz OUT

writes three zips of class folders (the format ``python -m fer_core finetune --data`` and
``evaluate --data`` read) to the folder OUT:

- ``finetune.zip``: the changed faces to fine-tune on, one subfolder per pseudo-recording;
- ``test.zip``: the other PublicTest faces, changed the same way (the "other people");
- ``test_plain.zip``: those same faces unchanged, to see what fine-tuning costs on FER2013 itself.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_core.base.labels import EMOTIONS  # noqa: E402
from fer_core.datasets.dataset import FaceDataset  # noqa: E402
from fer_core.datasets.load import load_dataset  # noqa: E402
from fer_core.faces.images import encode_png  # noqa: E402


def webcam_look(faces: np.ndarray, seed: int = 0) -> np.ndarray:
    """Gray uint8 faces (N, 48, 48) as a dim classroom webcam would show them: cropped tighter and
    lower (another detector's box), lit from the left and darker with less contrast, with sensor
    noise and JPEG at quality 30 at three times the size (the camera's frame), then blurred at 48x48.
    The same change for every face; only the noise differs."""
    rng = np.random.default_rng(seed)
    side_light = np.linspace(1.2, 0.5, 144, dtype=np.float32)[None, :]
    changed = []
    for face in faces:
        crop = cv2.resize(face[6:46, 2:42], (144, 144), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
        dim = 0.12 + 0.55 * np.power(np.clip(crop, 0.0, 1.0), 1.5) * side_light
        noisy = np.clip((dim + rng.normal(0.0, 0.04, dim.shape)) * 255.0, 0, 255).astype(np.uint8)
        _, jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 30])
        small = cv2.resize(cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE), (48, 48), interpolation=cv2.INTER_AREA)
        changed.append(cv2.GaussianBlur(small, (0, 0), 0.8))
    return np.stack(changed)


def pseudo_recordings(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A recording id per face: each class's faces, in a random order, cut into runs of ``size``."""
    rng = np.random.default_rng(seed)
    recordings = np.empty(len(labels), dtype=object)
    for code in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == code))
        for start in range(0, len(members), size):
            recordings[members[start:start + size]] = f"{EMOTIONS[code]}-{start // size + 1:03d}"
    return recordings.astype(str)


def finetune_half(labels: np.ndarray, recordings: np.ndarray, faces: int, seed: int = 0) -> np.ndarray:
    """A mask of about ``faces`` faces made of whole recordings: each class gets as many of its
    recordings as bring it nearest its share of ``faces``."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for code in np.unique(labels):
        wanted, count = faces * np.mean(labels == code), 0
        for recording in rng.permutation(np.unique(recordings[labels == code])):
            size = int(np.sum(recordings == recording))
            if abs(count + size - wanted) >= abs(count - wanted):
                break
            chosen |= recordings == recording
            count += size
    return chosen


def write_zip(path: Path, dataset: FaceDataset) -> None:
    """Faces as PNGs in class folders, with a subfolder per recording when the dataset names them."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, (face, label) in enumerate(zip(dataset.images, dataset.labels)):
            folder = EMOTIONS[label] if dataset.groups is None else f"{EMOTIONS[label]}/{dataset.groups[index]}"
            archive.writestr(f"{folder}/{index:05d}.png", encode_png(face))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="FER2013 CSV (Kaggle format, plain or gzip) with PublicTest rows")
    parser.add_argument("out", help="folder to write finetune.zip, test.zip and test_plain.zip to")
    parser.add_argument("--faces", type=int, default=300, help="faces to fine-tune on (default %(default)s)")
    parser.add_argument("--recording", type=int, default=10, help="faces per pseudo-recording (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    public = load_dataset(args.data, cache=True).with_usage("PublicTest")
    if not len(public):
        parser.error(f"{args.data} has no PublicTest rows")
    recordings = pseudo_recordings(public.labels, args.recording, args.seed)
    chosen = finetune_half(public.labels, recordings, args.faces, args.seed)
    changed = FaceDataset(webcam_look(public.images, args.seed), public.labels, public.usage, public.source, recordings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_zip(out / "finetune.zip", changed.subset(chosen))
    rest = public.subset(~chosen)
    write_zip(out / "test.zip", FaceDataset(changed.images[~chosen], rest.labels, rest.usage))
    write_zip(out / "test_plain.zip", rest)
    print(f"{chosen.sum()} faces in {len(np.unique(recordings[chosen]))} pseudo-recordings to fine-tune on, "
          f"{(~chosen).sum()} to test on; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
