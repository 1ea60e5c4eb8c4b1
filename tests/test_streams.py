"""The server's live streams: the limit on how many at once, fair analysis shares, the camera asked for."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_live_video import FRAME, FakeClock, one_hot, stub_live

import fer_core.inference.streams
import fer_core.service.threads
from fer_core.base.errors import SettingError
from fer_core.inference.live import CAMERA_CONSTRAINTS
from fer_core.inference.streams import ANALYSIS_SHARE, MAX_STREAM_SHARE, STREAMS_PER_CORE, StreamBoard, usable_cores
from fer_core.service.threads import cap_training_threads, training_threads

ROOT = Path(__file__).resolve().parent.parent


def test_a_full_board_refuses_new_streams_until_a_slot_is_released_or_its_lease_ends():
    clock = FakeClock()
    board = StreamBoard(2, 0.5, lease_seconds=5.0, clock=clock)
    assert board.claim("ann") and board.claim("bob")
    assert not board.claim("cem") and not board.admits("cem")
    assert board.claim("ann") and board.admits("bob")  # those streaming renew their slots
    board.release("bob")
    assert board.admits("cem") and board.streams() == 1  # admitting holds nothing
    assert board.claim("cem")
    clock.now += 4.0
    assert board.claim("ann")  # renewed: ann's lease runs 5 s from now, cem's ends in 1 s
    clock.now += 1.5
    assert board.streams() == 1 and board.claim("dan")  # cem's tab closed: no frames, no slot


def test_analysis_time_is_split_equally_between_the_streams_of_the_moment():
    board = StreamBoard(8, 0.4, clock=FakeClock())
    assert board.share() == pytest.approx(0.4)  # no stream yet: a first one gets it all
    for owner in ("ann", "bob", "cem", "dan"):
        board.claim(owner)
    assert board.share() == pytest.approx(0.1)
    assert StreamBoard(8, 3.0).share() == MAX_STREAM_SHARE  # a stream never takes all the wall time


def test_board_settings_come_from_the_environment_or_the_cpu_count():
    cores = usable_cores()
    board = StreamBoard.from_environment({})
    assert (board.limit, board.analysis_cores) == (STREAMS_PER_CORE * cores, pytest.approx(ANALYSIS_SHARE * cores))
    board = StreamBoard.from_environment({"FER_LAB_MAX_STREAMS": "3", "FER_LAB_ANALYSIS_CORES": "0.5"})
    assert (board.limit, board.analysis_cores) == (3, 0.5)
    for name, text in (("FER_LAB_MAX_STREAMS", "0"), ("FER_LAB_MAX_STREAMS", "many"), ("FER_LAB_ANALYSIS_CORES", "-1")):
        with pytest.raises(SettingError, match=name):
            StreamBoard.from_environment({name: text})


def test_a_training_takes_the_cores_the_streams_leave_or_what_it_is_told(monkeypatch):
    for module in (fer_core.service.threads, fer_core.inference.streams):
        monkeypatch.setattr(module, "usable_cores", lambda: 4)
    assert training_threads({}) == 4 - math.ceil(ANALYSIS_SHARE * 4)
    assert training_threads({"FER_LAB_ANALYSIS_CORES": "1.5"}) == 2
    assert training_threads({"FER_LAB_ANALYSIS_CORES": "8"}) == 1  # never none
    assert training_threads({"FER_LAB_WORKER_THREADS": " 3 "}) == 3
    for text in ("0", "two", "-1"):
        with pytest.raises(SettingError, match="FER_LAB_WORKER_THREADS"):
            training_threads({"FER_LAB_WORKER_THREADS": text})


def test_the_training_cap_holds_for_tensorflow_loaded_after_it_only():
    """In a fresh process TensorFlow starts as many operation threads as it is told; here it is loaded already."""
    script = ("import os, sys\n"
              "from fer_core.service.threads import cap_training_threads\n"
              "assert cap_training_threads(int(sys.argv[1]))\n"
              "import tensorflow as tf\n"
              "a = tf.ones((256, 256)); tf.linalg.matmul(a, a).numpy()\n"
              "print(os.environ['TF_NUM_INTRAOP_THREADS'], len(os.listdir('/proc/self/task')))\n")
    counts = {}
    for threads in (1, 8):
        done = subprocess.run([sys.executable, "-c", script, str(threads)], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        told, started = done.stdout.split()
        counts[int(told)] = int(started)
    assert counts[8] >= counts[1] + 7  # seven more operation threads
    import tensorflow  # noqa: F401  (loaded by the suite anyway)

    assert not cap_training_threads(1)


def test_a_stream_over_the_limit_is_not_analysed_and_its_frames_say_why():
    clock = FakeClock()
    board = StreamBoard(1, 0.4, lease_seconds=5.0, clock=clock)
    first, _, _ = stub_live([one_hot("happy")], clock=clock, board=board, owner="ann")
    second, detector, _ = stub_live([one_hot("happy")], clock=clock, board=board, owner="bob")
    first.process(FRAME)
    shown = second.process(FRAME)
    assert second.stats().refused and second.stats().analysed == 0 and detector.calls == 0
    assert shown[:36].mean() < FRAME[:36].mean() and np.array_equal(shown[36:], FRAME[36:])  # a notice on top
    clock.now += 6.0  # the first stream ended: its lease runs out
    second.process(FRAME)
    assert not second.stats().refused and second.stats().analysed == 1


def test_no_stream_starves_while_another_is_analysed_on_every_frame():
    """Three streams at 30, 15 and 5 frames a second share a board: the analysis time goes to them in equal
    shares, so the fast ones are analysed on some of their frames and the slow one on nearly all."""
    clock = FakeClock()
    board = StreamBoard(8, 0.3, clock=clock)
    streams = {fps: stub_live([one_hot("sad")], clock=clock, cost=0.02, detect_every=1, board=board, owner=str(fps))[0]
               for fps in (30, 15, 5)}
    arrivals = sorted((clock.now + index / fps, fps) for fps in streams for index in range(10 * fps))
    for arrival, fps in arrivals:
        clock.now = max(clock.now, arrival)  # one CPU: a frame waits while another is analysed
        streams[fps].process(FRAME)
    analysed = {fps: live.stats().analysed / 10.0 for fps, live in streams.items()}  # per second
    # Each stream's share is 0.3 / 3 = 0.1 of the time: one 20 ms analysis per 200 ms at most.
    assert analysed[30] == pytest.approx(5.0, abs=0.6) and analysed[15] == pytest.approx(5.0, abs=0.6)
    assert analysed[5] >= 4.0
    assert streams[30].stats().analysed_every >= 5.0 and streams[5].stats().analysed_every < 1.3
    # Without the board each would take 0.8 of the time: the fastest stream analysed on every frame.
    own_clock = FakeClock()
    alone, _, _ = stub_live([one_hot("sad")], clock=own_clock, cost=0.02, detect_every=1)
    for index in range(30):
        own_clock.now = 100.0 + index / 30
        alone.process(FRAME)
    assert alone.stats().analysed == 30


def test_the_pages_ask_the_camera_for_640x480_at_15_frames_a_second_at_most():
    video = CAMERA_CONSTRAINTS["video"]
    assert video["width"]["ideal"] == 640 and video["height"]["ideal"] == 480
    assert video["frameRate"]["max"] == 15 and CAMERA_CONSTRAINTS["audio"] is False
