"""Which odds a model reads faces with: balanced, for posed faces where every emotion is as likely, or
the odds of its training data (FER2013's, where a quarter of the faces are happy and 1.5% disgusted).

A network learns its training prior: on FER2013 it says "happy" readily and "disgust" seldom. The
balanced odds undo part of that by logit adjustment (Menon et al. 2021, "Long-tail learning via logit
adjustment"): ``strength`` times the log of each class's training share is taken from its log-probability
and the result normalised again. Strength 1 removes the prior as Bayes' rule would; the card's strength
is the one that gave the highest mean per-class recall on validation faces. A network trained with the
logit-adjusted loss (``training.losses``) learned the balanced odds itself: its own answer carries
strength 1, and the training odds are found by putting the prior back.
"""

from __future__ import annotations

import numpy as np

from fer_core.base.errors import SettingError
from fer_core.registry.cards import ModelCard

#: The odds a model can read faces with; the first is the app's and the CLI's default.
ODDS = ("balanced", "fer2013")
#: What each choice is called on the pages.
ODDS_LABELS = {"balanced": "Balanced (posed faces)", "fer2013": "FER2013 odds (as trained)"}


def prior_shift(prior: list[float] | np.ndarray, strength: float) -> np.ndarray:
    """What :func:`adjust` takes from each class's log-probability: ``strength`` times the log of its
    training share (shares of 0 count as one face in a million)."""
    shares = np.clip(np.asarray(prior, dtype=np.float64), 1e-6, None)
    return (strength * np.log(shares / shares.sum())).astype(np.float32)


def adjust(probabilities: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Probabilities (N, 7) with ``shift`` (7,) taken from their logarithms, normalised again per face."""
    logits = np.log(np.clip(probabilities, 1e-12, None)) - shift
    logits -= logits.max(axis=-1, keepdims=True)
    adjusted = np.exp(logits)
    return (adjusted / adjusted.sum(axis=-1, keepdims=True)).astype(np.float32)


def built_in_strength(card: ModelCard) -> float:
    """The correction a network's own answer already carries: 1 when it learned with the logit-adjusted
    loss (it answers with balanced odds), 0 when with cross-entropy (its training data's odds)."""
    return 1.0 if card.training.balanced_by_loss else 0.0


def strength_for(card: ModelCard, odds: str) -> float | None:
    """The prior correction a model reads faces with under ``odds`` (one of :data:`ODDS`): 0 for the
    training odds; for the balanced ones the card's chosen strength, else what its loss built in. None
    when the card does not give the training prior (then both odds are the network's own answer)."""
    if odds not in ODDS:
        raise SettingError(f"odds must be one of {', '.join(ODDS)}, not {odds!r}")
    if card.class_prior is None:
        return None
    if odds == "fer2013":
        return 0.0
    return card.prior_correction.strength if card.prior_correction is not None else built_in_strength(card)


def shift_for(card: ModelCard, odds: str) -> np.ndarray | None:
    """The prior shift a model's answers take under ``odds`` (see :func:`strength_for`): None when its
    own answer is already read with those odds."""
    strength, built_in, prior = strength_for(card, odds), built_in_strength(card), card.class_prior
    if strength is None or prior is None or strength == built_in:
        return None
    return prior_shift(prior, strength - built_in)
