"""Two app replicas behind HAProxy and a training worker on the job queue in Redis, started by
``deploy/local_cluster.sh --replicas 2 --workers 1``, driven by real browsers.

Through the load balancer: the live stream (its WebSocket and WebRTC signalling reach the session's
replica, the media its ICE candidates) and a photo upload; two browsers' sessions land on different
replicas, stay there and keep their own choices. A training started on one replica runs on the worker,
its page following it through Redis; the other replica's queue shows it and holds that replica's
training in line (which can leave the queue); once the first is saved, the waiting one starts on the
worker and its page follows it there until it is cancelled; the saved model is listed on both replicas
and the jobs leave nothing in the shared store's inbox. Then TERM stops every process, the worker and
Redis included. The script's refusals of bad input are checked too.

Skipped only when HAProxy, redis-server, Debian's chromium or Playwright is missing; CI (``.ci/run``)
installs them.
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
import redis
import rq

if shutil.which("haproxy") is None:
    pytest.skip("haproxy is missing (apt-get install haproxy)", allow_module_level=True)
if shutil.which("redis-server") is None:
    pytest.skip("redis-server is missing (apt-get install redis-server)", allow_module_level=True)

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
from queue_helpers import until  # noqa: E402

pytestmark = pytest.mark.browser  # real Chromium: left out by `pytest -m "not browser"`

SCRIPT = ROOT / "deploy" / "local_cluster.sh"
CLUSTER_START_SECONDS = 180
READY = re.compile(r"^FER Lab: (http://\S+) ", re.MULTILINE)
REPLICA = re.compile(r"^  (r\d+): http://127\.0\.0\.1:(\d+) ", re.MULTILINE)
WORKER = re.compile(r"^  (w\d+): worker of the train and finetune lanes \(log: (\S+)\)$", re.MULTILINE)
REDIS = re.compile(r"^  Redis: (unix://\S+) ", re.MULTILINE)
SERVED_BY = re.compile(r"^Served by replica (r\d+)$")


@contextlib.contextmanager
def local_cluster(models: Path, logs: Path, replicas: int = 2,
                  workers: int = 1) -> Iterator[tuple[str, subprocess.Popen, str]]:
    """``deploy/local_cluster.sh`` on a free port with the model store ``models``: its URL, its process and
    what it printed once ready; stopped (TERM) on exit. Its workers' TensorFlow takes one thread, leaving
    the other core to the replicas and the browsers."""
    logs.mkdir(parents=True, exist_ok=True)
    output = logs / "local_cluster.out"
    env = {**os.environ, "FER_LAB_MODELS": str(models), "FER_LAB_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2",
           "FER_LAB_WORKER_THREADS": "1", "PYTHON": sys.executable}
    command = [str(SCRIPT), "--replicas", str(replicas), "--workers", str(workers), "--port", str(free_port()),
               "--logs", str(logs)]
    with started(command, env, output, lambda: READY.search(output.read_text()), CLUSTER_START_SECONDS) as (
            process, ready):
        yield ready.group(1), process, output.read_text()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cluster(workdir) -> Iterator[tuple[str, subprocess.Popen, str]]:
    """Two replicas sharing one model store (untrained ``default`` and ``second``) behind HAProxy, and one
    worker on the script's Redis."""
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


def running_jobs(url: str) -> dict[str, str | None]:
    """What each worker on the Redis at ``url`` runs now: its job's description, or None when idle."""
    connection = redis.Redis.from_url(url)
    result = {}
    for worker in rq.Worker.all(connection=connection):
        job = worker.get_current_job()
        result[worker.name] = None if job is None else job.description
    return result


def test_one_training_queue_and_one_model_store_for_both_replicas(cluster, first_browser, second_browser, workdir):
    url, _, printed = cluster
    redis_url = REDIS.search(printed).group(1)
    assert [name for name, _ in WORKER.findall(printed)] == ["w1"], printed
    worker_log = Path(WORKER.search(printed).group(2))
    assert "1 TensorFlow thread(s) per job" in worker_log.read_text()  # FER_LAB_WORKER_THREADS reached it
    data = workdir / "faces.csv"  # enough faces that a training outlasts the checks below
    write_fer_csv(data, *synthetic_dataset(1400))
    first_job, second_job = "training of 'shared_model' (ds_cnn)", "training of 'waiting_model' (ds_cnn)"
    # Its place, as a replica that sees the worker in Redis gives it (not "no worker takes these jobs now").
    second_waits = re.compile(
        r"^Your training of 'waiting_model' \(ds_cnn\) is number 1 in the queue; "
        r"(it starts after 1 job\(s\) ahead of it|expected to start at about \d\d:\d\d)")
    with new_page(first_browser) as first, new_page(second_browser) as second:
        open_from_home(first, url, "Train")
        open_from_home(second, url, "Train")
        assert served_by(first) != served_by(second)
        start_training(first, data, "shared_model", "Ada", first.get_by_role("button", name="Stop and save"))
        # It runs on the worker, not in the replica, whose page follows it through Redis.
        until(lambda: running_jobs(redis_url).get("w1") == first_job, 60, "the worker does not run the training")
        first.get_by_text(re.compile(r"^Epoch \d+/500, batch \d+/\d+")).wait_for(timeout=120_000)

        # The other replica's queue shows it, and a training started there waits behind it.
        table = second.get_by_test_id("stDataFrame")
        table.wait_for()
        expect(table).to_contain_text(first_job)
        expect(table).to_contain_text("Ada")
        start_training(second, data, "waiting_model", "Bo", second.get_by_text(second_waits))
        # The first replica's queue shows the second's waiting training too.
        expect(first.get_by_test_id("stDataFrame")).to_contain_text(second_job)
        expect(first.get_by_test_id("stDataFrame")).to_contain_text("Bo")
        click_until(second.get_by_role("button", name="Leave the queue"),
                    second.get_by_text("Training of 'waiting_model' was cancelled; nothing was saved."))
        expect(first.get_by_test_id("stDataFrame")).not_to_contain_text(second_job)
        start_training(second, data, "waiting_model", "Bo", second.get_by_text(second_waits))

        # Saved by the worker, listed on the second replica without a restart; the waiting training then
        # starts on the worker, and the second replica's page follows it there until it is cancelled.
        assert "shared_model" not in model_options(second)
        saved = first.get_by_text(re.compile(r"^Saved as 'shared_model'"))
        click_until(first.get_by_role("button", name="Stop and save"),
                    first.get_by_role("button", name="Stop and save", disabled=True).or_(saved))
        saved.wait_for(timeout=180_000)
        second.get_by_role("button", name="Cancel training").wait_for(timeout=120_000)
        until(lambda: running_jobs(redis_url).get("w1") == second_job, 60, "the worker does not run the training")
        click_until(second.get_by_role("button", name="Cancel training"),
                    second.get_by_text("Training of 'waiting_model' was cancelled; nothing was saved."), seconds=60)
        second.get_by_test_id("stSidebarNav").get_by_role("link", name="Compare models").click()
        second.get_by_role("heading", name="Compare models").wait_for()
        assert "shared_model" in model_options(second)
        assert "waiting_model" not in model_options(second)

    # Every job has ended: the uploads they read from the shared store's inbox, and their checkpoints, are gone.
    store = workdir / "models"
    until(lambda: not any((store / ".inbox").glob("*")) and not any((store / ".checkpoints").glob("*")), 30,
          f"files are left in {store / '.inbox'} or {store / '.checkpoints'}")
    until(lambda: running_jobs(redis_url) == {"w1": None}, 30, "the worker is still busy")


def processes_under(pid: int) -> dict[int, str]:
    """Every live process descended from ``pid``, with its command line."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":  # a zombie has ended
                parents[int(stat.parent.name)] = int(fields[1])
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child in [child for child, its_parent in parents.items() if its_parent == parent]:
            with contextlib.suppress(OSError):
                found[child] = (Path("/proc") / str(child) / "cmdline").read_text().replace("\0", " ").strip()
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_term_stops_every_replica_worker_redis_and_the_load_balancer(cluster):
    url, process, printed = cluster
    ports = [int(port) for _, port in REPLICA.findall(printed)] + [int(url.rsplit(":", 1)[1])]
    assert len(ports) == 3 and all(map(listening, ports)), printed
    redis_url = REDIS.search(printed).group(1)
    assert redis.Redis.from_url(redis_url).ping()
    processes = processes_under(process.pid)
    commands = list(processes.values())
    assert sum("streamlit run app.py" in command for command in commands) == 2, commands
    assert sum("fer_core worker --name w1" in command for command in commands) == 1, commands
    assert sum(command.startswith(("redis-server", "haproxy")) for command in commands) == 2, commands
    process.terminate()
    assert process.wait(timeout=30) == 143
    assert not any(map(listening, ports))
    assert [command for pid, command in processes.items() if alive(pid)] == []
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()


@pytest.mark.parametrize(("arguments", "message"), [
    (["--replicas", "0", "--port", "8500"], "--replicas takes a whole number from 1 to 32, not '0'"),
    (["--replicas", "2", "--port", "http"], "--port takes a port number from 1 to 65535, not 'http'"),
    (["--replicas", "2"], "usage: deploy/local_cluster.sh --replicas N --port P"),
    (["--replicas", "2", "--port", "8500", "--nodes", "3"], "unknown argument '--nodes'"),
    (["--replicas", "2", "--port", "8500", "--workers", "33"], "--workers takes a whole number from 0 to 32, not '33'"),
    (["--replicas", "2", "--port", "8500", "--workers", "-1"], "--workers takes a whole number from 0 to 32, not '-1'"),
    (["--replicas", "2", "--port", "8500", "--workers", "x"], "--workers takes a whole number from 0 to 32, not 'x'"),
    (["--replicas", "2", "--port", "8500", "--workers"], "--workers needs a value"),
    (["--replicas", "2", "--port", "8500", "--workers", "0"],
     "--workers 0 (no Redis) takes one replica only: several replicas share one job queue only through Redis"),
])
def test_the_script_refuses_bad_arguments(arguments, message):
    result = subprocess.run([str(SCRIPT), *arguments], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr


def test_the_script_refuses_a_port_in_use_and_a_missing_haproxy_or_redis(tmp_path):
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
    # With HAProxy and without redis-server: refused with workers, not with --workers 0 and one replica
    # (which then stops at the next check, the Python without Streamlit).
    (bare / "haproxy").symlink_to(shutil.which("haproxy"))
    result = subprocess.run(["/bin/bash", str(SCRIPT), "--replicas", "2", "--port", port, "--workers", "2"],
                            capture_output=True, text=True, timeout=30, env={"PATH": str(bare)})
    assert result.returncode == 2
    assert "redis-server is missing: install it (apt-get install redis-server)" in result.stderr
    result = subprocess.run(["/bin/bash", str(SCRIPT), "--replicas", "1", "--port", port, "--workers", "0"],
                            capture_output=True, text=True, timeout=30, env={"PATH": str(bare)})
    assert result.returncode == 2
    assert "redis-server" not in result.stderr
    assert "'python3' cannot import streamlit" in result.stderr
