"""Two app replicas behind HAProxy, started by ``deploy/local_cluster.sh``, driven by real browsers.

Through the load balancer: the live stream (its WebSocket and WebRTC signalling reach the session's
replica, the media its ICE candidates) and a photo upload; two browsers' sessions land on different
replicas, stay there and keep their own choices; a training started on one replica shows in the
other's queue, holds the other's training in line, and its model is listed there when saved. Then
TERM stops everything. The script's refusals of bad input are checked too.

Skipped only when HAProxy, Debian's chromium or Playwright is missing; CI (``.ci/run``) installs them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if shutil.which("haproxy") is None:
    pytest.skip("haproxy is missing (apt-get install haproxy)", allow_module_level=True)

# Imported before Playwright: importing browser_helpers skips this module when there is no browser.
from browser_helpers import (  # noqa: E402
    ROOT,
    check_live_stream,
    check_photo_upload,
    chromium,
    free_port,
    new_page,
    open_from_home,
    save_untrained_models,
    started,
)
from conftest import synthetic_dataset, write_fer_csv  # noqa: E402
from playwright.sync_api import BrowserContext, Locator, Page, Playwright, expect, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

pytestmark = pytest.mark.browser  # real Chromium: left out by `pytest -m "not browser"`

SCRIPT = ROOT / "deploy" / "local_cluster.sh"
CLUSTER_START_SECONDS = 180
READY = re.compile(r"^FER Lab: (http://\S+) ", re.MULTILINE)
REPLICA = re.compile(r"^  (r\d+): http://127\.0\.0\.1:(\d+) ", re.MULTILINE)
SERVED_BY = re.compile(r"^Served by replica (r\d+)$")


@contextlib.contextmanager
def local_cluster(models: Path, logs: Path, replicas: int = 2) -> Iterator[tuple[str, subprocess.Popen, str]]:
    """``deploy/local_cluster.sh`` on a free port with the model store ``models``: its URL, its process and
    what it printed once ready; stopped (TERM) on exit."""
    logs.mkdir(parents=True, exist_ok=True)
    output = logs / "local_cluster.out"
    env = {**os.environ, "FER_LAB_MODELS": str(models), "FER_LAB_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHON": sys.executable}
    command = [str(SCRIPT), "--replicas", str(replicas), "--port", str(free_port()), "--logs", str(logs)]
    with started(command, env, output, lambda: READY.search(output.read_text()), CLUSTER_START_SECONDS) as (
            process, ready):
        yield ready.group(1), process, output.read_text()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cluster(workdir) -> Iterator[tuple[str, subprocess.Popen, str]]:
    """Two replicas sharing one model store (untrained ``default`` and ``second``) behind HAProxy."""
    with local_cluster(save_untrained_models(workdir / "models"), workdir / "logs") as running:
        yield running


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def first_browser(playwright, workdir) -> Iterator[BrowserContext]:
    with chromium(playwright, workdir, "first-profile") as context:
        yield context


@pytest.fixture(scope="module")
def second_browser(playwright, workdir) -> Iterator[BrowserContext]:
    """Another browser, with cookies of its own: a session of its own."""
    with chromium(playwright, workdir, "second-profile") as context:
        yield context


@pytest.fixture
def page(first_browser) -> Iterator[Page]:
    with new_page(first_browser) as page:
        yield page


def served_by(page: Page) -> str:
    """The replica that the sidebar says serves this session."""
    caption = page.get_by_test_id("stSidebar").get_by_text(SERVED_BY)
    caption.wait_for()
    return SERVED_BY.match(caption.inner_text()).group(1)


def sticky_replica(context: BrowserContext) -> str | None:
    """The replica that HAProxy's cookie holds this browser to."""
    return next((cookie["value"] for cookie in context.cookies() if cookie["name"] == "SERVERID"), None)


def model_options(page: Page) -> list[str]:
    """The models the sidebar offers (its list opened and closed again)."""
    chosen = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")
    chosen.click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def test_the_live_stream_plays_through_the_load_balancer(cluster, page, workdir):
    url, process, _ = cluster
    check_live_stream(page, url, process, workdir / "cluster-live.png")


def test_a_photo_uploads_through_the_load_balancer(cluster, page, workdir):
    url, _, _ = cluster
    check_photo_upload(page, url, workdir)


def test_two_sessions_land_on_different_replicas_and_keep_their_own(cluster, first_browser, second_browser):
    url, _, _ = cluster
    with new_page(first_browser) as first, new_page(second_browser) as second:
        first.goto(url)
        first_replica = served_by(first)  # its WebSocket is open: the next session goes to the other replica
        chosen = first.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")
        chosen.click()
        first.get_by_role("option", name="second").click()
        expect(chosen).to_have_value("second")
        second.goto(url)
        second_replica = served_by(second)
        assert first_replica != second_replica
        assert (sticky_replica(first_browser), sticky_replica(second_browser)) == (first_replica, second_replica)

        # Each session stays on its replica and keeps its own choice, page after page.
        open_from_home(second, url, "Photos and videos")
        assert served_by(second) == second_replica
        expect(second.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")).to_have_value("default")
        first.get_by_test_id("stSidebarNav").get_by_role("link", name="Photos and videos").click()
        first.get_by_text("Explain: show where the network looked").wait_for()
        assert served_by(first) == first_replica
        expect(chosen).to_have_value("second")
        # A new session in the same browser (a reload) goes to the same replica.
        first.reload()
        assert served_by(first) == first_replica


def click_until(button: Locator, done: Locator, tries: int = 4, seconds: float = 15) -> None:
    """Click ``button`` until ``done`` shows (waiting ``seconds`` after each click): a click while the page
    reruns is lost."""
    for _ in range(tries):
        with contextlib.suppress(PlaywrightTimeout):
            button.click(timeout=5_000)
        with contextlib.suppress(PlaywrightTimeout):
            done.first.wait_for(timeout=seconds * 1000)
            return
    done.first.wait_for(timeout=5_000)


def start_training(page: Page, data: Path, name: str, owner: str, started: Locator) -> None:
    """Fill the Train page's form (ds_cnn, up to 500 epochs, ``data`` uploaded) and press Start training
    until ``started`` shows."""
    form = page.locator('[data-testid="stElementContainer"][data-stale="false"]')  # drawn by the latest run
    form.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(data))
    form.get_by_text(data.name, exact=True).wait_for()
    form.get_by_role("combobox", name="Architecture").click()
    page.get_by_role("option", name=re.compile(r"^ds_cnn: ")).click()
    expect(form.get_by_role("combobox", name="Architecture")).to_have_value(re.compile(r"^ds_cnn: "), timeout=30_000)
    form.get_by_label("Epochs", exact=True).fill("500")
    form.get_by_label("Save as (model name)").fill(name)
    form.get_by_label("Your name (shown to others while you train)").fill(owner)
    click_until(form.get_by_role("button", name="Start training"), started, tries=3, seconds=40)


def test_one_training_queue_and_one_model_store_for_both_replicas(cluster, first_browser, second_browser, workdir):
    url, _, _ = cluster
    data = workdir / "faces.csv"  # enough faces that a training outlasts the checks below
    write_fer_csv(data, *synthetic_dataset(1400))
    with new_page(first_browser) as first, new_page(second_browser) as second:
        open_from_home(first, url, "Train")
        open_from_home(second, url, "Train")
        assert served_by(first) != served_by(second)
        start_training(first, data, "shared_model", "Ada", first.get_by_role("button", name="Stop and save"))

        # The other replica's queue shows it, and a training started there waits behind it.
        table = second.get_by_test_id("stDataFrame")
        table.wait_for()
        expect(table).to_contain_text("training of 'shared_model' (ds_cnn)")
        expect(table).to_contain_text("Ada")
        start_training(second, data, "waiting_model", "Bo", second.get_by_text(
            re.compile(r"^Your training of 'waiting_model' \(ds_cnn\) is number 1 in the queue")))
        click_until(second.get_by_role("button", name="Leave the queue"),
                    second.get_by_text("Training of 'waiting_model' was cancelled; nothing was saved."))

        # Saved on the first replica, listed on the second without a restart.
        assert "shared_model" not in model_options(second)
        saved = first.get_by_text(re.compile(r"^Saved as 'shared_model'"))
        click_until(first.get_by_role("button", name="Stop and save"),
                    first.get_by_role("button", name="Stop and save", disabled=True).or_(saved))
        saved.wait_for(timeout=180_000)
        second.get_by_test_id("stSidebarNav").get_by_role("link", name="Compare models").click()
        second.get_by_role("heading", name="Compare models").wait_for()
        assert "shared_model" in model_options(second)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_term_stops_every_replica_and_the_load_balancer(cluster):
    url, process, printed = cluster
    ports = [int(port) for _, port in REPLICA.findall(printed)] + [int(url.rsplit(":", 1)[1])]
    assert len(ports) == 3 and all(map(listening, ports)), printed
    process.terminate()
    assert process.wait(timeout=30) == 143
    assert not any(map(listening, ports))


@pytest.mark.parametrize(("arguments", "message"), [
    (["--replicas", "0", "--port", "8500"], "--replicas takes a whole number from 1 to 32, not '0'"),
    (["--replicas", "2", "--port", "http"], "--port takes a port number from 1 to 65535, not 'http'"),
    (["--replicas", "2"], "usage: deploy/local_cluster.sh --replicas N --port P"),
    (["--replicas", "2", "--port", "8500", "--nodes", "3"], "unknown argument '--nodes'"),
])
def test_the_script_refuses_bad_arguments(arguments, message):
    result = subprocess.run([str(SCRIPT), *arguments], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr


def test_the_script_refuses_a_port_in_use_and_a_missing_haproxy(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = subprocess.run([str(SCRIPT), "--replicas", "2", "--port", port], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in result.stderr
    bare = tmp_path / "bin"  # a PATH with what the script needs before it looks for HAProxy, and no HAProxy
    bare.mkdir()
    (bare / "dirname").symlink_to(shutil.which("dirname"))
    result = subprocess.run(["/bin/bash", str(SCRIPT), "--replicas", "2", "--port", port], capture_output=True,
                            text=True, timeout=30, env={"PATH": str(bare)})
    assert result.returncode == 2
    assert "haproxy is missing: install it (apt-get install haproxy)" in result.stderr
