"""The command line: train, ensemble, evaluate, predict, bench and list models.

Bad input ends a command with a one-line message naming the file and a non-zero exit status,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fer_core.errors import FerError  # noqa: E402


def _print_json(value) -> None:
    print(json.dumps(value, indent=2))


def _runtime(classifier) -> str:
    """How a classifier runs, for the first line of a report: its backend and its test-time views."""
    views = [view for view, used in (("flip", classifier.flip_tta), ("shift", classifier.shift_tta)) if used]
    return classifier.backend + (f", with {' and '.join(views)} TTA" if views else "")


def cmd_train(args: argparse.Namespace) -> int:
    from fer_core.data import load_dataset, train_validation
    from fer_core.ensemble import lineage, starting_network, teacher_model
    from fer_core.preprocess import Preprocessing
    from fer_core.store import ModelStore, check_name
    from fer_core.train import TrainConfig, TrainProgress, check_target_name, store_result, train

    name = check_name(args.name or args.arch)
    if args.swa_epochs > args.epochs:
        raise FerError(f"--swa-epochs ({args.swa_epochs}) cannot exceed --epochs ({args.epochs})")
    config = TrainConfig(arch=args.arch, epochs=args.epochs, minutes=args.minutes,
                         batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay,
                         class_weight=args.class_weight, augment=not args.no_augment,
                         patience=args.patience, precision=args.precision, seed=args.seed,
                         teacher=args.teacher or [], init_from=args.init_from, schedule=args.schedule,
                         swa_epochs=args.swa_epochs)
    if not args.teacher and (args.distill_weight, args.temperature) != (None, None):
        raise FerError("--distill-weight and --temperature go with --teacher")
    if args.distill_weight is not None:
        config.distill_weight = args.distill_weight
    if args.temperature is not None:
        config.temperature = args.temperature
    check_target_name(name, config)
    checkpoints = Path(args.checkpoint_dir or Path("checkpoints") / name)
    resuming = (checkpoints / "state.json").exists()
    store, preprocessing = ModelStore(args.store), Preprocessing.from_dict(config.preprocessing)
    teacher = teacher_model(store, config.teacher, preprocessing) if config.teacher else None
    start_from = None  # a resumed run goes on from its checkpoint
    if args.init_from and not resuming:
        start_from = starting_network(store, args.init_from, args.arch, preprocessing)
    dataset = load_dataset(args.data, cache=args.cache)
    train_part, validation = train_validation(dataset, args.seed)

    def report(progress: TrainProgress) -> None:
        if progress.epoch_end:
            eta = "" if progress.eta_seconds is None else f" eta {progress.eta_seconds / 60:.1f} min"
            print(f"epoch {progress.epoch}/{progress.epochs} loss {progress.loss:.4f} "
                  f"acc {progress.accuracy:.4f} val_loss {progress.val_loss:.4f} "
                  f"val_acc {progress.val_accuracy:.4f} elapsed {progress.elapsed_seconds / 60:.1f} min{eta}",
                  flush=True)

    print(f"training {args.arch} on {len(train_part)} faces, validating on {len(validation)}; "
          f"checkpoints in {checkpoints}", flush=True)
    command = _command(args)
    result = train(train_part, config, validation=validation, checkpoint_dir=checkpoints, listener=report,
                   command=command, teacher=teacher, start_from=start_from)
    # A model trained over several runs of one checkpoint is reproduced by all of them, in order.
    origin = lineage(store, config.init_from, result.commands)
    card = store_result(result, name, validation, data_description=Path(args.data).name,
                        reproduce=origin.reproduce, earlier_minutes=origin.earlier_minutes, store=store)
    print(f"stopped: {result.stopped} after {result.epochs_run} epochs, {result.minutes:.1f} min")
    if config.swa_epochs:
        kept = f"the mean of {result.averaged_epochs}" if result.averaged_epochs else "none averaged: the best"
        print(f"weight averaging: {kept} of the last {config.swa_epochs} epochs")
    _print_saved(card)
    return 0


def _print_saved(card: dict) -> None:
    metrics = card["metrics"]
    print(f"saved {card['name']}: validation accuracy {metrics['accuracy']:.4f} "
          f"(flip TTA {metrics['flip_tta']['accuracy']:.4f}), macro-F1 {metrics['macro_f1']:.4f}, "
          f"{card['parameters']:,} parameters, {card['ms_per_face']:.2f} ms per face, {card['file_bytes']:,} bytes")


def _command(args: argparse.Namespace) -> str:
    """The command line that ran, as it is recorded in model cards."""
    return "python -m fer_core " + " ".join(shlex.quote(a) for a in args.argv)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from fer_core.data import load_dataset
    from fer_core.ensemble import ensemble_members, save_ensemble, validation_faces
    from fer_core.store import ModelStore, check_name

    store = ModelStore(args.store)
    members = ensemble_members(store, args.members, check_name(args.name))
    validation = validation_faces(members, load_dataset(args.data, cache=args.cache))
    print(f"averaging {', '.join(member.name for member in members)}; validating on {len(validation)} faces",
          flush=True)
    _print_saved(save_ensemble(store, members, args.name, validation,
                               data_description=Path(args.data).name, command=_command(args),
                               weights_dtype=args.weights))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a stored model on labelled faces; the last line printed is ``accuracy: 0.xxxx``."""
    from fer_core.data import load_dataset
    from fer_core.detect import LargestFaceCropper, get_detector
    from fer_core.evaluate import evaluate_classifier, evaluation_rows
    from fer_core.predict import EmotionClassifier
    from fer_core.preprocess import Preprocessing
    from fer_core.store import ModelStore

    stored = ModelStore(args.store).load(args.model)
    preprocessing = Preprocessing.from_dict(stored.card.get("preprocessing"))
    cropper = LargestFaceCropper(get_detector(args.detect), preprocessing) if args.detect else None
    dataset = evaluation_rows(load_dataset(args.data, cache=args.cache, crop=cropper), args.usage)
    classifier = EmotionClassifier.from_stored(stored, args.flip_tta, args.backend, args.shift_tta)
    report = evaluate_classifier(classifier, preprocessing, dataset)
    usage = ", ".join(dataset.usages())
    print(f"model {stored.name} ({stored.card.get('arch', '?')}, {_runtime(classifier)}) on {args.data} [{usage}], "
          f"{report.n} faces")
    if cropper is not None:
        print(f"{args.detect} found a face in {cropper.found} of the {cropper.found + cropper.missed} photos loaded "
              "(the others were classified whole)")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(report.format())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from fer_core.images import encode_png, load_image
    from fer_core.predict import EmotionAnalyser, annotate
    from fer_core.store import ModelStore

    analyser = EmotionAnalyser.from_store(args.model, args.detector, args.flip_tta, ModelStore(args.store),
                                          shift_tta=args.shift_tta)
    outputs, failed = [], 0
    for path in args.images:
        try:
            image = load_image(path)
            results = analyser.analyse(image)
        except FerError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        outputs.append({"image": path, "faces": [r.to_dict() for r in results]})
        if args.annotate:
            target = Path(args.annotate)
            if len(args.images) > 1:
                target.mkdir(parents=True, exist_ok=True)
                target = target / f"{Path(path).stem}_annotated.png"
            target.write_bytes(encode_png(annotate(image, results)))
        if not args.json:
            summary = ", ".join(f"{r.label} {r.score:.2f} at {list(r.box)}" for r in results) or "no face found"
            print(f"{path}: {summary}")
    if args.json:
        _print_json(outputs[0] if len(args.images) == 1 and outputs else outputs)
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fer_core import bench
    from fer_core.detect import get_detector
    from fer_core.images import load_image
    from fer_core.predict import EmotionAnalyser
    from fer_core.samples import sample_frame
    from fer_core.store import ModelStore

    analyser = EmotionAnalyser.from_store(args.model, args.detector, args.flip_tta, ModelStore(args.store),
                                          backend=args.backend, shift_tta=args.shift_tta,
                                          live=not args.full_detector)
    frame = load_image(args.image) if args.image else sample_frame()
    seconds = args.seconds
    print(f"model {analyser.model_name} ({_runtime(analyser.classifier)}), detector {args.detector} "
          f"({'full size' if args.full_detector else 'live settings'}), frame {frame.shape[1]}x{frame.shape[0]}, "
          f"{len(analyser.analyse(frame))} face(s)")
    for batch in (1, 32):
        ms = bench.classifier_ms_per_face(analyser.classifier, batch, min(seconds, 2.0))
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


def cmd_models(args: argparse.Namespace) -> int:
    from fer_core.store import ModelStore, training_minutes

    cards = ModelStore(args.store).cards()
    if args.json:
        _print_json(cards)
        return 0
    if not cards:
        print("no stored models")
    name_width = max([len("name"), *(len(card["name"]) for card in cards)]) + 2
    arch_width = max([len("arch"), *(len(str(card.get("arch", "?"))) for card in cards)]) + 2
    print(f"{'name':<{name_width}}{'arch':<{arch_width}}{'accuracy':>9}{'flip-TTA':>9}{'macro-F1':>9}"
          f"{'params':>11}{'ms/face':>9}{'train min':>10}  data")
    for card in cards:
        metrics, training = card.get("metrics") or {}, card.get("training") or {}

        def figure(value, fmt):
            return format(value, fmt) if isinstance(value, (int, float)) else "-"

        flip_accuracy = (metrics.get("flip_tta") or {}).get("accuracy")
        print(f"{card['name']:<{name_width}}{str(card.get('arch', '?')):<{arch_width}}"
              f"{figure(metrics.get('accuracy'), '.4f'):>9}{figure(flip_accuracy, '.4f'):>9}"
              f"{figure(metrics.get('macro_f1'), '.4f'):>9}{figure(card.get('parameters'), ','):>11}"
              f"{figure(card.get('ms_per_face'), '.2f'):>9}{figure(training_minutes(card), '.1f'):>10}"
              f"  {training.get('data', '-')}")
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
    from fer_core.models import ARCHITECTURES

    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise argparse.ArgumentTypeError(f"unknown architecture {name!r} (choose from {known})")
    return name


FLIP_HELP = ("average each face with its mirror image (default: when the model card shows it scored higher, "
             "as for the shipped models)")
SHIFT_HELP = ("also average each face moved one pixel up, down, left and right (with flip TTA: ten views; "
              "about 5x the classifier's time for up to about a point of accuracy)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from fer_core.detect import DETECTORS

    parser = argparse.ArgumentParser(prog="python -m fer_core",
                                     description="FER Lab: facial emotion recognition engine")
    parser.add_argument("--store", help="model folder (default: $FER_LAB_MODELS or the project's models/)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and save it in the store")
    train.add_argument("--arch", required=True, type=_architecture,
                       help="network architecture, e.g. fer_vgg; a wrong name lists them all")
    train.add_argument("--data", required=True, help="FER2013 CSV(.gz), class-folder tree or zip of one")
    train.add_argument("--epochs", type=_at_least(1), default=60)
    train.add_argument("--minutes", type=_at_least(0, float), help="time budget; resume later from the checkpoint")
    train.add_argument("--name", help="name to save under (default: the architecture)")
    train.add_argument("--batch-size", type=_at_least(1), default=64)
    train.add_argument("--lr", type=_at_least(0, float), default=2e-3, help="peak learning rate (AdamW, cosine)")
    train.add_argument("--weight-decay", type=_at_least(0, float), default=1e-4,
                       help="AdamW weight decay; Keras scales it by the learning rate, so 0.05 is a real decay")
    train.add_argument("--class-weight", choices=("none", "balanced", "sqrt"), default="none")
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--patience", type=_at_least(1), default=15, help="early-stopping patience in epochs")
    train.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"), default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--teacher", nargs="+", metavar="MODEL",
                       help="stored models to distil: the network also learns their mean answer")
    train.add_argument("--distill-weight", type=float,
                       help="with --teacher: share of the loss that follows the teacher (0-1, default 0.5)")
    train.add_argument("--temperature", type=float, help="with --teacher: softening of both answers (default 2)")
    train.add_argument("--init-from", metavar="MODEL",
                       help="fine-tune: start from this stored network of the same architecture")
    train.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                       help="after the warm-up: cosine decay to 1%% of --lr, or --lr held (for weight averaging)")
    train.add_argument("--swa-epochs", type=_at_least(0), default=0, metavar="N",
                       help="stochastic weight averaging: the model is the mean of the last N epochs' weights")
    train.add_argument("--cache", action="store_true", help="keep a parsed copy of the dataset (~/.cache/fer_lab)")
    train.add_argument("--checkpoint-dir", help="default: checkpoints/NAME; an existing one is resumed")
    train.set_defaults(run=cmd_train)

    ensemble = commands.add_parser("ensemble", help="average stored models into one model and save it")
    ensemble.add_argument("members", nargs="+", help="stored models to average (two or more)")
    ensemble.add_argument("--name", required=True, help="name to save the ensemble under")
    ensemble.add_argument("--data", required=True, help="labelled faces to score it on (as for train)")
    ensemble.add_argument("--cache", action="store_true", help="cache the parsed dataset")
    ensemble.add_argument("--weights", choices=("float16", "int8"), default="float16",
                          help="store the weights in float16 (half of float32, no measurable loss) or the "
                               "convolution kernels in int8 (a quarter; see the README for its accuracy)")
    ensemble.set_defaults(run=cmd_ensemble)

    evaluate = commands.add_parser("evaluate", help="score a model on labelled faces")
    evaluate.add_argument("--model", default="default", help="stored name or .keras path")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--usage", choices=("PrivateTest", "PublicTest", "Training"))
    evaluate.add_argument("--json", help="also write the report as JSON to this file")
    evaluate.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, help=FLIP_HELP)
    evaluate.add_argument("--shift-tta", action="store_true", help=SHIFT_HELP)
    evaluate.add_argument("--cache", action="store_true", help="cache the parsed dataset")
    evaluate.add_argument("--detect", choices=sorted(set(DETECTORS) - {"none"}),
                          help="photos, not face crops: classify the largest face this detector finds in each")
    evaluate.add_argument("--backend", choices=("auto", "litert", "tensorflow"), default="auto",
                          help="inference runtime (auto: LiteRT when the model has it)")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="find faces in images and tell their emotions")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--model", default="default")
    predict.add_argument("--detector", default="mtcnn", choices=sorted(DETECTORS))
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--annotate", help="write the annotated image here (a folder for several)")
    predict.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, help=FLIP_HELP)
    predict.add_argument("--shift-tta", action="store_true", help=SHIFT_HELP)
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
    bench.set_defaults(run=cmd_bench)

    models = commands.add_parser("models", help="list stored models")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except (FerError, KeyError, ValueError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
