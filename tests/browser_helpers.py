"""What the real-browser tests share: headless Chromium with a fake camera, the app's pages as a
visitor uses them, and the live stream and photo upload checks that the single server's tests
(test_e2e_browser.py) and the load-balanced replicas' (test_cluster.py) both run.

The camera plays a video made here from a real face photo (the astronaut of scikit-image).
Playwright drives Debian's chromium (it cannot download its own browser here): importing this
module skips the importing test module when either is missing; CI (``.ci/run``) installs both.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright", reason="playwright is missing (pip install playwright)")

from conftest import ASTRONAUT_FACE  # noqa: E402
from playwright.sync_api import BrowserContext, Page, Playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from fer_core.faces.samples import astronaut, sample_frame, write_y4m  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

LABEL = r"(Angry|Disgust|Fear|Happy|Sad|Surprise|Neutral) \d+%"
#: What the fake camera films (640x480, the astronaut photo scaled to 480x480 in the middle) and her face in it.
CAMERA_FRAME = sample_frame()
FACE_IN_CAMERA = tuple(round(v * 480 / 512) + offset for v, offset in zip(ASTRONAUT_FACE, (80, 0, 0, 0)))
START = re.compile(r"^start$", re.IGNORECASE)
STOP = re.compile(r"^stop$", re.IGNORECASE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: Path, ready: Callable[[], T | None],
            seconds: float) -> Iterator[tuple[subprocess.Popen, T]]:
    """``command`` run from the project's root, its output in ``log``, once ``ready()`` returns a value
    (the test fails if it exits first or ``seconds`` pass): the process and that value; stopped (TERM,
    then KILL) on exit."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + seconds
        while (value := ready()) is None:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited with status {process.returncode}:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{command[0]} was not ready in {seconds} s:\n{log_tail(log)}")
            time.sleep(0.5)
        yield process, value
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def answers(url: str) -> bool:
    """Whether ``url`` answers 200."""
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
        return answer.status == 200
    return False


def save_untrained_models(root: Path, names: tuple[str, ...] = ("default", "second")) -> Path:
    """A model store at ``root`` holding an untrained ds_cnn under each of ``names``: these tests check
    the pipeline, not accuracy."""
    from fer_core.faces.preprocess import Preprocessing
    from fer_core.registry.cards import Training, make_card
    from fer_core.registry.store import ModelStore
    from fer_core.training.networks import build_model

    for name in names:
        model = build_model("ds_cnn")
        card = make_card(arch="ds_cnn", model=model, preprocessing=Preprocessing(), training=Training(data="none"),
                         metrics=None, ms_per_face=None, reproduce="(untrained test model)")
        ModelStore(root).save(name, model, card)
    return root


@contextlib.contextmanager
def chromium(playwright: Playwright, workdir: Path, profile: str = "chromium-profile") -> Iterator[BrowserContext]:
    """Headless Chromium (its own profile, so its own cookies) whose camera plays ~2 s of the astronaut's
    face (640x480), looped."""
    camera = workdir / "astronaut.y4m"
    if not camera.exists():
        write_y4m(camera, [CAMERA_FRAME] * 20, fps=10)
    context = playwright.chromium.launch_persistent_context(
        str(workdir / profile), executable_path=str(CHROMIUM), headless=True,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-video-capture={camera}"],
        viewport={"width": 1280, "height": 1000})
    try:
        yield context
    finally:
        context.close()


@contextlib.contextmanager
def new_page(context: BrowserContext) -> Iterator[Page]:
    """A page of ``context``, closed on exit."""
    page = context.new_page()
    page.set_default_timeout(60_000)  # the first run of a page loads TensorFlow and the model
    try:
        yield page
    finally:
        page.close()


def open_from_home(page: Page, url: str, link: str) -> None:
    """Open the app's home page and follow the link ``link`` of its navigation, as a visitor does."""
    page.goto(url)
    page.get_by_role("heading", name="FER Lab").wait_for()
    navigation = page.get_by_test_id("stSidebarNav")
    navigation.get_by_role("link", name="Compare models").wait_for()  # the app's navigation
    navigation.get_by_role("link", name=link).click()
    page.wait_for_url(re.compile(r"/[A-Za-z_]+$"))


def check_no_exception(page: Page) -> None:
    exceptions = page.get_by_test_id("stException")
    assert exceptions.count() == 0, exceptions.all_inner_texts()


def faces_analysed(page: Page) -> int:
    """The live readout's count of analysed faces (0 while the readout is not shown)."""
    metric = page.get_by_test_id("stMetric").filter(has_text="Faces analysed")
    if metric.count() == 0:
        return 0
    return int(metric.get_by_test_id("stMetricValue").inner_text().replace(",", ""))


def readout(page: Page) -> str:
    """The live readout's metrics and captions, for failure messages."""
    parts = [*page.get_by_test_id("stMetric").all_inner_texts(),
             *page.get_by_test_id("stCaptionContainer").all_inner_texts()]
    return " | ".join(" ".join(part.split()) for part in parts)


def stream_and_count_faces(page: Page, process: subprocess.Popen, seconds: float = 45) -> int:
    """Press START on the Live webcam page and wait until analysed faces are counted; their number."""
    start = page.frame_locator('iframe[title*="webrtc"]').get_by_role("button", name=START)
    deadline = time.monotonic() + 60
    while start.count() == 0:  # the first run of the page loads TensorFlow and the model
        assert process.poll() is None, f"the app exited with status {process.returncode}"
        assert time.monotonic() < deadline, "no START button on the Live webcam page"
        page.wait_for_timeout(250)
    start.click()
    deadline = time.monotonic() + seconds
    count = faces_analysed(page)
    while count == 0 and time.monotonic() < deadline:
        assert process.poll() is None, f"the app exited with status {process.returncode}"
        page.wait_for_timeout(500)
        count = faces_analysed(page)
    return count


def video_frame(video) -> np.ndarray:
    """The frame a <video> element shows, as a BGR array."""
    data_url = video.evaluate("""v => {
        const canvas = document.createElement("canvas");
        canvas.width = v.videoWidth;
        canvas.height = v.videoHeight;
        canvas.getContext("2d").drawImage(v, 0, 0);
        return canvas.toDataURL("image/png");
    }""")
    png = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def check_live_stream(page: Page, url: str, process: subprocess.Popen, screenshot: Path) -> None:
    """The Live webcam page, opened from the home page, streams the camera: faces are counted, the main
    face is labelled, and the stream shows the camera's picture with a box drawn around the face only."""
    open_from_home(page, url, "Live webcam")
    count = stream_and_count_faces(page, process)
    page.screenshot(path=str(screenshot))
    check_no_exception(page)
    assert count > 0, "no face analysed in the camera stream"
    # The main face carries one of the seven emotions, and the annotated stream plays in the page.
    main_face = page.get_by_text(re.compile(rf"^Main face: {LABEL}$")).first
    with contextlib.suppress(PlaywrightTimeout):
        main_face.wait_for(timeout=45_000)
    assert main_face.is_visible(), f"no main face in the live readout, which shows: {readout(page)}"
    video = page.frame_locator('iframe[title*="webrtc"]').locator("video")
    # It shows the camera's picture with a box and a label drawn around the face, and nothing else
    # changed: at 640x480, or less while WebRTC spares a busy CPU (compared at the stream's size).
    deadline = time.monotonic() + 10
    while True:
        shown = video_frame(video)
        height, width = shown.shape[:2]
        scale = width / CAMERA_FRAME.shape[1]
        camera = cv2.resize(CAMERA_FRAME, (width, height), interpolation=cv2.INTER_AREA)
        x, y, w, h = (round(v * scale) for v in FACE_IN_CAMERA)
        changed = np.abs(shown.astype(int) - camera.astype(int)).max(axis=2) > 80
        # The label above the box runs to the right as far as its text goes ("Surprise 100%" is the widest).
        near_face = changed[max(0, y - 60):y + h + 60, max(0, x - 60):x + w + round(160 * scale)].sum()
        drawn = changed.sum() > 300 * scale ** 2
        if drawn and near_face >= 0.95 * changed.sum() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    assert width * 3 == height * 4 and width >= 320, f"the stream plays at {width}x{height}"
    assert drawn, f"no box drawn on the stream ({changed.sum()} pixels changed)"
    assert near_face >= 0.95 * changed.sum(), f"the stream changed away from the face ({near_face} of {changed.sum()})"
    page.frame_locator('iframe[title*="webrtc"]').get_by_role("button", name=STOP).click()


def check_photo_upload(page: Page, url: str, workdir: Path) -> None:
    """A photo sent through the Upload page's file input is analysed: its one face is found and labelled."""
    photo = workdir / "astronaut.png"
    cv2.imwrite(str(photo), astronaut())
    open_from_home(page, url, "Photos and videos")
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(photo))
    page.get_by_text(re.compile(rf"^Face 1: {LABEL}$")).first.wait_for()
    page.get_by_role("button", name="Annotated image (PNG)").wait_for()
    page.screenshot(path=str(workdir / "upload.png"))
    check_no_exception(page)
    assert page.get_by_role("heading", name="astronaut.png").count() == 1
    assert page.get_by_text("No face found").count() == 0
    assert page.get_by_text(re.compile(r"^Face 2: ")).count() == 0
