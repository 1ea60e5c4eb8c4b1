"""Emotion analysis of whole images: detect faces, prepare them, classify them all in one batch.

:class:`EmotionClassifier` runs a model through LiteRT or a compiled ``tf.function``, and
:class:`EmotionAnalyser` joins a detector, the preprocessing recipe and the classifier. The LiteRT
path needs neither Keras nor TensorFlow, which are imported only when the other path is used.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fer_core.base.errors import FerError
from fer_core.base.labels import EMOTIONS
from fer_core.base.pool import ObjectPool
from fer_core.faces.detect import Detection, FaceDetector, get_detector
from fer_core.faces.images import to_uint8
from fer_core.faces.preprocess import Preprocessing, prepare_faces
from fer_core.inference.odds import adjust, shift_for
from fer_core.registry.store import DEFAULT_NAME, WEIGHT_DTYPES, ModelStore, StoredModel

if TYPE_CHECKING:
    import keras


@dataclass
class FaceResult:
    """One analysed face."""

    box: tuple[int, int, int, int]
    probabilities: dict[str, float]
    detection_score: float = 1.0
    #: The face as the network saw it: (size, size, 1) float32 in [0, 1], where the analysis kept it.
    network_input: np.ndarray | None = field(default=None, repr=False, compare=False)
    label: str = field(init=False)
    score: float = field(init=False)

    def __post_init__(self) -> None:
        self.label = max(self.probabilities, key=self.probabilities.__getitem__)
        self.score = self.probabilities[self.label]

    def to_row(self) -> dict:
        """One flat table row: box, label, score and the seven probabilities."""
        x, y, w, h = (int(v) for v in self.box)
        return {"x": x, "y": y, "width": w, "height": h, "label": self.label, "score": round(float(self.score), 4),
                **{name: round(float(self.probabilities[name]), 4) for name in EMOTIONS}}

    def to_dict(self) -> dict:
        """The JSON shape of ``predict --json``: box, label, score and probabilities."""
        return {"box": [int(v) for v in self.box], "label": self.label,
                "score": round(float(self.score), 4),
                "probabilities": {k: round(float(v), 4) for k, v in self.probabilities.items()}}


def to_tflite(model: keras.Model, weights_dtype: str = "float32") -> bytes:
    """The model as a TensorFlow Lite flatbuffer: same results, 2-4x faster per face on a CPU.

    ``weights_dtype`` float16 stores the weights in half the space (computed in float32 after
    loading); int8 stores them in a quarter, quantised per output channel (dynamic-range
    quantisation: the heavy layers then compute in int8 too). ``model`` must compute in float32.
    """
    import tensorflow as tf  # converting needs TensorFlow; serving a LiteRT file does not

    if weights_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, not {weights_dtype!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if weights_dtype != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if weights_dtype == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _litert_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter  # optional: not every platform has LiteRT wheels
    except ImportError:  # platforms without LiteRT wheels: the TensorFlow path is used
        return None
    return Interpreter


class _LiteRunner:
    """One LiteRT interpreter, resized to each new batch size."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self.input = interpreter.get_input_details()[0]["index"]
        self.output = interpreter.get_output_details()[0]["index"]
        self.batch: int | None = None

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        if self.batch != len(faces):
            self.interpreter.resize_tensor_input(self.input, list(faces.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(faces)
        self.interpreter.set_tensor(self.input, faces)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def shifted_views(faces: np.ndarray) -> list[np.ndarray]:
    """``(N, H, W, C)`` faces moved one pixel up, down, left and right (edge pixels repeated).

    Averaging a network's answers over such views (test-time augmentation) smooths out how much
    it depends on exactly where the face was cropped.
    """
    height, width = faces.shape[1:3]
    padded = np.pad(faces, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return [padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]


class EmotionClassifier:
    """Probabilities for batches of prepared faces.

    With a TensorFlow Lite flatbuffer (``lite``) and the LiteRT runtime installed, faces go
    through LiteRT (a pool of interpreters: one is not thread-safe); otherwise
    through the Keras model compiled once as a ``tf.function`` with a fixed input signature (an
    eager Keras call costs tens of milliseconds). ``model`` is a Keras model or a
    :class:`StoredModel`, whose Keras model is then loaded only if needed (TensorFlow backend,
    Grad-CAM). With ``flip_tta`` each face is also classified mirrored, and with ``shift_tta`` also
    moved one pixel each way (:func:`shifted_views`; with both, ten views); the results are
    averaged. Safe to call from several threads at once.
    """

    def __init__(self, model: keras.Model | StoredModel, flip_tta: bool = False, lite: bytes | None = None,
                 lite_threads: int = 1, shift_tta: bool = False, prior_shift: np.ndarray | None = None):
        self._source = model
        self.flip_tta = flip_tta
        self.shift_tta = shift_tta
        #: taken from the log-probabilities of every answer (``fer_core.inference.odds``); None: none
        self.prior_shift = prior_shift
        interpreter = _litert_interpreter() if lite else None
        self.backend = "litert" if interpreter is not None else "tensorflow"

        def lite_runner() -> _LiteRunner:
            assert interpreter is not None  # the pool is borrowed from only by the litert backend
            return _LiteRunner(interpreter(model_content=lite, num_threads=lite_threads))

        self._interpreters = ObjectPool(lite_runner)
        if self.backend == "litert":
            with self._interpreters.borrow() as runner:  # also checks the flatbuffer now
                self.input_size = int(runner.interpreter.get_input_details()[0]["shape"][1])
        else:
            self.input_size = int(self.model.input_shape[1])
        self._graph = None
        self._graph_lock = threading.Lock()

    @property
    def model(self) -> keras.Model:
        """The Keras model (loaded now if it came from the store unloaded)."""
        return self._source.model if isinstance(self._source, StoredModel) else self._source

    @classmethod
    def from_stored(cls, stored: StoredModel, flip_tta: bool | None = None, backend: str = "auto",
                    shift_tta: bool = False, odds: str = "balanced") -> EmotionClassifier:
        """A classifier for a stored model: the fastest it offers, or the ``backend`` named
        (``litert`` or ``tensorflow``), to compare the two. ``flip_tta=None`` follows the card:
        see ``ModelCard.recommends_flip``; ``odds`` is one of ``fer_core.inference.odds.ODDS``."""
        if flip_tta is None:
            flip_tta = stored.card.recommends_flip
        if backend not in ("auto", "litert", "tensorflow"):
            raise ValueError(f"backend must be auto, litert or tensorflow, not {backend!r}")
        classifier = cls(stored, flip_tta, None if backend == "tensorflow" else stored.lite, shift_tta=shift_tta,
                         prior_shift=shift_for(stored.card, odds))
        if backend == "litert" and classifier.backend != "litert":
            raise FerError(f"model {stored.name} has no LiteRT file (or LiteRT is not installed)")
        return classifier

    def with_views(self, *, flip_tta: bool | None = None, shift_tta: bool | None = None) -> EmotionClassifier:
        """This classifier with mirrored or shifted views switched (None keeps a setting): a copy
        sharing the loaded model and its LiteRT interpreters, so it costs no second load."""
        variant = copy.copy(self)
        variant.flip_tta = self.flip_tta if flip_tta is None else flip_tta
        variant.shift_tta = self.shift_tta if shift_tta is None else shift_tta
        return variant

    def with_prior_shift(self, prior_shift: np.ndarray | None) -> EmotionClassifier:
        """This classifier reading faces with another prior shift (``fer_core.inference.odds``), as a copy
        sharing the loaded model."""
        variant = copy.copy(self)
        variant.prior_shift = prior_shift
        return variant

    def _tensorflow_graph(self):
        """The Keras model compiled once as a ``tf.function`` (TensorFlow is imported here)."""
        with self._graph_lock:
            if self._graph is None:
                import tensorflow as tf  # only for models run without a LiteRT file

                model = self.model
                spec = tf.TensorSpec([None, self.input_size, self.input_size, 1], tf.float32)
                self._graph = tf.function(lambda faces: tf.cast(model(faces, training=False), tf.float32),
                                          input_signature=[spec])
            return self._graph

    def _run(self, faces: np.ndarray) -> np.ndarray:
        if self.backend == "litert":
            with self._interpreters.borrow() as runner:  # an interpreter is not thread-safe
                return runner(faces)
        return self._tensorflow_graph()(faces).numpy()

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """(N, size, size, 1) float32 faces in [0, 1] to (N, 7) probabilities."""
        if len(faces) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        faces = np.ascontiguousarray(faces, dtype=np.float32)
        views = [faces, *shifted_views(faces)] if self.shift_tta else [faces]
        if self.flip_tta:
            views += [view[:, :, ::-1] for view in views]
        if len(views) == 1:
            probabilities = self._run(faces)
        else:
            probabilities = self._run(np.concatenate(views)).reshape(len(views), len(faces), -1).mean(axis=0)
        return probabilities if self.prior_shift is None else adjust(probabilities, self.prior_shift)

    def predict_dataset(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities for many prepared faces, in batches."""
        parts = [self(faces[i:i + batch_size]) for i in range(0, len(faces), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(EMOTIONS)), np.float32)


def classifier_ms_per_face(classifier: EmotionClassifier, batch: int = 1, seconds: float = 2.0) -> float:
    """Median milliseconds per face of the compiled classifier at a batch size (the model card's speed)."""
    size = classifier.input_size
    faces = np.random.default_rng(0).random((batch, size, size, 1), dtype=np.float32)
    for _ in range(5):
        classifier(faces)
    timings: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(timings) < 10:
        start = time.perf_counter()
        classifier(faces)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings)) * 1000.0 / batch


class EmotionAnalyser:
    """Finds the faces in an image and tells the emotion of each."""

    def __init__(self, classifier: EmotionClassifier, detector: FaceDetector,
                 preprocessing: Preprocessing, model_name: str = ""):
        self.classifier = classifier
        self.detector = detector
        self.preprocessing = preprocessing
        self.model_name = model_name

    @classmethod
    def from_store(cls, model: str | os.PathLike = DEFAULT_NAME, detector: str = "mtcnn",
                   flip_tta: bool | None = None, store: ModelStore | None = None, backend: str = "auto",
                   shift_tta: bool = False, odds: str = "balanced", **detector_options) -> EmotionAnalyser:
        """An analyser for a stored model (by name or path) and a detector (by name); ``flip_tta``
        None follows the model card (``ModelCard.recommends_flip``); ``odds`` as in
        :meth:`EmotionClassifier.from_stored`."""
        stored = (store or ModelStore()).load(model)
        preprocessing = stored.card.preprocessing
        classifier = EmotionClassifier.from_stored(stored, flip_tta, backend, shift_tta, odds)
        return cls(classifier, get_detector(detector, **detector_options), preprocessing, stored.name)

    def classify(self, image: np.ndarray, detections: list[Detection]) -> list[FaceResult]:
        """Classify given face detections of ``image`` in one batch."""
        if not detections:
            return []
        faces = prepare_faces(image, [d.box for d in detections], self.preprocessing,
                              [d.eyes for d in detections])
        probabilities = self.classifier(faces)
        return [FaceResult(d.box, dict(zip(EMOTIONS, map(float, p))), d.score, face)
                for d, p, face in zip(detections, probabilities, faces)]

    def analyse(self, image: np.ndarray) -> list[FaceResult]:
        """Every face of a gray, BGR or BGRA image of any size, largest first."""
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.size == 0:
            raise ValueError(f"expected an image array, got shape {image.shape}")
        if image.dtype != np.uint8:
            image = to_uint8(image)
        return self.classify(image, self.detector.detect(image))

