// Benchmark harness: loads one detector module (?detector=NAME&options=JSON) and exposes
// window.benchReady, window.detectImages(urls) and window.timeDetector(url, runs, warmup) to
// bench_detectors.py, which drives this page in headless Chromium.
const params = new URLSearchParams(location.search);
const name = params.get('detector');
const options = JSON.parse(params.get('options') ?? '{}');
const status = document.getElementById('status');
let detector;

async function loadCanvas(url) {
  const blob = await (await fetch(url)).blob();
  const bitmap = await createImageBitmap(blob, {colorSpaceConversion: 'none', premultiplyAlpha: 'none'});
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  return canvas;
}

window.benchReady = (async () => {
  const start = performance.now();
  const module = await import(`./${name}.js`);
  detector = await module.createDetector(options);
  const loadMs = performance.now() - start;
  status.textContent = `${name}: ${detector.backend}, ready in ${loadMs.toFixed(0)} ms`;
  return {backend: detector.backend, loadMs};
})();

window.detectImages = async (urls) => {
  const results = {};
  for (const url of urls) {
    results[url] = await detector.detect(await loadCanvas(url));
  }
  return results;
};

window.timeDetector = async (url, runs = 40, warmup = 5) => {
  const canvas = await loadCanvas(url);
  for (let i = 0; i < warmup; i++) await detector.detect(canvas);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await detector.detect(canvas);
    times.push(performance.now() - start);
  }
  return times;
};
