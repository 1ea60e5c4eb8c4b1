"""Do the app's face crops match what the networks were trained on? FER2013's own faces, found again by a
detector and cropped as the app crops them, at several margins.

    python scripts/crop_margin.py fer2013.csv.gz [--model default] [--detector haar] [--faces 1200]
        [--align] [--webcam]

Each PublicTest face is enlarged 4 times (192x192) and set in a gray frame as wide again on each side,
as a face in a photo would be. The detector looks for it; where it finds one face, the crop of
its box with each ``--margins`` value (``Preprocessing.margin``: the share of the box added on each side)
is classified, and so is the face as FER2013 gives it. It prints how large the detector's box is beside
FER2013's crop, and the accuracy and mean per-class recall at each margin on the faces found: the
margin whose figures come nearest FER2013's own crop is the one that matches training. With ``--align``
(a detector that finds eyes: mtcnn) each margin is also tried with the eye line levelled
(``Preprocessing.align``); with ``--webcam`` every face first takes the webcam proxy's look
(``scripts/finetune_proxy.py``), so alignment is judged on the faces it is meant for.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_proxy import webcam_look  # noqa: E402

from fer_core.datasets.load import load_dataset  # noqa: E402
from fer_core.evaluation.evaluate import evaluate_probabilities, evaluation_rows  # noqa: E402
from fer_core.faces.detect import get_detector  # noqa: E402
from fer_core.faces.preprocess import images_to_input, prepare_faces  # noqa: E402
from fer_core.inference.predict import EmotionClassifier  # noqa: E402
from fer_core.registry.store import ModelStore  # noqa: E402

#: How much each face is enlarged, and how much gray frame is put around it (a share of its side).
SCALE, FRAME = 4, 1.0


def in_a_photo(face: np.ndarray) -> np.ndarray:
    """A 48x48 FER2013 face enlarged and framed in gray, as a face in a photo (BGR)."""
    big = cv2.resize(face, (48 * SCALE, 48 * SCALE), interpolation=cv2.INTER_CUBIC)
    pad = int(48 * SCALE * FRAME)
    framed = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
    return cv2.cvtColor(framed, cv2.COLOR_GRAY2BGR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    parser.add_argument("--detector", default="haar")
    parser.add_argument("--faces", type=int, default=1200, help="PublicTest faces tried (a stratified first part)")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--align", action="store_true", help="also level the eye line (a detector with eyes)")
    parser.add_argument("--webcam", action="store_true", help="give the faces the webcam proxy's look first")
    args = parser.parse_args()

    rows = evaluation_rows(load_dataset(args.data, cache=True), "PublicTest")
    order = np.random.default_rng(0).permutation(len(rows))[:args.faces]
    stored = ModelStore().load(args.model)
    classifier = EmotionClassifier.from_stored(stored, odds="fer2013")
    detector = get_detector(args.detector)
    if args.webcam:
        rows = replace(rows, images=webcam_look(rows.images))
    found, boxes, eyes, photos = [], [], [], []
    for index in order:
        photo = in_a_photo(rows.images[index])
        detections = detector.detect(photo)
        if len(detections) == 1:
            found.append(index)
            boxes.append(detections[0].box)
            eyes.append(detections[0].eyes)
            photos.append(photo)
    if args.align and not any(eyes):
        parser.error(f"{args.detector} finds no eyes to align with: use --detector mtcnn")
    faces = replace(rows, images=rows.images[found], labels=rows.labels[found], usage=rows.usage[found])
    side = 48 * SCALE
    sizes = np.array([max(box[2], box[3]) / side for box in boxes])
    print(f"{args.detector} found one face in {len(found)} of {len(order)} PublicTest faces; its box is "
          f"{np.median(sizes):.2f} of FER2013's crop (median; quartiles {np.percentile(sizes, 25):.2f}-"
          f"{np.percentile(sizes, 75):.2f}), so a margin of {(1 / np.median(sizes) - 1) / 2:.2f} per side "
          "would give FER2013's crop")
    print(f"model {stored.name}, {'with' if classifier.flip_tta else 'without'} flip TTA, FER2013 odds")
    as_given = images_to_input(faces.images, stored.card.preprocessing)
    report = evaluate_probabilities(faces, classifier.predict_dataset(as_given))
    print(f"FER2013's own crop: accuracy {report.accuracy:.4f}, mean recall {report.balanced_accuracy:.4f}")
    for margin in args.margins:
        for align in (False, True) if args.align else (False,):
            preprocessing = replace(stored.card.preprocessing, margin=margin, align=align)
            inputs = np.concatenate([prepare_faces(photo, [box], preprocessing, [face_eyes])
                                     for photo, box, face_eyes in zip(photos, boxes, eyes)])
            report = evaluate_probabilities(faces, classifier.predict_dataset(inputs))
            print(f"detector box, margin {margin:.2f}{', eyes levelled' if align else ''}: accuracy "
                  f"{report.accuracy:.4f}, mean recall {report.balanced_accuracy:.4f}")


if __name__ == "__main__":
    main()
