// BlazeFace (MediaPipe face detection) on LiteRT.js (@litertjs/core), all on the page's CPU (wasm).
//
// The model is MediaPipe's face_detection_short_range.tflite (or the full-range one) taken from the
// mediapipe wheel on PyPI; this file does what MediaPipe's FaceDetection graph does around it:
// the frame is letterboxed into the model's square input (black bars, values in [-1, 1]), the
// model's 896 (2304) anchor outputs are decoded into boxes and 6 keypoints, scored with a sigmoid,
// merged by weighted non-maximum suppression, and projected back to frame pixels.
// Settings follow mediapipe/modules/face_detection/face_detection_{short,full}_range.pbtxt.
import {loadLiteRt, loadAndCompile, Tensor} from '@litertjs/core';

export const MODELS = {
  short: {
    url: '/models/face_detection_short_range.tflite', inputSize: 128, strides: [8, 16, 16, 16],
    interpolatedScaleAspectRatio: 1.0, minScore: 0.5,
  },
  full: {
    url: '/models/face_detection_full_range_sparse.tflite', inputSize: 192, strides: [4],
    interpolatedScaleAspectRatio: 0.0, minScore: 0.6,
  },
};
const NMS_THRESHOLD = 0.3;
const SCORE_CLIP = 100;
const KEYPOINTS = 6; // right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion

/** Anchor centres of MediaPipe's SsdAnchorsCalculator with fixed_anchor_size (width = height = 1). */
export function anchors(inputSize, strides, interpolatedScaleAspectRatio) {
  const centres = [];
  let layer = 0;
  while (layer < strides.length) {
    const stride = strides[layer];
    let perCell = 0;
    while (layer < strides.length && strides[layer] === stride) { // layers of one stride share a grid
      perCell += 1 + (interpolatedScaleAspectRatio > 0 ? 1 : 0);
      layer += 1;
    }
    const cells = Math.ceil(inputSize / stride);
    for (let y = 0; y < cells; y++) {
      for (let x = 0; x < cells; x++) {
        for (let k = 0; k < perCell; k++) centres.push([(x + 0.5) / cells, (y + 0.5) / cells]);
      }
    }
  }
  return centres;
}

function iou(a, b) {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  if (w <= 0 || h <= 0) return 0;
  return (w * h) / (a.w * a.h + b.w * b.h - w * h);
}

/** MediaPipe's weighted NMS: each kept face is the score-weighted mean of the boxes it suppresses. */
export function weightedNms(candidates, threshold = NMS_THRESHOLD) {
  let remaining = [...candidates].sort((a, b) => b.score - a.score);
  const kept = [];
  while (remaining.length) {
    const top = remaining[0];
    const group = remaining.filter((c) => iou(top, c) > threshold);
    remaining = remaining.filter((c) => iou(top, c) <= threshold);
    const total = group.reduce((sum, c) => sum + c.score, 0);
    const mean = (pick) => group.reduce((sum, c) => sum + pick(c) * c.score, 0) / total;
    kept.push({
      x: mean((c) => c.x), y: mean((c) => c.y), w: mean((c) => c.w), h: mean((c) => c.h), score: top.score,
      keypoints: top.keypoints.map((_, k) => [mean((c) => c.keypoints[k][0]), mean((c) => c.keypoints[k][1])]),
    });
  }
  return kept;
}

/** The parts of a frame the model is run on: the whole frame, or with ``squares`` (for the
 * short-range model, whose smallest face is about a fifth of the input's side) as many overlapping
 * squares of the frame's shorter side as cover it (two for 640x480), so faces are a third larger
 * in the model's input than in a letterboxed whole frame. */
export function regions(width, height, squares) {
  const side = Math.min(width, height), long = Math.max(width, height);
  if (!squares || long / side < 1.05) return [[0, 0, width, height]];
  const count = Math.ceil(long / side);
  return Array.from({length: count}, (_, i) => {
    const offset = Math.round((i * (long - side)) / (count - 1));
    return width >= height ? [offset, 0, side, side] : [0, offset, side, side];
  });
}

/** The detector: ``await createDetector({model: 'short'})``, then ``await detector.detect(canvas)``
 * for faces as {box: [x, y, width, height] in the frame's pixels, score, keypoints}. */
export async function createDetector({model = 'short', minScore, squares = false,
  wasmDir = '/vendor/@litertjs/core/wasm/'} = {}) {
  const spec = MODELS[model];
  const size = spec.inputSize;
  const threshold = minScore ?? spec.minScore;
  const centres = anchors(size, spec.strides, spec.interpolatedScaleAspectRatio);
  await loadLiteRt(wasmDir); // no threads (no cross-origin isolation needed) and no JSPI
  const compiled = await loadAndCompile(spec.url, {accelerator: 'wasm'});
  const canvas = new OffscreenCanvas(size, size);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  const input = new Float32Array(size * size * 3);

  /** The candidates (score >= threshold) in the region (rx, ry, rw, rh) of ``source``, in its pixels. */
  async function candidatesIn(source, rx, ry, rw, rh) {
    const scale = size / Math.max(rw, rh);
    const drawnW = Math.round(rw * scale), drawnH = Math.round(rh * scale);
    const padX = Math.floor((size - drawnW) / 2), padY = Math.floor((size - drawnH) / 2);
    context.fillStyle = '#000';
    context.fillRect(0, 0, size, size);
    context.imageSmoothingQuality = 'high';
    context.drawImage(source, rx, ry, rw, rh, padX, padY, drawnW, drawnH);
    const pixels = context.getImageData(0, 0, size, size).data;
    for (let i = 0, j = 0; i < pixels.length; i += 4, j += 3) {
      input[j] = pixels[i] / 127.5 - 1;
      input[j + 1] = pixels[i + 1] / 127.5 - 1;
      input[j + 2] = pixels[i + 2] / 127.5 - 1;
    }
    const tensor = new Tensor(input, [1, size, size, 3]);
    const outputs = await compiled.run(tensor);
    tensor.delete();
    const arrays = outputs.map((t) => t.toTypedArray().slice());
    outputs.forEach((t) => t.delete());
    const boxes = arrays.find((a) => a.length === centres.length * 16);
    const logits = arrays.find((a) => a.length === centres.length);
    // From the letterboxed input's [0, 1] coordinates to the source's pixels.
    const toX = (v) => rx + (v * size - padX) / scale, toY = (v) => ry + (v * size - padY) / scale;
    const candidates = [];
    for (let i = 0; i < centres.length; i++) {
      const logit = Math.max(-SCORE_CLIP, Math.min(SCORE_CLIP, logits[i]));
      const score = 1 / (1 + Math.exp(-logit));
      if (score < threshold) continue;
      const [ax, ay] = centres[i];
      const r = boxes.subarray(i * 16, i * 16 + 16);
      const cx = r[0] / size + ax, cy = r[1] / size + ay, w = r[2] / size, h = r[3] / size;
      const keypoints = [];
      for (let k = 0; k < KEYPOINTS; k++) keypoints.push([toX(r[4 + 2 * k] / size + ax), toY(r[5 + 2 * k] / size + ay)]);
      candidates.push({x: toX(cx - w / 2), y: toY(cy - h / 2), w: (w * size) / scale, h: (h * size) / scale,
        score, keypoints});
    }
    return candidates;
  }

  async function detect(source) {
    const candidates = [];
    for (const [rx, ry, rw, rh] of regions(source.width, source.height, squares)) {
      candidates.push(...await candidatesIn(source, rx, ry, rw, rh));
    }
    return weightedNms(candidates).map((d) => ({box: [d.x, d.y, d.w, d.h], score: d.score, keypoints: d.keypoints}));
  }

  return {backend: `LiteRT.js wasm (${model} range${squares ? ', squares' : ''})`, detect};
}
