// In-browser classifier runtime check (issue 32, item 2).
//
// Runs FER Lab's classifiers in this page with LiteRT.js (the .tflite file itself) or
// onnxruntime-web (an ONNX copy made by tf2onnx), on the face crops of cases.json, one face per
// call (batch 1), and turns the network's seven outputs into the probabilities FER Lab shows,
// with the arithmetic of fer_core.inference.predict.EmotionClassifier:
//
//   1. the network's output is already probabilities (a softmax; an ensemble's is the mean of
//      its members' softmaxes);
//   2. flip TTA (when the model card recommends it): the mean of the face's probabilities and
//      those of the face mirrored left-right;
//   3. balanced odds (prior correction, fer_core.inference.odds.adjust): log(max(p, 1e-12)) minus
//      the model's prior shift (strength * log of each class's training share), then a softmax.
//
// Every file is loaded from this page's own server (no CDN, nothing fetched from elsewhere).
// check_runtimes.py calls window.runSuite(spec) and compares the results with Python's.

const VENDOR = new URL("vendor/", document.baseURI);

/** The face (size x size, row-major, one channel) mirrored left-right, as numpy's face[:, ::-1]. */
export function mirror(face, size) {
  const out = new Float32Array(face.length);
  for (let y = 0; y < size; y++) {
    const row = y * size;
    for (let x = 0; x < size; x++) out[row + x] = face[row + size - 1 - x];
  }
  return out;
}

/** fer_core.inference.odds.adjust for one face: probabilities with shift taken from their logs. */
export function adjust(probabilities, shift) {
  const logits = Array.from(probabilities, (p, i) => Math.log(Math.max(p, 1e-12)) - shift[i]);
  const top = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

/** The seven probabilities shown for one face, from the network's answers for it (and its mirror). */
export function showProbabilities(raw, rawMirrored, priorShift) {
  let p = Array.from(raw);
  if (rawMirrored) p = p.map((v, i) => (v + rawMirrored[i]) / 2);
  return priorShift ? adjust(p, priorShift) : p;
}

/** LiteRT.js on its CPU (wasm, XNNPack) path; no WebGPU device is asked for. */
class LiteRtRunner {
  static async create(variant, threads) {
    const litert = await import(new URL("litertjs/core/index.js", VENDOR).href);
    const wasmDir = new URL("litertjs/wasm/", VENDOR).href;
    const features = {};
    for (const name of ["relaxedSimd", "threads", "jspi"]) {
      try {
        features[name] = await litert.supportsFeature(name);
      } catch (error) {
        features[name] = String(error);
      }
    }
    const start = performance.now();
    if (variant === "compat") {
      await litert.loadLiteRt(wasmDir + "litert_wasm_compat_internal.js");
    } else if (variant === "threaded") {
      await litert.loadLiteRt(wasmDir, { threads: true });
    } else {
      await litert.loadLiteRt(wasmDir);
    }
    const initMs = performance.now() - start;
    const runner = new LiteRtRunner(litert, threads);
    runner.initMs = initMs;
    runner.features = features;
    runner.webGpuDevice = !!litert.getDefaultEnvironment().webGpuDevice;
    return runner;
  }

  constructor(litert, threads) {
    this.litert = litert;
    this.threads = threads;
  }

  async load(bytes) {
    const options = { accelerator: "wasm" };
    if (this.threads) options.cpuOptions = { numThreads: this.threads };
    const model = await this.litert.loadAndCompile(bytes, options);
    const details = model.getInputDetails()[0];
    return { model, inputShape: Array.from(details.shape) };
  }

  async run(loaded, face, size) {
    const input = new this.litert.Tensor(face, [1, size, size, 1]);
    try {
      const outputs = await loaded.model.run(input);
      const values = Float32Array.from(outputs[0].toTypedArray());
      for (const tensor of outputs) tensor.delete();
      return values;
    } finally {
      input.delete();
    }
  }
}

/** onnxruntime-web's wasm (CPU) execution provider. */
class OrtRunner {
  static async create(variant, threads) {
    const ort = await import(new URL("onnxruntime-web/ort.wasm.min.mjs", VENDOR).href);
    ort.env.wasm.wasmPaths = new URL("onnxruntime-web/", VENDOR).href;
    ort.env.wasm.numThreads = threads || 1;
    ort.env.wasm.proxy = false;
    const runner = new OrtRunner(ort);
    runner.initMs = 0; // the wasm is compiled with the first session: counted in its load_ms
    // 1.31 ships one wasm build, SIMD and threads (threads only when the page is cross-origin isolated).
    runner.features = { threads: self.crossOriginIsolated && (threads || 1) > 1 };
    runner.webGpuDevice = false;
    return runner;
  }

  constructor(ort) {
    this.ort = ort;
  }

  async load(bytes) {
    const session = await this.ort.InferenceSession.create(bytes, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
    return { session, inputShape: null };
  }

  async run(loaded, face, size) {
    const { session } = loaded;
    const input = new this.ort.Tensor("float32", face, [1, size, size, 1]);
    const outputs = await session.run({ [session.inputNames[0]]: input });
    const output = outputs[session.outputNames[0]];
    const values = Float32Array.from(output.data);
    output.dispose();
    input.dispose();
    return values;
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function webGpuStatus() {
  if (!("gpu" in navigator)) return "navigator.gpu missing";
  try {
    const adapter = await navigator.gpu.requestAdapter();
    return adapter ? "adapter found" : "navigator.gpu present, no adapter";
  } catch (error) {
    return `requestAdapter failed: ${error}`;
  }
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Runs spec = {runtime, variant, threads, cases, repeats, models: [{name, file, flip, prior_shift}]}
 * and returns the environment, the runtime's init time, and per model its load time, per-face
 * timings and, per face, the raw outputs (face and mirrored face) and the shown probabilities.
 */
async function runSuite(spec) {
  const result = {
    runtime: spec.runtime,
    variant: spec.variant || "auto",
    env: {
      userAgent: navigator.userAgent,
      crossOriginIsolated: self.crossOriginIsolated,
      hardwareConcurrency: navigator.hardwareConcurrency,
      webgpu: await webGpuStatus(),
    },
    models: {},
  };
  const cases = await (await fetch(spec.cases)).json();
  const size = cases.size;
  const faces = cases.faces.map((values) => Float32Array.from(values));
  const Runner = spec.runtime === "litert" ? LiteRtRunner : OrtRunner;
  const runner = await Runner.create(spec.variant, spec.threads);
  result.init_ms = runner.initMs;
  result.features = runner.features;
  result.webgpu_device_used = runner.webGpuDevice;
  for (const model of spec.models) {
    const entry = { file: model.file };
    try {
      const bytes = await fetchBytes(model.file);
      let start = performance.now();
      const loaded = await runner.load(bytes);
      entry.load_ms = performance.now() - start;
      entry.input_shape = loaded.inputShape;
      start = performance.now();
      await runner.run(loaded, faces[0], size);
      entry.first_run_ms = performance.now() - start;
      entry.raw = [];
      entry.raw_mirrored = [];
      entry.probabilities = [];
      for (const face of faces) {
        const raw = await runner.run(loaded, face, size);
        const rawMirrored = model.flip ? await runner.run(loaded, mirror(face, size), size) : null;
        entry.raw.push(Array.from(raw));
        entry.raw_mirrored.push(rawMirrored ? Array.from(rawMirrored) : null);
        entry.probabilities.push(showProbabilities(raw, rawMirrored, model.prior_shift));
      }
      const timings = [];
      for (let i = 0; i < (spec.repeats || 50); i++) {
        const face = faces[i % faces.length];
        start = performance.now();
        await runner.run(loaded, face, size);
        timings.push(performance.now() - start);
      }
      entry.run_ms_median = median(timings);
      entry.run_ms_min = Math.min(...timings);
      entry.runs_timed = timings.length;
    } catch (error) {
      entry.error = String(error && error.stack ? error.stack : error);
    }
    result.models[model.name] = entry;
  }
  return result;
}

window.runSuite = runSuite;

const params = new URLSearchParams(location.search);
const button = document.getElementById("run");
if (button) {
  button.disabled = false;
  button.addEventListener("click", async () => {
    const spec = await (await fetch("suite.json")).json();
    spec.runtime = params.get("runtime") || spec.runtime || "litert";
    spec.variant = params.get("variant") || spec.variant;
    const log = document.getElementById("log");
    log.textContent = "running...";
    const result = await runSuite(spec);
    for (const entry of Object.values(result.models)) {
      delete entry.raw;
      delete entry.raw_mirrored;
      delete entry.probabilities;
    }
    log.textContent = JSON.stringify(result, null, 2);
  });
}
window.pageReady = true;
