"""Where a live frame's server time goes: VP8 decoding, conversion to BGR, analysis, conversion back, VP8 encoding.

It runs a live stream's path without a network: frames of the astronaut photo with a little sensor
noise are VP8-encoded as a browser would send them (not timed), then decoded, converted, analysed by
the Live page's analyser (the model and detector's live settings, faces detected every 3rd analysed
frame, every frame analysed), annotated, converted back and VP8-encoded, with aiortc's own codecs,
as streamlit-webrtc does on the server. What it cannot time is the rest of a stream's cost: RTP,
SRTP and ICE in aiortc's event loop, streamlit-webrtc's frame queues and the page's readout;
``scripts/load_test.py`` measures the whole.

    python scripts/frame_costs.py --model default --sizes 640x480 320x240
"""

from __future__ import annotations

import argparse
import fractions
import sys
import time
from pathlib import Path

import av
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_core.faces.detect import get_detector  # noqa: E402
from fer_core.faces.samples import camera_frames  # noqa: E402
from fer_core.inference.live import LiveAnalyser  # noqa: E402
from fer_core.inference.predict import EmotionAnalyser, EmotionClassifier  # noqa: E402
from fer_core.registry.store import ModelStore  # noqa: E402

STEPS = ("decode", "to BGR", "analysis", "from BGR", "encode")


def video_frames(width: int, height: int, count: int) -> list[av.VideoFrame]:
    """``count`` camera frames of the astronaut at ``width`` x ``height`` with sensor noise of 2 gray levels,
    15 a second."""
    frames = []
    for index, picture in enumerate(camera_frames(width, height, count, noise=2.0)):
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts, frame.time_base = index * 6000, fractions.Fraction(1, 90000)
        frames.append(frame)
    return frames


def frame_costs(analyser: EmotionAnalyser, width: int, height: int, frames: int = 100) -> dict[str, float]:
    """Mean milliseconds per frame of each step of :data:`STEPS` (the first 10 frames are not counted)."""
    browser, decoder, encoder = Vp8Encoder(), Vp8Decoder(), Vp8Encoder()
    live = LiveAnalyser(analyser, detect_every=3, max_load=1.0)
    totals = dict.fromkeys(STEPS, 0.0)
    counted = 0
    for index, sent in enumerate(video_frames(width, height, frames + 10)):
        payloads, timestamp = browser.encode(sent)
        packet = JitterFrame(data=b"".join(vp8_depayload(payload) for payload in payloads), timestamp=timestamp)
        times = [time.perf_counter()]
        for received in decoder.decode(packet):
            times.append(time.perf_counter())
            image = received.to_ndarray(format="bgr24")
            times.append(time.perf_counter())
            shown = live.process(image)
            times.append(time.perf_counter())
            reply = av.VideoFrame.from_ndarray(shown, format="bgr24")
            reply.pts, reply.time_base = received.pts, received.time_base
            times.append(time.perf_counter())
            encoder.encode(reply)
            times.append(time.perf_counter())
        if index >= 10 and len(times) == len(STEPS) + 1:
            counted += 1
            for step, start, end in zip(STEPS, times, times[1:]):
                totals[step] += end - start
    return {step: 1000.0 * total / max(1, counted) for step, total in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a stored model")
    parser.add_argument("--sizes", nargs="+", default=["640x480", "320x240"], help="frame sizes WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args(argv)
    stored = ModelStore().load(args.model)
    analyser = EmotionAnalyser(EmotionClassifier.from_stored(stored), get_detector("haar", live=True),
                               stored.card.preprocessing, stored.name)
    print("| frame | " + " | ".join(f"{step} (ms)" for step in STEPS) + " | all (ms) |")
    print("|---" * (len(STEPS) + 2) + "|")
    for size in args.sizes:
        width, height = (int(side) for side in size.lower().split("x"))
        costs = frame_costs(analyser, width, height, args.frames)
        print(f"| {size} | " + " | ".join(f"{costs[step]:.1f}" for step in STEPS) + f" | {sum(costs.values()):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
