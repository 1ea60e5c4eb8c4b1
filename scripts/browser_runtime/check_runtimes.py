"""Our classifiers in the browser (issue 32, item 2): LiteRT.js and onnxruntime-web against Python's LiteRT.

From scratch, given a scratch npm folder with both runtimes installed, this

1. makes batch-1 static-shape copies of each model's ``.tflite`` (``static_shape.py``) and checks in
   Python (ai_edge_litert) that they answer as the stored file does;
2. converts the static copy to ONNX with ``tf2onnx --tflite``;
3. makes face crops (the astronaut photo of scikit-image and FER Lab's group photo made from it, cropped
   as FER Lab's preprocessing crops a detected face, plus random 48x48 arrays) and Python's answers:
   the network's raw outputs at batch 1 and the seven probabilities FER Lab shows
   (``EmotionClassifier.from_stored(stored, flip_tta=<card>, odds="balanced")``);
4. copies the page, the runtimes' JS and wasm files and the models into a site folder, serves it from
   127.0.0.1 with Python's http.server (COOP/COEP headers, for the threaded variants), opens it in
   headless Chromium (Debian's, through Playwright) with every request elsewhere blocked, runs the
   faces through each runtime and compares the outputs with Python's;
5. prints the parity, size and (rough) timing tables and writes them as JSON (``report.json``; the
   browser's raw answers in ``browser_results.json``, the faces in ``faces.npy``).

The scratch npm folder, and the ONNX converter (a venv, so the project's environment is untouched):

    npm install --prefix /tmp/browser_rt --save-exact @litertjs/core@2.5.3 onnxruntime-web@1.31.1
    python -m venv --system-site-packages /tmp/browser_rt/venv
    /tmp/browser_rt/venv/bin/pip install tf2onnx==1.17.0

then, from the repository's root:

    python scripts/browser_runtime/check_runtimes.py --npm /tmp/browser_rt \
        --tf2onnx-python /tmp/browser_rt/venv/bin/python --work /tmp/browser_rt/run \
        --models default ds_cnn fer_vgg_swa_long

The timings are the page's own (``performance.now()`` around each call, median of ``--repeats``); take
them on a quiet machine for figures worth quoting, e.g. only the single-thread runs:

    python scripts/browser_runtime/check_runtimes.py --npm /tmp/browser_rt \
        --tf2onnx-python /tmp/browser_rt/venv/bin/python --work /tmp/browser_rt/speed \
        --skip-reconvert --runs litert litert:compat ort --repeats 500
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from static_shape import batch_one_copy, converted_batch_one  # noqa: E402

from fer_core.faces.detect import get_detector  # noqa: E402
from fer_core.faces.preprocess import crop_faces, faces_to_input  # noqa: E402
from fer_core.faces.samples import astronaut, group_photo  # noqa: E402
from fer_core.inference.predict import EmotionClassifier  # noqa: E402
from fer_core.registry.store import ModelStore, StoredModel  # noqa: E402

#: Where the astronaut's face is when the Haar detector does not find it (x, y, width, height).
FALLBACK_BOX = (177, 66, 95, 95)
#: How many of the faces (the last) are uniform noise rather than photographed faces.
NOISE_FACES = 8

#: What each runtime's page needs from npm: site path under vendor/ -> path under node_modules/.
#: ``browser_downloads`` says which of them one browser fetches (the others are alternatives).
VENDOR_FILES: dict[str, dict[str, str]] = {
    "litert": {
        "litertjs/core/index.js": "@litertjs/core/dist/index.js",
        "litertjs/wasm-utils/index.js": "@litertjs/wasm-utils/dist/index.js",
        "litertjs/wasm/litert_wasm_internal.js": "@litertjs/core/wasm/litert_wasm_internal.js",
        "litertjs/wasm/litert_wasm_internal.wasm": "@litertjs/core/wasm/litert_wasm_internal.wasm",
        "litertjs/wasm/litert_wasm_compat_internal.js": "@litertjs/core/wasm/litert_wasm_compat_internal.js",
        "litertjs/wasm/litert_wasm_compat_internal.wasm": "@litertjs/core/wasm/litert_wasm_compat_internal.wasm",
        "litertjs/wasm/litert_wasm_threaded_internal.js": "@litertjs/core/wasm/litert_wasm_threaded_internal.js",
        "litertjs/wasm/litert_wasm_threaded_internal.wasm":
            "@litertjs/core/wasm/litert_wasm_threaded_internal.wasm",
    },
    "ort": {
        "onnxruntime-web/ort.wasm.min.mjs": "onnxruntime-web/dist/ort.wasm.min.mjs",
        "onnxruntime-web/ort-wasm-simd-threaded.mjs": "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
        "onnxruntime-web/ort-wasm-simd-threaded.wasm": "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    },
}

#: The npm packages whose files are vendored, for their versions and licences.
PACKAGES = {"litert": ["@litertjs/core", "@litertjs/wasm-utils"], "ort": ["onnxruntime-web"]}


@dataclass(frozen=True)
class Run:
    """One page load: a runtime, its wasm variant and its threads."""

    runtime: str  #: litert or ort
    variant: str = "auto"  #: litert: auto (relaxed SIMD where the browser has it), compat or threaded
    threads: int = 1

    @property
    def isolated(self) -> bool:
        """Whether the page is served cross-origin isolated (COOP/COEP), as wasm threads need."""
        return self.threads > 1 or self.variant == "threaded"

    @property
    def label(self) -> str:
        name = {"litert": "LiteRT.js", "ort": "onnxruntime-web"}[self.runtime]
        variant = "" if self.variant == "auto" else f" {self.variant}"
        isolated = " (COOP/COEP)" if self.isolated else ""
        return f"{name}{variant}, {self.threads} thread{'s' if self.threads > 1 else ''}{isolated}"


RUNS = (Run("litert"), Run("litert", "compat"), Run("litert", "threaded", 2), Run("ort"), Run("ort", threads=2))


@dataclass
class ModelCase:
    """One model's files and Python's answers on the faces."""

    name: str
    stored: StoredModel
    flip: bool
    prior_shift: list[float] | None
    static: bytes = b""
    onnx: bytes | None = None
    raw: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: (N, 7) batch 1, the faces
    raw_mirrored: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: (N, 7) batch 1, mirrored
    raw_builtin: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: (N, 7) LiteRT without XNNPack
    shown: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: (N, 7) EmotionClassifier's
    checks: dict[str, Any] = field(default_factory=dict)


def face_cases(count: int = 24, random_count: int = NOISE_FACES, seed: int = 0) -> np.ndarray:
    """(N, 48, 48, 1) float32 faces in [0, 1], cropped as FER Lab's preprocessing crops a detected face:
    the astronaut ``count`` times around her detected face (shifted and scaled a little each time), every
    face the Haar detector finds in ``fer_core.faces.samples.group_photo`` (her head with other
    brightness, contrast, gamma, tilt and noise), then ``random_count`` uniform noise faces."""
    from fer_core.faces.preprocess import Preprocessing

    rng = np.random.default_rng(seed)
    preprocessing = Preprocessing()
    detector = get_detector("haar")
    image = astronaut()
    detections = detector.detect(image)
    x, y, w, _ = max(detections, key=lambda d: d.box[2]).box if detections else FALLBACK_BOX
    boxes = [(x, y, w, w)]
    for _ in range(count - 1):
        side = int(w * rng.uniform(0.8, 1.3))
        dx, dy = (int(v) for v in rng.integers(-12, 13, size=2))
        boxes.append((x + dx - (side - w) // 2, y + dy - (side - w) // 2, side, side))
    group = group_photo()
    parts = [crop_faces(image, boxes, preprocessing),
             crop_faces(group, [d.box for d in detector.detect(group)], preprocessing)]
    faces = faces_to_input(np.concatenate(parts), preprocessing)
    noise = rng.random((random_count, *faces.shape[1:]), dtype=np.float32)
    return np.concatenate([faces, noise]).astype(np.float32)


def lite_outputs(lite: bytes, faces: np.ndarray, xnnpack: bool = True) -> np.ndarray:
    """The flatbuffer's outputs for each face, one call per face (batch 1), LiteRT on 1 thread; with
    ``xnnpack`` False, LiteRT's own kernels (its hybrid int8 kernels round otherwise than XNNPack's)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=lite, num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    outputs = []
    for face in faces:
        interpreter.set_tensor(source, np.ascontiguousarray(face[np.newaxis]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target)[0].copy())
    return np.asarray(outputs, dtype=np.float32)


def lite_ms_per_face(lite: bytes, faces: np.ndarray, repeats: int) -> float:
    """Median milliseconds of one batch-1 call in Python's LiteRT (1 thread), for comparison."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=lite, num_threads=1)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    timings = []
    for index in range(repeats + 5):
        interpreter.set_tensor(source, np.ascontiguousarray(faces[index % len(faces)][np.newaxis]))
        start = time.perf_counter()
        interpreter.invoke()
        timings.append(time.perf_counter() - start)
    return float(np.median(timings[5:])) * 1000.0


def shown_from_raw(raw: np.ndarray, raw_mirrored: np.ndarray | None, shift: np.ndarray | None) -> np.ndarray:
    """The page's arithmetic in numpy: flip mean, then ``fer_core.inference.odds.adjust``."""
    from fer_core.inference.odds import adjust

    probabilities = raw if raw_mirrored is None else (raw + raw_mirrored) / 2
    return probabilities if shift is None else adjust(probabilities, shift)


def onnx_copy(tflite: Path, output: Path, python: str, opset: int) -> tuple[bytes | None, str]:
    """``tf2onnx --tflite`` on ``tflite`` with the Python that has tf2onnx; the ONNX bytes (None when
    it failed) and the converter's last lines."""
    command = [python, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(output),
               "--opset", str(opset)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    log = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                    if any(mark in line for mark in (" - INFO - ", " - ERROR - ", "Error:", "Traceback")))
    if done.returncode != 0 or not output.exists():
        return None, f"exit {done.returncode}: {log[-2000:]}"
    return output.read_bytes(), log[-2000:]


def tool_version(python: str, module: str) -> str:
    """``module.__version__`` as ``python`` imports it."""
    done = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"],
                          capture_output=True, text=True, timeout=300)
    return done.stdout.strip() or f"unknown ({done.stderr.strip()[-200:]})"


def prepare_model(name: str, faces: np.ndarray, store: ModelStore, work: Path, args: argparse.Namespace) -> ModelCase:
    """Step 1-3 for one model: static copies and their Python parity, the ONNX copy, Python's answers."""
    from fer_core.inference.odds import shift_for

    stored = store.load(name)
    if stored.lite is None:
        raise SystemExit(f"{name} has no current .tflite file")
    classifier = EmotionClassifier.from_stored(stored, flip_tta=None, odds="balanced")
    shift = shift_for(stored.card, "balanced")
    case = ModelCase(name, stored, classifier.flip_tta, None if shift is None else [float(v) for v in shift])
    case.static, changed = batch_one_copy(stored.lite)
    static_path = work / f"{name}.tflite"
    static_path.write_bytes(case.static)
    (work / f"{name}_dynamic.tflite").write_bytes(stored.lite)

    shipped = lite_outputs(stored.lite, faces)
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    case.raw = lite_outputs(case.static, faces)
    case.raw_mirrored = lite_outputs(case.static, mirrored)
    case.raw_builtin = lite_outputs(case.static, faces, xnnpack=False)
    case.shown = classifier(faces)
    case.checks = {
        "flip_tta": case.flip,
        "prior_strength": stored.card.prior_correction.strength if stored.card.prior_correction else None,
        "weights_dtype": stored.card.weights_dtype,
        "tensors_made_static": changed,
        "static_vs_stored_max_abs": float(np.abs(case.raw - shipped).max()),
        "static_bytes": len(case.static),
        "stored_bytes": len(stored.lite),
        # The page computes batch 1, the app a batch of 2N (faces then mirrors): any difference?
        "page_arithmetic_vs_classifier_max_abs": float(np.abs(
            shown_from_raw(case.raw, case.raw_mirrored if case.flip else None, shift) - case.shown).max()),
        "python_litert_ms_per_face": lite_ms_per_face(case.static, faces, args.repeats),
        "python_xnnpack_vs_builtin_max_abs": float(np.abs(case.raw - case.raw_builtin).max()),
    }
    if not args.skip_reconvert:
        reconverted = converted_batch_one(stored)
        (work / f"{name}_reconverted.tflite").write_bytes(reconverted)
        case.checks["reconverted_vs_stored_max_abs"] = float(np.abs(lite_outputs(reconverted, faces) - shipped).max())
        case.checks["reconverted_bytes"] = len(reconverted)
    case.onnx, case.checks["tf2onnx_log"] = onnx_copy(static_path, work / f"{name}.onnx", args.tf2onnx_python,
                                                      args.opset)
    return case


class _Handler(SimpleHTTPRequestHandler):
    """Static files with the headers a threaded wasm needs (cross-origin isolation), a log of paths."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json"}
    requested: list[str] = []
    isolated: list[bool] = [False]  #: whether responses carry COOP/COEP now (set per run)

    def end_headers(self) -> None:
        if self.isolated[0]:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requested.append(urlparse(self.path).path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        pass


@contextmanager
def serve(site: Path) -> Iterator[tuple[str, list[str], list[bool]]]:
    """The site folder served on 127.0.0.1 (a free port) for the block's length: its URL, the log
    of requested paths and the switch for cross-origin isolation."""
    handler = type("Handler", (_Handler,), {"requested": [], "isolated": [False]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requested, handler.isolated
    finally:
        server.shutdown()
        server.server_close()


def build_site(site: Path, npm: Path, cases: list[ModelCase], faces: np.ndarray, work: Path) -> None:
    """The page, the vendored runtime files, the models and the faces in one folder."""
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(HERE / "page", site)
    for files in VENDOR_FILES.values():
        for target, source in files.items():
            (site / "vendor" / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(npm / "node_modules" / source, site / "vendor" / target)
    (site / "models").mkdir()
    for case in cases:
        for suffix in (".tflite", "_dynamic.tflite", ".onnx"):
            if (work / f"{case.name}{suffix}").exists():
                shutil.copyfile(work / f"{case.name}{suffix}", site / "models" / f"{case.name}{suffix}")
    size = int(faces.shape[1])
    payload = {"size": size, "faces": [[float(v) for v in face.reshape(-1)] for face in faces]}
    (site / "cases.json").write_text(json.dumps(payload))
    (site / "suite.json").write_text(json.dumps(suite_spec(Run("litert"), cases, 50), indent=1))


def suite_spec(run: Run, cases: list[ModelCase], repeats: int) -> dict[str, Any]:
    """What the page's runSuite is given for one run."""
    models = []
    for case in cases:
        entry = {"flip": case.flip, "prior_shift": case.prior_shift}
        if run.runtime == "litert":
            models.append({"name": case.name, "file": f"models/{case.name}.tflite", **entry})
            models.append({"name": f"{case.name} (stored file, dynamic batch)",
                           "file": f"models/{case.name}_dynamic.tflite", **entry})
        elif case.onnx is not None:
            models.append({"name": case.name, "file": f"models/{case.name}.onnx", **entry})
    return {"runtime": run.runtime, "variant": run.variant, "threads": run.threads, "cases": "cases.json",
            "repeats": repeats, "models": models}


def run_in_chromium(url: str, requested: list[str], isolated: list[bool], runs: tuple[Run, ...],
                    cases: list[ModelCase], chromium: str, repeats: int) -> list[dict[str, Any]]:
    """Each run in a fresh headless Chromium context: the page's results, the paths it fetched,
    its console messages and any request for elsewhere (blocked)."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            for run in runs:
                context = browser.new_context()
                blocked: list[str] = []

                def only_local(route: Any, blocked: list[str] = blocked) -> None:
                    if urlparse(route.request.url).hostname == "127.0.0.1":
                        route.continue_()
                    else:
                        blocked.append(route.request.url)
                        route.abort()

                context.route("**/*", only_local)
                page = context.new_page()
                console: list[str] = []
                page.on("console", lambda message, console=console: console.append(f"{message.type}: {message.text}"))
                page.on("pageerror", lambda error, console=console: console.append(f"pageerror: {error}"))
                requested.clear()
                isolated[0] = run.isolated
                page.goto(f"{url}?runtime={run.runtime}&variant={run.variant}")
                page.wait_for_function("window.pageReady === true", timeout=60_000)
                start = time.perf_counter()
                try:
                    result = page.evaluate("spec => window.runSuite(spec)", suite_spec(run, cases, repeats))
                except Exception as error:  # the page's own failure is a finding, not a crash
                    result = {"error": str(error), "models": {}}
                result["wall_s"] = time.perf_counter() - start
                result["run"] = run.label
                result["requested"] = sorted(set(requested))
                result["blocked"] = blocked
                result["console"] = console[-20:]
                results.append(result)
                context.close()
        finally:
            browser.close()
    return results


def gzip9(path: Path) -> int:
    """Bytes of ``gzip -9 -c < path`` (as the brief measures: no file name in the header)."""
    with path.open("rb") as source:
        done = subprocess.run(["gzip", "-9", "-c"], stdin=source, capture_output=True, check=True)
    return len(done.stdout)


def parity(results: list[dict[str, Any]], cases: list[ModelCase]) -> list[dict[str, Any]]:
    """Per run and model: max abs difference of the raw outputs and of the shown probabilities from
    Python's, and whether the top emotion is the same for every face."""
    by_name = {case.name: case for case in cases}
    rows = []
    for result in results:
        for model, entry in result.get("models", {}).items():
            case = by_name[model.split(" (")[0]]
            row = {"run": result["run"], "model": model}
            if "error" in entry:
                row["error"] = entry["error"].splitlines()[0][:300]
                rows.append(row)
                continue
            raw = np.asarray(entry["raw"], dtype=np.float64)
            differences = [np.abs(raw - case.raw)]
            if case.flip:
                differences.append(np.abs(np.asarray(entry["raw_mirrored"], dtype=np.float64) - case.raw_mirrored))
            shown = np.asarray(entry["probabilities"], dtype=np.float64)
            per_face = np.max([d.max(axis=1) for d in differences], axis=0)
            row.update(raw_max_abs=float(per_face.max()), raw_median_face_max_abs=float(np.median(per_face)),
                       raw_photo_max_abs=float(per_face[:-NOISE_FACES].max()),
                       raw_noise_max_abs=float(per_face[-NOISE_FACES:].max()),
                       worst_face=int(per_face.argmax()),
                       raw_max_abs_vs_builtin=float(np.abs(raw - case.raw_builtin).max()),
                       shown_max_abs=float(np.abs(shown - case.shown).max()),
                       same_top=bool((shown.argmax(1) == case.shown.argmax(1)).all()),
                       faces=len(raw), load_ms=entry.get("load_ms"), first_run_ms=entry.get("first_run_ms"),
                       run_ms_median=entry.get("run_ms_median"), run_ms_min=entry.get("run_ms_min"),
                       input_shape=entry.get("input_shape"))
            rows.append(row)
    return rows


def sizes(site: Path, results: list[dict[str, Any]], cases: list[ModelCase], npm: Path) -> dict[str, Any]:
    """Raw and gzipped bytes of each vendored file and model, what each run's browser fetched, and the
    packages' versions and licences."""
    files = {}
    for path in sorted((site / "vendor").rglob("*")) + sorted((site / "models").glob("*")):
        if path.is_file():
            files[str(path.relative_to(site))] = {"raw": path.stat().st_size, "gzip9": gzip9(path)}
    fetched = {}
    for result in results:
        paths = [p.lstrip("/") for p in result.get("requested", []) if p.lstrip("/") in files
                 and p.startswith("/vendor/")]
        fetched[result["run"]] = {"files": paths, "raw": sum(files[p]["raw"] for p in paths),
                                  "gzip9": sum(files[p]["gzip9"] for p in paths)}
    packages = {}
    for runtime, names in PACKAGES.items():
        for name in names:
            meta = json.loads((npm / "node_modules" / name / "package.json").read_text())
            packages[name] = {"version": meta["version"], "license": meta.get("license"), "runtime": runtime,
                              "licence_file_in_package": any((npm / "node_modules" / name).glob("LICEN[CS]E*"))}
    return {"files": files, "fetched": fetched, "packages": packages}


def markdown(report: dict[str, Any]) -> str:
    """The tables for docs/experiments.md."""
    lines = ["| runtime | model | raw max abs: photo faces / noise | raw median face | shown max abs | same top | "
             "load ms | per call ms (median) |", "|---|---|---|---|---|---|---|---|"]
    # raw: the network's outputs (faces and, for flip TTA, mirrored faces) against Python's LiteRT
    # (XNNPack, batch 1); shown: the seven probabilities against EmotionClassifier's.
    for row in report["parity"]:
        if "error" in row:
            lines.append(f"| {row['run']} | {row['model']} | fails: {row['error'][:120]} | | | | | |")
            continue
        lines.append(f"| {row['run']} | {row['model']} | "
                     f"{row['raw_photo_max_abs']:.1e} / {row['raw_noise_max_abs']:.1e} | "
                     f"{row['raw_median_face_max_abs']:.0e} | {row['shown_max_abs']:.1e} | "
                     f"{'yes' if row['same_top'] else 'NO'} | {row['load_ms']:.0f} | {row['run_ms_median']:.2f} |")
    lines += ["", "| file | raw bytes | gzip -9 bytes |", "|---|---|---|"]
    for name, size in report["sizes"]["files"].items():
        lines.append(f"| {name} | {size['raw']:,} | {size['gzip9']:,} |")
    lines += ["", "| run | files fetched from vendor/ | raw | gzip -9 |", "|---|---|---|---|"]
    for run, fetched in report["sizes"]["fetched"].items():
        lines.append(f"| {run} | {', '.join(Path(p).name for p in fetched['files'])} | {fetched['raw']:,} | "
                     f"{fetched['gzip9']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npm", type=Path, default=Path("/tmp/browser_rt"),
                        help="the folder npm installed @litertjs/core and onnxruntime-web into (--prefix)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/browser_rt/run"), help="scratch folder")
    parser.add_argument("--models", nargs="+", default=["default", "ds_cnn"])
    parser.add_argument("--tf2onnx-python", default=sys.executable, help="a Python with tf2onnx installed")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per model and run")
    parser.add_argument("--skip-reconvert", action="store_true",
                        help="skip the TensorFlow-converter copy (needs TensorFlow and the Keras files)")
    parser.add_argument("--runs", nargs="+", default=None, metavar="RUNTIME[:VARIANT[:THREADS]]",
                        help="e.g. litert ort:auto:2 (default: every run)")
    args = parser.parse_args(argv)
    runs = RUNS if not args.runs else tuple(
        Run(*(int(v) if i == 2 else v for i, v in enumerate(spec.split(":")))) for spec in args.runs)

    args.work.mkdir(parents=True, exist_ok=True)
    faces = face_cases()
    np.save(args.work / "faces.npy", faces)
    store = ModelStore()
    cases = [prepare_model(name, faces, store, args.work, args) for name in args.models]
    site = args.work / "site"
    build_site(site, args.npm, cases, faces, args.work)
    with serve(site) as (url, requested, isolated):
        results = run_in_chromium(url, requested, isolated, runs, cases, args.chromium, args.repeats)
    report = {
        "tf2onnx": tool_version(args.tf2onnx_python, "tf2onnx"),
        "faces": len(faces),
        "models": {case.name: case.checks for case in cases},
        "parity": parity(results, cases),
        "runs": [{k: v for k, v in result.items() if k != "models"} for result in results],
        "sizes": sizes(site, results, cases, args.npm),
        "note": "timings are rough unless the machine was quiet",
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=1))
    (args.work / "browser_results.json").write_text(json.dumps(results))
    print(json.dumps({"tf2onnx": report["tf2onnx"], "models": report["models"]}, indent=1))
    for result in report["runs"]:
        print(result["run"], {k: result.get(k) for k in ("init_ms", "features", "webgpu_device_used", "env",
                                                         "blocked", "error")})
    print(markdown(report))
    print(f"\nwrote {args.work / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
