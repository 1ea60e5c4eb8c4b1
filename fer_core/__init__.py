"""FER Lab's engine: facial emotion recognition on FER2013's seven emotions, without Streamlit.

The names below are the public API (the README's Python API section shows them at work); each is
imported from its subpackage when first used, so ``import fer_core`` loads neither Keras nor
TensorFlow, and a program that only serves a model never does.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name and the module that defines it.
_EXPORTS = {
    "FerError": "fer_core.base.errors",
    "DataError": "fer_core.base.errors",
    "ImageError": "fer_core.base.errors",
    "ModelNotFoundError": "fer_core.base.errors",
    "SettingError": "fer_core.base.errors",
    "EMOTIONS": "fer_core.base.labels",
    "load_image": "fer_core.faces.images",
    "get_detector": "fer_core.faces.detect",
    "FaceDataset": "fer_core.datasets.dataset",
    "load_dataset": "fer_core.datasets.load",
    "FaceCollection": "fer_core.datasets.collection",
    "ModelCard": "fer_core.registry.cards",
    "ModelStore": "fer_core.registry.store",
    "EmotionAnalyser": "fer_core.inference.predict",
    "EmotionClassifier": "fer_core.inference.predict",
    "annotate": "fer_core.inference.annotate",
    "PhotoFaces": "fer_core.inference.photos",
    "LiveAnalyser": "fer_core.inference.live",
    "evaluate_faces": "fer_core.evaluation.evaluate",
    "html_report": "fer_core.evaluation.report",
    "TrainConfig": "fer_core.training.recipe",
    "TrainingData": "fer_core.training.recipe",
    "run_training": "fer_core.training.train",
    "finetune": "fer_core.training.finetune",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fer_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
