import json
import re
import shlex
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import synthetic_face
from PIL import Image

from fer_core.base.errors import SettingError
from fer_core.base.labels import EMOTIONS
from fer_core.cli import main
from fer_core.faces.images import encode_png
from fer_core.registry.cards import Metrics, Scores, Training, make_card
from fer_core.training.recipe import TrainConfig


def test_models_lists_the_store(model_store, capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("default") and "ds_cnn" in lines[1]
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [card["name"] for card in cards] == ["default", "tiny"]


def test_models_keeps_long_names_apart_from_their_architecture(model_store, capsys):
    from fer_core.faces.preprocess import Preprocessing

    model = model_store.load("tiny").model
    metrics = Metrics(accuracy=0.5, macro_f1=0.4, n=0, per_class={}, confusion_matrix=[],
                      flip_tta=Scores(accuracy=0.55, macro_f1=0.45))
    card = make_card(arch="mini_xception", model=model, preprocessing=Preprocessing(), training=Training(data="none"),
                     metrics=metrics, ms_per_face=None, reproduce="(test)")
    model_store.save("a_weight_averaged_long_name", model, card)
    assert main(["models"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:4] == ["name", "arch", "accuracy", "flip-TTA"]
    assert [row[:2] for row in rows[1:]] == [["default", "ds_cnn"], ["a_weight_averaged_long_name", "mini_xception"],
                                             ["tiny", "mini_xception"]]
    assert rows[2][2:5] == ["0.5000", "0.5500", "0.4000"]


def test_predict_json_and_annotate(model_store, astronaut_png, tmp_path, capsys):
    out = tmp_path / "annotated.png"
    assert main(["predict", str(astronaut_png), "--json", "--detector", "haar", "--annotate", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image"] == str(astronaut_png)
    face = result["faces"][0]
    assert len(face["box"]) == 4 and face["label"] in EMOTIONS
    assert set(face["probabilities"]) == set(EMOTIONS)
    assert face["score"] == max(face["probabilities"].values())
    assert Image.open(out).size == (512, 512)


def test_predict_several_images_gives_a_list(model_store, astronaut_png, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (200, 200, 200)).save(blank)
    assert main(["predict", str(astronaut_png), str(blank), "--json", "--detector", "mtcnn",
                 "--annotate", str(tmp_path / "out")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [len(r["faces"]) for r in results] == [1, 0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astronaut_annotated.png", "blank_annotated.png"]


def test_predict_bad_file_is_one_line_naming_the_file(model_store, tmp_path, capsys):
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"GIF89a but not really")
    assert main(["predict", str(fake), "--detector", "haar"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(fake) in error[0] and "Traceback" not in error[0]


def test_unknown_model_is_reported(model_store, astronaut_png, capsys):
    assert main(["predict", str(astronaut_png), "--model", "missing"]) == 2
    assert "no model 'missing'" in capsys.readouterr().err


def test_evaluate_picks_private_test_and_writes_json(model_store, fer_csv, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert main(["evaluate", "--model", "default", "--data", str(fer_csv), "--json", str(report_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "PrivateTest" in out[0]
    accuracy = float(out[-1].removeprefix("accuracy: "))
    report = json.loads(report_path.read_text())
    assert report["n"] == 14 and report["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert set(report["per_class"]["angry"]) == {"precision", "recall", "f1", "support"}
    assert len(report["confusion_matrix"]) == 7 and sum(map(sum, report["confusion_matrix"])) == 14

    assert main(["evaluate", "--data", str(fer_csv), "--usage", "PublicTest", "--flip-tta"]) == 0
    assert "21 faces" in capsys.readouterr().out
    assert main(["evaluate", "--data", str(fer_csv), "--usage", "PublicTest", "--flip-tta", "--shift-tta"]) == 0
    assert "with flip and shift TTA" in capsys.readouterr().out


def test_evaluate_missing_usage_is_an_error(model_store, tmp_path, capsys):
    from conftest import synthetic_dataset, write_fer_csv

    path = tmp_path / "train_only.csv"
    write_fer_csv(path, *synthetic_dataset(7))
    assert main(["evaluate", "--data", str(path), "--usage", "PrivateTest"]) == 2
    assert "no rows with Usage PrivateTest" in capsys.readouterr().err


def test_train_saves_to_the_store(model_store, fer_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "1", "--name", "mine",
                 "--batch-size", "32", "--weight-decay", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "saved mine" in out
    card = model_store.card("mine")
    assert card.training.train_rows == 56 and card.faces_scored == 21
    assert card.training.class_counts == {name: 8 for name in EMOTIONS}  # what it learned from: its prior
    assert card.training.recipe["weight_decay"] == 0.05
    assert "train --arch ds_cnn" in card.reproduce
    assert (tmp_path / "checkpoints" / "mine" / "state.json").exists()


def test_timing_works_without_the_resource_module(monkeypatch):
    import importlib

    from fer_core.inference import bench

    monkeypatch.setitem(sys.modules, "resource", None)  # as on Windows: importing it fails
    importlib.reload(bench)
    assert np.isnan(bench.resident_mb())
    monkeypatch.undo()
    assert bench.resident_mb() > 0


def test_bench_prints_fps_last(model_store, capsys):
    assert main(["bench", "--seconds", "0.5"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("fps: ") and float(last.split()[1]) > 0


def test_module_entry_point_fails_cleanly_on_a_missing_file(model_store, tmp_path):
    missing = tmp_path / "nowhere.png"
    run = subprocess.run([sys.executable, "-m", "fer_core", "predict", str(missing), "--detector", "haar"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert f"{missing}: no such file" in run.stderr


def test_evaluate_backends_agree(model_store, fer_csv, tmp_path, capsys):
    from fer_core.inference.predict import to_tflite

    stored = model_store.load("default")
    model_store.save("default", stored.model, stored.card, to_tflite(stored.model))
    reports = {}
    for backend in ("litert", "tensorflow"):
        out = tmp_path / f"{backend}.json"
        assert main(["evaluate", "--data", str(fer_csv), "--backend", backend, "--json", str(out)]) == 0
        assert f"({stored.card.arch}, {backend}, " in capsys.readouterr().out
        reports[backend] = json.loads(out.read_text())
    assert reports["litert"]["confusion_matrix"] == reports["tensorflow"]["confusion_matrix"]
    assert main(["evaluate", "--model", "tiny", "--data", str(fer_csv), "--backend", "litert"]) == 2
    assert "no LiteRT file" in capsys.readouterr().err


def test_unknown_architecture_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--arch", "resnet9000", "--data", "x.csv"])
    assert stop.value.code == 2
    known = "alexnet_small, ds_cnn, fer_resnet, fer_vgg"
    assert f"unknown architecture 'resnet9000' (choose from {known}" in capsys.readouterr().err


def test_evaluate_finds_the_faces_of_labelled_photos(model_store, astronaut_png, tmp_path, capsys):
    for label in ("happy", "neutral"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        (tmp_path / "photos" / label / "astronaut.png").write_bytes(astronaut_png.read_bytes())
    (tmp_path / "photos" / "neutral" / "wall.png").write_bytes(encode_png(np.full((80, 80), 128, np.uint8)))
    assert main(["evaluate", "--data", str(tmp_path / "photos"), "--detect", "haar"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1] == "haar found a face in 2 of the 3 photos loaded (the others were classified whole)"
    assert "3 faces" in out[0] and out[-1].startswith("accuracy: ")

    with pytest.raises(SystemExit):
        main(["evaluate", "--data", str(tmp_path / "photos"), "--detect", "none"])
    assert "invalid choice" in capsys.readouterr().err


def test_train_distils_stored_teachers(model_store, fer_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "1", "--name", "student",
                 "--batch-size", "32", "--teacher", "default", "tiny", "--distill-weight", "0.7"]) == 0
    recipe = model_store.card("student").training.recipe
    assert recipe["teacher"] == ["default", "tiny"] and recipe["distill_weight"] == 0.7
    assert model_store.load("student").model.count_params() == model_store.load("default").model.count_params()

    model_store.save("pair", model_store.load("default").model, replace(model_store.card("default"), arch="ensemble"))
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "1", "--name", "other",
                 "--teacher", "pair"]) == 2
    assert "pair (ensemble) is not a single network" in capsys.readouterr().err
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--temperature", "3"]) == 2
    assert "the distillation weight and temperature go with teacher models" in capsys.readouterr().err


def test_train_fine_tunes_a_stored_network_with_weight_averaging(model_store, fer_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = model_store.load("tiny")
    trained = Training(data="none", minutes=30.0, total_minutes=30.0)
    model_store.save("tiny", tiny.model, replace(tiny.card, training=trained))
    assert main(["train", "--arch", "mini_xception", "--data", str(fer_csv), "--epochs", "1", "--name", "tuned",
                 "--batch-size", "32", "--init-from", "tiny", "--schedule", "constant", "--swa-epochs", "1"]) == 0
    card = model_store.card("tuned")
    recipe = card.training.recipe
    assert (recipe["init_from"], recipe["schedule"], recipe["swa_epochs"]) == ("tiny", "constant", 1)
    assert card.training.averaged_epochs == 1
    # its whole training counts the 30 minutes of the network it started from
    own, total = card.training.minutes, card.training_minutes
    assert 0 < own < 5 and abs(total - (own + 30.0)) <= 0.1 + 1e-9
    assert "weight averaging: the mean of 1 of the last 1 epochs" in capsys.readouterr().out
    assert main(["models"]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tuned"))
    assert listed.split()[-2] == f"{total:.1f}"
    # reproduced by the commands of the network it started from, then its own
    assert card.reproduce.startswith("(untrained test model) && python -m fer_core train --arch mini_xception")
    assert "--init-from tiny" in card.reproduce
    assert main(["train", "--arch", "mini_xception", "--data", str(fer_csv), "--init-from", "default"]) == 2
    assert "default (ds_cnn) is not a mini_xception network" in capsys.readouterr().err
    assert main(["train", "--arch", "mini_xception", "--data", str(fer_csv), "--init-from", "tiny",
                 "--name", "TINY"]) == 2
    assert "fine-tuning tiny cannot save over it" in capsys.readouterr().err
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "2", "--swa-epochs", "3"]) == 2
    assert "averaging the last 3 epochs needs at least as many epochs (not 2)" in capsys.readouterr().err
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--lr", "0"]) == 2
    assert "the learning rate must be above 0, not 0.0" in capsys.readouterr().err


@pytest.mark.parametrize("config", [
    TrainConfig(),
    TrainConfig(arch="ds_cnn", epochs=30, batch_size=32, learning_rate=0.0005, augment=False, class_weight="sqrt",
                minutes=12.5, init_from="small", schedule="constant", swa_epochs=3),
    TrainConfig(arch="mini_xception", epochs=7, learning_rate=3e-4, weight_decay=0.05, patience=40,
                precision="float32", seed=4, teacher=["fer_vgg", "fer_resnet"], distill_weight=0.7, temperature=3.0),
    TrainConfig(arch="fer_vgg", epochs=3, learning_rate=3e-4, init_from="fer_vgg", schedule="constant", swa_epochs=3,
                loss="logit_adjusted", webcam_augment=True),
], ids=["defaults", "train-page", "distillation", "balanced"])
def test_the_reproduce_command_parses_back_to_its_recipe(config):
    from fer_core.cli import build_parser, train_config
    from fer_core.training.recipe import reproduce_command

    command = reproduce_command(config, "my faces.csv.gz", "mine")
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "fer_core", "train"]
    args = build_parser().parse_args(words[3:])
    assert train_config(args) == config
    assert (args.data, args.name) == ("my faces.csv.gz", "mine")
    defaults = TrainConfig().to_dict()
    changed = {key for key, value in config.to_dict().items() if value != defaults[key]} - {"arch"}
    assert len([word for word in words if word.startswith("--")]) == 3 + len(changed)  # --arch, --data, --name


def test_a_recipe_the_command_line_cannot_express_has_no_reproduce_command():
    from fer_core.training.recipe import reproduce_command

    with pytest.raises(SettingError, match="no option for warmup_epochs"):
        reproduce_command(TrainConfig(warmup_epochs=0.0), "faces.csv", "mine")


def test_bad_input_ends_with_one_error_line_and_status_2(model_store, fer_csv, tmp_path, capsys):
    missing_csv, missing_png = tmp_path / "missing.csv", tmp_path / "missing.png"
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("hello,world\n1,2\n")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    gray = tmp_path / "gray.png"
    Image.new("L", (48, 48), 128).save(gray)
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (["evaluate", "--model", "nope", "--data", str(fer_csv)], "no model 'nope'"),
        (["evaluate", "--data", str(missing_csv)], f"{missing_csv}: no such file or folder"),
        (["evaluate", "--data", str(garbage)], f"{garbage}, line 1: missing column(s) emotion, pixels"),
        (["evaluate", "--data", str(fer_csv), "--json", str(folder)], f"{folder}: cannot write the file"),
        (["predict", str(missing_png), "--detector", "none"], f"{missing_png}: no such file"),
        (["predict", str(text), "--detector", "none"], f"{text}: not an image file"),
        (["predict", str(gray), "--detector", "none", "--annotate", str(folder)], f"{folder}: cannot write the file"),
        (["bench", "--image", str(missing_png), "--seconds", "0.1"], f"{missing_png}: no such file"),
        (["ensemble", "default", "tiny", "--name", "../evil", "--data", str(fer_csv)], "invalid model name '../evil'"),
        (["train", "--arch", "ds_cnn", "--data", str(missing_csv), "--checkpoint-dir", str(tmp_path / "runs")],
         f"{missing_csv}: no such file or folder"),
        (["--store", str(gray), "train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "1"],
         f"{gray}: cannot be the model store folder"),
        (["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "1", "--checkpoint-dir", str(gray)],
         f"{gray}: cannot be the checkpoint folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        error = capsys.readouterr().err.splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], (argv, error)


@pytest.mark.parametrize("raised, status, message", [(SettingError("a bad setting"), 2, "error: a bad setting\n"),
                                                     (KeyboardInterrupt(), 130, "interrupted\n")])
def test_bad_input_and_interruption_end_with_a_message_and_status(monkeypatch, capsys, raised, status, message):
    from fer_core import cli

    def failing(args):
        raise raised

    monkeypatch.setattr(cli, "cmd_models", failing)
    assert main(["models"]) == status
    assert capsys.readouterr().err == message


@pytest.mark.parametrize("bug", [KeyError("emotion"), ValueError("a bug"), OSError("a bug")])
def test_a_programming_error_keeps_its_traceback(monkeypatch, bug):
    from fer_core import cli

    def broken(args):
        raise bug

    monkeypatch.setattr(cli, "cmd_models", broken)
    with pytest.raises(type(bug)):
        main(["models"])


# ---------------------------------------------------------------- evaluate --report, crossval


def test_evaluate_writes_a_self_contained_html_report(model_store, fer_csv, tmp_path, capsys):
    import re

    page, scores = tmp_path / "reports" / "report.html", tmp_path / "scores.json"
    assert main(["evaluate", "--data", str(fer_csv), "--json", str(scores), "--report", str(page)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("accuracy: ")
    html = page.read_text()
    assert "<h1>default on fer_small.csv (PrivateTest rows)</h1>" in html
    assert not re.search(r"https?://", html)  # nothing to fetch: it opens offline
    counts_table = html.split('<table id="counts">', 1)[1].split("</table>", 1)[0]
    rows = [[int(value) for value in re.findall(r"<td[^>]*>(\d+)</td>", row)] for row in counts_table.split("<tr>")[2:]]
    matrix = json.loads(scores.read_text())["confusion_matrix"]
    assert [row[:7] for row in rows] == matrix and [row[7] for row in rows] == [sum(row) for row in matrix]
    assert html.count("data:image/png;base64,") == sum(min(count, 8) for true, row in enumerate(matrix)
                                                       for predicted, count in enumerate(row) if true != predicted)


def _store_files(store) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in store.root.iterdir()}


def test_crossval_prints_each_fold_then_the_mean_and_stores_nothing(model_store, fer_csv, tmp_path, capsys):
    import re

    before = _store_files(model_store)
    out_json = tmp_path / "cv" / "folds.json"
    assert main(["crossval", "--arch", "ds_cnn", "--data", str(fer_csv), "--folds", "3", "--epochs", "1",
                 "--batch-size", "32", "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len([line for line in lines if re.match(r"fold \d/3: accuracy \d\.\d{4}, macro-F1 ", line)]) == 3
    assert len([line for line in lines if re.match(r"fold \d/3: training ds_cnn on \d+ faces", line)]) == 3
    assert re.fullmatch(r"accuracy: \d\.\d{4} \+- \d\.\d{4}", lines[-1])
    summary = json.loads(out_json.read_text())
    assert {"folds", "mean", "std"} <= set(summary)
    assert [set(fold) for fold in summary["folds"]] == [{"accuracy", "macro_f1", "n"}] * 3
    assert sum(fold["n"] for fold in summary["folds"]) == 91  # every row, whatever its Usage, tested once
    accuracies = [fold["accuracy"] for fold in summary["folds"]]
    assert summary["mean"] == pytest.approx(np.mean(accuracies), abs=1e-4)
    assert summary["std"] == pytest.approx(np.std(accuracies), abs=1e-4)
    assert lines[-1] == f"accuracy: {summary['mean']:.4f} +- {summary['std']:.4f}"
    assert _store_files(model_store) == before


def test_crossval_keeps_persons_apart_and_stores_a_final_model_on_request(model_store, tmp_path, capsys,
                                                                          monkeypatch):
    from conftest import synthetic_dataset

    monkeypatch.chdir(tmp_path)
    images, labels = synthetic_dataset(42)
    for index, (image, label) in enumerate(zip(images, labels)):  # 6 persons, each showing every class
        path = tmp_path / "faces" / EMOTIONS[label] / f"S{index % 6:02d}_{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(image))
    assert main(["crossval", "--arch", "ds_cnn", "--data", str(tmp_path / "faces"), "--folds", "2", "--epochs", "1",
                 "--groups", r"(S\d+)_", "--name", "final", "--json", str(tmp_path / "cv.json")]) == 0
    out = capsys.readouterr().out
    assert "folds stratified by class, each of the 6 persons in one fold only" in out
    assert "saved final: validation accuracy" in out and out.strip().splitlines()[-1].startswith("accuracy: ")
    assert json.loads((tmp_path / "cv.json").read_text())["persons"] == 6
    card = model_store.card("final")
    assert card.training.train_rows + card.training.validation_rows == 42  # the final model learnt from all
    assert "python -m fer_core train --arch ds_cnn --data faces --name final --epochs 1" in card.reproduce


def test_crossval_bad_options_end_with_a_clear_error_before_training(model_store, fer_csv, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["crossval", "--arch", "ds_cnn", "--data", str(fer_csv), "--folds", "1"])
    assert stop.value.code == 2
    assert "argument --folds: must be 2 or more, not 1" in capsys.readouterr().err
    cases = [
        (["--folds", "20"], "20 folds need 20 or more faces of each class present, but angry has 13"),
        (["--groups", r"(\w+)"], "a FER2013 CSV names no files, so no persons"),
        (["--name", "../evil"], "invalid model name '../evil'"),
        (["--lr", "0"], "the learning rate must be above 0, not 0.0"),
    ]
    for options, message in cases:
        argv = ["crossval", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "1", *options]
        assert main(argv) == 2, argv
        error = capsys.readouterr().err.splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], (argv, error)


def test_finetune_stores_the_model_and_ends_with_before_and_after(model_store, tmp_path, capsys):
    from fer_core.datasets.collection import FaceCollection

    collection = FaceCollection()
    rng = np.random.default_rng(0)
    for code in (0, 3, 4):
        for _ in range(2):
            collection.add_recording(code, [synthetic_face(code, rng) for _ in range(4)])
    data = tmp_path / "class.zip"
    data.write_bytes(collection.to_zip())
    assert main(["finetune", "--from", "default", "--data", str(data), "--minutes", "0.05", "--name", "class_model",
                 "--json", str(tmp_path / "tuned.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"accuracy: \d\.\d{4} -> \d\.\d{4}", lines[-1])
    assert any(line.startswith("held out 12 faces (3 recordings), trained on 12") for line in lines)
    summary = json.loads((tmp_path / "tuned.json").read_text())
    assert lines[-1] == f"accuracy: {summary['accuracy_before']:.4f} -> {summary['accuracy_after']:.4f}"
    card = model_store.card("class_model")
    assert card.training.fine_tuning.start == "default" and card.training.data == "24 class faces"
    command = "python -m fer_core finetune --from default --data class.zip --name class_model --minutes 0.05"
    assert command in card.reproduce


def test_finetune_bad_input_ends_with_one_error_line_and_status_2(model_store, fer_csv, tmp_path, capsys):
    cases = [
        (["--from", "tiny", "--data", str(tmp_path / "missing.zip")], "no such file or folder"),
        (["--from", "missing", "--data", str(fer_csv)], "no model 'missing'"),
        (["--from", "tiny", "--data", str(fer_csv), "--minutes", "0"], "above 0 minutes"),
        (["--from", "tiny", "--data", str(fer_csv), "--name", "tiny"], "cannot save over it"),
    ]
    for options, message in cases:
        assert main(["finetune", *options]) == 2, options
        error = capsys.readouterr().err.splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], (options, error)


def test_worker_without_a_redis_server_ends_with_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("FER_LAB_REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: a worker needs the Redis server: set FER_LAB_REDIS_URL or pass --redis-url\n"
    assert captured.out == ""
    monkeypatch.setenv("FER_LAB_REDIS_URL", "  ")  # blank is unset
    assert main(["worker", "--lanes", "train"]) == 2
    assert capsys.readouterr().err.startswith("error: a worker needs the Redis server")


def test_worker_refuses_unknown_lanes_and_a_url_that_is_not_redis_before_connecting(monkeypatch, capsys):
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # the worker sets them for its jobs: restored after the test
    monkeypatch.delenv("FER_LAB_REDIS_URL", raising=False)
    no_server = "unix:///nonexistent.sock"  # never reached: the lanes are refused first
    cases = [
        (["--redis-url", no_server, "--lanes", "nonsense"], "unknown job lane(s) nonsense: choose from train, "
                                                            "finetune"),
        (["--redis-url", no_server, "--lanes", "train,nonsense"], "unknown job lane(s) nonsense: choose from"),
        (["--redis-url", no_server, "--lanes", ","], ": choose from train, finetune"),  # no lane at all
        (["--redis-url", "notaurl"], "'notaurl' is not a Redis URL"),
    ]
    for options, message in cases:
        assert main(["worker", "--threads", "1", *options]) == 2, options
        error = capsys.readouterr().err.splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], (options, error)
    monkeypatch.setenv("FER_LAB_REDIS_URL", no_server)  # the URL from the environment, as a deployment gives it
    assert main(["worker", "--threads", "1", "--lanes", "nonsense"]) == 2
    assert "unknown job lane(s) nonsense" in capsys.readouterr().err
