"""The job queue's contract, run against both backends (fer_core.service.queue.JobQueue): the embedded
lanes of one process, and RQ on a real redis-server with ``python -m fer_core worker`` processes.

Order, lanes side by side, places and expected starts, cancel and finish, failures, the models that jobs
use, and a training's data. Jobs here run :class:`queue_helpers.FileGate` work, which waits on files so
that it can run in a worker; one test trains for real. The Train page's queue (embedded) is at the end.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from queue_helpers import TIMEOUT, FileGate, RedisServer, Worker, until
from streamlit.testing.v1 import AppTest

import fer_core.service.queues
from fer_core.base.errors import SettingError
from fer_core.registry.cards import ModelCard
from fer_core.registry.store import SHIPPED_MANIFEST, ModelStore
from fer_core.service.jobs import JobConflictError, JobRequest, JobState, lane_slots
from fer_core.service.queue import EmbeddedJobQueue, JobQueue
from fer_core.service.redis_queue import RedisJobQueue
from fer_core.service.work import submit_training
from fer_core.training.recipe import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


class Lanes:
    """A backend under test: its queue, the gates its jobs wait on, and (on Redis) its workers."""

    def __init__(self, queue: JobQueue, folder: Path, workers: list[Worker] | None = None,
                 store_root: Path | None = None) -> None:
        self.queue, self.folder, self.workers = queue, folder, workers or []
        self.store_root = store_root  #: the workers' model store, where trainings checkpoint (None: no workers)
        self._names = itertools.count()

    def gate(self) -> FileGate:
        return FileGate(self.folder, f"gate{next(self._names)}")

    def log_text(self) -> str:
        return "".join(worker.log.read_text() for worker in self.workers)

    def ended(self, state: JobState) -> JobState:
        """The job once it has ended."""
        final = self.queue.wait(state.job_id, TIMEOUT)
        assert final is not None and not final.active, f"{state.model_name} did not end"
        return final

    def clear(self) -> None:
        """Cancel whatever still waits or runs and release every gate, until the queue is empty."""
        for state in self.queue.states():
            self.queue.cancel(state.job_id)
        for started in self.folder.glob("*.started"):
            (self.folder / started.name.replace(".started", ".release")).write_text("")
        until(lambda: not self.queue.states(), message="jobs left running")


def job_request(name: str, gate: FileGate, lane: str = "train", minutes: float | None = None, **options) -> JobRequest:
    return JobRequest(lane=lane, model_name=name, description=f"training of '{name}'", work=gate, minutes=minutes,
                      **options)


@pytest.fixture(scope="module")
def redis_lanes(tmp_path_factory) -> Iterator[Lanes]:
    """A redis-server with one worker for each lane, for the module."""
    folder = tmp_path_factory.mktemp("redis_lanes")
    server = RedisServer(folder / "redis").start()
    (folder / "models").mkdir()
    workers = [Worker(server.url, folder / "models", lanes=lane, log=folder / f"{lane}.log")
               for lane in ("train", "finetune")]
    queue = RedisJobQueue(server.url, store_root=folder / "models")
    until(lambda: queue.slots("train") == queue.slots("finetune") == 1, message="the workers did not start")
    try:
        yield Lanes(queue, folder, workers, store_root=folder / "models")
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


@pytest.fixture(params=["embedded", "redis"])
def lanes(request, tmp_path) -> Iterator[Lanes]:
    """Each backend in turn, empty at the start and emptied at the end."""
    backend = (Lanes(EmbeddedJobQueue(), tmp_path) if request.param == "embedded"
               else request.getfixturevalue("redis_lanes"))
    yield backend
    backend.clear()


def test_a_lane_runs_its_jobs_one_at_a_time_in_the_order_they_came(lanes):
    jobs = lanes.queue
    gates = [lanes.gate() for _ in range(3)]
    first, second, third = (jobs.submit(job_request(name, gate)) for name, gate in zip(("first", "second", "third"),
                                                                                     gates))
    until(gates[0].started)
    until(lambda: jobs.get(first.job_id).running)
    assert [jobs.get(job.job_id).status for job in (second, third)] == ["waiting", "waiting"]
    assert [state.job_id for state in jobs.queue("train")] == [first.job_id, second.job_id, third.job_id]
    assert [jobs.place(job.job_id).position for job in (second, third)] == [1, 2]
    assert jobs.place(first.job_id) is None  # it runs

    gates[0].release()
    done = lanes.ended(first)
    assert done.status == "done" and done.card.name == "first"
    until(gates[1].started)  # the next one starts by itself
    assert not gates[2].started() and jobs.place(third.job_id).position == 1
    gates[1].release()
    gates[2].release()
    assert lanes.ended(third).status == "done"
    assert jobs.queue("train") == [] and jobs.get(first.job_id).status == "done"  # ended jobs stay readable


def test_a_finetune_runs_beside_a_long_training(lanes):
    jobs = lanes.queue
    training, finetune, later = lanes.gate(), lanes.gate(), lanes.gate()
    long = jobs.submit(job_request("long", training))
    until(training.started)
    short = jobs.submit(job_request("short", finetune, lane="finetune"))
    until(finetune.started, message="the fine-tune waited behind the training")
    queued = jobs.submit(job_request("queued", later, lane="finetune"))
    assert jobs.place(queued.job_id).position == 1  # behind the running fine-tune, not the training
    finetune.release()
    assert lanes.ended(short).status == "done"
    until(later.started)
    assert jobs.get(long.job_id).running


def test_lane_slots_are_a_setting():
    assert lane_slots(None) == {"train": 1, "finetune": 1}
    assert lane_slots(" train=2 , finetune=3") == {"train": 2, "finetune": 3}
    for bad in ("train=0", "gpu=1", "train", "train=two"):
        with pytest.raises(SettingError, match="FER_LAB_LANES"):
            lane_slots(bad)
    with pytest.raises(SettingError, match="1 or more slots"):
        EmbeddedJobQueue({"train": 0})


def test_a_lane_with_two_slots_runs_two_jobs(lanes):
    """Two slots: ``train=2`` in one process; a second worker taking the lane on Redis."""
    if isinstance(lanes.queue, EmbeddedJobQueue):
        jobs, extra = EmbeddedJobQueue({"train": 2, "finetune": 1}), None
        lanes.queue = jobs
    else:
        jobs = lanes.queue
        extra = Worker(jobs.url, lanes.folder / "models", lanes="train", log=lanes.folder / "extra.log")
        until(lambda: jobs.slots("train") == 2, message="the second worker did not start")
    try:
        gates = [lanes.gate() for _ in range(3)]
        submitted = [jobs.submit(job_request(f"job{index}", gate, minutes=4)) for index, gate in enumerate(gates)]
        until(lambda: gates[0].started() and gates[1].started())
        until(lambda: jobs.get(submitted[1].job_id).running)
        place = jobs.place(submitted[2].job_id)
        assert (place.position, place.jobs_ahead) == (1, 2)
        assert abs(minutes_from_now(place.expected_start) - 4) < 0.1  # the first slot to free
        for gate in gates:
            gate.release()
        assert [lanes.ended(job).status for job in submitted] == ["done"] * 3
    finally:
        if extra is not None:
            extra.stop()
            until(lambda: jobs.slots("train") == 1, message="the second worker did not leave")


def minutes_from_now(when: dt.datetime | None) -> float:
    assert when is not None
    return (when - dt.datetime.now().astimezone()).total_seconds() / 60


def test_places_and_expected_starts_follow_the_queue(lanes):
    jobs = lanes.queue
    running_gate = lanes.gate()
    running = jobs.submit(job_request("running", running_gate, minutes=10))
    until(running_gate.started)
    until(lambda: jobs.get(running.job_id).running)
    second_gate = lanes.gate()
    second = jobs.submit(job_request("second", second_gate, minutes=5))
    third = jobs.submit(job_request("third", lanes.gate()))  # no time budget
    fourth = jobs.submit(job_request("fourth", lanes.gate(), minutes=5))

    # the running job's time budget left, then the budgets of the jobs ahead
    assert minutes_from_now(jobs.place(second.job_id).expected_start) == pytest.approx(10, abs=0.1)
    assert minutes_from_now(jobs.place(third.job_id).expected_start) == pytest.approx(15, abs=0.1)
    unknown = jobs.place(fourth.job_id)
    assert (unknown.position, unknown.jobs_ahead, unknown.expected_start) == (3, 3, None)  # third has no budget
    assert unknown.describe() == "number 3 in the queue; it starts after 3 job(s) ahead of it"

    # the training's own estimate, once it reports, replaces its budget
    running_gate.report_progress()
    until(lambda: jobs.get(running.job_id).progress is not None)
    place = jobs.place(second.job_id)
    assert minutes_from_now(place.expected_start) == pytest.approx(2, abs=0.1)
    assert place.describe() == f"number 1 in the queue; expected to start at about {place.expected_start:%H:%M}"
    assert "about 2 min left" in jobs.get(running.job_id).describe()

    # a cancelled waiting job leaves the queue: the jobs behind it move up
    assert jobs.cancel(second.job_id)
    assert lanes.ended(second).status == "cancelled" and not second_gate.started()
    assert [jobs.place(job.job_id).position for job in (third, fourth)] == [1, 2]
    assert minutes_from_now(jobs.place(third.job_id).expected_start) == pytest.approx(2, abs=0.1)
    assert not jobs.cancel(second.job_id)  # it has ended

    rows = jobs.overview()
    assert [(row["lane"], row["place"], row["job"]) for row in rows] == [
        ("train", "running (loading, 5%)", "training of 'running'"),
        ("train", "1", "training of 'third'"), ("train", "2", "training of 'fourth'")]
    assert rows[0]["expected"] == "ends in about 2 min" and rows[2]["expected"] == "starts after 2 job(s)"


def test_cancel_and_finish_of_a_running_job(lanes):
    jobs = lanes.queue
    gate = lanes.gate()
    job = jobs.submit(job_request("running", gate))
    until(gate.started)
    until(lambda: jobs.get(job.job_id).running)
    assert jobs.finish(job.job_id) and jobs.get(job.job_id).finish_requested
    assert jobs.cancel(job.job_id)
    final = lanes.ended(job)  # it stops when its work sees the cancel
    assert (final.status, final.stopped, final.card) == ("cancelled", "cancelled", None)
    assert not jobs.finish(job.job_id) and not jobs.cancel(job.job_id)
    assert not jobs.cancel("no-such-job") and jobs.get("no-such-job") is None


def test_a_failing_job_is_marked_failed_and_its_lane_goes_on(lanes, caplog):
    jobs = lanes.queue
    bad_data, crash, after = lanes.gate(), lanes.gate(), lanes.gate()
    failing = jobs.submit(job_request("bad_data", bad_data))
    crashing = jobs.submit(job_request("crash", crash))
    following = jobs.submit(job_request("after", after))
    bad_data.fail()
    crash.crash()
    assert (lanes.ended(failing).status, lanes.ended(failing).error) == ("failed", f"{bad_data.name} failed as asked")
    crashed = lanes.ended(crashing)
    assert crashed.status == "failed"
    assert crashed.error == f"the training of 'crash' failed: RuntimeError: {crash.name} crashed"
    log = lanes.log_text() or caplog.text
    assert "Traceback" in log and f"{crash.name} crashed" in log  # a bug keeps its traceback in the log
    until(after.started)
    after.release()
    assert lanes.ended(following).status == "done"


def test_jobs_may_not_share_a_model_that_one_of_them_saves(lanes, tmp_path):
    jobs = lanes.queue
    running = jobs.submit(job_request("target", lanes.gate(), uses=frozenset({"start"})))
    cases = {
        "saves what a job saves": job_request("TARGET", lanes.gate()),
        "saves what a job reads": job_request("start", lanes.gate()),
        "reads what a job saves": job_request("other", lanes.gate(), uses=frozenset({"target"})),
    }
    for index, (case, refused) in enumerate(cases.items()):
        handed_over = tmp_path / f"upload{index}.csv"
        handed_over.write_text("emotion,pixels\n")
        with pytest.raises(JobConflictError, match="is used by the training of 'target' by someone"):
            jobs.submit(replace(refused, inputs=(handed_over,)))
        assert not handed_over.exists(), f"{case}: a refused job keeps its upload"
    reader = jobs.submit(job_request("another", lanes.gate(), lane="finetune", uses=frozenset({"start"})))  # shared
    assert jobs.models_in_use() == {"target", "start", "another"}
    with pytest.raises(SettingError, match="unknown job lane 'gpu'"):
        jobs.submit(job_request("x", lanes.gate(), lane="gpu"))
    for job in (running, reader):
        jobs.cancel(job.job_id)
        assert lanes.ended(job).status == "cancelled"
    assert jobs.models_in_use() == set()


def stored(store: ModelStore, name: str, keras_hash: str = "hash") -> None:
    """A stand-in stored model: a card and files, enough to be listed and deleted (not loaded)."""
    store.ensure_root()
    (store.root / f"{name}.keras").write_bytes(b"weights")
    (store.root / f"{name}.tflite").write_bytes(b"flatbuffer")
    (store.root / f"{name}.json").write_text(ModelCard(name=name, sha256={"keras": keras_hash}).to_json())


def test_a_model_a_job_uses_cannot_be_deleted_until_the_job_ends(lanes, tmp_path):
    jobs = lanes.queue
    store = ModelStore(tmp_path / "store")
    for name in ("start", "free"):
        stored(store, name)
    gate = lanes.gate()
    job = jobs.submit(job_request("target", gate, uses=frozenset({"start"})))
    until(lambda: jobs.get(job.job_id).running)
    with pytest.raises(JobConflictError, match="'START' is used by the training of 'target' by someone, started at"):
        jobs.delete_model("START", store)
    jobs.delete_model("free", store)
    assert store.names() == ["start"]
    gate.release()
    assert lanes.ended(job).status == "done"
    jobs.delete_model("start", store)
    assert store.names() == []


def test_a_queued_training_that_is_cancelled_or_refused_deletes_its_data(lanes, tmp_path):
    jobs = lanes.queue
    blocker = lanes.gate()
    jobs.submit(job_request("blocker", blocker, owner="Ada"))
    data = tmp_path / "faces.csv"
    data.write_bytes(b"emotion,pixels\n")
    queued = submit_training(jobs, data, TrainConfig(arch="ds_cnn", minutes=3), "queued", owner=" Bo ",
                             delete_data=True)
    assert (queued.status, queued.owner, queued.minutes) == ("waiting", "Bo", 3)
    assert queued.description == "training of 'queued' (ds_cnn)"
    assert data.exists()  # read when it runs
    assert jobs.cancel(queued.job_id)
    assert lanes.ended(queued).status == "cancelled" and not data.exists()

    for config, name, error in ((TrainConfig(epochs=0), "bad", SettingError),
                                (TrainConfig(arch="ds_cnn"), "blocker", JobConflictError)):
        data.write_bytes(b"emotion,pixels\n")
        with pytest.raises(error):
            submit_training(jobs, data, config, name, delete_data=True)
        assert not data.exists(), name


def test_a_running_training_that_is_cancelled_deletes_its_data_and_saves_nothing(lanes, model_store, fer_csv):
    jobs = lanes.queue
    job = submit_training(jobs, fer_csv, TrainConfig(arch="ds_cnn", epochs=500, batch_size=8), "cancelled_model",
                          owner="Bo", delete_data=True, store=model_store)
    assert job.uses == frozenset()
    until(lambda: jobs.get(job.job_id).status == "training", timeout=120, message="the training did not start")
    assert jobs.cancel(job.job_id)
    final = jobs.wait(job.job_id, timeout=120)
    assert final is not None and final.status == "cancelled", final
    assert not fer_csv.exists()
    assert "cancelled_model" not in model_store.names()
    if lanes.store_root is not None:  # a worker's checkpoint goes once the job has ended
        assert not (lanes.store_root / ".checkpoints" / job.job_id).exists()


def test_train_page_queues_a_second_training_and_lets_it_leave_the_queue(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("FER_LAB_MODELS", str(root))
    for name in ("default", "shipped_model", "mine"):
        stored(ModelStore(root), name, keras_hash=name)
    (root / SHIPPED_MANIFEST).write_text('{"shipped_model": "shipped_model"}')
    jobs = EmbeddedJobQueue()
    monkeypatch.setattr(fer_core.service.queues, "_JOBS", jobs)
    blocker = FileGate(tmp_path, "blocker")
    running = jobs.submit(job_request("blocker", blocker, owner="Ada", minutes=30))
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
    assert jobs.get(queued.job_id).status == "cancelled"
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
    blocker.release()
    final = jobs.wait(running.job_id, TIMEOUT)
    assert final is not None and final.status == "done"


def test_the_app_queues_on_redis_when_told_and_in_its_own_process_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_LAB_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("FER_LAB_REDIS_URL", raising=False)
    monkeypatch.setattr(fer_core.service.queues, "_JOBS", None)
    assert isinstance(fer_core.service.queues.job_queue(), EmbeddedJobQueue)
    monkeypatch.setenv("FER_LAB_REDIS_URL", f"unix://{tmp_path / 'redis.sock'}")
    monkeypatch.setattr(fer_core.service.queues, "_JOBS", None)
    jobs = fer_core.service.queues.job_queue()
    assert isinstance(jobs, RedisJobQueue) and jobs.inbox == tmp_path / "models" / ".inbox"
    monkeypatch.setattr(fer_core.service.queues, "_JOBS", None)
