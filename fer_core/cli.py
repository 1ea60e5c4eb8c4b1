"""The command line: train, cross-validate, ensemble, evaluate, predict, bench and list models.

Bad input (a :class:`~fer_core.base.errors.FerError`) ends a command with ``error: ...`` naming the file,
model or setting, and exit status 2, never a traceback; any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The modules every command may use load at once (about 0.4 s); a command imports the heavy ones
# it needs, marked where it does: scikit-learn (2 s) for scoring, Keras and TensorFlow (10 s) for training.
from fer_core.base.errors import FerError, SettingError  # noqa: E402
from fer_core.base.labels import EMOTIONS  # noqa: E402
from fer_core.datasets.load import load_dataset  # noqa: E402
from fer_core.faces.detect import DETECTORS, LargestFaceCropper, get_detector  # noqa: E402
from fer_core.faces.images import encode_png, load_image  # noqa: E402
from fer_core.faces.samples import sample_frame  # noqa: E402
from fer_core.inference import bench  # noqa: E402
from fer_core.inference.odds import ODDS, strength_for  # noqa: E402
from fer_core.inference.photos import PhotoFaces  # noqa: E402
from fer_core.inference.predict import EmotionAnalyser, EmotionClassifier, classifier_ms_per_face  # noqa: E402
from fer_core.registry.cards import ModelCard, count_classes  # noqa: E402
from fer_core.registry.store import ModelStore, check_name  # noqa: E402
from fer_core.service.threads import training_threads  # noqa: E402
from fer_core.training.recipe import (  # noqa: E402
    CLASS_WEIGHTS,
    LOSSES,
    PRECISIONS,
    SCHEDULES,
    TrainConfig,
    TrainingData,
)

if TYPE_CHECKING:
    from fer_core.registry.cards import ModelCard
    from fer_core.training.callbacks import TrainProgress


def _print_json(value) -> None:
    print(json.dumps(value, indent=2))


def _runtime(classifier) -> str:
    """How a classifier runs, for the first line of a report: its backend and its test-time views."""
    views = [view for view, used in (("flip", classifier.flip_tta), ("shift", classifier.shift_tta)) if used]
    return classifier.backend + (f", with {' and '.join(views)} TTA" if views else "")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe the ``train`` command's options describe (checked by the training service)."""

    return TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                       weight_decay=args.weight_decay, augment=not args.no_augment,
                       webcam_augment=args.webcam_augment, class_weight=args.class_weight, loss=args.loss,
                       patience=args.patience, minutes=args.minutes, precision=args.precision, seed=args.seed,
                       teacher=args.teacher or [], distill_weight=args.distill_weight, temperature=args.temperature,
                       init_from=args.init_from, schedule=args.schedule, swa_epochs=args.swa_epochs)


def _print_epoch(progress: TrainProgress) -> None:
    """A training listener printing one line at the end of each epoch."""
    if progress.epoch_end:
        eta = "" if progress.eta_seconds is None else f" eta {progress.eta_seconds / 60:.1f} min"
        print(f"epoch {progress.epoch}/{progress.epochs} loss {progress.loss:.4f} "
              f"acc {progress.accuracy:.4f} val_loss {progress.val_loss:.4f} "
              f"val_acc {progress.val_accuracy:.4f} elapsed {progress.elapsed_seconds / 60:.1f} min{eta}",
              flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from fer_core.training.train import run_training  # Keras and TensorFlow: training commands only

    config, name = train_config(args), args.name or args.arch
    checkpoints = Path(args.checkpoint_dir or Path("checkpoints") / name)

    def announce(stage: str, train_rows: int, validation_rows: int) -> None:
        if stage == "training":
            print(f"training {config.arch} on {train_rows} faces, validating on {validation_rows}; "
                  f"checkpoints in {checkpoints}", flush=True)

    data = TrainingData(Path(args.data), Path(args.data).name, cache=args.cache)
    outcome = run_training(config, data, name, store=ModelStore(args.store), checkpoint_dir=checkpoints,
                           listener=_print_epoch, on_stage=announce)
    result = outcome.result
    print(f"stopped: {result.stopped} after {result.epochs_run} epochs, {result.minutes:.1f} min")
    if config.swa_epochs:
        kept = f"the mean of {result.averaged_epochs}" if result.averaged_epochs else "none averaged: the best"
        print(f"weight averaging: {kept} of the last {config.swa_epochs} epochs")
    assert outcome.card is not None  # None only for a cancelled run, and nothing cancels one here
    _print_saved(outcome.card)
    return 0


def cmd_crossval(args: argparse.Namespace) -> int:
    """k-fold cross-validation of a recipe (see ``training.crossval``); the last line printed is
    ``accuracy: MEAN +- STD``. With ``--name``, a final model trained on all the data is stored."""
    from fer_core.evaluation.evaluate import format_cross_validation  # scikit-learn: scoring commands only
    from fer_core.training.crossval import cross_validate_recipe  # Keras and TensorFlow: training commands only
    from fer_core.training.train import run_training  # Keras and TensorFlow: training commands only

    config = train_config(args).validate(args.name)
    dataset = load_dataset(args.data, cache=args.cache, persons=args.groups)
    summary = cross_validate_recipe(dataset, config, args.folds, listener=_print_epoch,
                                    say=lambda line: print(line, flush=True))
    if args.json:
        _write_output(Path(args.json), (json.dumps(summary, indent=2) + "\n").encode())
    if args.name:
        def announce(stage: str, train_rows: int, validation_rows: int) -> None:
            if stage == "training":
                print(f"final model {args.name}: training on {train_rows} faces, validating on {validation_rows}",
                      flush=True)

        data = TrainingData(Path(args.data), Path(args.data).name, cache=args.cache)
        outcome = run_training(config, data, args.name, store=ModelStore(args.store), listener=_print_epoch,
                               on_stage=announce)
        assert outcome.card is not None  # None only for a cancelled run, and nothing cancels one here
        _print_saved(outcome.card)
    print(format_cross_validation(summary))
    return 0


def _print_saved(card: ModelCard) -> None:
    print(f"saved {card.name}: validation accuracy {card.accuracy:.4f} (flip TTA {card.flip_accuracy:.4f}), "
          f"macro-F1 {card.macro_f1:.4f}, {card.parameters:,} parameters, {card.ms_per_face:.2f} ms per face, "
          f"{card.file_bytes:,} bytes")


def _command(args: argparse.Namespace) -> str:
    """The command line that ran, as it is recorded in model cards: the data named by its file
    name alone (where it lies on this machine means nothing to a reader)."""
    data = getattr(args, "data", None)
    words = [Path(word).name if word == data else word for word in args.argv]
    return "python -m fer_core " + " ".join(shlex.quote(word) for word in words)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from fer_core.training.ensemble import (  # Keras and TensorFlow: training commands only
        ensemble_members,
        save_ensemble,
        validation_faces,
    )

    store = ModelStore(args.store)
    members = ensemble_members(store, args.members, check_name(args.name))
    validation = validation_faces(members, load_dataset(args.data, cache=args.cache))
    print(f"averaging {', '.join(member.name for member in members)}; validating on {len(validation)} faces",
          flush=True)
    _print_saved(save_ensemble(store, members, args.name, validation,
                               data_description=Path(args.data).name, command=_command(args),
                               weights_dtype=args.weights))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from fer_core.training.ensemble import (  # Keras and TensorFlow: training commands only
        save_compact,
        single_networks,
        validation_faces,
    )

    store = ModelStore(args.store)
    [network] = single_networks(store, [args.model], "a compact copy")
    name = check_name(args.name or network.name)
    validation = validation_faces([network], load_dataset(args.data, cache=args.cache))
    print(f"storing {network.name} with {args.weights} weights as {name}; validating on {len(validation)} faces",
          flush=True)
    _print_saved(save_compact(store, network, name, validation, command=_command(args), weights_dtype=args.weights))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a stored model on a class's own faces and store it; the last line printed is
    ``accuracy: BEFORE -> AFTER`` on the faces held out from its training."""

    from fer_core.training.finetune import finetune  # Keras and TensorFlow: training commands only

    dataset = load_dataset(args.data)
    print(f"fine-tuning {args.start} on {len(dataset)} faces of {Path(args.data).name}, "
          f"for at most {args.minutes:g} min of training", flush=True)

    shown, started = [-1], time.monotonic()

    def report(done: float, message: str) -> None:  # a line per tenth of the way
        if int(done * 10) > shown[0]:
            shown[0] = int(done * 10)
            print(f"{done:4.0%} {time.monotonic() - started:4.0f} s  {message}", flush=True)

    result = finetune(ModelStore(args.store), args.start, dataset, name=args.name, minutes=args.minutes,
                      seed=args.seed, data_name=Path(args.data).name, progress=report)
    assert result is not None  # None only when cancelled, and nothing cancels it here
    split = result.split
    print(f"held out {len(split.held_out)} faces ({split.recordings} recordings), trained on {len(split.train)}; "
          f"{result.stopped} in {result.seconds:.0f} s")
    if split.untested_classes:
        print(f"no held-out faces of {', '.join(split.untested_classes)} (a single recording each, trained on)")
    _print_saved(result.card)
    if args.json:
        tuning = result.card.training.fine_tuning
        assert tuning is not None  # the card of every fine-tuned model says what it was tuned from
        summary = {"start": tuning.start, "name": result.card.name,
                   "accuracy_before": result.accuracy_before, "accuracy_after": result.accuracy_after,
                   "held_out_faces": len(split.held_out), "held_out_recordings": split.recordings,
                   "train_faces": len(split.train), "untested_classes": split.untested_classes,
                   "stopped": result.stopped, "seconds": round(result.seconds, 1), "card": result.card.to_dict()}
        _write_output(Path(args.json), (json.dumps(summary, indent=2) + "\n").encode())
    print(f"accuracy: {result.accuracy_before:.4f} -> {result.accuracy_after:.4f}")
    return 0


def _write_output(path: Path, content: bytes) -> None:
    """Write a file the user asked for, making its folder; a path that cannot be written is bad
    input (a :class:`FerError`), not a bug."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    except FileExistsError as error:  # a file stands where a folder of the path should be
        raise FerError(f"{path}: cannot write the file ({error.filename} is not a folder)") from error
    except OSError as error:
        raise FerError(f"{path}: cannot write the file ({error.strerror or error})") from error


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a stored model on labelled faces; the last line printed is ``accuracy: 0.xxxx``."""
    from fer_core.evaluation.evaluate import evaluate_faces, evaluation_rows  # scikit-learn: scoring commands only

    stored = ModelStore(args.store).load(args.model)
    preprocessing = stored.card.preprocessing
    cropper = LargestFaceCropper(get_detector(args.detect), preprocessing) if args.detect else None
    dataset = evaluation_rows(load_dataset(args.data, cache=args.cache, crop=cropper), args.usage)
    classifier = EmotionClassifier.from_stored(stored, args.flip_tta, args.backend, args.shift_tta, args.odds)
    evaluation = evaluate_faces(classifier, preprocessing, dataset)
    report = evaluation.report
    usage = ", ".join(dataset.usages())
    print(f"model {stored.name} ({stored.card.arch}, {_runtime(classifier)}, {_odds(stored.card, args.odds)}) "
          f"on {args.data} [{usage}], {report.n} faces")
    if cropper is not None:
        print(f"{args.detect} found a face in {cropper.found} of the {cropper.found + cropper.missed} photos loaded "
              "(the others were classified whole)")
    if args.json:
        _write_output(Path(args.json), (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    if args.report:
        from fer_core.evaluation.report import html_report  # scikit-learn: scoring commands only

        page = html_report(evaluation, stored.name, f"{Path(args.data).name} ({usage} rows)")
        _write_output(Path(args.report), page.encode())
    print(report.format())
    return 0


def _odds(card: ModelCard, odds: str) -> str:
    """How a model reads faces under ``odds``, for a report's first line."""
    strength = strength_for(card, odds)
    if strength is None:
        return "training odds" + ("" if odds == "fer2013" else ": no training class counts on its card")
    if odds == "fer2013":
        return "training odds"
    return f"balanced odds, prior correction {strength:g}"


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Choose a stored model's prior correction on labelled faces and write it on its card."""
    from fer_core.evaluation.evaluate import evaluate_faces, evaluation_rows  # scikit-learn: scoring commands only
    from fer_core.evaluation.prior import choose_strength, strength_scores  # scikit-learn, as above

    store = ModelStore(args.store)
    stored = store.load(args.model)
    card = stored.card
    everything = load_dataset(args.data, cache=args.cache)
    if card.class_prior is None:  # the training rows of this file are what the model learned from
        training = everything.labels[everything.usage == "Training"]
        if card.training.data != Path(args.data).name or len(training) == 0:
            raise FerError(f"model {stored.name}'s card has no training class counts, and they can only be "
                           f"counted from the Training rows of the file it was trained on "
                           f"({card.training.data or 'unknown'}), not {args.data}")
        counts = count_classes(training)
        if counts is None:
            raise FerError(f"{args.data}'s Training rows do not hold a face of every class")
        card = replace(card, training=replace(card.training, class_counts=counts))
    prior = card.class_prior
    assert prior is not None  # counted just above when the card had none
    dataset = evaluation_rows(everything, args.usage or ("PublicTest" if "PublicTest" in everything.usages()
                                                           else None))
    classifier = EmotionClassifier.from_stored(stored, args.flip_tta, odds="fer2013")
    probabilities = evaluate_faces(classifier, card.preprocessing, dataset).probabilities
    scores = strength_scores(dataset, probabilities, prior)
    chosen_on = (f"{Path(args.data).name} [{', '.join(dataset.usages())}], "
                 f"{'with' if classifier.flip_tta else 'without'} flip TTA")
    correction = choose_strength(scores, chosen_on)
    print(f"model {stored.name} on {chosen_on}, {len(dataset)} faces; training shares "
          + ", ".join(f"{name} {share:.3f}" for name, share in zip(EMOTIONS, prior)))
    print(f"{'strength':>8}{'accuracy':>10}{'balanced':>10}" + "".join(f"{name[:7]:>9}" for name in EMOTIONS))
    for score in scores:
        print(f"{score.strength:>8.2f}{score.accuracy:>10.4f}{score.balanced_accuracy:>10.4f}"
              + "".join(f"{score.recalls[name]:>9.2f}" for name in EMOTIONS))
    steps = [step for step in (card.reproduce or "").split(" && ") if step and " calibrate " not in step]
    store.update_card(stored.name, replace(card, prior_correction=correction,
                                           reproduce=" && ".join([*steps, _command(args)])))
    print(f"chosen: strength {correction.strength:g}: balanced accuracy {correction.balanced_accuracy_before:.4f} "
          f"-> {correction.balanced_accuracy:.4f}, accuracy {correction.accuracy_before:.4f} -> "
          f"{correction.accuracy:.4f}; written on {stored.name}'s card")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Analyse each image; one that cannot be read is reported and skipped, and makes the exit status 2."""

    analyser = EmotionAnalyser.from_store(args.model, args.detector, args.flip_tta, ModelStore(args.store),
                                          shift_tta=args.shift_tta, odds=args.odds)
    outputs, failed = [], 0
    for path in args.images:
        try:
            image = load_image(path)
            photo = PhotoFaces.of(analyser.analyse(image))
        except FerError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        outputs.append({"image": path, "faces": photo.to_dicts()})
        if args.annotate:
            target = Path(args.annotate)
            if len(args.images) > 1:
                target = target / f"{Path(path).stem}_annotated.png"
            _write_output(target, encode_png(photo.annotated(image)))
        if not args.json:
            faces = "; ".join(f"face {number} {face.label} {face.score:.2f} at {list(face.box)}"
                              for number, face in zip(photo.numbers, photo.faces))
            print(f"{path}: {faces or 'no face found'}")
    if args.json:
        _print_json(outputs[0] if len(args.images) == 1 and outputs else outputs)
    return 2 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    analyser = EmotionAnalyser.from_store(args.model, args.detector, args.flip_tta, ModelStore(args.store),
                                          backend=args.backend, shift_tta=args.shift_tta, odds=args.odds,
                                          live=not args.full_detector)
    frame = load_image(args.image) if args.image else sample_frame()
    seconds = args.seconds
    print(f"model {analyser.model_name} ({_runtime(analyser.classifier)}), detector {args.detector} "
          f"({'full size' if args.full_detector else 'live settings'}), frame {frame.shape[1]}x{frame.shape[0]}, "
          f"{len(analyser.analyse(frame))} face(s)")
    for batch in (1, 32):
        ms = classifier_ms_per_face(analyser.classifier, batch, min(seconds, 2.0))
        print(f"classifier at batch {batch}: {ms:.3f} ms per face, {1000 / ms:.0f} faces/s")
    every = bench.pipeline_fps(analyser, frame, seconds)
    print(f"pipeline, detecting on every frame: {every['ms_per_frame']:.2f} ms per frame, {every['fps']:.1f} fps")
    # A class photo's faces are small: the crowd frame is searched at full size.
    full_size = EmotionAnalyser(analyser.classifier, get_detector(args.detector), analyser.preprocessing)
    crowd = bench.pipeline_fps(full_size, sample_frame(1280, 720, faces=4), seconds)
    print(f"1280x720 frame with {crowd['faces_per_frame']} faces, full-size detection on every frame: "
          f"{crowd['ms_per_frame']:.2f} ms per frame, {crowd['fps']:.1f} fps")
    if args.memory:
        for frames, mb in bench.memory_over_frames(analyser, frame, args.memory, max(1, args.memory // 10)):
            print(f"resident memory after {frames} frames: {mb:.0f} MB")
    print(f"resident memory: {bench.resident_mb():.0f} MB")
    live = bench.live_fps(analyser, frame, seconds, args.detect_every)
    print(f"live path (detection every {args.detect_every} frames, tracking between): "
          f"{live['ms_per_frame']:.2f} ms per frame")
    print(f"fps: {live['fps']:.1f}")
    if args.streams:
        rates = bench.streams_fps(analyser, frame, args.streams, seconds, args.detect_every)
        print(f"{args.streams} concurrent streams: {', '.join(f'{r:.1f}' for r in rates)} fps; "
              f"total {sum(rates):.0f} fps; resident memory {bench.resident_mb():.0f} MB")
        print(f"fps per stream: {min(rates):.1f}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the app's queued jobs from Redis until stopped (see ``service.redis_queue.run_worker``)."""
    from fer_core.service.redis_queue import run_worker  # redis and RQ: this command only

    url = args.redis_url or os.environ.get("FER_LAB_REDIS_URL", "").strip()
    if not url:
        raise SettingError("a worker needs the Redis server: set FER_LAB_REDIS_URL or pass --redis-url")
    lanes = [lane.strip() for lane in args.lanes.split(",") if lane.strip()]
    run_worker(url, lanes, threads=args.threads or training_threads(), name=args.name, burst=args.burst,
               maintenance_seconds=args.maintenance_seconds, heartbeat_seconds=args.heartbeat_seconds)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    cards = ModelStore(args.store).cards()
    if args.json:
        _print_json([card.to_dict() for card in cards])
        return 0
    if not cards:
        print("no stored models")
    name_width = max([len("name"), *(len(card.name) for card in cards)]) + 2
    arch_width = max([len("arch"), *(len(card.arch) for card in cards)]) + 2
    print(f"{'name':<{name_width}}{'arch':<{arch_width}}{'accuracy':>9}{'flip-TTA':>9}{'macro-F1':>9}"
          f"{'params':>11}{'ms/face':>9}{'train min':>10}  data")

    def figure(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for card in cards:
        print(f"{card.name:<{name_width}}{card.arch:<{arch_width}}"
              f"{figure(card.accuracy, '.4f'):>9}{figure(card.flip_accuracy, '.4f'):>9}"
              f"{figure(card.macro_f1, '.4f'):>9}{figure(card.parameters, ','):>11}"
              f"{figure(card.ms_per_face, '.2f'):>9}{figure(card.training_minutes, '.1f'):>10}"
              f"  {card.training.data or '-'}")
    return 0


def _at_least(minimum: float, kind: type = int):
    """An argparse type: a number of ``kind`` no smaller than ``minimum``."""

    def parse(text: str):
        value = kind(text)
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _architecture(name: str) -> str:
    """A registered architecture name. The registry is imported only here, when ``--arch`` is
    given: it loads Keras and TensorFlow, which the inference commands do not need."""
    from fer_core.training.networks import ARCHITECTURES  # Keras and TensorFlow: training commands only

    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise argparse.ArgumentTypeError(f"unknown architecture {name!r} (choose from {known})")
    return name


FLIP_HELP = ("average each face with its mirror image (default: when the model card shows it scored higher, "
             "as for the shipped models)")
ODDS_HELP = ("balanced (the default): the card's prior correction, for posed faces where every emotion is "
             "as likely; fer2013: the odds the model was trained with")
SHIFT_HELP = ("also average each face moved one pixel up, down, left and right (with flip TTA: ten views; "
              "about 5x the classifier's time for up to about a point of accuracy)")


def _add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """The options of a training recipe that ``train`` and ``crossval`` share, and the data (with
    its cache) that it learns from."""

    parser.add_argument("--arch", required=True, type=_architecture,
                        help="network architecture, e.g. fer_vgg; a wrong name lists them all")
    parser.add_argument("--data", required=True, help="FER2013 CSV(.gz), class-folder tree or zip of one")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.learning_rate,
                        help="peak learning rate (AdamW, cosine)")
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                        help="AdamW weight decay; Keras scales it by the learning rate, so 0.05 is a real decay")
    parser.add_argument("--class-weight", choices=CLASS_WEIGHTS, default=TrainConfig.class_weight)
    parser.add_argument("--loss", choices=LOSSES, default=TrainConfig.loss,
                        help="logit_adjusted: the network learns the balanced odds (every emotion as likely) "
                             "instead of its data's; in place of class weights")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--webcam-augment", action="store_true",
                        help="also vary brightness, contrast, gamma and focus as classroom webcams do")
    parser.add_argument("--patience", type=int, default=TrainConfig.patience,
                        help="early-stopping patience in epochs")
    parser.add_argument("--precision", choices=PRECISIONS, default=TrainConfig.precision)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--schedule", choices=SCHEDULES, default=TrainConfig.schedule,
                        help="after the warm-up: cosine decay to 1%% of --lr, or --lr held (for weight averaging)")
    parser.add_argument("--swa-epochs", type=int, default=TrainConfig.swa_epochs, metavar="N",
                        help="stochastic weight averaging: the model is the mean of the last N epochs' weights")
    parser.add_argument("--cache", action="store_true", help="keep a parsed copy of the dataset (~/.cache/fer_lab)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""

    # Usage lines name the command as it was run: the installed `fer-lab` or `python -m fer_core`.
    program = "fer-lab" if Path(sys.argv[0]).stem == "fer-lab" else "python -m fer_core"
    parser = argparse.ArgumentParser(prog=program,
                                     description="FER Lab: facial emotion recognition engine")
    parser.add_argument("--store", help="model folder (default: $FER_LAB_MODELS or the project's models/)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and save it in the store")
    _add_recipe_options(train)
    train.add_argument("--minutes", type=float, help="time budget; resume later from the checkpoint")
    train.add_argument("--name", help="name to save under (default: the architecture)")
    train.add_argument("--teacher", nargs="+", metavar="MODEL",
                       help="stored models to distil: the network also learns their mean answer")
    train.add_argument("--distill-weight", type=float, default=TrainConfig.distill_weight,
                       help="with --teacher: share of the loss that follows the teacher (0-1, default %(default)s)")
    train.add_argument("--temperature", type=float, default=TrainConfig.temperature,
                       help="with --teacher: softening of both answers (default %(default)s)")
    train.add_argument("--init-from", metavar="MODEL",
                       help="fine-tune: start from this stored network of the same architecture")
    train.add_argument("--checkpoint-dir", help="default: checkpoints/NAME; an existing one is resumed")
    train.set_defaults(run=cmd_train)

    crossval = commands.add_parser(
        "crossval", help="k-fold cross-validation of a training recipe (nothing stored unless --name)",
        description="Split the data into K folds with the class proportions of the whole (each person's faces in "
                    "one fold where the data names persons) and train a fresh network per fold on the other "
                    "folds, its validation faces taken from them too; report each fold's accuracy and macro-F1, "
                    "and their mean and standard deviation. Every row counts, whatever its FER2013 Usage.")
    _add_recipe_options(crossval)
    crossval.add_argument("--folds", type=_at_least(2), default=5, help="number of folds K (default %(default)s)")
    crossval.add_argument("--minutes", type=float,
                          help="time budget of each training: every fold's, and the final model's with --name")
    crossval.add_argument("--groups", metavar="REGEX",
                          help="a regular expression finding the person in each file path of a folder or zip "
                               "dataset (its first group, else the whole match); default: person folders below "
                               "the class folders, if any")
    crossval.add_argument("--json", help="also write the folds' scores and their mean and std to this file")
    crossval.add_argument("--name", help="also train a final model on all the data and store it under this name")
    crossval.set_defaults(run=cmd_crossval, teacher=None, distill_weight=TrainConfig.distill_weight,
                          temperature=TrainConfig.temperature, init_from=None)

    ensemble = commands.add_parser("ensemble", help="average stored models into one model and save it")
    ensemble.add_argument("members", nargs="+", help="stored models to average (two or more)")
    ensemble.add_argument("--name", required=True, help="name to save the ensemble under")
    ensemble.add_argument("--data", required=True, help="labelled faces to score it on (as for train)")
    ensemble.add_argument("--cache", action="store_true", help="cache the parsed dataset")
    ensemble.add_argument("--weights", choices=("float16", "int8"), default="float16",
                          help="store the weights in float16 (half of float32, no measurable loss) or the "
                               "convolution kernels in int8 (a quarter; see the README for its accuracy)")
    ensemble.set_defaults(run=cmd_ensemble)

    compact = commands.add_parser("compact", help="store a network again with float16 weights or int8 kernels")
    compact.add_argument("model", help="stored single network")
    compact.add_argument("--name", help="name to save under (default: in place of the model)")
    compact.add_argument("--data", required=True, help="labelled faces to score it on (as for train)")
    compact.add_argument("--cache", action="store_true", help="cache the parsed dataset")
    compact.add_argument("--weights", choices=("float16", "int8"), default="float16",
                         help="float16 halves the file; int8 convolution kernels quarter a VGG's")
    compact.set_defaults(run=cmd_compact)

    finetune = commands.add_parser("finetune", help="fine-tune a stored model on a class's own faces and save it")
    finetune.add_argument("--from", dest="start", required=True, metavar="MODEL",
                          help="stored model to start from (a network or an ensemble, e.g. default)")
    finetune.add_argument("--data", required=True,
                          help="class folders of faces, or a zip of them (the Collect page's download); a "
                               "subfolder of a class folder is one recording")
    finetune.add_argument("--minutes", type=float, default=1.0, help="most training time (default %(default)s)")
    finetune.add_argument("--name", help="name to save under (default: MODEL_tuned)")
    finetune.add_argument("--json", help="also write the before/after figures and the card as JSON to this file")
    finetune.add_argument("--seed", type=int, default=0, help="picks the held-out recordings and fixes the training")
    finetune.set_defaults(run=cmd_finetune)

    evaluate = commands.add_parser("evaluate", help="score a model on labelled faces")
    evaluate.add_argument("--model", default="default", help="stored name or .keras path")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--usage", choices=("PrivateTest", "PublicTest", "Training"))
    evaluate.add_argument("--json", help="also write the report as JSON to this file")
    evaluate.add_argument("--report", metavar="HTML",
                          help="also write a self-contained HTML report (scores, confusion matrix, the most "
                               "confident mistakes as thumbnails) to this file")
    evaluate.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, help=FLIP_HELP)
    evaluate.add_argument("--shift-tta", action="store_true", help=SHIFT_HELP)
    evaluate.add_argument("--cache", action="store_true", help="cache the parsed dataset")
    evaluate.add_argument("--detect", choices=sorted(set(DETECTORS) - {"none"}),
                          help="photos, not face crops: classify the largest face this detector finds in each")
    evaluate.add_argument("--backend", choices=("auto", "litert", "tensorflow"), default="auto",
                          help="inference runtime (auto: LiteRT when the model has it)")
    evaluate.add_argument("--odds", choices=ODDS, default=ODDS[0], help=ODDS_HELP)
    evaluate.set_defaults(run=cmd_evaluate)

    calibrate = commands.add_parser("calibrate", help="choose a model's prior correction (the balanced odds) on "
                                                      "labelled faces and write it on its card")
    calibrate.add_argument("model")
    calibrate.add_argument("--data", required=True, help="labelled faces: a FER2013 CSV(.gz) or class folders")
    calibrate.add_argument("--usage", choices=("PrivateTest", "PublicTest", "Training"),
                           help="rows to choose on (default: PublicTest, the rows models are selected on, "
                                "where there are any; else all)")
    calibrate.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, help=FLIP_HELP)
    calibrate.add_argument("--cache", action="store_true", help="cache the parsed dataset")
    calibrate.set_defaults(run=cmd_calibrate)

    predict = commands.add_parser("predict", help="find faces in images and tell their emotions")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--model", default="default")
    predict.add_argument("--detector", default="mtcnn", choices=sorted(DETECTORS))
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--annotate", help="write the annotated image here (a folder for several); faces are "
                                            "numbered row by row, as in the output")
    predict.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, help=FLIP_HELP)
    predict.add_argument("--shift-tta", action="store_true", help=SHIFT_HELP)
    predict.add_argument("--odds", choices=ODDS, default=ODDS[0], help=ODDS_HELP)
    predict.set_defaults(run=cmd_predict)

    bench = commands.add_parser("bench", help="time the whole pipeline on one frame, and on several streams")
    bench.add_argument("--image", help="frame to time (default: a generated 640x480 frame with a face)")
    bench.add_argument("--seconds", type=_at_least(0, float), default=5.0, help="per measurement")
    bench.add_argument("--model", default="default")
    bench.add_argument("--detector", default="haar", choices=sorted(DETECTORS))
    bench.add_argument("--backend", choices=("auto", "litert", "tensorflow"), default="auto")
    bench.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, help=FLIP_HELP)
    bench.add_argument("--shift-tta", action="store_true", help=SHIFT_HELP)
    bench.add_argument("--full-detector", action="store_true", help="detect at full size, not with live settings")
    bench.add_argument("--detect-every", type=_at_least(1), default=3, help="live path: detect every k-th frame")
    bench.add_argument("--streams", type=_at_least(0), default=0, help="also run N concurrent streams (threads)")
    bench.add_argument("--memory", type=_at_least(0), default=0, metavar="FRAMES",
                       help="also report resident memory over this many frames")
    bench.add_argument("--odds", choices=ODDS, default=ODDS[0], help=ODDS_HELP)
    bench.set_defaults(run=cmd_bench)

    models = commands.add_parser("models", help="list stored models")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=cmd_models)

    worker = commands.add_parser("worker", help="run the app's queued trainings and fine-tunes from Redis "
                                                "($FER_LAB_REDIS_URL), one at a time")
    worker.add_argument("--lanes", default="train,finetune",
                        help="comma-separated lanes whose jobs this worker takes (default: train,finetune)")
    worker.add_argument("--redis-url", help="the Redis server (default: $FER_LAB_REDIS_URL)")
    worker.add_argument("--threads", type=_at_least(1),
                        help="TensorFlow threads per job (default: $FER_LAB_WORKER_THREADS, else the cores left "
                             "after the live streams' analysis budget)")
    worker.add_argument("--name", help="the worker's name in RQ (default: RQ's, host and process)")
    worker.add_argument("--burst", action="store_true", help="stop once the lanes are empty")
    worker.add_argument("--maintenance-seconds", type=_at_least(1), default=30,
                        help="how often the worker looks for jobs whose worker stopped, to resume them")
    worker.add_argument("--heartbeat-seconds", type=_at_least(1), default=10,
                        help="how often the worker tells Redis its job still runs (a job is abandoned a minute "
                             "after the last)")
    worker.set_defaults(run=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input (a :class:`FerError`) ends it with ``error: ...`` on stderr and
    status 2; any other exception is a bug and propagates with its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
