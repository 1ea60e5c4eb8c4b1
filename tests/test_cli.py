import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fer_core.cli import main
from fer_core.images import encode_png
from fer_core.labels import EMOTIONS


@pytest.fixture
def astronaut_png(tmp_path, astronaut_bgr):
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut_bgr[:, :, ::-1]).save(path)
    return path


def test_models_lists_the_store(model_store, capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("default") and "ds_cnn" in lines[1]
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [card["name"] for card in cards] == ["default", "tiny"]


def test_models_keeps_long_names_apart_from_their_architecture(model_store, capsys):
    from fer_core.store import make_card

    model = model_store.load("tiny").model
    metrics = {"accuracy": 0.5, "macro_f1": 0.4, "flip_tta": {"accuracy": 0.55, "macro_f1": 0.45}}
    card = make_card(arch="mini_xception", model=model, preprocessing={"size": 48}, training={"data": "none"},
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
    assert main(["predict", str(fake), "--detector", "haar"]) != 0
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
    assert card["training"]["train_rows"] == 56 and card["metrics"]["n"] == 21
    assert card["training"]["recipe"]["weight_decay"] == 0.05
    assert "train --arch ds_cnn" in card["reproduce"]
    assert (tmp_path / "checkpoints" / "mine" / "state.json").exists()


def test_timing_works_without_the_resource_module(monkeypatch):
    import importlib

    from fer_core import bench

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
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert f"{missing}: no such file" in run.stderr


def test_evaluate_backends_agree(model_store, fer_csv, tmp_path, capsys):
    from fer_core.predict import to_tflite

    stored = model_store.load("default")
    model_store.save("default", stored.model, stored.card, to_tflite(stored.model))
    reports = {}
    for backend in ("litert", "tensorflow"):
        out = tmp_path / f"{backend}.json"
        assert main(["evaluate", "--data", str(fer_csv), "--backend", backend, "--json", str(out)]) == 0
        assert f"{backend})" in capsys.readouterr().out
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
    recipe = model_store.card("student")["training"]["recipe"]
    assert recipe["teacher"] == ["default", "tiny"] and recipe["distill_weight"] == 0.7
    assert model_store.load("student").model.count_params() == model_store.load("default").model.count_params()

    model_store.save("pair", model_store.load("default").model, {**model_store.card("default"), "arch": "ensemble"})
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "1", "--name", "other",
                 "--teacher", "pair"]) == 2
    assert "pair (ensemble) is not a single network" in capsys.readouterr().err
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--temperature", "3"]) == 2
    assert "--temperature go with --teacher" in capsys.readouterr().err


def test_train_fine_tunes_a_stored_network_with_weight_averaging(model_store, fer_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = model_store.load("tiny")
    model_store.save("tiny", tiny.model, {**tiny.card, "training": {"data": "none", "minutes": 30.0}})
    assert main(["train", "--arch", "mini_xception", "--data", str(fer_csv), "--epochs", "1", "--name", "tuned",
                 "--batch-size", "32", "--init-from", "tiny", "--schedule", "constant", "--swa-epochs", "1"]) == 0
    card = model_store.card("tuned")
    recipe = card["training"]["recipe"]
    assert (recipe["init_from"], recipe["schedule"], recipe["swa_epochs"]) == ("tiny", "constant", 1)
    assert card["training"]["averaged_epochs"] == 1
    # its whole training counts the 30 minutes of the network it started from
    own, total = card["training"]["minutes"], card["training"]["total_minutes"]
    assert 0 < own < 5 and abs(total - (own + 30.0)) <= 0.1 + 1e-9
    assert "weight averaging: the mean of 1 of the last 1 epochs" in capsys.readouterr().out
    assert main(["models"]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tuned"))
    assert listed.split()[-2] == f"{total:.1f}"
    # reproduced by the commands of the network it started from, then its own
    assert card["reproduce"].startswith("(untrained test model) && python -m fer_core train --arch mini_xception")
    assert "--init-from tiny" in card["reproduce"]
    assert main(["train", "--arch", "mini_xception", "--data", str(fer_csv), "--init-from", "default"]) == 2
    assert "default (ds_cnn) is not a mini_xception network" in capsys.readouterr().err
    assert main(["train", "--arch", "mini_xception", "--data", str(fer_csv), "--init-from", "tiny",
                 "--name", "TINY"]) == 2
    assert "fine-tuning tiny cannot save over it" in capsys.readouterr().err
    assert main(["train", "--arch", "ds_cnn", "--data", str(fer_csv), "--epochs", "2", "--swa-epochs", "3"]) == 2
    assert "--swa-epochs (3) cannot exceed --epochs (2)" in capsys.readouterr().err
