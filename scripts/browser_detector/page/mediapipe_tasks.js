// MediaPipe's own FaceDetector (@mediapipe/tasks-vision, Apache-2.0) on the same BlazeFace model:
// a check of blazeface.js's decoding (MediaPipe's graph does the letterbox, anchors and NMS itself).
import {FaceDetector, FilesetResolver} from '/vendor/@mediapipe/tasks-vision/vision_bundle.mjs';

export async function createDetector({model = '/models/face_detection_short_range.tflite', minScore = 0.5,
  wasmDir = '/vendor/@mediapipe/tasks-vision/wasm'} = {}) {
  const fileset = await FilesetResolver.forVisionTasks(wasmDir);
  const detector = await FaceDetector.createFromOptions(fileset, {
    baseOptions: {modelAssetPath: model, delegate: 'CPU'}, runningMode: 'IMAGE', minDetectionConfidence: minScore,
  });

  async function detect(source) {
    return detector.detect(source).detections.map((d) => ({
      box: [d.boundingBox.originX, d.boundingBox.originY, d.boundingBox.width, d.boundingBox.height],
      score: d.categories[0].score,
    }));
  }

  return {backend: 'MediaPipe tasks-vision (wasm, CPU)', detect};
}
