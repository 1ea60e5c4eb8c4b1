"""fer_core.training.finetune: held-out recordings, the loss over the classes shown, and fine-tuned models stored with
their before/after figures."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import synthetic_dataset, synthetic_face

from fer_core.base.errors import FerError, ModelNotFoundError
from fer_core.base.labels import EMOTIONS
from fer_core.datasets.dataset import FaceDataset
from fer_core.training.finetune import FineTuneSettings, finetune, hold_out, present_classes_loss

QUICK = FineTuneSettings(steps=3, batch_size=16)


def recorded_faces(recordings_per_class: dict[int, int], faces_per_recording: int = 4, seed: int = 0) -> FaceDataset:
    """Synthetic faces of the given classes, each class in that many recordings of a few faces."""
    rng = np.random.default_rng(seed)
    images, labels, groups = [], [], []
    for code, recordings in recordings_per_class.items():
        for number in range(recordings):
            for _ in range(faces_per_recording):
                images.append(synthetic_face(code, rng))
                labels.append(code)
                groups.append(f"{EMOTIONS[code]}-{number}")
    return FaceDataset(np.stack(images), np.array(labels), np.full(len(labels), "Training"), "test faces",
                       np.array(groups))


def test_hold_out_keeps_recordings_whole_and_covers_each_class_with_two_or_more():
    faces = recorded_faces({0: 5, 3: 2, 4: 10, 6: 1})
    split = hold_out(faces, seed=3)
    held, trained = set(split.held_out.groups.tolist()), set(split.train.groups.tolist())
    assert not held & trained and len(split.held_out) + len(split.train) == len(faces)
    assert split.recordings == len(held)
    per_class = {EMOTIONS[code]: sum(EMOTIONS[code] in group for group in held) for code in (0, 3, 4, 6)}
    assert per_class == {"angry": 1, "happy": 1, "sad": 2, "neutral": 0}  # 20% of 5, at least 1, 20% of 10, none
    assert split.untested_classes == ["neutral"]
    assert set(np.unique(split.train.labels).tolist()) == {0, 3, 4, 6}  # every class keeps training faces


def test_hold_out_is_fixed_by_its_seed():
    faces = recorded_faces({0: 6, 3: 6})
    first, again, other = hold_out(faces, seed=1), hold_out(faces, seed=1), hold_out(faces, seed=2)
    assert first.held_out.groups.tolist() == again.held_out.groups.tolist()
    assert {tuple(hold_out(faces, seed=seed).held_out.groups.tolist()) for seed in range(6)} != {
        tuple(first.held_out.groups.tolist())}
    assert len(other.held_out) == len(first.held_out)


def test_hold_out_treats_each_face_as_a_recording_without_groups_and_keeps_persons_whole():
    images, labels = synthetic_dataset(70)
    loose = FaceDataset(images, labels, np.full(70, "Training"))
    split = hold_out(loose)
    assert np.bincount(split.held_out.labels, minlength=7).tolist() == [2] * 7  # 20% of each class's 10 faces
    persons = np.array([f"person-{index % 5}" for index in range(70)])  # each person shows every class
    split = hold_out(FaceDataset(images, labels, np.full(70, "Training"), groups=persons))
    assert not set(split.held_out.groups.tolist()) & set(split.train.groups.tolist())
    assert split.recordings == 1 and len(split.held_out) == 14


def test_the_loss_ignores_classes_without_faces():
    import keras

    present = np.array([1, 0, 0, 1, 1, 0, 0], dtype=bool)
    loss = present_classes_loss(present, label_smoothing=0.1)
    target = keras.utils.to_categorical([3], 7)
    shown = np.array([[0.1, 0.0, 0.0, 0.6, 0.3, 0.0, 0.0]], dtype=np.float32)
    with_absent = np.array([[0.05, 0.3, 0.1, 0.3, 0.15, 0.05, 0.05]], dtype=np.float32)  # same ratios where shown
    first, second = float(loss(target, shown)[0]), float(loss(target, with_absent)[0])
    assert first == pytest.approx(second, rel=1e-5)
    assert first < float(loss(target, np.array([[0.6, 0.0, 0.0, 0.1, 0.3, 0.0, 0.0]], dtype=np.float32))[0])


def test_finetune_stores_the_model_with_its_before_and_after(model_store):
    faces = recorded_faces({0: 3, 3: 3, 4: 2, 6: 1})
    progress = []
    result = finetune(model_store, "default", faces, name="class_model", data_name="class.zip", settings=QUICK,
                      progress=lambda done, message: progress.append(done))
    card = model_store.card("class_model")
    assert card == result.card and card.arch == "ds_cnn"
    tuning = card.training.fine_tuning
    assert tuning.start == "default" and tuning.accuracy_before == result.accuracy_before
    assert card.accuracy == result.accuracy_after and card.faces_scored == len(result.split.held_out)
    assert tuning.held_out_recordings == result.split.recordings == 3 and tuning.untested_classes == ["neutral"]
    assert tuning.settings["interpolation"] == QUICK.interpolation
    assert card.training.data == f"{len(faces)} class faces"
    assert card.training.train_rows + card.training.validation_rows == len(faces)
    assert card.reproduce.endswith("python -m fer_core finetune --from default --data class.zip --name class_model "
                                   "--minutes 1 --seed 0")
    assert result.stopped == "completed" and progress[-1] == 1.0 and progress == sorted(progress)
    start, tuned = model_store.load("default").model.get_weights(), model_store.load("class_model").model.get_weights()
    assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(start, tuned, strict=True))


def test_with_no_interpolation_the_starting_weights_are_stored(model_store):
    start = model_store.load("default").model.get_weights()
    finetune(model_store, "default", recorded_faces({0: 2, 3: 2}), name="unchanged",
             settings=FineTuneSettings(steps=3, batch_size=16, interpolation=0.0))
    unchanged = model_store.load("unchanged").model.get_weights()
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(start, unchanged, strict=True))


def test_an_int8_ensemble_is_fine_tuned_member_by_member_and_stored_as_one(model_store):
    from fer_core.registry.cards import Member, Training, make_card
    from fer_core.training.ensemble import stored_copy
    from fer_core.training.networks import build_ensemble

    members = [model_store.load(name) for name in ("default", "tiny")]
    pair = build_ensemble([stored_copy(member.model, member.card.arch, "int8", member.name) for member in members])
    model_store.save("pair", pair, make_card(arch="ensemble", model=pair, preprocessing=members[0].card.preprocessing,
                                             training=Training(members=[Member.of(m.card) for m in members]),
                                             metrics=None, ms_per_face=None, reproduce="(test)", weights_dtype="int8"))
    result = finetune(model_store, "pair", recorded_faces({3: 2, 4: 2}), minutes=1e-6, settings=QUICK)
    card = model_store.card("pair_tuned")
    assert card.arch == "ensemble" and card.weights_dtype == "int8"
    assert [member.name for member in card.training.members] == ["default_tuned", "tiny_tuned"]
    assert card.training.fine_tuning.start == "pair" and result.card == card
    assert result.stopped == card.training.stopped == "time_budget"  # its minutes were up after a step


def test_a_cancelled_run_stores_nothing(model_store):
    cancel = threading.Event()
    cancel.set()
    assert finetune(model_store, "tiny", recorded_faces({0: 2, 3: 2}), name="cancelled", cancel=cancel) is None
    assert "cancelled" not in model_store.names()


@pytest.mark.parametrize(("start", "faces", "name", "message"), [
    ("tiny", {0: 1, 3: 1, 4: 1}, None, "no recording can be held out"),
    ("tiny", {3: 4}, None, "happy only"),
    ("tiny", {0: 2, 3: 2}, "TINY", "cannot save over it"),
    ("tiny", {0: 2, 3: 2}, "bad name!", "invalid model name"),
], ids=["no recording to hold out", "a single class", "over its start", "bad name"])
def test_faces_or_names_that_cannot_work_are_refused_before_training(model_store, start, faces, name, message):
    with pytest.raises(FerError, match=message):
        finetune(model_store, start, recorded_faces(faces), name=name, settings=QUICK)


def test_an_unknown_start_is_refused(model_store):
    with pytest.raises(ModelNotFoundError, match="no model 'missing'"):
        finetune(model_store, "missing", recorded_faces({0: 2, 3: 2}), settings=QUICK)


def test_an_int8_network_comes_back_as_float32_close_to_the_original():
    from fer_core.training.networks import build_model, float32_copy, int8_copy

    network = build_model("ds_cnn")
    faces = np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32)
    restored = float32_copy(int8_copy(network), "ds_cnn")
    assert all(weight.dtype == np.float32 for weight in restored.get_weights())
    assert np.max(np.abs(restored.predict(faces, verbose=0) - network.predict(faces, verbose=0))) < 0.05
