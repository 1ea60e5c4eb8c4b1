import json
import math
import threading

import numpy as np
import pytest
from conftest import synthetic_dataset

from fer_core.base.errors import DataError, SettingError
from fer_core.datasets.dataset import FaceDataset
from fer_core.datasets.splits import train_validation
from fer_core.faces.preprocess import Preprocessing
from fer_core.registry.store import ModelStore
from fer_core.training.losses import LogitAdjustedLoss
from fer_core.training.networks import ARCHITECTURES, RandomGamma, build_augmentation, build_model
from fer_core.training.recipe import TrainConfig
from fer_core.training.train import TrainingData, class_weights, dataset_inputs, resolve_precision, run_training, train


@pytest.fixture(scope="module")
def tiny_dataset():
    images, labels = synthetic_dataset(112)
    usage = np.array(["Training"] * 84 + ["PublicTest"] * 28)
    return FaceDataset(images, labels, usage, "synthetic")


def test_one_epoch_trains_checkpoints_and_resumes(tiny_dataset, tmp_path):
    reports = []
    checkpoints = tmp_path / "ck"
    config = TrainConfig(arch="mini_xception", epochs=1, batch_size=16)
    first = train(tiny_dataset, config, checkpoint_dir=checkpoints, listener=reports.append, command="run 1")
    assert first.stopped == "completed" and first.epochs_run == 1
    assert (checkpoints / "last.keras").exists() and (checkpoints / "best.keras").exists()
    state = json.loads((checkpoints / "state.json").read_text())
    assert state["epochs_done"] == 1 and state["minutes"] > 0
    batch_reports = [r for r in reports if not r.epoch_end]
    assert len(batch_reports) == 6  # 84 faces / 16 per batch
    assert reports[-1].epoch_end and reports[-1].val_accuracy is not None
    assert all(r.eta_seconds is not None and r.eta_seconds >= 0 for r in reports)

    resumed = train(tiny_dataset, TrainConfig(arch="mini_xception", epochs=2, batch_size=16),
                    checkpoint_dir=checkpoints, command="run 2")
    assert resumed.epochs_run == 2
    assert resumed.commands == ["run 1", "run 2"]  # a model trained over two runs is reproduced by both
    assert resumed.minutes > state["minutes"]  # the resumed run's minutes add to the first's
    assert len(resumed.history["val_accuracy"]) == 2
    assert json.loads((checkpoints / "state.json").read_text())["epochs_done"] == 2
    assert resumed.model.output_shape == (None, 7)


def test_resume_refuses_another_recipe_and_a_damaged_state(tiny_dataset, tmp_path):
    train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=1, batch_size=32), checkpoint_dir=tmp_path)
    with pytest.raises(DataError, match="arch differ"):
        train(tiny_dataset, TrainConfig(arch="mini_xception", epochs=1, batch_size=32), checkpoint_dir=tmp_path)
    with pytest.raises(DataError, match="batch_size, learning_rate differ"):
        train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=2, batch_size=16, learning_rate=1e-3),
              checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    del state["commands"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(DataError, match="state.json: not a checkpoint state [(]no commands[)]"):
        train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=2, batch_size=32), checkpoint_dir=tmp_path)
    (tmp_path / "state.json").write_text("{broken")
    with pytest.raises(DataError, match="state.json: not a checkpoint state"):
        train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=2, batch_size=32), checkpoint_dir=tmp_path)


def test_without_augmentation_checkpoints_and_resumes(tiny_dataset, tmp_path):
    config = TrainConfig(arch="ds_cnn", epochs=1, batch_size=32, augment=False)
    assert train(tiny_dataset, config, checkpoint_dir=tmp_path).epochs_run == 1
    assert (tmp_path / "best.keras").exists()
    config.epochs = 2
    assert train(tiny_dataset, config, checkpoint_dir=tmp_path).epochs_run == 2


def test_training_learns_the_synthetic_faces():
    images, labels = synthetic_dataset(700, seed=3)
    dataset = FaceDataset(images, labels, np.array(["Training"] * 560 + ["PublicTest"] * 140))
    result = train(dataset, TrainConfig(arch="ds_cnn", epochs=6, batch_size=32, learning_rate=3e-3,
                                        augment=False, warmup_epochs=0))
    assert result.val_accuracy > 0.5  # chance is 1/7


def test_cancel_stops_within_the_epoch(tiny_dataset):
    cancel = threading.Event()
    seen = []

    def listener(progress):
        seen.append(progress)
        cancel.set()

    result = train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=5, batch_size=16),
                   listener=listener, cancel=cancel)
    assert result.stopped == "cancelled"
    assert result.epochs_run == 1
    assert len([p for p in seen if not p.epoch_end]) == 1


def test_finish_stops_within_the_epoch_and_keeps_the_weights(tiny_dataset):
    finish = threading.Event()
    finish.set()  # asked before the first batch: the run ends after it, validated like any epoch
    result = train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=5, batch_size=16), finish=finish)
    assert result.stopped == "finished"
    assert result.epochs_run == 1
    assert result.val_accuracy is not None and "val_accuracy" in result.history


@pytest.mark.parametrize(("finish_in_epoch", "averaged"), [(1, 0), (4, 1)])
def test_finish_in_a_weight_averaged_run_keeps_the_best_or_the_mean_so_far(tiny_dataset, finish_in_epoch, averaged):
    finish = threading.Event()
    accuracies = []

    def listener(progress):
        if progress.epoch_end:
            accuracies.append(progress.val_accuracy)
        elif progress.epoch == finish_in_epoch:
            finish.set()

    config = TrainConfig(arch="ds_cnn", epochs=4, batch_size=16, augment=False, schedule="constant", swa_epochs=2)
    result = train(tiny_dataset, config, listener=listener, finish=finish)
    assert (result.stopped, result.epochs_run, result.averaged_epochs) == ("finished", finish_in_epoch, averaged)
    x_val, y_val = dataset_inputs(train_validation(tiny_dataset)[1], Preprocessing())
    accuracy = np.mean(result.model.predict(x_val, verbose=0).argmax(axis=1) == y_val.argmax(axis=1))
    assert result.val_accuracy == pytest.approx(accuracy)  # the weights returned are the ones scored
    if not averaged:
        assert accuracy == pytest.approx(max(accuracies))


def test_time_budget_stops_the_run(tiny_dataset):
    result = train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=50, batch_size=16, minutes=0.0001))
    assert result.stopped == "time_budget"
    assert result.epochs_run == 1


def test_class_weights():
    labels = np.array([0] * 90 + [1] * 10)
    assert class_weights(labels, "none") is None
    balanced = class_weights(labels, "balanced")
    assert balanced[1] == pytest.approx(5.0) and balanced[0] == pytest.approx(100 / 180)
    assert class_weights(labels, "sqrt")[1] == pytest.approx(5.0 ** 0.5)
    with pytest.raises(KeyError):
        class_weights(labels, "heavy")


def test_precision_choice():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") in ("float32", "mixed_bfloat16")


def test_run_training_loads_splits_trains_and_stores_the_model_with_its_card(tmp_path):
    from conftest import write_fer_csv

    images, labels = synthetic_dataset(63)
    data = tmp_path / "upload_3f9a.csv"
    write_fer_csv(data, images, labels, ["Training"] * 42 + ["PublicTest"] * 21)
    store, stages = ModelStore(tmp_path / "models"), []
    config = TrainConfig(arch="ds_cnn", epochs=1, batch_size=32, seed=3)
    outcome = run_training(config, TrainingData(data, "my faces.csv", delete_after_loading=True), "mine",
                           store=store, on_stage=lambda *stage: stages.append(stage))
    assert not data.exists()  # an upload is deleted once read
    assert stages == [("training", 42, 21), ("saving", 42, 21)]
    card = outcome.card
    assert store.names() == ["mine"] and store.card("mine") == card
    assert card.faces_scored == 21 and np.sum(card.metrics.confusion_matrix) == 21
    assert card.training.data == card.scored_on == "my faces.csv"
    assert card.training.recipe == config.to_dict() and card.training.stopped == outcome.result.stopped
    assert card.ms_per_face > 0 and card.parameters == outcome.result.model.count_params()
    assert card.reproduce == "python -m fer_core train --arch ds_cnn --data 'my faces.csv' --name mine --epochs 1 " \
                             "--batch-size 32 --seed 3"


def test_run_training_checks_the_recipe_first_and_stores_nothing_when_cancelled(tiny_dataset, tmp_path):
    from conftest import write_fer_csv

    data = tmp_path / "faces.csv"
    write_fer_csv(data, tiny_dataset.images, tiny_dataset.labels, list(tiny_dataset.usage))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(SettingError, match="fine-tuning Start cannot save over it"):
        run_training(TrainConfig(arch="ds_cnn", init_from="Start"), TrainingData(data, "faces.csv"), "start",
                     store=store)
    cancel = threading.Event()
    cancel.set()
    outcome = run_training(TrainConfig(arch="ds_cnn", epochs=3), TrainingData(data, "faces.csv"), "mine",
                           store=store, cancel=cancel)
    assert outcome.card is None and outcome.result.stopped == "cancelled" and outcome.result.epochs_run == 0
    assert store.names() == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"arch": "resnet9000"}, "unknown architecture 'resnet9000' [(]choose from "),
    ({"epochs": 0}, "the epochs must be 1 or more, not 0"),
    ({"batch_size": 0}, "the batch size must be 1 or more, not 0"),
    ({"learning_rate": 0.0}, "the learning rate must be above 0, not 0.0"),
    ({"weight_decay": -1.0}, "the weight decay must be 0 or more"),
    ({"label_smoothing": 1.0}, "the label smoothing must lie in 0-1"),
    ({"warmup_epochs": -1.0}, "the warm-up epochs must be 0 or more"),
    ({"class_weight": "heavy"}, "the class weight must be none, balanced, sqrt, not 'heavy'"),
    ({"patience": 0}, "the early-stopping patience must be 1 or more epochs"),
    ({"minutes": 0.0}, "the time budget must be above 0 minutes"),
    ({"precision": "float16"}, "the precision must be auto, float32, mixed_bfloat16, not 'float16'"),
    ({"schedule": "step"}, "the schedule must be cosine or constant, not 'step'"),
    ({"swa_epochs": -1}, "the averaged epochs must be 0 or more"),
    ({"epochs": 2, "swa_epochs": 3}, "averaging the last 3 epochs needs at least as many epochs [(]not 2[)]"),
    ({"temperature": 3.0}, "the distillation weight and temperature go with teacher models"),
    ({"teacher": ["t"], "distill_weight": 1.5}, "the distillation weight must lie in 0-1"),
    ({"teacher": ["t"], "temperature": 0.0}, "the distillation temperature must be above 0"),
    ({"loss": "focal"}, "the loss must be cross_entropy or logit_adjusted, not 'focal'"),
    ({"loss": "logit_adjusted", "class_weight": "sqrt"}, "balances the classes itself: leave the class weight"),
    ({"loss": "logit_adjusted", "teacher": ["t"]}, "does not go with distillation"),
    ({"webcam_augment": True, "augment": False}, "webcam augmentation adds to the augmentation"),
])
def test_a_recipe_out_of_range_is_refused_with_the_setting_named(changes, message):
    with pytest.raises(SettingError, match=message):
        TrainConfig(**changes).validate()


def test_the_model_name_is_checked_with_the_recipe():
    assert TrainConfig(init_from="base").validate("tuned").init_from == "base"
    with pytest.raises(SettingError, match="fine-tuning base cannot save over it"):
        TrainConfig(init_from="base").validate("BASE")
    with pytest.raises(SettingError, match="invalid model name"):
        TrainConfig().validate("../elsewhere")


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_with_a_last_batch_of_one_face(arch):
    images, labels = synthetic_dataset(24)
    dataset = FaceDataset(images, labels, np.array(["Training"] * 17 + ["PublicTest"] * 7))
    result = train(dataset, TrainConfig(arch=arch, epochs=1, batch_size=16))
    assert result.epochs_run == 1 and np.isfinite(result.history["loss"][0])


def test_learning_rate_warms_up_then_anneals_over_the_epochs_that_fit():
    from types import SimpleNamespace

    from fer_core.training.callbacks import WarmupSchedule

    config = TrainConfig(epochs=10, learning_rate=1e-2, warmup_epochs=2, minutes=10)
    monitor = SimpleNamespace(budget_seconds=lambda: 600.0, epoch_seconds=[100.0], started=0.0)
    schedule = WarmupSchedule(config, steps_per_epoch=100, monitor=monitor)
    assert schedule.learning_rate(0) == pytest.approx(1e-3)
    assert schedule.learning_rate(200) == pytest.approx(1e-2)
    assert schedule.learning_rate(1000) == pytest.approx(1e-4)
    assert schedule.learning_rate(600) < schedule.learning_rate(300)
    # 100 s epochs, 600 s budget, all used up at once: the plan shrinks to the epochs run so far.
    import time as clock

    monitor.started = clock.monotonic() - 600
    schedule.on_epoch_end(2)
    assert schedule.planned_epochs == 3
    assert schedule.learning_rate(300) == pytest.approx(1e-4)


def _constant_teacher(answer: int = 0):
    """A teacher that gives (almost) the same answer for every face."""
    import keras

    bias = np.zeros(7, np.float32)
    bias[answer] = 6.0
    return keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(
        7, activation="softmax", kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias))],
        name="teacher")


def test_distillation_loss_blends_the_labels_with_the_softened_teacher():
    from fer_core.training.distill import DistillationLoss

    rng = np.random.default_rng(0)
    student, teacher = rng.dirichlet(np.ones(7), 4).astype(np.float32), rng.dirichlet(np.ones(7), 4).astype(np.float32)
    labels = np.eye(7, dtype=np.float32)[[0, 3, 6, 2]]

    def softened(p, t):
        q = np.exp(np.log(p) / t)
        return q / q.sum(axis=1, keepdims=True)

    hard = -np.sum(labels * np.log(student), axis=1)
    soft = -np.sum(softened(teacher, 2.0) * np.log(softened(student, 2.0)), axis=1)
    both = np.concatenate([student, teacher], axis=1)
    for weight in (0.0, 0.3, 1.0):
        loss = float(DistillationLoss(weight, 2.0)(labels, both))
        assert loss == pytest.approx(float(np.mean((1 - weight) * hard + weight * 4.0 * soft)), rel=1e-4)


def test_distillation_makes_the_student_follow_its_teacher():
    images, labels = synthetic_dataset(700, seed=3)
    dataset = FaceDataset(images, labels, np.array(["Training"] * 560 + ["PublicTest"] * 140))
    teacher = _constant_teacher(answer=3)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    config = TrainConfig(arch="ds_cnn", epochs=4, batch_size=32, learning_rate=3e-3, augment=False,
                         warmup_epochs=0, teacher=["always_happy"], distill_weight=1.0, temperature=1.0)
    result = train(dataset, config, teacher=teacher)
    predicted = result.model.predict(images[560:, :, :, None] / 255.0, verbose=0).argmax(axis=1)
    assert np.mean(predicted == 3) > 0.9  # it learnt the teacher's answer, not the labels
    assert result.model.name == "ds_cnn" and len(result.model.layers) == len(build_model("ds_cnn").layers)
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)  # the teacher stays frozen


def test_the_teacher_answers_in_a_training_step_as_at_inference():
    import keras

    from fer_core.training.distill import distillation_trainer

    teacher = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dropout(0.5),
                                keras.layers.Dense(7, activation="softmax")], name="teacher")
    trainer = distillation_trainer(build_model("ds_cnn"), teacher)
    faces = np.random.default_rng(0).random((4, 48, 48, 1)).astype(np.float32)
    answers = keras.ops.convert_to_numpy(trainer(faces, training=True))
    np.testing.assert_allclose(answers[:, 7:], teacher.predict(faces, verbose=0), atol=1e-6)
    assert all(not weight.trainable for weight in teacher.weights)


def test_distillation_checkpoints_resume_and_recipes_are_checked(tiny_dataset, tmp_path):
    config = TrainConfig(arch="ds_cnn", epochs=1, batch_size=32, teacher=["t"])
    with pytest.raises(ValueError, match="teacher"):
        train(tiny_dataset, config)  # the recipe names a teacher, none given
    with pytest.raises(ValueError, match="temperature"):
        train(tiny_dataset, TrainConfig(arch="ds_cnn", teacher=["t"], temperature=0), teacher=_constant_teacher())
    assert train(tiny_dataset, config, checkpoint_dir=tmp_path, teacher=_constant_teacher()).epochs_run == 1
    # the checkpoint keeps the student and its optimizer, not the teacher (a stored model, given again)
    assert {path.name for path in tmp_path.iterdir()} == {"student.keras", "optimizer.npz", "best.keras", "state.json"}
    steps = math.ceil(len(tiny_dataset.with_usage("Training")) / 32)
    with np.load(tmp_path / "optimizer.npz") as optimizer:
        assert int(optimizer["0"]) == steps  # the optimizer's step count, then its moments
    config.epochs = 2
    with pytest.raises(DataError, match="changed since this checkpoint"):
        train(tiny_dataset, config, checkpoint_dir=tmp_path, teacher=_constant_teacher(answer=4))
    resumed = train(tiny_dataset, config, checkpoint_dir=tmp_path, teacher=_constant_teacher())
    assert resumed.epochs_run == 2 and resumed.model.output_shape == (None, 7)
    with np.load(tmp_path / "optimizer.npz") as optimizer:
        assert int(optimizer["0"]) == 2 * steps  # the resumed run went on with the saved optimizer state
    with pytest.raises(DataError, match="teacher differ"):
        train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=3, batch_size=32, teacher=["u"]),
              checkpoint_dir=tmp_path, teacher=_constant_teacher())

    np.savez(tmp_path / "optimizer.npz", **{"0": np.zeros(3)})  # a damaged optimizer state
    config.epochs = 3
    with pytest.raises(DataError, match="optimizer state does not fit"):
        train(tiny_dataset, config, checkpoint_dir=tmp_path, teacher=_constant_teacher())
    (tmp_path / "student.keras").write_bytes(b"not a model")
    with pytest.raises(DataError, match="cannot resume from this checkpoint"):
        train(tiny_dataset, config, checkpoint_dir=tmp_path, teacher=_constant_teacher())


def test_fine_tuning_starts_from_the_given_weights(tiny_dataset):
    start = build_model("ds_cnn")
    rng = np.random.default_rng(1)
    start.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in start.get_weights()])
    config = TrainConfig(arch="ds_cnn", epochs=1, batch_size=32, learning_rate=1e-12, augment=False,
                         init_from="start")
    result = train(tiny_dataset, config, start_from=start)
    for tuned, given in zip(result.model.trainable_weights, start.trainable_weights):
        np.testing.assert_allclose(np.asarray(tuned), np.asarray(given), rtol=0, atol=1e-7)  # barely a step
    with pytest.raises(ValueError, match="start_from"):
        train(tiny_dataset, config)  # the recipe starts from a model, none given
    with pytest.raises(ValueError, match="names none"):
        train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=1), start_from=start)
    with pytest.raises(DataError, match="do not fit"):
        train(tiny_dataset, TrainConfig(arch="mini_xception", epochs=1, init_from="start"), start_from=start)


def test_the_constant_schedule_holds_the_peak_after_the_warm_up(tiny_dataset):
    from types import SimpleNamespace

    from fer_core.training.callbacks import WarmupSchedule

    config = TrainConfig(epochs=10, learning_rate=1e-2, warmup_epochs=2, schedule="constant")
    schedule = WarmupSchedule(config, 100, SimpleNamespace(budget_seconds=lambda: None, epoch_seconds=[]))
    assert schedule.learning_rate(0) == pytest.approx(1e-3)
    assert schedule.learning_rate(200) == schedule.learning_rate(999) == pytest.approx(1e-2)
    with pytest.raises(SettingError, match="schedule"):
        train(tiny_dataset, TrainConfig(schedule="step"))


def test_weight_averaging_keeps_the_mean_of_the_last_epochs_and_resumes(tmp_path):
    from types import SimpleNamespace

    import keras

    from fer_core.training.callbacks import WeightAverage

    network = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    schedule, monitor = SimpleNamespace(planned_epochs=4), SimpleNamespace(stopped="completed")

    def end_epoch(averager, epoch):
        network.set_weights([np.full(w.shape, epoch + 1.0, np.float32) for w in network.get_weights()])
        averager.on_epoch_end(epoch)

    averager = WeightAverage(network, 3, schedule, monitor, tmp_path, resume=False)
    for epoch in range(4):
        end_epoch(averager, epoch)
    assert averager.count == 3  # epochs 1-3 of the 4 planned, holding 2, 3 and 4
    assert all(np.allclose(mean, 3.0) for mean in averager.average)

    again = WeightAverage(network, 3, schedule, monitor, tmp_path, resume=True)
    assert again.count == 3 and all(np.allclose(mean, 3.0) for mean in again.average)
    end_epoch(again, 3)  # epoch 3 run again after a crash: counted already
    monitor.stopped = "cancelled"
    end_epoch(again, 4)  # cut short: left out
    assert again.count == 3 and all(np.allclose(mean, 3.0) for mean in again.average)
    monitor.stopped, schedule.planned_epochs = "completed", 10
    longer = WeightAverage(network, 9, schedule, monitor, tmp_path, resume=True)
    end_epoch(longer, 4)  # a resumed run averaging as many more epochs as it adds: the mean goes on
    assert longer.count == 4 and all(np.allclose(mean, 3.5) for mean in longer.average)
    end_epoch(again, 7)  # a resumed run planning more epochs: its last three are others
    assert again.count == 1 and all(np.allclose(mean, 8.0) for mean in again.average)
    assert WeightAverage(network, 3, schedule, monitor, tmp_path, resume=False).count == 0  # a new run

    (tmp_path / "average.npz").write_bytes(b"broken")
    with pytest.raises(DataError, match="not a readable weight average"):
        WeightAverage(network, 3, schedule, monitor, tmp_path, resume=True)
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    WeightAverage(other, 1, schedule, monitor, tmp_path, resume=False).on_epoch_end(9)
    with pytest.raises(DataError, match="does not fit this network"):
        WeightAverage(network, 3, schedule, monitor, tmp_path, resume=True)


def test_recomputed_batch_norm_statistics_are_the_mean_over_the_faces():
    import keras

    from fer_core.training.callbacks import recompute_batch_norm

    inputs = keras.Input((4, 4, 2))
    features = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    network = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99)(features))
    faces = np.random.default_rng(0).normal(2.0, 3.0, (512, 4, 4, 2)).astype(np.float32)
    recompute_batch_norm(network, faces, batch_size=128)
    norm = network.layers[-1]
    outputs = keras.Model(inputs, features).predict(faces, verbose=0)
    np.testing.assert_allclose(np.asarray(norm.moving_mean), outputs.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    batch_variances = [outputs[i:i + 128].var(axis=(0, 1, 2)) for i in range(0, 512, 128)]
    np.testing.assert_allclose(np.asarray(norm.moving_variance), np.mean(batch_variances, axis=0), rtol=1e-3)
    assert norm.momentum == 0.99  # restored


def test_a_weight_averaged_run_returns_the_mean_with_its_own_statistics(tiny_dataset, tmp_path):
    config = TrainConfig(arch="ds_cnn", epochs=3, batch_size=32, augment=False, schedule="constant", swa_epochs=2,
                         patience=1)
    result = train(tiny_dataset, config, checkpoint_dir=tmp_path)
    assert result.epochs_run == 3 and result.averaged_epochs == 2  # no early stopping
    with np.load(tmp_path / "average.npz") as saved:
        assert int(saved["count"]) == 2 and int(saved["first_epoch"]) == 1
        average = [saved[f"w{i}"] for i in range(len(result.model.weights))]
    recomputed = 0
    for variable, mean in zip(result.model.weights, average):
        if variable.trainable:
            np.testing.assert_allclose(np.asarray(variable), mean, rtol=1e-5, atol=1e-6)
        else:  # normalisation statistics, measured again for the mean
            recomputed += not np.allclose(np.asarray(variable), mean)
    assert recomputed > 0
    x_val, y_val = dataset_inputs(train_validation(tiny_dataset)[1], Preprocessing())
    accuracy = np.mean(result.model.predict(x_val, verbose=0).argmax(axis=1) == y_val.argmax(axis=1))
    assert result.val_accuracy == pytest.approx(accuracy)
    config.swa_epochs = 1  # a finished run asked for a shorter window: its epochs cannot be averaged again
    with pytest.raises(DataError, match="began at epoch 2, before the last 1 epochs"):
        train(tiny_dataset, config, checkpoint_dir=tmp_path)
    config.swa_epochs = 3  # a longer one: the mean it has, of 2 of the last 3 epochs
    assert train(tiny_dataset, config, checkpoint_dir=tmp_path).averaged_epochs == 2
    config.swa_epochs = 2
    config.epochs = 4  # resumed with more epochs: the last two are epochs 2 and 3, of which only 3 runs now
    assert train(tiny_dataset, config, checkpoint_dir=tmp_path).averaged_epochs == 1
    with pytest.raises(SettingError, match="averaging the last 3 epochs"):
        train(tiny_dataset, TrainConfig(arch="ds_cnn", epochs=2, swa_epochs=3))


def test_the_logit_adjusted_loss_adds_the_log_prior_before_the_cross_entropy():
    labels = np.array([0] * 8 + [1] + [2] * 4 + [3] * 16 + [4] * 4 + [5] * 4 + [6] * 3)
    prior = np.bincount(labels) / len(labels)
    loss = LogitAdjustedLoss.for_labels(labels)
    truth = np.eye(7, dtype=np.float32)[[1, 3]]
    uniform = np.full((2, 7), 1 / 7, np.float32)
    # a network answering 1/7 everywhere is read as the prior: the rare class costs most
    np.testing.assert_allclose(np.asarray(loss.call(truth, uniform)), -np.log(prior[[1, 3]]), rtol=1e-5)
    # a network answering the balanced posterior p(y|x)/prior is read as p(y|x)
    posterior = np.array([[0.1, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1], [0.05, 0.05, 0.05, 0.6, 0.1, 0.1, 0.05]])
    balanced = posterior / prior
    balanced = (balanced / balanced.sum(axis=1, keepdims=True)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loss.call(truth, balanced)), -np.log([0.4, 0.6]), rtol=1e-5)
    again = LogitAdjustedLoss.from_config(loss.get_config())
    assert again.log_prior == loss.log_prior and again.label_smoothing == 0.0
    with pytest.raises(DataError, match="needs training faces of every class; there are none of disgust, neutral"):
        LogitAdjustedLoss.for_labels(np.array([0, 2, 3, 4, 5]))


def test_a_logit_adjusted_webcam_run_checkpoints_resumes_and_says_so_on_its_card(tmp_path):
    images, labels = synthetic_dataset(112)
    data = tmp_path / "faces.csv"
    usage = ["Training"] * 84 + ["PublicTest"] * 28
    data.write_text("emotion,pixels,Usage\n" + "".join(
        f"{label},{' '.join(map(str, image.ravel()))},{use}\n" for image, label, use in zip(images, labels, usage)))
    config = TrainConfig(arch="ds_cnn", epochs=1, batch_size=32, loss="logit_adjusted", webcam_augment=True)
    store, checkpoints = ModelStore(tmp_path / "models"), tmp_path / "ck"
    run_training(config, TrainingData(data, "faces.csv"), "balanced", store=store, checkpoint_dir=checkpoints)
    config.epochs = 2  # resumed: the checkpoint's compiled loss and augmentation load again
    outcome = run_training(config, TrainingData(data, "faces.csv"), "balanced", store=store,
                           checkpoint_dir=checkpoints)
    assert outcome.result.epochs_run == 2
    card = store.card("balanced")
    assert card.training.recipe["loss"] == "logit_adjusted" and card.training.recipe["webcam_augment"]
    assert card.training.balanced_by_loss and card.class_prior is not None
    assert card.reproduce.endswith("--epochs 2 --batch-size 32 --webcam-augment --loss logit_adjusted")


def test_webcam_augmentation_changes_the_light_of_training_faces_only():
    faces = np.tile(np.linspace(0.2, 0.8, 48, dtype=np.float32), (6, 48, 1))[..., np.newaxis]
    plain = build_augmentation(rotation_degrees=0, shift=0, zoom=0, erasing=False, seed=3)
    webcam = build_augmentation(rotation_degrees=0, shift=0, zoom=0, erasing=False, webcam=True, seed=3)
    np.testing.assert_array_equal(np.asarray(webcam(faces, training=False)), faces)
    lit = np.asarray(webcam(faces, training=True))
    assert lit.min() >= 0.0 and lit.max() <= 1.0
    flipped_only = np.asarray(plain(faces, training=True))
    brightness_change = np.abs(lit.mean(axis=(1, 2, 3)) - flipped_only.mean(axis=(1, 2, 3)))
    assert brightness_change.max() > 0.02  # each face lit its own way
    gamma = RandomGamma(2.0, seed=1)
    np.testing.assert_array_equal(np.asarray(gamma(faces, training=False)), faces)
    bent = np.asarray(gamma(faces, training=True))
    powers = np.log(bent) / np.log(faces)  # each face raised to one power of its own
    np.testing.assert_allclose(powers, np.broadcast_to(powers[:, :1, :1], powers.shape), rtol=1e-4)
    assert np.all((powers > 0.5 - 1e-6) & (powers < 2.0 + 1e-6)) and np.ptp(powers[:, 0, 0, 0]) > 0.05
