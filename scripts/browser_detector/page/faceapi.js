// The face detectors of @vladmandic/face-api (MIT; TensorFlow.js 4.22 bundled in face-api.esm.js):
// its tiny face detector (a Tiny YOLOv2, 190 kB of weights shipped in the package's model/) or,
// for comparison, its SSD MobileNetV1 (5.6 MB). TensorFlow.js runs on its wasm backend (the .wasm
// files of @tensorflow/tfjs-backend-wasm@4.22.0, the version face-api bundles), its WebGL backend
// or its plain-JS cpu backend.
import * as faceapi from '/vendor/@vladmandic/face-api/dist/face-api.esm.js';

export async function createDetector({net = 'tiny', backend = 'wasm', inputSize = 416, minScore = 0.5,
  modelDir = '/vendor/@vladmandic/face-api/model/', wasmDir = '/vendor/@tensorflow/tfjs-backend-wasm/dist/'} = {}) {
  if (backend === 'wasm') faceapi.tf.setWasmPaths(wasmDir);
  await faceapi.tf.setBackend(backend);
  await faceapi.tf.ready();
  let options;
  if (net === 'tiny') {
    await faceapi.nets.tinyFaceDetector.loadFromUri(modelDir);
    options = new faceapi.TinyFaceDetectorOptions({inputSize, scoreThreshold: minScore});
  } else {
    await faceapi.nets.ssdMobilenetv1.loadFromUri(modelDir);
    options = new faceapi.SsdMobilenetv1Options({minConfidence: minScore, maxResults: 100});
  }

  async function detect(source) {
    const found = await faceapi.detectAllFaces(source, options);
    return found.map((d) => ({box: [d.box.x, d.box.y, d.box.width, d.box.height], score: d.score}));
  }

  return {backend: `TensorFlow.js ${faceapi.tf.version_core} ${faceapi.tf.getBackend()}`, detect};
}
