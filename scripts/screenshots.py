"""Take the README's screenshots of every page, with the models in models/, in headless Chromium.

    python scripts/screenshots.py [OUT_DIR] [--only PAGE ...]      (default: docs/screenshots, every page)

Needs Debian's chromium (/usr/bin/chromium) and playwright (requirements-dev.txt). The camera is
faked with a video of scikit-image's astronaut photo; the Photos page gets the twelve-face group photo
made from it (``fer_core.faces.samples.group_photo``), shot whole in a tall window.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_core.faces.samples import camera_frames, group_photo, write_y4m  # noqa: E402

PAGES = ("home", "live", "upload", "train", "compare", "class_faces")


def resident_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1000
    return float("nan")


def start_app(port: int, log) -> subprocess.Popen:
    env = {**os.environ, "FER_LAB_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit("the app did not start")


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--only", nargs="+", choices=PAGES, default=PAGES, help="take only these pages' screenshots")
    args = parser.parse_args()
    out, only = args.out, set(args.only)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    camera, photo = work / "camera.y4m", work / "group.png"
    write_y4m(camera, camera_frames(count=30), fps=10)
    cv2.imwrite(str(photo), group_photo())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://localhost:{port}"
    with (work / "streamlit.log").open("wb") as log:
        app = start_app(port, log)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(work / "profile"), executable_path="/usr/bin/chromium", headless=True,
                viewport={"width": 1280, "height": 900},
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                      f"--use-file-for-fake-video-capture={camera}"])
            page = browser.new_page()
            page.set_default_timeout(90_000)
            if "home" in only:
                page.goto(url)
                page.get_by_role("heading", name="FER Lab").wait_for()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "home.png"))

            def open_page(link: str) -> None:
                page.goto(url)
                page.get_by_test_id("stSidebarNav").get_by_role("link", name=link).click()
                page.wait_for_url(re.compile(r"/[A-Za-z_]+$"))

            stream = page.frame_locator('iframe[title*="webrtc"]')
            if "live" in only:
                open_page("Live webcam")
                stream.get_by_role("button", name=re.compile("^start$", re.IGNORECASE)).click()
                page.get_by_text(re.compile(r"^Main face: ")).first.wait_for()
                page.wait_for_timeout(3000)
                page.screenshot(path=str(out / "live.png"))
                print(f"app process resident memory with the live stream running: {resident_mb(app.pid):.0f} MB")

            if "upload" in only:  # the summary, the photo and the first two rows of faces, in a tall window
                open_page("Photos and videos")
                page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(photo))
                page.get_by_text(re.compile(r"^Face 12: ")).first.wait_for()
                page.set_viewport_size({"width": 1280, "height": 2000})
                page.wait_for_timeout(2500)
                page.screenshot(path=str(out / "upload.png"))
                page.set_viewport_size({"width": 1280, "height": 900})

            if "train" in only:
                open_page("Train")  # waits for the form, not a fixed time: the page loads TensorFlow first
                page.get_by_role("button", name="Start training").wait_for()
                page.wait_for_timeout(1000)
                page.screenshot(path=str(out / "train.png"))

            if "compare" in only:
                open_page("Compare models")
                page.get_by_role("heading", name="Compare models").wait_for()
                page.wait_for_timeout(4000)
                page.screenshot(path=str(out / "compare.png"), full_page=True)
                print(f"app process resident memory after the pages so far: {resident_mb(app.pid):.0f} MB")

            if "class_faces" in only:  # a recording of Surprise, and one of Happy under way
                open_page("Class faces")
                stream.get_by_role("button", name=re.compile("^start$", re.IGNORECASE)).click()
                for emotion in ("Surprise", "Happy"):
                    page.get_by_test_id("stRadio").get_by_text(emotion, exact=True).click()
                    page.get_by_role("button", name=f"Record {emotion}").click()
                    page.get_by_test_id("stMetric").filter(has_text=f"Recording {emotion}").wait_for()
                    if emotion == "Surprise":
                        page.get_by_text(re.compile(r"^\d+ faces of Surprise recorded\.$")).wait_for()
                page.get_by_text(re.compile(r"^([3-9]|1\d|20) / 20 faces$")).wait_for()  # under way
                page.mouse.move(0, 0)  # no tooltip
                page.set_viewport_size({"width": 1280, "height": 1400})
                page.get_by_role("heading", name="Class faces").scroll_into_view_if_needed()
                page.screenshot(path=str(out / "class_faces.png"))
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=20)
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
