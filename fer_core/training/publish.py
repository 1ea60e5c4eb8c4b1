"""Publishing a trained model: score it on its validation faces, time it, convert it to LiteRT and
save it in the store with its card. Every way of making a model (training, ensembles, compact
copies, fine-tuning) ends here, so every stored model's card is made alike."""

from __future__ import annotations

from dataclasses import replace

import keras

from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.evaluate import card_metrics
from fer_core.faces.preprocess import Preprocessing
from fer_core.inference.predict import EmotionClassifier, classifier_ms_per_face, to_tflite
from fer_core.registry.cards import ModelCard, PriorCorrection, Training, make_card
from fer_core.registry.store import ModelStore


def save_evaluated(
    model: keras.Model,
    name: str,
    validation: FaceDataset,
    *,
    arch: str,
    training: Training,
    reproduce: str,
    description: str,
    preprocessing: Preprocessing,
    store: ModelStore | None = None,
    compact_copy: keras.Model | None = None,
    weights_dtype: str = "float32",
    prior_correction: PriorCorrection | None = None,
) -> ModelCard:
    """Score ``model`` on its validation faces, time it, and save it with its card; returns the card.

    The card's metrics are those of plain inference and, under ``flip_tta``, of inference with
    the mirrored face averaged in; ``arch``, ``training``, ``reproduce`` and ``description`` go
    into it as they are. With ``compact_copy``, ``model`` with its weights stored in
    ``weights_dtype`` (float16 or int8, see ``ensemble.save_ensemble``), both files hold weights
    of that type; the scores are then those of the compact LiteRT file (of the float32 ``model``
    where LiteRT is missing). ``prior_correction`` is kept on the card (a copy in other precision).
    """
    lite = to_tflite(model, weights_dtype)
    plain = EmotionClassifier(model, lite=lite)
    card = make_card(arch=arch, model=model, preprocessing=preprocessing, training=training,
                     metrics=card_metrics(plain, preprocessing, validation, training.data),
                     ms_per_face=classifier_ms_per_face(plain), reproduce=reproduce, description=description,
                     inference_backend=plain.backend, weights_dtype=weights_dtype)
    store = store or ModelStore()
    card = replace(card, prior_correction=prior_correction)
    store.save(name, compact_copy or model, card, lite)
    return store.card(name)
