"""The balanced odds: prior correction by logit adjustment, its card fields, its choice on labelled faces,
and the switch in the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fer_core.base.errors import SettingError
from fer_core.base.labels import EMOTIONS
from fer_core.cli import main
from fer_core.datasets.dataset import FaceDataset
from fer_core.evaluation.prior import STRENGTHS, choose_strength, strength_scores
from fer_core.inference.odds import adjust, prior_shift, shift_for, strength_for
from fer_core.inference.predict import EmotionClassifier
from fer_core.registry.cards import CardError, Member, ModelCard, PriorCorrection, Training, count_classes

#: FER2013's Training rows per class.
FER2013_COUNTS = dict(zip(EMOTIONS, (3995, 436, 4097, 7215, 4830, 3171, 4965)))
CORRECTION = PriorCorrection(strength=0.5, chosen_on="faces.csv [PublicTest], with flip TTA", accuracy=0.69,
                             balanced_accuracy=0.68, accuracy_before=0.70, balanced_accuracy_before=0.65)


def test_the_correction_divides_by_the_prior_to_the_strength_and_normalises():
    probabilities = np.array([[0.6, 0.4]], np.float32)
    prior = [0.8, 0.2]
    np.testing.assert_allclose(adjust(probabilities, prior_shift(prior, 0.0)), probabilities, atol=1e-6)
    # 0.6 / 0.8 = 0.75 and 0.4 / 0.2 = 2, normalised
    np.testing.assert_allclose(adjust(probabilities, prior_shift(prior, 1.0)), [[0.75 / 2.75, 2 / 2.75]], atol=1e-6)
    # halfway: divided by the prior's square root
    half = [0.6 / 0.8 ** 0.5, 0.4 / 0.2 ** 0.5]
    np.testing.assert_allclose(adjust(probabilities, prior_shift(prior, 0.5)), [np.divide(half, sum(half))],
                               atol=1e-6)


def test_the_prior_is_normalised_and_an_unseen_class_does_not_divide_by_zero():
    np.testing.assert_allclose(prior_shift([8, 2], 1.0), np.log([0.8, 0.2]), atol=1e-6)
    shift = prior_shift([1.0, 0.0], 1.0)
    assert np.isfinite(shift).all()
    corrected = adjust(np.array([[0.999, 0.001]], np.float32), shift)
    assert np.isfinite(corrected).all() and corrected.sum() == pytest.approx(1.0)


def test_the_card_keeps_the_training_counts_and_the_correction():
    card = ModelCard(name="m", training=Training(data="faces.csv", class_counts=FER2013_COUNTS),
                     prior_correction=CORRECTION)
    again = ModelCard.from_json(card.to_json(), "m")
    assert again == card
    assert again.class_prior == pytest.approx([count / 28709 for count in FER2013_COUNTS.values()])
    old = ModelCard.from_json(json.dumps({"schema_version": 2, "arch": "ds_cnn"}), "old")
    assert old.prior_correction is None and old.class_prior is None
    broken = {**json.loads(card.to_json()), "prior_correction": {**CORRECTION.__dict__, "strength": "half"}}
    with pytest.raises(CardError, match="prior_correction.strength"):
        ModelCard.from_json(json.dumps(broken), "m")
    for counts in ({**FER2013_COUNTS, "disgust": 0}, {k: v for k, v in FER2013_COUNTS.items() if k != "fear"},
                   {**FER2013_COUNTS, "Happy": 3}):
        unseen = {**json.loads(card.to_json()), "training": {"class_counts": counts}}
        with pytest.raises(CardError, match="class_counts must give each of angry, disgust"):
            ModelCard.from_json(json.dumps(unseen), "m")


def test_count_classes_gives_none_when_a_class_has_no_face():
    assert count_classes(np.arange(14) % 7) == {name: 2 for name in EMOTIONS}
    assert count_classes(np.array([0, 1, 2, 3, 4, 5])) is None  # no neutral face


def test_the_balanced_odds_use_the_cards_correction_and_the_fer2013_odds_none():
    card = ModelCard(training=Training(class_counts=FER2013_COUNTS), prior_correction=CORRECTION)
    np.testing.assert_allclose(shift_for(card, "balanced"), 0.5 * np.log(np.array(card.class_prior)), atol=1e-6)
    assert shift_for(card, "fer2013") is None
    assert shift_for(replace(card, prior_correction=None), "balanced") is None  # nothing to correct with
    assert shift_for(replace(card, training=Training()), "balanced") is None  # no prior known
    with pytest.raises(SettingError, match="odds must be one of balanced, fer2013"):
        shift_for(card, "even")


def test_a_network_balanced_by_its_loss_gets_the_prior_back_for_the_fer2013_odds():
    recipe = {"arch": "ds_cnn", "loss": "logit_adjusted"}
    card = ModelCard(training=Training(class_counts=FER2013_COUNTS, recipe=recipe))
    log_prior = np.log(np.array(card.class_prior))
    assert card.training.balanced_by_loss and strength_for(card, "balanced") == 1.0
    assert shift_for(card, "balanced") is None  # its own answer has the balanced odds
    np.testing.assert_allclose(shift_for(card, "fer2013"), -log_prior, atol=1e-6)  # the prior put back
    calibrated = replace(card, prior_correction=CORRECTION)  # strength 0.5: half the prior put back
    assert strength_for(calibrated, "balanced") == 0.5
    np.testing.assert_allclose(shift_for(calibrated, "balanced"), -0.5 * log_prior, atol=1e-6)
    members = [Member(name=name, recipe=recipe) for name in ("a", "b")]
    ensemble = ModelCard(arch="ensemble", training=Training(class_counts=FER2013_COUNTS, members=members))
    assert ensemble.training.balanced_by_loss
    mixed = replace(ensemble, training=replace(ensemble.training, members=[*members, Member(name="c")]))
    assert not mixed.training.balanced_by_loss
    assert strength_for(replace(card, training=replace(card.training, class_counts=None)), "balanced") is None


def test_a_stored_model_reads_faces_with_the_odds_asked_for(model_store):
    model_store.update_card("default", replace(model_store.card("default"), prior_correction=CORRECTION,
                                               training=Training(class_counts=FER2013_COUNTS)))
    stored = model_store.load("default")
    faces = np.random.default_rng(0).random((5, 48, 48, 1), dtype=np.float32)
    trained = EmotionClassifier.from_stored(stored, odds="fer2013")(faces)
    balanced = EmotionClassifier.from_stored(stored)(faces)
    np.testing.assert_allclose(balanced, adjust(trained, shift_for(stored.card, "balanced")), atol=1e-5)
    assert not np.allclose(balanced, trained, atol=1e-3)
    assert model_store.card("default").sha256 == stored.card.sha256  # the weights' hashes kept


def biased_faces(n_per_class: int = 40, seed: int = 0) -> tuple[FaceDataset, np.ndarray]:
    """Balanced labelled faces and probabilities from a "network" that learned FER2013's odds: the truth
    plus noise, times the prior (so rare classes lose close calls)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(EMOTIONS)), n_per_class)
    evidence = np.eye(len(EMOTIONS))[labels] * 1.2 + rng.normal(0, 0.6, (len(labels), len(EMOTIONS)))
    prior = np.array(list(FER2013_COUNTS.values()), np.float64)
    probabilities = np.exp(evidence) * (prior / prior.sum())
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    images = np.zeros((len(labels), 48, 48), np.uint8)
    return FaceDataset(images, labels, np.array(["PublicTest"] * len(labels))), probabilities.astype(np.float32)


def test_the_strength_chosen_is_the_one_with_the_best_mean_recall():
    dataset, probabilities = biased_faces()
    prior = list(np.array(list(FER2013_COUNTS.values())) / 28709)
    scores = strength_scores(dataset, probabilities, prior)
    assert [score.strength for score in scores] == list(STRENGTHS)
    untouched = scores[0]
    predicted = probabilities.argmax(axis=1)
    assert untouched.accuracy == pytest.approx((predicted == dataset.labels).mean(), abs=1e-4)
    assert untouched.recalls["disgust"] < untouched.recalls["happy"]  # the learned odds at work
    correction = choose_strength(scores, "synthetic")
    best = max(score.balanced_accuracy for score in scores)
    assert correction.balanced_accuracy == best > untouched.balanced_accuracy
    assert 0.5 <= correction.strength <= 1.5  # about Bayes' full correction, which made these odds
    assert (correction.accuracy_before, correction.balanced_accuracy_before) == (untouched.accuracy,
                                                                                 untouched.balanced_accuracy)
    with pytest.raises(ValueError, match="must include 0"):
        choose_strength(scores[1:], "synthetic")


def test_calibrate_counts_the_training_rows_and_writes_the_correction_on_the_card(model_store, fer_csv, capsys):
    card = model_store.card("default")
    assert card.prior_correction is None
    assert main(["calibrate", "default", "--data", str(fer_csv)]) == 2  # the card names another file
    assert "counted from the Training rows of the file it was trained on (none)" in capsys.readouterr().err
    model_store.update_card("default", replace(card, training=replace(card.training, data=fer_csv.name)))
    assert main(["calibrate", "default", "--data", str(fer_csv)]) == 0
    assert "[PublicTest]" in capsys.readouterr().out  # by default on PublicTest, never on PrivateTest
    assert main(["calibrate", "default", "--data", str(fer_csv), "--usage", "PublicTest"]) == 0
    out = capsys.readouterr().out
    assert "chosen: strength" in out and "written on default's card" in out
    card = model_store.card("default")
    assert card.training.class_counts == {name: 8 for name in EMOTIONS}  # 56 Training rows, 7 classes
    assert card.prior_correction is not None
    assert card.prior_correction.chosen_on.startswith("fer_small.csv [PublicTest]")
    assert card.reproduce.endswith("&& python -m fer_core calibrate default --data fer_small.csv --usage PublicTest")
    assert model_store.card("default").reproduce.count(" calibrate ") == 1  # replaced, not repeated


def test_evaluate_and_predict_take_the_odds(model_store, fer_csv, astronaut_png, capsys):
    model_store.update_card("default", replace(model_store.card("default"), prior_correction=CORRECTION,
                                               training=Training(class_counts=FER2013_COUNTS)))
    assert main(["evaluate", "--data", str(fer_csv)]) == 0
    balanced = capsys.readouterr().out.splitlines()
    assert "balanced odds, prior correction 0.5" in balanced[0]
    assert any(line.startswith("balanced accuracy (mean recall): ") for line in balanced)
    assert main(["evaluate", "--data", str(fer_csv), "--odds", "fer2013"]) == 0
    assert "training odds" in capsys.readouterr().out.splitlines()[0]
    outputs = []
    for odds in ("balanced", "fer2013"):
        assert main(["predict", str(astronaut_png), "--detector", "haar", "--json", "--odds", odds]) == 0
        outputs.append(json.loads(capsys.readouterr().out)["faces"][0]["probabilities"])
    assert outputs[0] != outputs[1]
    with pytest.raises(SystemExit):
        main(["predict", str(astronaut_png), "--odds", "even"])
