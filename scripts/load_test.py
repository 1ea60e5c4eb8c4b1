"""What one server carries: K browsers streaming their cameras to the Live webcam page at once.

Starts the app (``streamlit run app.py``) pinned to ``--server-cpus``, then for each K of
``--streams`` opens K tabs of headless Chromium (pinned to ``--browser-cpus``) on the Live webcam
page, each with a fake camera that films the astronaut photo of scikit-image at ``--camera``
resolution and ``--fps`` with a little sensor noise, presses START in every tab, waits until every
tab shows analysed faces, and then measures for ``--seconds``:

- per stream, the annotated frames the browser got back per second (the <video> element's
  decoded frames) and the faces the server analysed per second (the page's "Faces analysed");
- the server's CPU (cores: CPU seconds per second, all its threads) and memory (resident MB);
- how many tabs the server refused (over its stream limit, ``FER_LAB_MAX_STREAMS``): the per-stream
  figures are of the others.

    python scripts/load_test.py --streams 1 2 4 8 --seconds 30

prints a table, and writes its rows as JSON with ``--json FILE``. With ``--training`` a training runs in the
server all along (started on its Train page before the streams, on random faces, 500 epochs of
``--training-arch``, ds_cnn unless told),
as when a class trains on a server without workers; ``--server-env FER_LAB_WORKER_THREADS=N`` sets
how many threads it may take:

    python scripts/load_test.py --streams 2 --server-cpus 0,1 --training --server-env FER_LAB_WORKER_THREADS=1
 It needs Debian's chromium and
playwright (``pip install -r requirements-dev.txt``). Pass ``--url`` and ``--server-pid`` to load a
server started otherwise (then ``--server-cpus`` and the server options are not used).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_core.faces.samples import camera_frames, write_y4m  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PAGE = "Live_webcam"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadRow:
    """One K's measurement: per-stream rates (lists, one value per tab) and the server's use."""

    streams: int
    frames_per_second: list[float]
    faces_per_second: list[float]
    server_cores: float
    server_mb: float
    busy_cpus: list[float]  #: each CPU's busy share over the measurement (all processes)
    refused: int  #: tabs told that the server carries its most streams
    seconds: float


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each CPU so far, from /proc/stat."""
    times = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            values = [int(value) for value in line.split()[1:]]
            idle = values[3] + values[4]  # idle and iowait
            times.append((sum(values) - idle, sum(values)))
    return times


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def serve(port: int, cpus: str, log: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """The app on ``port``, pinned to ``cpus`` with taskset; stopped on exit."""
    command = ["taskset", "-c", cpus, sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the app exited with status {process.returncode}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no answer from {url} in 90 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, process.pid
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        process.kill()  # when it did not stop (nothing happens when it did)


def faces_analysed(page) -> int:
    metric = page.get_by_test_id("stMetric").filter(has_text="Faces analysed")
    if metric.count() == 0:
        return 0
    return int(metric.get_by_test_id("stMetricValue").inner_text().replace(",", ""))


def frames_shown(page) -> int:
    """Frames the page's <video> element has decoded so far (the annotated stream coming back); 0 when
    the page shows no video (its stream did not connect)."""
    video = page.frame_locator('iframe[title*="webrtc"]').locator("video")
    if video.count() == 0:
        return 0
    return int(video.evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames"))


def start_streams(context, url: str, count: int, warmup: float) -> list:
    """Open ``count`` tabs on the Live page one after the other, press START in each, and wait until all
    analyse faces (a tab whose START never shows is left out and said so)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    pages = []
    for _ in range(count):
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{url}/{PAGE}")
        try:
            page.frame_locator('iframe[title*="webrtc"]').get_by_role("button", name="START").click(timeout=120_000)
        except PlaywrightTimeout:
            print("  a tab showed no START button within 120 s", file=sys.stderr)
        pages.append(page)
    deadline = time.monotonic() + warmup
    while not all(faces_analysed(page) > 0 for page in pages):
        if time.monotonic() > deadline:
            found = sum(faces_analysed(page) > 0 for page in pages)
            print(f"  only {found} of {count} streams analysed faces within {warmup:.0f} s", file=sys.stderr)
            break
        time.sleep(1.0)
    time.sleep(3.0)  # past the streams' start
    return pages


def measure(pages: list, pid: int, seconds: float) -> LoadRow:
    """Per-stream rates and the server's CPU over ``seconds``."""
    started, cpu_started, cpus_started = time.monotonic(), cpu_seconds(pid), cpu_times()
    frames_before = [frames_shown(page) for page in pages]
    faces_before = [faces_analysed(page) for page in pages]
    time.sleep(seconds)
    frames_after = [frames_shown(page) for page in pages]
    faces_after = [faces_analysed(page) for page in pages]
    elapsed = time.monotonic() - started
    cores = (cpu_seconds(pid) - cpu_started) / elapsed
    busy = [round((busy - busy0) / max(1, total - total0), 3)
            for (busy0, total0), (busy, total) in zip(cpus_started, cpu_times())]
    refused = sum(page.get_by_text("its most live streams").count() > 0 for page in pages)
    return LoadRow(len(pages), [round((b - a) / elapsed, 2) for a, b in zip(frames_before, frames_after)],
                   [round((b - a) / elapsed, 2) for a, b in zip(faces_before, faces_after)],
                   round(cores, 3), round(resident_mb(pid), 1), busy, refused, round(elapsed, 1))


def start_training(context, url: str, data: Path, arch: str) -> object:
    """Start a training of ``arch`` on the server's Train page (500 epochs, ``data`` uploaded) and wait until it
    trains; the page, which then follows it."""
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{url}/Train")
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(data))
    page.get_by_text(data.name, exact=True).wait_for()
    page.get_by_role("combobox", name="Architecture").click()
    page.get_by_role("option", name=f"{arch}: ", exact=False).first.click()
    page.get_by_label("Epochs", exact=True).fill("500")
    page.get_by_label("Save as (model name)").fill("load_test_training")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Epoch ", exact=False).first.wait_for(timeout=300_000)
    return page


def still_training(page) -> bool:
    """Whether the Train page still follows a running training."""
    return page.get_by_role("button", name="Cancel training").count() > 0


def random_faces(path: Path, rows: int = 1500) -> Path:
    """A FER2013-format CSV of random 48x48 faces with random labels: work for a training, nothing to learn."""
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for index in range(rows):
        usage = "PublicTest" if index % 10 == 0 else "Training"
        lines.append(f"{index % 7},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(url: str, pid: int, args: argparse.Namespace, camera: Path) -> list[LoadRow]:
    from playwright.sync_api import sync_playwright

    os.sched_setaffinity(0, {int(cpu) for cpu in args.browser_cpus.split(",")})  # the browsers inherit it
    rows = []
    with sync_playwright() as playwright:
        for count in args.streams:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--use-fake-device-for-media-stream",
                      "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={camera}",
                      "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                      "--disable-backgrounding-occluded-windows"])
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 1000})
                training = (start_training(context, url, random_faces(camera.with_name("faces.csv")),
                                           args.training_arch) if args.training else None)
                pages = start_streams(context, url, count, args.warmup)
                row = measure(pages, pid, args.seconds)
                if training is not None and not still_training(training):
                    print("  the training ended before the measurement did", file=sys.stderr)
                rows.append(row)
                print_row(row)
                if args.json:
                    args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1))
            finally:
                browser.close()
            time.sleep(5.0)  # the server closes the streams
    return rows


def print_header() -> None:
    print("| streams (refused) | frames back/s per stream (mean, min) | faces analysed/s per stream (mean, min, max) "
          "| server CPU (cores) | server memory (MB) | CPUs busy |")
    print("|---|---|---|---|---|---|")


def print_row(row: LoadRow) -> None:
    """The row's rates over the streams that were not refused."""
    served = [index for index in range(row.streams) if row.frames_per_second[index] > 0 or row.refused == 0]
    frames = [row.frames_per_second[index] for index in served] or [0.0]
    faces = [row.faces_per_second[index] for index in served] or [0.0]
    print(f"| {row.streams} ({row.refused}) | {np.mean(frames):.1f}, {min(frames):.1f} | "
          f"{np.mean(faces):.1f}, {min(faces):.1f}, "
          f"{max(faces):.1f} | {row.server_cores:.2f} | {row.server_mb:.0f} | "
          f"{' '.join(f'{busy:.0%}' for busy in row.busy_cpus)} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8], help="numbers of streams to try")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per number of streams")
    parser.add_argument("--warmup", type=float, default=120.0, help="longest wait for every stream's first faces")
    parser.add_argument("--camera", default="640x480", help="the fake camera's WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=15, help="the fake camera's frame rate")
    parser.add_argument("--server-cpus", default="0", help="CPUs the server is pinned to (taskset -c)")
    parser.add_argument("--browser-cpus", default="1", help="CPUs the browsers are pinned to")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--url", help="load this running server instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's process id, for its CPU and memory")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--training", action="store_true", help="a training runs in the server while it streams")
    parser.add_argument("--training-arch", default="ds_cnn", help="the architecture it trains")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="set this in the server's environment (repeatable)")
    args = parser.parse_args(argv)
    if args.training and len(args.streams) != 1:
        parser.error("--training measures one number of streams (its training runs on)")
    if any("=" not in entry for entry in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing (apt-get install chromium)")
    if args.url and args.server_pid is None:
        parser.error("--url needs --server-pid")
    width, height = (int(side) for side in args.camera.lower().split("x"))

    with tempfile.TemporaryDirectory() as scratch:
        camera = Path(scratch) / "camera.y4m"
        # 4 s looped, with sensor noise so that video coding works as hard as on a real camera.
        write_y4m(camera, camera_frames(width, height, count=4 * args.fps, noise=2.0), args.fps)
        print(f"camera {width}x{height} at {args.fps} fps; server on CPUs {args.server_cpus}, "
              f"browsers on {args.browser_cpus}; {args.seconds:.0f} s a row"
              f"{'; a training runs in the server' if args.training else ''} {' '.join(args.server_env)}")
        print_header()
        if args.url:
            rows = run(args.url, args.server_pid, args, camera)
        else:
            env = {**os.environ, "FER_LAB_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2",
                   **dict(entry.split("=", 1) for entry in args.server_env)}
            if args.training:  # a store of its own: the training's model is not left among the user's
                env["FER_LAB_MODELS"] = str(Path(scratch) / "models")
                shutil.copytree(ROOT / "models", env["FER_LAB_MODELS"])
            with serve(args.port, args.server_cpus, Path(scratch) / "server.log", env) as (url, pid):
                rows = run(url, pid, args, camera)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
