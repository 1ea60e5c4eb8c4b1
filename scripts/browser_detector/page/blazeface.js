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

/** The detector: ``await createDetector({model: 'short'})``, then ``await detector.detect(canvas)``. */
export async function createDetector({model = 'short', minScore, wasmDir = '/vendor/@litertjs/core/wasm/'} = {}) {
  const spec = MODELS[model];
  const size = spec.inputSize;
  const threshold = minScore ?? spec.minScore;
  const centres = anchors(size, spec.strides, spec.interpolatedScaleAspectRatio);
  await loadLiteRt(wasmDir); // no threads (no cross-origin isolation needed) and no JSPI
  const compiled = await loadAndCompile(spec.url, {accelerator: 'wasm'});
  const canvas = new OffscreenCanvas(size, size);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  const input = new Float32Array(size * size * 3);

  async function detect(source) {
    const width = source.width, height = source.height;
    const scale = size / Math.max(width, height);
    const drawnW = Math.round(width * scale), drawnH = Math.round(height * scale);
    const padX = Math.floor((size - drawnW) / 2), padY = Math.floor((size - drawnH) / 2);
    context.fillStyle = '#000';
    context.fillRect(0, 0, size, size);
    context.imageSmoothingQuality = 'high';
    context.drawImage(source, padX, padY, drawnW, drawnH);
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

    const candidates = [];
    for (let i = 0; i < centres.length; i++) {
      const logit = Math.max(-SCORE_CLIP, Math.min(SCORE_CLIP, logits[i]));
      const score = 1 / (1 + Math.exp(-logit));
      if (score < threshold) continue;
      const [ax, ay] = centres[i];
      const r = boxes.subarray(i * 16, i * 16 + 16);
      const cx = r[0] / size + ax, cy = r[1] / size + ay, w = r[2] / size, h = r[3] / size;
      const keypoints = [];
      for (let k = 0; k < KEYPOINTS; k++) keypoints.push([r[4 + 2 * k] / size + ax, r[5 + 2 * k] / size + ay]);
      candidates.push({x: cx - w / 2, y: cy - h / 2, w, h, score, keypoints});
    }
    // From the letterboxed input's [0, 1] coordinates back to the frame's pixels.
    const toX = (v) => (v * size - padX) / scale, toY = (v) => (v * size - padY) / scale;
    return weightedNms(candidates).map((d) => ({
      box: [toX(d.x), toY(d.y), (d.w * size) / scale, (d.h * size) / scale], score: d.score,
      keypoints: d.keypoints.map(([x, y]) => [toX(x), toY(y)]),
    }));
  }

  return {backend: `LiteRT.js wasm (${model} range)`, detect};
}
