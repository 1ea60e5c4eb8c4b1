"""End to end in a real browser: the app in a subprocess, driven by headless Chromium with a fake camera.

The camera plays a video made here from a real face photo (the astronaut of scikit-image), so the
whole live chain runs: the browser's camera, WebRTC to streamlit-webrtc on the server, face
detection and classification, the annotated stream back, and the page's live readout. Then a photo
goes through the Upload page's file input, and a labelled set through the Compare page's evaluation,
whose confusion-matrix cells open with a click. On the Class faces page the camera's face is recorded
for two emotions, a model is fine-tuned on it and then streams on the Live webcam page. The models
are small untrained ones in a temporary store: these tests check the pipeline, not accuracy.

The browser and the checks shared with test_cluster.py are in browser_helpers.py, whose import skips
this module when Debian's chromium or Playwright is missing; CI (``.ci/run``) installs both.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

# Imported before Playwright: importing browser_helpers skips this module when there is no browser.
from browser_helpers import (
    LABEL,
    START,
    STOP,
    answers,
    check_live_stream,
    check_no_exception,
    check_photo_upload,
    chromium,
    free_port,
    new_page,
    open_from_home,
    readout,
    save_untrained_models,
    started,
    stream_and_count_faces,
    video_frame,
)
from conftest import synthetic_dataset, write_fer_csv
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from fer_core.base.labels import DISPLAY_NAMES, EMOTIONS
from fer_core.faces.samples import group_photo

pytestmark = pytest.mark.browser  # real Chromium: left out by `pytest -m "not browser"`

SERVER_START_SECONDS = 60


@contextlib.contextmanager
def serve_app(models: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamlit run app.py`` on a free port with the model store ``models``; stopped on exit."""
    port = free_port()
    env = {**os.environ, "FER_LAB_MODELS": str(models), "FER_LAB_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2"}
    url = f"http://localhost:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
               str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    with started(command, env, log, lambda: url if answers(f"{url}/_stcore/health") else None,
                 SERVER_START_SECONDS) as (process, _):
        yield url, process


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def models(workdir) -> Path:
    """A model store holding an untrained ds_cnn as ``default`` and another as ``second`` (to compare)."""
    return save_untrained_models(workdir / "models")


@pytest.fixture(scope="module")
def app(models, workdir) -> Iterator[tuple[str, subprocess.Popen]]:
    with serve_app(models, workdir / "streamlit.log") as served:
        yield served


@pytest.fixture(scope="module")
def browser(workdir):
    with sync_playwright() as playwright, chromium(playwright, workdir) as context:
        yield context


@pytest.fixture
def page(browser) -> Iterator[Page]:
    with new_page(browser) as page:
        yield page


def test_live_webcam_page_detects_and_labels_the_camera_face(app, page, workdir):
    url, process = app
    check_live_stream(page, url, process, workdir / "live.png")


def test_upload_page_analyses_a_photo_through_the_file_input(app, page, workdir):
    url, _ = app
    check_photo_upload(page, url, workdir)


def test_a_group_photo_shows_numbered_faces_a_summary_and_a_full_size_view_without_developer_tools(app, page,
                                                                                                   workdir):
    """Twelve faces: a summary, the uncertain ones to check, one numbered cell per face; the photo full size on
    demand; and, hosted for a class, no Deploy button (``client.toolbarMode = "viewer"``)."""
    url, _ = app
    photo = workdir / "group.png"
    cv2.imwrite(str(photo), group_photo())
    open_from_home(page, url, "Photos and videos")
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(photo))
    page.get_by_text(re.compile(rf"^Face 12: {LABEL}$")).first.wait_for()
    page.get_by_text(re.compile(r"^12 faces: ")).wait_for()
    assert page.get_by_text(re.compile(r"^Check these, least certain first")).count() == 1  # untrained: all unsure
    assert page.get_by_text(re.compile(r"; 6 more below:$")).count() == 1
    for number in range(1, 13):  # each face's cell, and for six of them a thumbnail in the row to check
        assert page.get_by_text(re.compile(rf"^Face {number}: {LABEL}$")).count() in (1, 2), number
    assert page.get_by_text(re.compile(rf"^Face \d+: {LABEL}$")).count() == 12 + 6
    page.locator(".js-plotly-plot").nth(11).wait_for()
    page.set_viewport_size({"width": 1280, "height": 2600})
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(workdir / "group_photo.png"))
    check_no_exception(page)
    assert page.get_by_test_id("stAppDeployButton").count() == 0
    assert page.get_by_role("button", name="Deploy").count() == 0
    page.set_viewport_size({"width": 800, "height": 1000})  # narrower than the photo
    page.get_by_role("button", name="Full size").click()
    dialog = page.get_by_role("dialog")
    full = dialog.get_by_role("img", name="The annotated photo, full size")
    full.wait_for()
    assert full.evaluate("image => [image.naturalWidth, image.width]") == [960, 960]  # pixel for pixel
    assert dialog.bounding_box()["width"] < 960  # wider than the dialog: it scrolls rather than shrinks
    page.keyboard.press("Escape")
    page.set_viewport_size({"width": 1280, "height": 1000})


def test_direct_links_to_pages_work_on_a_fresh_server(models, page, workdir):
    """Bookmarked pages opened first on a new server: the Upload page, then the live stream."""
    with serve_app(models, workdir / "streamlit-direct.log") as (url, process):
        page.goto(f"{url}/Upload")
        page.get_by_text("Explain: show where the network looked").wait_for()
        page.goto(f"{url}/Live_webcam")
        # WebRTC's connection on a fresh server took from seconds to over 30 s here: wait as long as needed.
        assert stream_and_count_faces(page, process, seconds=90) > 0, readout(page)
        # The app's own navigation, title and layout, as from the home page.
        assert page.get_by_test_id("stSidebarNav").get_by_role("link", name="Photos and videos").count() == 1


def test_no_page_asks_another_origin_for_anything(app, page):
    """Every page, fully drawn, fetches only from the app itself: no font server for icons or the favicon."""
    url, _ = app
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    page.get_by_role("heading", name="FER Lab").wait_for()
    navigation = page.get_by_test_id("stSidebarNav")
    for link in ("Live webcam", "Photos and videos", "Train", "Compare models", "Class faces", "Home"):
        navigation.get_by_role("link", name=link).click()
        page.wait_for_load_state("networkidle")
        check_no_exception(page)
    outside = sorted({request for request in requested
                      if not request.startswith((url, "data:", "blob:", url.replace("http", "ws")))})
    assert requested and outside == []


def test_compare_page_opens_a_confusion_matrix_cell_with_a_click(app, page, workdir):
    labelled = workdir / "faces.csv"
    write_fer_csv(labelled, *synthetic_dataset(70))
    url, _ = app
    open_from_home(page, url, "Compare models")
    page.get_by_text("Re-evaluate on a labelled set of your own").click()
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(labelled))
    page.get_by_text("faces.csv", exact=True).wait_for()
    page.get_by_role("button", name="Evaluate the chosen models").click()
    page.get_by_text("Click a cell to see its faces").wait_for(timeout=120_000)
    check_no_exception(page)
    chart = page.locator(".js-plotly-plot").first
    chart.locator(".scatterlayer .point").nth(48).wait_for(state="attached")
    # The first chart is default's; open its fullest cell off the diagonal (an untrained model errs a lot).
    counts = np.array(chart.evaluate("element => Array.from(element._fullData[0].z, row => Array.from(row))"))
    assert counts.shape == (7, 7) and counts.sum() == 70, counts
    true, predicted = max(((t, p) for t in range(7) for p in range(7) if t != p), key=lambda cell: counts[cell])
    chart.scroll_into_view_if_needed()  # a mouse clicks what the window shows
    marker = chart.locator(".scatterlayer .point").nth(true * 7 + predicted).bounding_box()
    page.mouse.click(marker["x"] + marker["width"] / 2, marker["y"] + marker["height"] / 2)
    total = int(counts[true, predicted])
    heading = (f"default: true {DISPLAY_NAMES[EMOTIONS[true]]} predicted as {DISPLAY_NAMES[EMOTIONS[predicted]]} "
               f"({min(total, 24)} of {total})")
    page.get_by_role("heading", name=heading).wait_for()
    page.get_by_text("The most confident mistakes first.").wait_for()
    faces = page.get_by_test_id("stImage")
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=stImage]').length >= {min(total, 24)}")
    page.screenshot(path=str(workdir / "compare.png"), full_page=True)
    check_no_exception(page)
    assert faces.count() == min(total, 24)
    assert re.fullmatch(r"(\w+ \d+%, ){2}\w+ \d+%", faces.first.get_by_test_id("stImageCaption").inner_text())
    with page.expect_download() as download:
        page.get_by_role("button", name="default report (HTML)").click()
    report = Path(download.value.path()).read_text()
    assert "<h1>default on faces.csv (all rows)</h1>" in report and not re.search(r"https?://", report)


def record(page: Page, emotion: str, recordings: int) -> None:
    """Pick ``emotion`` on the Class faces page, press Record, and wait until the collection holds
    ``recordings`` recordings; meanwhile the counter shows on the page and on the stream (a black band,
    top left)."""
    stream = page.frame_locator('iframe[title*="webrtc"]')
    counter = page.get_by_test_id("stMetric").filter(has_text=f"Recording {emotion}")
    for _ in range(4):  # a click during a rerun is lost: click again (a late one does not restart a recording)
        if stream.get_by_role("button", name=START).count():  # WebRTC dropped the stream on a busy CPU
            stream.get_by_role("button", name=START).click()
        page.get_by_test_id("stRadio").get_by_text(emotion, exact=True).click()
        with contextlib.suppress(PlaywrightTimeout):
            page.get_by_role("button", name=f"Record {emotion}").click(timeout=5_000)
            counter.wait_for(timeout=10_000)
            break
    assert counter.count(), f"no recording of {emotion} started"
    band, deadline = False, time.monotonic() + 8
    while not band and (counter.count() or time.monotonic() < deadline):  # a busy stream shows frames late
        band = video_frame(stream.locator("video"))[:4, :100].mean() < 30  # the camera films gray there
        deadline = time.monotonic() + 8 if counter.count() else deadline
    assert band, "no counter drawn on the stream while recording"
    page.get_by_text(re.compile(rf"^\d+ faces in {recordings} recordings")).wait_for()  # faces were kept


def test_class_faces_are_recorded_fine_tuned_on_and_the_new_model_runs_live(app, page, workdir):
    """Record faces of two emotions from the camera, fine-tune on them, then stream with the new model."""
    url, process = app
    open_from_home(page, url, "Class faces")
    page.frame_locator('iframe[title*="webrtc"]').get_by_role("button", name=START).click()
    page.get_by_role("button", name="Record Angry").wait_for()  # shown once the stream plays
    for number, emotion in enumerate(("Happy", "Happy", "Surprise"), start=1):  # one of Happy's is held out
        record(page, emotion, number)
    expanders = page.get_by_test_id("stExpander")
    expanders.filter(has_text=re.compile(r"Happy: \d+ faces in 2 recording\(s\)")).wait_for()
    expanders.filter(has_text=re.compile(r"Surprise: \d+ faces in 1 recording\(s\)")).wait_for()
    with contextlib.suppress(PlaywrightTimeout):  # unless WebRTC dropped it meanwhile
        page.frame_locator('iframe[title*="webrtc"]').get_by_role("button", name=STOP).click(timeout=5_000)
    page.get_by_label("Time budget (minutes)").fill("0.1")
    fine_tune = page.get_by_role("button", name="Fine-tune", exact=True)
    started = page.get_by_text("Fine-tuning default as")
    deadline = time.monotonic() + 60
    while started.count() == 0 and page.get_by_text("Saved as").count() == 0:  # a click during a rerun is lost
        assert time.monotonic() < deadline, "the fine-tuning did not start"
        with contextlib.suppress(PlaywrightTimeout):
            fine_tune.click(timeout=2_000)
        page.wait_for_timeout(1_000)
    page.get_by_text("Saved as 'default_class'").wait_for(timeout=180_000)
    page.get_by_text("Accuracy of default_class (after)").wait_for()
    page.locator(".js-plotly-plot").nth(1).wait_for()  # the confusion matrices, before and after
    assert page.locator(".js-plotly-plot").count() == 2
    page.screenshot(path=str(workdir / "class_faces.png"), full_page=True)
    check_no_exception(page)
    chosen_model = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")
    chosen_model.click()
    page.get_by_role("option", name="default_class").click()  # listed at once, and chosen
    expect(chosen_model).to_have_value("default_class")
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Live webcam").click()  # the same session
    page.get_by_role("heading", name="Live webcam").wait_for()
    expect(chosen_model).to_have_value("default_class")
    assert stream_and_count_faces(page, process) > 0, readout(page)
    check_no_exception(page)
    page.frame_locator('iframe[title*="webrtc"]').get_by_role("button", name=STOP).click()
