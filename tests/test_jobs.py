"""The job lanes (fer_core.service.jobs): order, lanes side by side, places and expected starts, cancel, failures,
the models that jobs use, the Train page's queue, and replicas sharing one queue on a job board
(fer_core.service.board). Jobs here run callables that wait on events: no training, except where a real
run's data file is checked."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import fer_core.service.board
import fer_core.service.queue
from fer_core.base.errors import DataError, SettingError
from fer_core.registry.cards import ModelCard
from fer_core.registry.store import SHIPPED_MANIFEST, ModelStore
from fer_core.service.board import BOARD_FOLDER, JobBoard
from fer_core.service.jobs import Job, JobConflictError, JobRequest, lane_slots
from fer_core.service.queue import JobQueue
from fer_core.service.work import submit_training
from fer_core.training.callbacks import TrainProgress
from fer_core.training.recipe import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10


class Gate:
    """A job's work that waits until released, then saves (returns a card), stops, or fails with ``error``."""

    def __init__(self, log: list[str] | None = None, error: Exception | None = None):
        self.started, self.release, self.log, self.error = threading.Event(), threading.Event(), log, error

    def __call__(self, job: Job) -> ModelCard | None:
        if self.log is not None:
            self.log.append(job.model_name)
        self.started.set()
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("the test never released this job")
        if self.error is not None:
            raise self.error
        return None if job.cancel_event.is_set() else ModelCard(name=job.model_name)


def request(name: str, gate: Gate, lane: str = "train", minutes: float | None = None, **options) -> JobRequest:
    return JobRequest(lane=lane, model_name=name, description=f"training of '{name}'", work=gate, minutes=minutes,
                      **options)


def ended(job: Job) -> str:
    """The job's final state, once it has ended."""
    assert job.wait(TIMEOUT), f"{job.model_name} did not end"
    return job.status


@pytest.fixture
def jobs():
    """Fresh lanes; every job still waiting or running at the end is released."""
    lanes = JobQueue()
    yield lanes
    for lane in lanes.lanes:
        for ticket in lanes.queue(lane):
            lanes.cancel(ticket.job_id)
            lanes.get(ticket.job_id).request.work.release.set()


def test_a_lane_runs_its_jobs_one_at_a_time_in_the_order_they_came(jobs):
    log: list[str] = []
    gates = {name: Gate(log) for name in ("first", "second", "third")}
    first, second, third = (jobs.submit(request(name, gate)) for name, gate in gates.items())
    assert gates["first"].started.wait(TIMEOUT)
    assert (first.status, second.status, third.status) == ("loading", "waiting", "waiting")
    assert [ticket.job_id for ticket in jobs.queue("train")] == [first.job_id, second.job_id, third.job_id]
    assert [jobs.place(job.job_id).position for job in (second, third)] == [1, 2]
    assert jobs.place(first.job_id) is None  # it runs

    gates["first"].release.set()
    assert ended(first) == "done" and first.card.name == "first"
    assert gates["second"].started.wait(TIMEOUT)  # the next one starts by itself
    assert jobs.place(third.job_id).position == 1
    gates["second"].release.set()
    gates["third"].release.set()
    assert ended(third) == "done"
    assert log == ["first", "second", "third"]
    assert jobs.queue("train") == [] and jobs.get(first.job_id) is first  # ended jobs stay readable


def test_a_finetune_runs_beside_a_long_training(jobs):
    training, finetune, later = Gate(), Gate(), Gate()
    long = jobs.submit(request("long", training))
    assert training.started.wait(TIMEOUT)
    short = jobs.submit(request("short", finetune, lane="finetune"))
    assert finetune.started.wait(TIMEOUT), "the fine-tune waited behind the training"
    queued = jobs.submit(request("queued", later, lane="finetune"))
    assert jobs.place(queued.job_id).position == 1  # behind the running fine-tune, not the training
    finetune.release.set()
    assert ended(short) == "done" and later.started.wait(TIMEOUT)
    assert long.running


def test_lane_slots_are_a_setting():
    assert lane_slots(None) == {"train": 1, "finetune": 1}
    assert lane_slots(" train=2 , finetune=3") == {"train": 2, "finetune": 3}
    for bad in ("train=0", "gpu=1", "train", "train=two"):
        with pytest.raises(SettingError, match="FER_LAB_LANES"):
            lane_slots(bad)
    with pytest.raises(SettingError, match="1 or more slots"):
        JobQueue({"train": 0})


def test_a_lane_with_two_slots_runs_two_jobs():
    jobs = JobQueue({"train": 2})
    gates = [Gate(), Gate(), Gate()]
    submitted = [jobs.submit(request(f"job{index}", gate, minutes=4)) for index, gate in enumerate(gates)]
    assert gates[0].started.wait(TIMEOUT) and gates[1].started.wait(TIMEOUT)
    place = jobs.place(submitted[2].job_id)
    assert (place.position, place.jobs_ahead) == (1, 2)
    assert abs((place.expected_start - dt.datetime.now().astimezone()).total_seconds() - 240) < 5  # first free slot
    for gate in gates:
        gate.release.set()
    assert [ended(job) for job in submitted] == ["done"] * 3


def minutes_from_now(when: dt.datetime | None) -> float:
    return (when - dt.datetime.now().astimezone()).total_seconds() / 60


def test_places_and_expected_starts_follow_the_queue(jobs):
    running_gate = Gate()
    running = jobs.submit(request("running", running_gate, minutes=10))
    assert running_gate.started.wait(TIMEOUT)
    second = jobs.submit(request("second", Gate(), minutes=5))
    third = jobs.submit(request("third", Gate()))  # no time budget
    fourth = jobs.submit(request("fourth", Gate(), minutes=5))

    # the running job's time budget left, then the budgets of the jobs ahead
    assert minutes_from_now(jobs.place(second.job_id).expected_start) == pytest.approx(10, abs=0.1)
    assert minutes_from_now(jobs.place(third.job_id).expected_start) == pytest.approx(15, abs=0.1)
    unknown = jobs.place(fourth.job_id)
    assert (unknown.position, unknown.jobs_ahead, unknown.expected_start) == (3, 3, None)  # third has no budget
    assert unknown.describe() == "number 3 in the queue; it starts after 3 job(s) ahead of it"

    # the training's own estimate, once it reports, replaces its budget
    running.listen(TrainProgress(epoch=1, epochs=2, batch=1, batches=10, loss=1.0, accuracy=0.5,
                                 elapsed_seconds=6.0, eta_seconds=120.0))
    place = jobs.place(second.job_id)
    assert minutes_from_now(place.expected_start) == pytest.approx(2, abs=0.1)
    assert place.describe() == f"number 1 in the queue; expected to start at about {place.expected_start:%H:%M}"
    assert "about 2 min left" in running.describe()

    # a cancelled waiting job leaves the queue: the jobs behind it move up
    assert jobs.cancel(second.job_id)
    assert ended(second) == "cancelled" and not second.request.work.started.is_set()
    assert [jobs.place(job.job_id).position for job in (third, fourth)] == [1, 2]
    assert minutes_from_now(jobs.place(third.job_id).expected_start) == pytest.approx(2, abs=0.1)
    assert not jobs.cancel(second.job_id)  # it has ended

    rows = jobs.overview()
    assert [(row["lane"], row["place"], row["job"]) for row in rows] == [
        ("train", "running (loading, 5%)", "training of 'running'"),
        ("train", "1", "training of 'third'"), ("train", "2", "training of 'fourth'")]
    assert rows[0]["expected"] == "ends in about 2 min" and rows[2]["expected"] == "starts after 2 job(s)"


def test_cancel_and_finish_of_a_running_job(jobs):
    gate = Gate()
    job = jobs.submit(request("running", gate))
    assert gate.started.wait(TIMEOUT)
    assert jobs.finish(job.job_id) and job.finish_event.is_set()
    assert jobs.cancel(job.job_id) and job.cancel_event.is_set()
    assert job.running  # it stops when its work sees the event
    gate.release.set()
    assert ended(job) == "cancelled" and job.stopped == "cancelled" and job.card is None
    assert not jobs.finish(job.job_id) and not jobs.cancel(job.job_id)
    assert not jobs.cancel("no-such-job") and jobs.get("no-such-job") is None


def test_a_failing_job_is_marked_failed_and_its_lane_goes_on(jobs, caplog):
    bad_data = Gate(error=DataError("faces.csv, line 2: emotion label '9' is not 0-6"))
    crash = Gate(error=RuntimeError("boom"))
    after = Gate()
    failing = jobs.submit(request("bad_data", bad_data))
    crashing = jobs.submit(request("crash", crash))
    following = jobs.submit(request("after", after))
    bad_data.release.set()
    crash.release.set()
    assert ended(failing) == "failed" and failing.error == "faces.csv, line 2: emotion label '9' is not 0-6"
    assert ended(crashing) == "failed" and crashing.error == "the training of 'crash' failed: RuntimeError: boom"
    assert "job" in caplog.text and "boom" in caplog.text  # a bug keeps its traceback in the log
    assert after.started.wait(TIMEOUT)
    after.release.set()
    assert ended(following) == "done"


def test_jobs_may_not_share_a_model_that_one_of_them_saves(jobs):
    discarded: list[str] = []
    running = jobs.submit(request("target", Gate(), uses=frozenset({"start"})))
    cases = {
        "saves what a job saves": request("TARGET", Gate()),
        "saves what a job reads": request("start", Gate()),
        "reads what a job saves": request("other", Gate(), uses=frozenset({"target"})),
    }
    for case, refused in cases.items():
        with pytest.raises(JobConflictError, match="is used by the training of 'target' by someone"):
            jobs.submit(replace(refused, discard=lambda case=case: discarded.append(case)))
    assert discarded == list(cases)  # a refused job frees what it holds
    reader = jobs.submit(request("another", Gate(), lane="finetune", uses=frozenset({"start"})))  # reading is shared
    assert jobs.models_in_use() == {"target", "start", "another"}
    with pytest.raises(SettingError, match="unknown job lane 'gpu'"):
        jobs.submit(request("x", Gate(), lane="gpu"))
    for job in (running, reader):
        jobs.cancel(job.job_id)
        job.request.work.release.set()
        assert ended(job) == "cancelled"
    assert jobs.models_in_use() == set()


def stored(store: ModelStore, name: str, keras_hash: str = "hash") -> None:
    """A stand-in stored model: a card and files, enough to be listed and deleted (not loaded)."""
    store.ensure_root()
    (store.root / f"{name}.keras").write_bytes(b"weights")
    (store.root / f"{name}.tflite").write_bytes(b"flatbuffer")
    (store.root / f"{name}.json").write_text(ModelCard(name=name, sha256={"keras": keras_hash}).to_json())


def test_a_model_a_job_uses_cannot_be_deleted_until_the_job_ends(jobs, tmp_path):
    store = ModelStore(tmp_path / "models")
    for name in ("start", "free"):
        stored(store, name)
    gate = Gate()
    job = jobs.submit(request("target", gate, uses=frozenset({"start"})))
    with pytest.raises(JobConflictError, match="'START' is used by the training of 'target' by someone, started at"):
        jobs.delete_model("START", store)
    jobs.delete_model("free", store)
    assert store.names() == ["start"]
    gate.release.set()
    assert ended(job) == "done"
    jobs.delete_model("start", store)
    assert store.names() == []


def test_a_queued_training_that_is_cancelled_or_refused_deletes_its_data(jobs, tmp_path):
    blocker = Gate()
    jobs.submit(request("blocker", blocker, owner="Ada"))
    data = tmp_path / "faces.csv"
    data.write_bytes(b"emotion,pixels\n")
    queued = submit_training(jobs, data, TrainConfig(arch="ds_cnn", minutes=3), "queued", owner=" Bo ",
                                  delete_data=True)
    assert (queued.status, queued.owner, queued.request.minutes) == ("waiting", "Bo", 3)
    assert queued.request.description == "training of 'queued' (ds_cnn)"
    assert data.exists()  # read when it runs
    assert jobs.cancel(queued.job_id)
    assert ended(queued) == "cancelled" and not data.exists()

    for config, name, error in ((TrainConfig(epochs=0), "bad", SettingError),
                                (TrainConfig(arch="ds_cnn"), "blocker", JobConflictError)):
        data.write_bytes(b"emotion,pixels\n")
        with pytest.raises(error):
            submit_training(jobs, data, config, name, delete_data=True)
        assert not data.exists(), name
    blocker.release.set()


def test_a_running_training_that_is_cancelled_deletes_its_data_and_saves_nothing(model_store, tmp_path, fer_csv):
    jobs = JobQueue()
    job = submit_training(jobs, fer_csv, TrainConfig(arch="ds_cnn", epochs=3, batch_size=8), "cancelled_model",
                               owner="Bo", delete_data=True, store=model_store)
    assert job.running and job.request.uses == frozenset()
    assert jobs.cancel(job.job_id)
    assert job.wait(timeout=120)
    assert job.status == "cancelled"
    assert not fer_csv.exists()
    assert "cancelled_model" not in model_store.names()


def test_train_page_queues_a_second_training_and_lets_it_leave_the_queue(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("FER_LAB_MODELS", str(root))
    for name in ("default", "shipped_model", "mine"):
        stored(ModelStore(root), name, keras_hash=name)
    (root / SHIPPED_MANIFEST).write_text('{"shipped_model": "shipped_model"}')
    jobs = JobQueue()
    monkeypatch.setattr(fer_core.service.queue, "_JOBS", jobs)
    blocker = Gate()
    running = jobs.submit(request("blocker", blocker, owner="Ada", minutes=30))
    spooled_before = set(Path(tempfile.gettempdir()).glob("fer_lab_upload_*"))

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/3_Train.py").run()
    at.file_uploader(key="train_upload").set_value(("faces.csv", b"emotion,pixels\n0,1 2 3\n", "text/csv"))
    at.selectbox(key="train_arch").set_value("ds_cnn")
    at.number_input(key="train_minutes").set_value(5.0)
    at.text_input(key="train_name").set_value("queued_model")
    at.text_input(key="train_owner").set_value("Bo")
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    queued = jobs.get(at.session_state["train_job_id"])
    assert (queued.status, queued.model_name, queued.owner) == ("waiting", "queued_model", "Bo")
    start = jobs.place(queued.job_id).expected_start
    assert at.info[0].value.startswith("Your training of 'queued_model' (ds_cnn) is number 1 in the queue; "
                                       f"expected to start at about {start:%H:%M}")
    table = at.dataframe[0].value
    assert list(table["place"]) == ["running (loading)", "1"]
    assert list(table["by"]) == ["Ada", "Bo"]
    assert "train_start" not in [button.key for button in at.button]  # one job of a session at a time

    at.button(key="train_leave").click().run()
    assert not at.exception
    assert queued.status == "cancelled"
    assert "Training of 'queued_model' was cancelled; nothing was saved." in at.warning[0].value
    assert set(Path(tempfile.gettempdir()).glob("fer_lab_upload_*")) == spooled_before  # the upload deleted
    assert list(at.dataframe[0].value["by"]) == ["Ada"]

    # Models trained here can be deleted, after a confirmation; shipped models and the default are not offered.
    assert at.selectbox(key="train_delete_name").options == ["mine"]
    assert at.button(key="train_delete").disabled
    at.checkbox(key="train_delete_sure_mine").check().run()
    at.button(key="train_delete").click().run()
    assert not at.exception
    assert at.success[0].value == "Deleted 'mine'."
    assert ModelStore(root).names() == ["default", "shipped_model"]
    blocker.release.set()
    assert ended(running) == "done"


@pytest.fixture
def replicas(tmp_path):
    """Two replicas' job lanes on one job board (a store folder's ``.queue``); all jobs released at the end."""
    boards = [JobBoard(tmp_path / "models" / BOARD_FOLDER) for _ in range(2)]
    lanes = [JobQueue(board=board, poll_seconds=0.05) for board in boards]
    yield lanes
    for replica in lanes:
        for job in list(replica._jobs.values()):
            replica.cancel(job.job_id)
            job.request.work.release.set()
            job.wait(TIMEOUT)
    for board in boards:
        board.close()


def test_replicas_on_one_board_run_one_queue(replicas):
    a, b = replicas
    gates = {name: Gate() for name in ("first", "second", "third")}
    first = a.submit(request("first", gates["first"], minutes=10, owner="Ada"))
    assert gates["first"].started.wait(TIMEOUT)
    second = b.submit(request("second", gates["second"], minutes=5, uses=frozenset({"start"})))
    third = a.submit(request("third", gates["third"]))
    assert (second.status, third.status) == ("waiting", "waiting")  # the lane's one slot is taken on a

    # Every replica sees one queue: the same order, places and expected starts.
    for replica in (a, b):
        assert [ticket.job_id for ticket in replica.queue("train")] == [first.job_id, second.job_id, third.job_id]
        assert [row["place"] for row in replica.overview()] == ["running (loading)", "1", "2"]
        assert replica.overview()[0]["by"] == "Ada"
        assert minutes_from_now(replica.place(second.job_id).expected_start) == pytest.approx(10, abs=0.1)
        assert minutes_from_now(replica.place(third.job_id).expected_start) == pytest.approx(15, abs=0.1)
        assert replica.models_in_use() == {"first", "second", "third", "start"}
    # Models that another replica's jobs save or read are theirs until those jobs end.
    with pytest.raises(JobConflictError, match="'first' is used by the training of 'first' by Ada"):
        b.submit(request("first", Gate()))
    with pytest.raises(JobConflictError, match="'start' is used by the training of 'second'"):
        a.delete_model("start")

    # A job that ends on one replica gives the next one its turn on the other.
    gates["first"].release.set()
    assert ended(first) == "done"
    assert gates["second"].started.wait(TIMEOUT), "b did not start its job when a's ended"
    assert not gates["third"].started.is_set() and a.place(third.job_id).position == 1
    assert b.cancel(second.job_id)
    gates["second"].release.set()
    assert ended(second) == "cancelled"
    assert gates["third"].started.wait(TIMEOUT)
    gates["third"].release.set()
    assert ended(third) == "done"
    assert a.queue("train") == b.queue("train") == []


def test_a_replica_that_dies_does_not_hold_its_lane(replicas, tmp_path):
    """A replica killed while its job runs: its ticket is dropped, and the next job starts elsewhere."""
    folder = tmp_path / "models" / BOARD_FOLDER
    script = ("import sys, time\n"
              "from fer_core.service.board import JobBoard\n"
              "from fer_core.service.jobs import JobRequest\n"
              "from fer_core.service.queue import JobQueue\n"
              f"jobs = JobQueue(board=JobBoard({str(folder)!r}))\n"
              "jobs.submit(JobRequest(lane='train', model_name='doomed', description='doomed', "
              "work=lambda job: time.sleep(120)))\n"
              "print('running', flush=True)\n"
              "time.sleep(120)\n")
    dying = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert dying.stdout.readline().strip() == "running"
        a, _ = replicas
        gate = Gate()
        waiting = a.submit(request("next", gate))
        assert a.place(waiting.job_id).position == 1
        assert [row["job"] for row in a.overview()] == ["doomed", "training of 'next'"]
    finally:
        dying.kill()
        dying.wait(TIMEOUT)
    assert gate.started.wait(TIMEOUT), "the dead replica's job still holds the lane"
    assert [ticket.model_name for ticket in a.queue("train")] == ["next"]
    assert [path.name for path in folder.glob("job-*.json")] == [f"job-{waiting.job_id}.json"]


def test_the_app_queues_on_the_store_folders_board_unless_it_cannot_write_or_lock_there(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_LAB_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(fer_core.service.queue, "_JOBS", None)
    jobs = fer_core.service.queue.job_queue()
    assert jobs.board is not None and jobs.board.folder == tmp_path / "models" / BOARD_FOLDER
    jobs.board.close()
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("FER_LAB_MODELS", str(tmp_path / "file"))
    monkeypatch.setattr(fer_core.service.queue, "_JOBS", None)
    assert fer_core.service.queue.job_queue().board is None
    with pytest.raises(SettingError, match="cannot hold the shared training queue"):
        JobBoard(tmp_path / "file" / BOARD_FOLDER)
    monkeypatch.setattr(fer_core.service.board, "fcntl", None)  # as on Windows
    with pytest.raises(SettingError, match="needs flock"):
        JobBoard(tmp_path / "models" / BOARD_FOLDER)
