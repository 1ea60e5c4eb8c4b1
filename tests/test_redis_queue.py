"""The job queue on a real redis-server, where it differs from one process: replicas in other
processes, a replica or a worker killed mid-job, Redis restarting. The contract both backends share
is in tests/test_jobs.py. Trainings here are small (synthetic faces, ``ds_cnn``, one thread)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import rq
from conftest import synthetic_dataset, write_fer_csv
from queue_helpers import ROOT, TIMEOUT, FileGate, RedisServer, Worker, until
from streamlit.testing.v1 import AppTest
from test_class_faces import recorded_faces

import fer_core.service.queues
from fer_core.datasets.collection import FaceCollection
from fer_core.service.jobs import JobRequest
from fer_core.service.redis_queue import TIMEOUT_GRACE_MINUTES, QueueUnavailableError, RedisJobQueue, timeout_seconds
from fer_core.service.work import submit_finetune, submit_training
from fer_core.training.recipe import TrainConfig

#: RQ counts a job abandoned 60 s after its worker's last heartbeat (2 s here); then a worker queues it again.
ABANDONED_SECONDS = 120


@pytest.fixture
def cluster(tmp_path, model_store) -> Iterator[tuple[RedisServer, RedisJobQueue, list[Worker]]]:
    """A redis-server, this process as one replica, and a list to start workers in (all stopped at the end)."""
    server = RedisServer(tmp_path / "redis").start()
    workers: list[Worker] = []
    try:
        yield server, RedisJobQueue(server.url, store_root=model_store.root), workers
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


def replica(url: str, store: Path, script: str) -> subprocess.Popen:
    """Another replica: a Python process on the same Redis and store that runs ``script`` with ``jobs``,
    its queue, and prints what the script prints (one JSON line at a time)."""
    code = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
        from fer_core.service.redis_queue import RedisJobQueue
        jobs = RedisJobQueue({url!r}, store_root=Path({str(store)!r}))
    """) + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            text=True)


def read_line(process: subprocess.Popen) -> dict:
    line = process.stdout.readline()
    assert line, f"the other replica ended ({process.wait(TIMEOUT)})"
    return json.loads(line)


def test_two_replicas_share_one_queue_and_steer_each_others_jobs(cluster, tmp_path, model_store):
    server, jobs, workers = cluster
    other = replica(server.url, model_store.root, f"""
        from queue_helpers import FileGate
        from fer_core.service.jobs import JobRequest
        for name in ("first", "second"):
            state = jobs.submit(JobRequest(lane="train", model_name=name, description=f"training of '{{name}}'",
                                           work=FileGate(Path({str(tmp_path)!r}), name), owner="Ada", minutes=10))
            print(json.dumps({{"job_id": state.job_id}}), flush=True)
        sys.stdin.readline()  # until the test is done
    """)
    try:
        first, second = read_line(other)["job_id"], read_line(other)["job_id"]
        mine = jobs.submit(JobRequest(lane="train", model_name="third", description="training of 'third'",
                                      work=FileGate(tmp_path, "third"), owner="Bo", minutes=5))
        # Before any worker: everyone waits, in the order submitted across replicas, and says why.
        assert [state.job_id for state in jobs.queue("train")] == [first, second, mine.job_id]
        assert jobs.place(mine.job_id).describe() == ("number 3 in the queue; no worker takes these jobs now: it "
                                                      "starts once one does")
        workers.append(Worker(server.url, model_store.root, lanes="train"))
        until(FileGate(tmp_path, "first").started, 60, "no worker took the first job")
        until(lambda: jobs.get(first).running)
        assert [row["place"] for row in jobs.overview()] == ["running (loading)", "1", "2"]
        assert [row["by"] for row in jobs.overview()] == ["Ada", "Ada", "Bo"]
        assert jobs.place(mine.job_id).jobs_ahead == 2

        # This replica takes the other's waiting job out of the queue and stops its running one.
        assert jobs.cancel(second)
        assert jobs.get(second).status == "cancelled"
        assert jobs.place(mine.job_id).position == 1
        assert jobs.finish(first)
        assert jobs.wait(first, TIMEOUT).status == "done"  # the gate saves when asked to finish
        until(FileGate(tmp_path, "third").started)
        assert not FileGate(tmp_path, "second").started()  # the worker went from the first to the third
        FileGate(tmp_path, "third").release()
        assert jobs.wait(mine.job_id, TIMEOUT).status == "done"
    finally:
        other.stdin.close()
        other.wait(TIMEOUT)


def training_data(folder: Path, rows: int) -> Path:
    """A FER2013-format CSV of synthetic faces: most rows Training, a tenth PublicTest."""
    images, labels = synthetic_dataset(rows)
    path = folder / f"faces_{rows}.csv"
    write_fer_csv(path, images, labels, ["Training"] * (rows - rows // 10) + ["PublicTest"] * (rows // 10))
    return path


def test_a_killed_submitting_replica_loses_no_job(cluster, tmp_path, model_store):
    server, jobs, workers = cluster
    data = training_data(tmp_path, 120)
    other = replica(server.url, model_store.root, f"""
        from fer_core.service.work import submit_training
        from fer_core.registry.store import ModelStore
        from fer_core.training.recipe import TrainConfig
        state = submit_training(jobs, Path({str(data)!r}), TrainConfig(arch="ds_cnn", epochs=2, batch_size=16),
                                "orphan", owner="Ada", store=ModelStore(Path({str(model_store.root)!r})))
        print(json.dumps({{"job_id": state.job_id}}), flush=True)
        time.sleep(600)
    """)
    job_id = read_line(other)["job_id"]
    other.kill()  # SIGKILL: the replica that queued the job is gone
    other.wait(TIMEOUT)
    workers.append(Worker(server.url, model_store.root))
    final = jobs.wait(job_id, 300)
    assert final is not None and final.status == "done", final
    assert final.card.training.epochs_run == 2
    assert "orphan" in model_store.names()


def test_a_killed_worker_s_training_resumes_from_its_checkpoint_on_the_next(cluster, tmp_path, model_store):
    server, jobs, workers = cluster
    data = training_data(tmp_path, 1500)
    state = submit_training(jobs, data, TrainConfig(arch="ds_cnn", epochs=6, batch_size=16), "resumed",
                            owner="Ada", store=model_store)
    workers.append(Worker(server.url, model_store.root, lanes="train"))
    until(lambda: len(jobs.get(state.job_id).history) >= 2, 300, "the training never reached its second epoch")
    workers[0].kill()  # SIGKILL: the worker and its work horse, as when a machine is lost
    checkpoint = model_store.root / ".checkpoints" / state.job_id
    assert checkpoint.is_dir()
    # With no worker left, the replicas see it abandoned once its heartbeat lapses, waiting to resume.
    waiting = until(lambda: (lambda now: now if now.status == "waiting" else None)(jobs.get(state.job_id)),
                    ABANDONED_SECONDS, "the abandoned job was not queued again")
    assert waiting.message == "its worker stopped: it resumes from its last checkpoint"
    assert jobs.place(state.job_id).position == 1
    workers.append(Worker(server.url, model_store.root, lanes="train"))
    final = jobs.wait(state.job_id, 300)
    assert final is not None and final.status == "done", final
    assert final.attempts == 2
    epochs = [epoch["epoch"] for epoch in final.history]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 6, epochs  # it went on, not from the start
    assert len(final.card.reproduce.splitlines()) >= 1 and final.card.training.epochs_run == 6
    assert "resumed" in model_store.names() and not checkpoint.exists()


def test_redis_restarting_mid_queue_is_said_clearly_and_loses_no_model(cluster, tmp_path, model_store):
    server, jobs, workers = cluster
    data = training_data(tmp_path, 600)
    running = submit_training(jobs, data, TrainConfig(arch="ds_cnn", epochs=4, batch_size=16), "survivor",
                              store=model_store)
    waiting = jobs.submit(JobRequest(lane="train", model_name="next", description="training of 'next'",
                                     work=FileGate(tmp_path, "next")))
    workers.append(Worker(server.url, model_store.root, lanes="train"))
    until(lambda: jobs.get(running.job_id).status == "training", 300, "the training did not start")
    server.stop()
    with pytest.raises(QueueUnavailableError, match=r"the job queue \(Redis at unix://.*\) cannot be reached .*"
                                                    "running trainings go on and save their models"):
        jobs.get(running.job_id)
    server.start()
    final = jobs.wait(running.job_id, 300)
    assert final is not None and final.status == "done", final
    assert "survivor" in model_store.names()
    until(FileGate(tmp_path, "next").started, 60, "the waiting job was lost with the restart")
    FileGate(tmp_path, "next").release()
    assert jobs.wait(waiting.job_id, TIMEOUT).status == "done"


def test_a_queue_whose_redis_cannot_be_reached_says_so(tmp_path):
    jobs = RedisJobQueue(f"unix://{tmp_path / 'nothing.sock'}", store_root=tmp_path / "models")
    with pytest.raises(QueueUnavailableError, match="cannot be reached"):
        jobs.overview()
    with pytest.raises(QueueUnavailableError, match="not a Redis URL"):
        RedisJobQueue("http://example.org", store_root=tmp_path)


def test_a_class_s_faces_travel_with_the_fine_tune_and_leave_redis_when_it_ends(cluster, model_store):
    server, jobs, workers = cluster
    collection = FaceCollection()
    recorded_faces(collection, {"happy": 3, "sad": 2, "neutral": 1})
    state = submit_finetune(jobs, collection, "tiny", "tiny_class", minutes=0.05, owner="Ada", store=model_store)
    record = rq.job.Job.fetch(state.job_id, connection=jobs.connection)
    assert record.timeout == timeout_seconds(0.05) == int((0.05 + TIMEOUT_GRACE_MINUTES) * 60)  # the budget's
    collection.clear()  # the job fine-tunes on the faces as they were when it was submitted
    workers.append(Worker(server.url, model_store.root, lanes="finetune"))
    final = jobs.wait(state.job_id, 300)
    assert final is not None and final.status == "done", final
    assert final.card.training.fine_tuning.start == "tiny" and "tiny_class" in model_store.names()
    assert final.baseline is not None and final.baseline.n == final.card.metrics.n == 8  # scored on the same faces
    assert final.fraction == 1.0
    assert not rq.job.Job.exists(state.job_id, connection=jobs.connection)  # the faces are out of Redis

    recorded_faces(collection, {"happy": 2, "sad": 2})
    blocker = jobs.submit(JobRequest(lane="finetune", model_name="blocker", description="blocker",
                                     work=FileGate(model_store.root.parent, "blocker")))
    waiting = submit_finetune(jobs, collection, "tiny", "later", minutes=0.05, store=model_store)
    assert jobs.cancel(waiting.job_id) and jobs.get(waiting.job_id).status == "cancelled"
    assert not rq.job.Job.exists(waiting.job_id, connection=jobs.connection)
    FileGate(model_store.root.parent, "blocker").release()
    assert jobs.wait(blocker.job_id, TIMEOUT).status == "done"


def test_a_session_on_another_replica_finds_its_job_by_the_page_s_address(cluster, tmp_path, model_store,
                                                                          monkeypatch):
    """The replica that held a session went away: the browser reconnects to another with the same address."""
    server, _, _ = cluster
    first = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    monkeypatch.setattr(fer_core.service.queues, "_JOBS", RedisJobQueue(server.url, store_root=model_store.root))
    first.run()
    first.switch_page("app_pages/3_Train.py").run()
    first.file_uploader(key="train_upload").set_value(("faces.csv", b"emotion,pixels\n0,1 2 3\n", "text/csv"))
    first.text_input(key="train_name").set_value("followed")
    first.button(key="train_start").click().run()
    assert not first.exception, [e.value for e in first.exception]
    job_id = first.session_state["train_job_id"]
    assert first.query_params["train_job_id"] == job_id
    assert list((model_store.root / ".inbox").iterdir()), "the upload waits in the store's inbox for a worker"

    monkeypatch.setattr(fer_core.service.queues, "_JOBS", RedisJobQueue(server.url, store_root=model_store.root))
    second = AppTest.from_file(str(ROOT / "app_pages" / "3_Train.py"), default_timeout=60)
    second.query_params["train_job_id"] = job_id
    second.run()
    assert not second.exception, [e.value for e in second.exception]
    assert second.info[0].value.startswith("Your training of 'followed' (")
    assert "no worker takes these jobs now" in second.info[0].value
    second.button(key="train_leave").click().run()
    assert "Training of 'followed' was cancelled; nothing was saved." in second.warning[0].value
    assert not list((model_store.root / ".inbox").iterdir())  # the upload deleted with the job


def test_the_train_page_says_so_when_the_queue_cannot_be_reached(tmp_path, model_store, monkeypatch):
    monkeypatch.setattr(fer_core.service.queues, "_JOBS",
                        RedisJobQueue(f"unix://{tmp_path / 'nothing.sock'}", store_root=model_store.root))
    at = AppTest.from_file(str(ROOT / "app_pages" / "3_Train.py"), default_timeout=60)
    at.query_params["train_job_id"] = "a1b2c3d4e5f6"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot be reached" in error.value for error in at.error), [error.value for error in at.error]
