// OpenCV.js (@techstark/opencv-js, Apache-2.0) running the server's own detector: the frontal-face
// Haar cascade that opencv-python ships (cv2.data.haarcascades), with fer_core.faces.detect's
// HaarDetector settings (scale factor, neighbours, minimum size, score threshold on the cascade's
// level weights, detection on a copy downscaled to max_side). The defaults are HaarDetector's;
// fer_core's LIVE_OPTIONS are {maxSide: 320, scaleFactor: 1.2, minSize: 24, minFaceFraction: 1 / 8}.

function loadScript(url) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = url;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`cannot load ${url}`));
    document.head.appendChild(script);
  });
}

// Resolves to {cv}: OpenCV.js's module object is a thenable whose then() hands back the module
// itself, so returning it bare from an async function would resolve it again and again forever.
async function openCv(url) {
  await loadScript(url);
  let cv = window.cv;
  if (cv instanceof Promise) cv = await cv;
  else if (!cv.Mat) await new Promise((resolve) => { cv.onRuntimeInitialized = resolve; });
  return {cv};
}

export async function createDetector({maxSide = 1280, scaleFactor = 1.1, minNeighbors = 5, minSize = 40,
  minScore = 4.0, minFaceFraction = 0, opencvUrl = '/vendor/@techstark/opencv-js/dist/opencv.js',
  cascadeUrl = '/models/haarcascade_frontalface_default.xml'} = {}) {
  const {cv} = await openCv(opencvUrl);
  const xml = new Uint8Array(await (await fetch(cascadeUrl)).arrayBuffer());
  cv.FS_createDataFile('/', 'cascade.xml', xml, true, false, false);
  const cascade = new cv.CascadeClassifier();
  if (!cascade.load('cascade.xml')) throw new Error('OpenCV.js could not read the cascade');
  const withScores = typeof cascade.detectMultiScale3 === 'function';
  const canvas = new OffscreenCanvas(1, 1);
  const context = canvas.getContext('2d', {willReadFrequently: true});

  async function detect(source) {
    const width = source.width, height = source.height;
    const smallest = Math.max(minSize, minFaceFraction * Math.min(width, height));
    if (Math.min(width, height) < smallest) return [];
    const factor = Math.max(width, height) > maxSide ? Math.max(width, height) / maxSide : 1;
    canvas.width = Math.max(1, Math.round(width / factor));
    canvas.height = Math.max(1, Math.round(height / factor));
    context.imageSmoothingQuality = 'high';
    context.drawImage(source, 0, 0, canvas.width, canvas.height);
    const rgba = cv.matFromImageData(context.getImageData(0, 0, canvas.width, canvas.height));
    const gray = new cv.Mat();
    cv.cvtColor(rgba, gray, cv.COLOR_RGBA2GRAY);
    const faces = new cv.RectVector();
    const levels = new cv.IntVector();
    const weights = new cv.DoubleVector();
    const side = Math.max(1, Math.floor(smallest / factor));
    if (withScores) {
      cascade.detectMultiScale3(gray, faces, levels, weights, scaleFactor, minNeighbors, 0,
        new cv.Size(side, side), new cv.Size(0, 0), true);
    } else {
      cascade.detectMultiScale(gray, faces, scaleFactor, minNeighbors, 0, new cv.Size(side, side), new cv.Size(0, 0));
    }
    const found = [];
    for (let i = 0; i < faces.size(); i++) {
      const r = faces.get(i);
      const score = withScores ? weights.get(i) : 1;
      if (withScores && score < minScore) continue;
      found.push({box: [r.x * factor, r.y * factor, r.width * factor, r.height * factor], score});
    }
    [rgba, gray, faces, levels, weights].forEach((m) => m.delete());
    return found;
  }

  return {backend: `OpenCV.js ${cv.getBuildInformation ? cv.getBuildInformation().match(/General configuration for OpenCV ([^ =]+)/)?.[1] : ''} (scores: ${withScores})`, detect};
}
