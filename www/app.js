// The page: lays out, paints and takes input. The model runs in a Web Worker (worker.js), which sends
// the RGBA of each new row; this thread never touches weights or tokens' colours, so it stays responsive.

import { verifiedBytes, DownloadError } from "./weights.js";
import { Inspector } from "./inspect.js";
import { MaskedInspector } from "./inspect-masked.js";
import { cpuMatch } from "./cpu-match.js";
import { showAtlas } from "./atlas.js";
import { classify, paintChanges, paintShares, showTop, topClasses } from "./label.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// What the end-to-end tests read; also handy in the console.
const state = (window.igptState = {
  model: null, backend: null, galleryDone: false, completionDone: false, completion: null, errors: [],
  longTasks: [], loadedAt: null, gpuLost: false, notices: [],
});
let engine = null; // { worker: ModelWorker, width, height, card }
let current = null; // the running generation: { stop(), finished }
let inspector = null;

// Main-thread tasks over 50 ms (the e2e suite checks there are none while the model samples).
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) state.longTasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: "longtask", buffered: true });
} catch {
  // Browsers without long-task timing: nothing to record.
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
  if (isError) state.errors.push(text);
}

/// The model's worker, behind promises: `call` for request/reply messages, `generate` for a stream of rows.
// The most images the page draws at once (the Count control's limit); the GPU check sizes for it.
const MAX_COUNT = 64;

class ModelWorker {
  constructor() {
    this.worker = new Worker("worker.js", { type: "module" });
    this.pending = new Map();
    this.runs = new Map();
    this.next = 1;
    this.worker.onmessage = ({ data }) => this.receive(data);
    this.worker.onerror = (e) => this.failAll(e.message || "the model's worker stopped");
  }

  receive(m) {
    if (m.type === "progress") {
      $("progress").value = m.fraction;
      status(m.text);
      if (m.text.startsWith("Downloading")) state.downloadProgress = m.text;
    } else if (m.type === "notice") {
      state.notices.push(m.text);
      $("notice").textContent = m.text;
      $("notice").hidden = false;
    } else if (m.type === "reply" || (m.type === "failed" && m.call)) {
      const p = this.pending.get(m.call);
      this.pending.delete(m.call);
      if (m.type === "reply") p?.resolve(m);
      else p?.reject(Object.assign(new Error(m.message), { retry: m.retry }));
    } else {
      const run = this.runs.get(m.run);
      if (!run) return;
      if (m.type === "rows") run.onRows(m);
      else {
        this.runs.delete(m.run);
        if (m.type === "failed") run.reject(new Error(m.message));
        else run.resolve(m); // finished or gpuLost
      }
    }
  }

  failAll(message) {
    for (const p of [...this.pending.values(), ...this.runs.values()]) p.reject(new Error(message));
    this.pending.clear();
    this.runs.clear();
  }

  call(message, transfer = []) {
    const call = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(call, { resolve, reject });
      this.worker.postMessage({ ...message, call }, transfer);
    });
  }

  /// A stream of rows: `generate` (sampling, completion) or `inpaint` (a BERT model's fills).
  generate(message, onRows, type = "generate") {
    const run = this.next++;
    return new Promise((resolve, reject) => {
      this.runs.set(run, { resolve, reject, onRows });
      this.worker.postMessage({ ...message, type, run });
    });
  }

  stop() {
    this.worker.postMessage({ type: "stop" });
  }

  /// Takes over the kept images and the lost generation of `lost` (a worker whose GPU was lost),
  /// passed between the two workers directly: the page never holds token ids.
  takeOverFrom(lost) {
    const { port1, port2 } = new MessageChannel();
    lost.worker.postMessage({ type: "handOver", port: port1 }, [port1]);
    return this.call({ type: "takeOver", port: port2 }, [port2]);
  }

  terminate() {
    this.worker.terminate();
    this.failAll("stopped");
  }
}

/// The adapter, if WebGPU is there and can hold the model's largest buffer (`need` bytes, as the
/// worker's igpt sized it); else null and the reason.
async function webgpuAdapter(need) {
  if (params.get("backend") === "cpu") return { adapter: null, why: "the CPU was asked for" };
  if (!navigator.gpu) return { adapter: null, why: "WebGPU unavailable" };
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch {
    // handled below
  }
  if (!adapter) return { adapter: null, why: "WebGPU unavailable" };
  // Test hook (?gpu-buffer-limit=BYTES): pretend the adapter allows less.
  const limit = Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize,
    Number(params.get("gpu-buffer-limit")) || Infinity);
  if (limit < need) {
    return { adapter: null, why: `this GPU's buffers are limited to ${(limit / 1048576).toFixed(1)} MB and the model needs ${(need / 1048576).toFixed(1)} MB` };
  }
  return { adapter, why: null };
}

const backendName = () => (state.backend === "webgpu" ? "WebGPU" : `CPU (${state.cpuReason})`);

async function modelEntry() {
  const response = await fetch("models/index.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`models/index.json: HTTP ${response.status}`);
  const models = await response.json();
  const name = params.get("model") || models[0]?.path;
  if (!name) throw new Error("No model is bundled with this site yet: export one into models/ (see README).");
  // Only listed models load: their files are checked against the index's hashes, and a link cannot
  // point the page at another directory of the same origin (?model=../elsewhere).
  const entry = models.find((m) => m.path === name);
  if (!entry) {
    const listed = models.map((m) => m.path).join(", ");
    throw new Error(`Could not load the model "${name}": this site lists only ${listed} (models/index.json)`);
  }
  showModelPicker(models, name);
  return { name, files: entry.files };
}

/// Starts the model in `worker` (a new one if none) on WebGPU or the CPU; the weights come from the
/// cache when they can.
async function startEngine(name, files, webgpu, worker = new ModelWorker()) {
  const base = `models/${name.replace(/\/?$/, "/")}`;
  // The light weights (block-wise 6-bit, `igpt quantize`) when the model ships them, unless
  // ?weights=full asks for the full file.
  const light = files?.["model.q6.safetensors"] && params.get("weights") !== "full";
  const weights = light ? "model.q6.safetensors" : "model.safetensors";
  state.weightsFile = weights;
  const wanted = [weights, "config.json", "preprocessor_config.json", "card.json", "ablation-means.json"];
  try {
    const loaded = await worker.call({ type: "load", base, webgpu,
      files: Object.fromEntries(wanted.map((f) => [f, files?.[f] ?? null])) });
    return { worker, ...loaded };
  } catch (e) {
    worker.terminate();
    throw e;
  }
}

async function loadModel() {
  const { name, files } = await modelEntry();
  state.model = name;
  // The config is small: read it first, to know whether the GPU can hold the model before downloading.
  const base = `models/${name.replace(/\/?$/, "/")}`;
  const configBytes = await verifiedBytes(base + "config.json", files?.["config.json"], () => {});
  if (!configBytes) throw new Error(`Could not load the model "${name}": models/index.json lists no config.json for it`);
  // The worker sizes the model's largest GPU buffer from it (igpt's own arithmetic), then loads it.
  const worker = new ModelWorker();
  let adapter = null;
  try {
    const config = new TextDecoder().decode(configBytes);
    const { gpuBufferBytes } = await worker.call({ type: "size", config, batch: MAX_COUNT });
    gpuBytesNeeded = gpuBufferBytes;
    let why;
    ({ adapter, why } = await webgpuAdapter(gpuBufferBytes));
    state.cpuReason = why;
    status(`Downloading ${name}…`);
    engine = await startEngine(name, files, adapter !== null, worker);
  } catch (e) {
    worker.terminate();
    const error = new Error(`Could not load the model "${name}": ${e.message ?? e}`);
    error.retry = e.retry || e instanceof DownloadError;
    throw error;
  }
  state.backend = engine.backend;
  const info = adapter?.info ?? {};
  state.adapter = adapter ? `${info.vendor ?? ""} ${info.architecture ?? ""}`.trim() || "WebGPU" : null;
  state.loadedAt = performance.now();
  return name;
}

/// The model's largest GPU buffer (the worker's sizing), kept to ask for a GPU again after a loss.
let gpuBytesNeeded = 0;

/// With more than one bundled model, a menu to switch (it reloads the page with ?model=NAME).
function showModelPicker(models, selected) {
  if (models.length < 2) return;
  const select = $("model");
  select.replaceChildren();
  for (const m of models) select.append(new Option(m.label ?? m.path, m.path, false, m.path === selected));
  select.onchange = () => {
    params.set("model", select.value);
    location.search = params.toString();
  };
  $("model-picker").hidden = false;
}

/// A canvas of the model's size in a new figure of `container`; with `file` (a name without .png),
/// buttons that save it as a PNG, at the model's size and 8× larger.
function canvasFor(container, caption, file) {
  const figure = document.createElement("figure");
  const canvas = document.createElement("canvas");
  canvas.width = engine.width;
  canvas.height = engine.height;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", caption ?? "sample");
  figure.append(canvas);
  if (caption || file) {
    const fc = document.createElement("figcaption");
    if (caption) fc.append(caption);
    if (file) fc.append(...[1, 8].map((scale) => saveButton(canvas, file, scale)));
    figure.append(fc);
  }
  container.append(figure);
  return canvas;
}

/// A button that downloads `canvas` as FILE.png (scale 1) or FILE-8x.png, pixels kept sharp.
function saveButton(canvas, file, scale) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "save";
  button.textContent = scale === 1 ? "PNG" : `${scale}×`;
  button.setAttribute("aria-label", `save as ${file}${scale === 1 ? "" : `-${scale}x`}.png`);
  button.onclick = async () => {
    const big = new OffscreenCanvas(canvas.width * scale, canvas.height * scale);
    const ctx = big.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(canvas, 0, 0, big.width, big.height);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await big.convertToBlob({ type: "image/png" }));
    link.download = `${file}${scale === 1 ? "" : `-${scale}x`}.png`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  };
  return button;
}

/// A file name for an image the page drew: the model, the seed, what it is.
const imageFile = (what) => `igpt-${(state.model ?? "model").replace(/[^\w.-]+/g, "-")}-seed${settings().seed}-${what}`;

/// Paints `rows` of RGBA (whole rows) onto a canvas, starting at row `first`.
function paintRows(canvas, rgba, first) {
  const rows = rgba.length / (4 * canvas.width);
  if (rows < 1) return;
  const image = new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length), canvas.width, rows);
  canvas.getContext("2d").putImageData(image, 0, first);
}

async function stopCurrent() {
  if (!current) return;
  current.stop();
  await current.finished;
}

function settings() {
  return {
    temperature: Number($("temperature").value),
    topK: Number($("top-k").value),
    seed: Number($("seed").value) >>> 0,
  };
}

/// Generates one image per canvas, each continuing the same prefix (`from`: the first `pixels` of a
/// tokenized `image`, or null for none), painting rows as the worker sends them. If the GPU is lost,
/// it goes on from the tokens drawn so far, on a new GPU device or else on the CPU; the sampling
/// noise is keyed by seed, image and position, so a seeded image finishes as if never interrupted.
async function generate(canvases, from, label, { ablate = null, patch = null } = {}) {
  // The model serves one call at a time. Another generate() may start while this one waits, so wait
  // until none runs; nothing awaits between this loop and taking `current`.
  await inspector?.passing;
  while (current) await stopCurrent();
  let finish;
  let stopped = false;
  const run = (current = { stop: () => { stopped = true; engine.worker.stop(); }, finished: new Promise((r) => (finish = r)) });
  const count = canvases.length;
  const total = engine.width * engine.height;
  let start = { from };
  try {
    for (;;) {
      const result = await engine.worker.generate({ count, ...start, ablate, patch, ...settings(),
        loseGpuAfterRow: loseGpuHere(label) ? Number(params.get("lose-gpu-after-row")) : undefined },
      ({ first, rgba, drawn, tokensPerSecond }) => {
        const each = rgba.length / count;
        canvases.forEach((c, i) => paintRows(c, rgba.subarray(i * each, (i + 1) * each), first));
        // Milliseconds from navigation to the first painted row (reported by the e2e tests).
        state.firstRowMs ??= performance.now();
        state.tokensPerSecond = tokensPerSecond;
        state.drawn = drawn;
        $("progress").value = drawn / total;
        status(`${label}: ${drawn}/${total} pixels, ${tokensPerSecond.toFixed(0)} tokens/s on ${backendName()}`);
      });
      if (result.type === "gpuLost") {
        await recoverFromLostGpu(result.drawn / count);
        start = { resume: true };
        if (stopped) break;
        continue;
      }
      break;
    }
    if (stopped) status(`${label}: stopped.`);
    return !stopped;
  } finally {
    finish();
    if (current === run) current = null;
  }
}

/// Test hook (?lose-gpu-after-row=N, and ?lose-gpu-in=LABEL to pick one kind of generation, e.g.
/// Completing): whether this generation destroys the WebGPU device after row N. Once per visit, so
/// the device that comes back is kept.
function loseGpuHere(label) {
  return params.has("lose-gpu-after-row") && state.backend === "webgpu" && !state.gpuLost &&
    (!params.has("lose-gpu-in") || params.get("lose-gpu-in") === label);
}

/// The GPU device was lost: the page says so, asks for a new adapter and device, and a new worker on
/// it (weights from the cache) takes over the lost one's images and tokens. Only if no device comes
/// back does a CPU worker take over.
async function recoverFromLostGpu(drawn) {
  state.gpuLost = true;
  status(`The GPU was lost after ${drawn} pixels; asking for it again…`);
  const lost = engine.worker;
  const { name, files } = await modelEntry();
  try {
    engine = await restartEngine(name, files);
    await engine.worker.takeOverFrom(lost);
  } finally {
    lost.terminate();
  }
  state.backend = engine.backend;
  status(engine.backend === "webgpu" ? `The GPU was lost after ${drawn} pixels and came back; going on with it…`
    : `The GPU was lost after ${drawn} pixels and did not come back; going on with the CPU…`);
  showCard(name, engine.card);
}

/// A worker on a new GPU device, or on the CPU if none is given (test hook ?gpu-stays-lost: none).
async function restartEngine(name, files) {
  const { adapter } = params.has("gpu-stays-lost") ? { adapter: null } : await webgpuAdapter(gpuBytesNeeded);
  if (adapter) {
    try {
      return await startEngine(name, files, true);
    } catch {
      // No device on it after all: the CPU below.
    }
  }
  state.cpuReason = "the GPU was lost and did not come back";
  return startEngine(name, files, false);
}

/// The CPU-match check (cpu-match.js): this model's bundled examples, teacher-forced on the WebGPU
/// worker and on a CPU worker started for it (weights from the cache). It holds the model as a
/// generation does: Sample stops it, and it stops a generation.
async function checkCpuMatch() {
  await inspector?.passing;
  while (current) await stopCurrent();
  let finish;
  let stopped = false;
  const run = (current = { stop: () => (stopped = true), finished: new Promise((r) => (finish = r)) });
  const out = $("cpu-match-result");
  // Test hook (?cpu-match-images=N): the first N examples only (SwiftShader takes a minute an image).
  const files = [...$("example").options].map((o) => o.value)
    .slice(0, Number(params.get("cpu-match-images")) || undefined);
  let cpu = null;
  $("cpu-match").disabled = true;
  try {
    out.textContent = "Starting a CPU worker…";
    const { name, files: modelFiles } = await modelEntry();
    cpu = await startEngine(name, modelFiles, false);
    const r = await cpuMatch(engine.worker, cpu.worker, files,
      (done, total) => (out.textContent = `Checking: ${done} of ${total} images…`), () => stopped);
    state.cpuMatch = { ...r, stopped };
    const share = r.pixels ? (100 * r.agree) / r.pixels : 0;
    out.textContent = `${stopped ? "Stopped; so far, " : ""}${r.images} images, ${r.pixels} pixels: ` +
      `WebGPU and the CPU predict the same most likely colour at ${share.toFixed(3)}% of pixels ` +
      `(${r.pixels - r.agree} differ); the largest logit difference is ${r.maxLogitDiff.toExponential(1)}.`;
  } catch (e) {
    state.cpuMatch = { error: String(e?.message ?? e) };
    out.textContent = `The check failed: ${e?.message ?? e}`;
  } finally {
    cpu?.worker.terminate();
    $("cpu-match").disabled = false;
    finish();
    if (current === run) current = null;
  }
}

async function sampleGallery() {
  state.galleryDone = false;
  const gallery = $("gallery");
  gallery.replaceChildren();
  const count = Math.max(1, Math.min(MAX_COUNT, Number($("count").value) || 1));
  const canvases = Array.from({ length: count }, (_, i) => canvasFor(gallery, null, imageFile(`sample-${i + 1}`)));
  canvases.forEach((c, i) => c.setAttribute("aria-label", `sample ${i + 1}`));
  if (await generate(canvases, null, "Sampling")) state.galleryDone = true;
}

/// Completes an image (its handle and the RGBA of its quantised pixels, from the worker's tokenize).
async function complete({ image, rgba }) {
  state.completionDone = false;
  const { width, height } = engine;
  const rows = Math.max(1, Math.min(height - 1, Number($("rows").value) || 1));
  const given = rgba.subarray(0, rows * width * 4);
  const out = $("completion");
  out.replaceChildren();
  paintRows(canvasFor(out, "what the model sees"), rgba, 0);
  paintRows(canvasFor(out, `given: ${rows} rows`), given, 0);
  const n = Math.max(1, Math.min(16, Number($("completions").value) || 1));
  const canvases = Array.from({ length: n }, (_, i) => canvasFor(out, `completion ${i + 1}`, imageFile(`completion-${i + 1}`)));
  for (const c of canvases) paintRows(c, given, 0);
  if (await generate(canvases, { image, pixels: rows * width }, "Completing")) {
    state.completion = { rows, width };
    state.completionDone = true;
  }
}

/// A BERT model's inpainting: the pixels to fill (one byte each, non-zero to fill) of the image last
/// chosen, and which image that was (a new one starts from the default hole).
const fillState = { hole: null, source: null };

/// The default hole: a centre square a third of the image wide (igpt inpaint --mask X,Y,S,S).
function defaultHole() {
  const { width, height } = engine;
  const side = Math.max(1, Math.round(Math.min(width, height) / 3));
  const [x0, y0] = [Math.floor((width - side) / 2), Math.floor((height - side) / 2)];
  const hole = new Uint8Array(width * height);
  for (let y = y0; y < y0 + side; y++) hole.fill(1, y * width + x0, y * width + x0 + side);
  state.defaultHole = [x0, y0, side, side];
  return hole;
}

/// `rgba` with the hole painted mid-grey.
function withHole(rgba, hole) {
  const shown = rgba.slice();
  hole.forEach((h, i) => h && shown.fill(128, 4 * i, 4 * i + 3));
  return shown;
}

/// Fills the hole of an image (its handle and RGBA, from the worker's tokenize) several ways, painting
/// every fill as passes arrive; the hole canvas takes the pointer to widen the hole for the next Fill.
async function fill({ image, rgba }, source) {
  state.inpaintDone = false;
  if (source !== fillState.source || !fillState.hole) fillState.hole = defaultHole();
  fillState.source = source;
  const hole = fillState.hole;
  const out = $("completion");
  out.replaceChildren();
  paintRows(canvasFor(out, "what the model sees"), rgba, 0);
  const editor = canvasFor(out, "the hole: paint to widen it, then Fill again");
  editor.tabIndex = 0;
  const repaint = () => paintRows(editor, withHole(rgba, hole), 0);
  repaint();
  const brush = Math.max(1, Math.round(engine.width / 14));
  let down = false;
  const paint = (e) => {
    const r = editor.getBoundingClientRect();
    const cx = Math.floor(((e.clientX - r.left) / r.width) * engine.width);
    const cy = Math.floor(((e.clientY - r.top) / r.height) * engine.height);
    for (let y = cy - brush + 1; y < cy + brush; y++) {
      for (let x = cx - brush + 1; x < cx + brush; x++) {
        if (x >= 0 && y >= 0 && x < engine.width && y < engine.height) hole[y * engine.width + x] = 1;
      }
    }
    repaint();
  };
  editor.addEventListener("pointerdown", (e) => { down = true; paint(e); });
  editor.addEventListener("pointermove", (e) => down && paint(e));
  addEventListener("pointerup", () => (down = false));
  const n = Math.max(1, Math.min(16, Number($("completions").value) || 1));
  const canvases = Array.from({ length: n }, (_, i) => canvasFor(out, `fill ${i + 1}`, imageFile(`fill-${i + 1}`)));
  for (const c of canvases) paintRows(c, withHole(rgba, hole), 0);
  await inspector?.passing;
  while (current) await stopCurrent();
  let finish;
  let stopped = false;
  const run = (current = { stop: () => { stopped = true; engine.worker.stop(); }, finished: new Promise((r) => (finish = r)) });
  const size = hole.reduce((a, h) => a + (h ? 1 : 0), 0);
  try {
    for (;;) {
      const result = await engine.worker.generate({ image, hole: hole.slice().buffer, count: n, ...settings() },
        ({ rgba: filled, drawn, tokensPerSecond }) => {
          const each = filled.length / n;
          canvases.forEach((c, i) => paintRows(c, filled.subarray(i * each, (i + 1) * each), 0));
          state.drawn = drawn;
          $("progress").value = drawn / size;
          status(`Filling: ${drawn}/${size} pixels, ${tokensPerSecond.toFixed(0)} pixels/s on ${backendName()}`);
        }, "inpaint");
      // A lost GPU: the fill starts again on the device that comes back (the same pixels for a seed).
      if (result.type === "gpuLost") {
        await recoverFromLostGpu(0);
        if (stopped) break;
        continue;
      }
      break;
    }
    if (stopped) status("Filling: stopped.");
    else {
      status(`Filled ${size} pixels ${n} ways.`);
      state.inpaint = { hole: size, fills: n, source };
      state.inpaintDone = true;
    }
  } finally {
    finish();
    if (current === run) current = null;
  }
}

/// The page for a BERT model: no sampling from nothing (it fills hidden pixels), the completion
/// section becomes inpainting, and the inspector shows each pixel's surprise when hidden.
function setUpInpainting() {
  $("intro").textContent = "Image GPT is a language model for pixels: it reads an image as a sequence of colours. " +
    "This one learned to predict pixels hidden at random from all the others, so below it fills holes in images, " +
    "right here on your GPU (or CPU).";
  $("gallery-title").closest("section").hidden = true;
  $("inspect-about").textContent = "How surprised the model is by each pixel of an image when that pixel is hidden: " +
    "the pixels are dealt into groups of about the share it was trained to fill, and each group is hidden once and " +
    "predicted from all the others. Choose an image under Inpainting (or draw one), then point at a pixel.";
  $("complete-title").textContent = "Inpainting";
  $("complete-about").textContent = "This model was trained to predict hidden pixels from all the others (the paper's BERT " +
    "objective), so instead of drawing images from nothing it fills holes. Choose an image and press Fill: it fills a " +
    "square in the middle several ways, one pixel per pass in a random order, each drawn given those before. Paint on " +
    "the hole to widen it, then Fill again.";
  $("rows-label").hidden = true;
  $("complete").textContent = "Fill";
  $("completions-label").firstChild.textContent = "Fills ";
}

// Larger files are refused before they are read; images are also capped by size in the decoder.
const MAX_UPLOAD_MB = 64;

async function tokensOfFile(file) {
  if (file.size === 0) throw new Error("the file is empty");
  if (file.size > MAX_UPLOAD_MB * 1024 * 1024) {
    throw new Error(`the file is ${Math.round(file.size / 1048576)} MB; the limit is ${MAX_UPLOAD_MB} MB`);
  }
  const bytes = await file.arrayBuffer();
  return engine.worker.call({ type: "tokenize", bytes }, [bytes]);
}

async function tokensOfExample(file) {
  const response = await fetch(`examples/${file}`);
  if (!response.ok) throw new Error(`examples/${file}: HTTP ${response.status}`);
  const bytes = await response.arrayBuffer();
  return engine.worker.call({ type: "tokenize", bytes }, [bytes]);
}

/// The drawing pad: a pointer draws; from the keyboard, arrow keys move the pen and draw, Delete clears.
/// It starts as the model's images do: white on black for greys (Fashion-MNIST), and for colour a
/// white background (emoji) with a pen colour to choose.
function setUpDrawing(card) {
  const pad = $("draw");
  const ctx = pad.getContext("2d");
  const colour = card.channels === 3;
  $("pen-picker").hidden = !colour;
  const clear = () => { ctx.fillStyle = colour ? "#fff" : "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  const dotAt = (x, y) => {
    ctx.fillStyle = colour ? $("pen").value : "#fff";
    ctx.beginPath();
    ctx.arc(x, y, 6, 0, 7);
    ctx.fill();
  };
  let down = false;
  const dot = (e) => {
    const r = pad.getBoundingClientRect();
    dotAt(((e.clientX - r.left) / r.width) * pad.width, ((e.clientY - r.top) / r.height) * pad.height);
  };
  pad.addEventListener("pointerdown", (e) => { down = true; dot(e); });
  pad.addEventListener("pointermove", (e) => down && dot(e));
  addEventListener("pointerup", () => (down = false));
  const pen = { x: pad.width / 2, y: pad.height / 2 };
  const moves = { ArrowLeft: [-4, 0], ArrowRight: [4, 0], ArrowUp: [0, -4], ArrowDown: [0, 4] };
  pad.addEventListener("keydown", (e) => {
    if (moves[e.key]) {
      pen.x = Math.max(0, Math.min(pad.width, pen.x + moves[e.key][0]));
      pen.y = Math.max(0, Math.min(pad.height, pen.y + moves[e.key][1]));
      dotAt(pen.x, pen.y);
      e.preventDefault();
    } else if (e.key === "Delete" || e.key === "Backspace") {
      clear();
      e.preventDefault();
    }
  });
  $("clear-drawing").onclick = clear;
  $("use-drawing").onclick = async () => {
    try {
      const image = await tokensOfDrawing();
      await labelChosen(image);
      await (state.objective === "bert" ? fill(image, `drawing ${Date.now()}`) : complete(image));
    } catch (e) {
      fail(e);
    }
  };
}

/// The drawing pad's pixels as the model sees them (their handle in the worker, and their RGBA).
function tokensOfDrawing() {
  const pad = $("draw");
  const { data } = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height);
  return engine.worker.call({ type: "tokenize", rgba: data.buffer, width: pad.width, height: pad.height }, [data.buffer]);
}

function fineTuned(card) {
  const own = card.metrics?.test_accuracy, recorded = card.finetuned;
  if (own !== undefined) return `${(100 * own).toFixed(2)}%`;
  if (recorded?.test_accuracy === undefined) return null;
  const steps = recorded.finetune?.steps;
  return `${(100 * recorded.test_accuracy).toFixed(2)}% (${recorded.test_images.toLocaleString("en")} test images` +
    `${steps ? `, after ${steps} steps` : ""})`;
}

function showCard(name, cardJson) {
  const card = cardJson ? JSON.parse(cardJson) : {};
  $("cpu-match-box").hidden = state.backend !== "webgpu";
  const bits = card.metrics?.test_bits_per_token;
  const tuned = fineTuned(card);
  // A BERT model's bits are over the pixels it is shown hidden (igpt eval --masks).
  const bert = card.objective?.kind === "bert";
  const colours = card.channels === 1 ? "grey" : "colour";
  $("model-summary").textContent = `${card.name ?? name}: ${card.dataset ?? "unknown data"}, ${engine.width}×${engine.height} ${colours}` +
    (bits !== undefined ? `, ${bits.toFixed(2)} bits per ${bert ? "hidden " : ""}pixel on its test images` : "") +
    (bert ? `; it fills hidden pixels (trained with ${Math.round(100 * card.objective.mask_prob)}% hidden)` : "");
  const rows = [
    ["Model", card.name ?? name],
    ["Dataset", card.dataset ?? "unknown"],
    ["Image", `${engine.width}×${engine.height}, ${colours}`],
    ["Parameters", card.training?.parameters ? `${(card.training.parameters / 1e6).toFixed(2)}M` : "unknown"],
    ["Training", trainingSummary(card.training)],
    [bert ? "Test bits per hidden pixel" : "Test bits/token", bits !== undefined ? bits.toFixed(4) : "not measured"],
    ...(bert ? [["Objective", `BERT: ${Math.round(100 * card.objective.mask_prob)}% of pixels hidden, predicted from all the others`]] : []),
    // What simple models score on the same test images (igpt baselines): the bars this model clears.
    ...(card.baselines ? [["Baselines", `${card.baselines.context3.toFixed(4)} (3-neighbour context model), ` +
      `${card.baselines.per_position.toFixed(4)} (per-position unigram), ${card.baselines.uniform.toFixed(1)} (uniform)`]] : []),
    // A fine-tuned model's own accuracy, or the one `igpt finetune --record` stored in its parent's card.
    ...(tuned ? [["Fine-tuned test accuracy", tuned]] : []),
    ["Backend", state.backend === "webgpu"
      ? `WebGPU (${state.adapter}${state.gpuLost ? "; a new device after the GPU was lost" : ""})`
      : `CPU in wasm (${state.cpuReason})`],
  ];
  $("card").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  showProbe(name, card.probe);
}

// The card's linear-probe results (igpt probe --record): test accuracy by layer beside the baselines,
// as a table, with the chart igpt wrote beside the weights.
function showProbe(name, probe) {
  const section = $("probe");
  if (!Array.isArray(probe?.layers)) { section.hidden = true; return; }
  const pct = (a) => `${(100 * a).toFixed(2)}%`;
  $("probe-summary").textContent =
    `Logistic regression on each layer's average-pooled features: ${probe.train_images.toLocaleString("en")} ` +
    `training images (10% held out to pick the layer and L2), ${probe.test_images.toLocaleString("en")} test images. ` +
    `Raw pixels: ${pct(probe.raw_pixels)}; the same network with random weights, best layer: ${pct(probe.random_init_best)}.`;
  const rows = probe.layers.map((l, i) => {
    const tr = document.createElement("tr");
    const random = probe.random_init_layers?.[i]?.accuracy;
    const cells = [l.layer === 0 ? "0 (embeddings)" : String(l.layer), pct(l.accuracy),
      random !== undefined ? pct(random) : "", l.layer === probe.best_layer ? "best" : ""];
    for (const text of cells) {
      const td = document.createElement("td"); td.textContent = text; tr.append(td);
    }
    return tr;
  });
  $("probe-rows").replaceChildren(...rows);
  const chart = $("probe-chart");
  chart.src = `models/${name.replace(/\/?$/, "/")}probe.svg`;
  chart.onerror = () => (chart.hidden = true);
  section.hidden = false;
}

// "5,900 steps, 3.6 h on flex Cpu": the whole history when the model was fine-tuned from another
// (the card's total_steps, and every stage's device).
function trainingSummary(training) {
  const steps = training?.total_steps ?? training?.steps;
  if (typeof steps !== "number") return "unknown";
  const seconds = training.total_seconds ?? training.seconds;
  const time = typeof seconds !== "number" ? "" : seconds >= 5400 ? `, ${(seconds / 3600).toFixed(1)} h`
    : seconds >= 60 ? `, ${Math.round(seconds / 60)} min` : `, ${Math.round(seconds)} s`;
  const devices = new Set();
  for (let stage = training; stage; stage = stage.started_from) if (stage.device) devices.add(stage.device);
  const where = devices.size ? ` on ${[...devices].join(" + ")}` : "";
  return `${steps.toLocaleString("en")} steps${time}${where}`;
}

/// The completion menu: the bundled examples of the model's own dataset (`igpt examples` writes them,
/// each with the dataset it comes from), or every example when none is from that dataset.
async function setUpExamples(cardJson) {
  const response = await fetch("examples/index.json");
  const list = response.ok ? await response.json() : [];
  const dataset = (cardJson ? JSON.parse(cardJson).dataset ?? "" : "").split(":")[0];
  const own = list.filter((ex) => ex.dataset === dataset);
  $("example").replaceChildren(...(own.length ? own : list).map((ex) => new Option(ex.label, ex.file)));
}

// Permalinks: the controls a link carries, by URL parameter. Opening one sets them, samples the gallery
// and, with `example`, completes that example.
const LINKED = { count: "count", temperature: "temperature", "top-k": "top-k", seed: "seed", rows: "rows", completions: "completions" };

function applyLink() {
  for (const [param, id] of Object.entries(LINKED)) if (params.has(param)) $(id).value = params.get(param);
  const example = params.get("example");
  if (example) {
    // A link may name an example of another dataset than the menu offers this model: add it.
    if (![...$("example").options].some((o) => o.value === example)) $("example").append(new Option(example, example));
    $("example").value = example;
  }
}

function permalink() {
  const url = new URL(location.href);
  url.search = "";
  const link = url.searchParams;
  link.set("model", state.model);
  for (const param of ["count", "temperature", "top-k", "seed"]) link.set(param, $(LINKED[param]).value);
  if (state.completionSource) {
    link.set("example", state.completionSource);
    link.set("rows", $("rows").value);
    link.set("completions", $("completions").value);
  }
  if (params.get("backend") === "cpu") link.set("backend", "cpu");
  return url.toString();
}

async function copyLink() {
  const link = permalink();
  $("link").value = link;
  $("link").hidden = false;
  try {
    await navigator.clipboard.writeText(link);
    $("copy-link").textContent = "Link copied";
  } catch {
    $("link").select(); // clipboard refused (e.g. no permission): the link is shown, selected
  }
  setTimeout(() => ($("copy-link").textContent = "Copy link"), 2000);
}

async function completeChosen() {
  $("complete-message").textContent = "";
  try {
    const file = $("upload").files[0];
    state.completionSource = file ? null : $("example").value;
    const image = file ? await tokensOfFile(file) : await tokensOfExample($("example").value);
    await labelChosen(image);
    if (state.objective === "bert") await fill(image, file ? `upload ${file.name} ${file.size}` : $("example").value);
    else await complete(image);
  } catch (e) {
    $("complete-message").textContent = `Could not use that image: ${e.message ?? e}`;
  }
}

/// The inspector's "resample from here": `count` completions of the first `pixels` (any number) of a
/// tokenized `image` into `out`, the whole rows of `given` (that image's RGBA) painted first.
async function resampleFrom({ image, pixels }, given, count, out, { ablate = null, patch = null } = {}) {
  state.resampleDone = false;
  state.resampledFrom = pixels;
  out.replaceChildren();
  const how = [ablate && ` without ${ablate.label}`, patch && ` with ${patch.label}`].filter(Boolean).join(",");
  const canvases = Array.from({ length: count }, (_, i) => canvasFor(out, `from pixel ${pixels}${how}: ${i + 1}`));
  const whole = Math.floor(pixels / engine.width) * engine.width * 4;
  for (const c of canvases) paintRows(c, given.subarray(0, whole), 0);
  const under = { ablate: ablate && { part: ablate.part, mean: ablate.mean },
    patch: patch && { image: patch.image, layer: patch.layer, region: patch.region } };
  if (await generate(canvases, { image, pixels }, "Resampling", under)) state.resampleDone = true;
}

/// A fine-tuned model's label for a chosen image (an upload, an example or the drawing; its handle
/// from the worker's tokenize): its three likeliest classes, under Completion. Nothing for a model
/// without a classification head.
async function labelChosen({ image }) {
  if (!engine.labels?.length) return;
  // (A generation running meanwhile lets the worker's queue take this between two rows.)
  const result = await classify(engine.worker, image);
  showTop($("label-top"), result);
  $("label-box").hidden = false;
  state.label = { top: topClasses(result), class: result.class };
}

/// Inspects a tokenized image, selecting `pixel` (default: the centre); with a fine-tuned model, also
/// shows which pixels moved its label.
async function inspectImage(image, pixel) {
  $("inspect-label").hidden = true;
  await inspector.inspect(image, pixel);
  if (!engine.labels?.length) return;
  // The autoregressive inspector's pass labels the image too; BERT's hides pixels, so it asks.
  const fromInspection = inspector.result?.image === image.image && Boolean(inspector.result.label);
  const result = fromInspection ? inspector.result.label : await classify(engine.worker, image.image);
  const caption = paintShares($("inspect-label-map"), engine.width, engine.height, result);
  $("inspect-label-caption").textContent = caption;
  // The changes read a causal model's scan; a BERT model's states each see the whole image.
  const causal = state.objective !== "bert";
  $("inspect-label-change-figure").hidden = !causal;
  if (causal) $("inspect-label-change-caption").textContent = paintChanges($("inspect-label-change"), engine.width, engine.height, result);
  showTop($("inspect-label-top"), result);
  $("inspect-label").hidden = false;
  state.inspectLabel = { ...result, top: topClasses(result), caption, fromInspection };
}

/// Inspects the image chosen for completion (upload, else the test image), or the drawing.
async function inspectChosen(fromDrawing) {
  try {
    const file = $("upload").files[0];
    const image = fromDrawing ? await tokensOfDrawing()
      : file ? await tokensOfFile(file) : await tokensOfExample($("example").value);
    await inspectImage(image);
  } catch (e) {
    $("inspect-summary").textContent = `Could not inspect that image: ${e.message ?? e}`;
  }
}

/// The model's feature atlas (igpt atlas), when models/index.json lists one: downloaded when the
/// visitor first opens it, verified against its hashes and cached like the weights.
async function offerAtlas(name) {
  const { files } = await modelEntry();
  if (!files?.["atlas.json"] || !files?.["atlas.png"]) return;
  const details = $("atlas");
  details.hidden = false;
  details.addEventListener("toggle", () => {
    if (!details.open || state.atlasShown || state.atlasLoading) return;
    state.atlasLoading = true;
    loadAtlas(name, files).catch((e) => {
      state.atlasError = String(e?.message ?? e);
      $("atlas-about").textContent = `Could not load the feature atlas: ${e?.message ?? e}`;
    }).finally(() => (state.atlasLoading = false));
  });
}

/// Shows the atlas; clicking one of its images opens it in the inspector at its pixel.
async function loadAtlas(name, files) {
  const base = `models/${name.replace(/\/?$/, "/")}`;
  const [json, sprite] = await Promise.all(["atlas.json", "atlas.png"].map((f) =>
    verifiedBytes(base + f, files[f], () => {})));
  await showAtlas(JSON.parse(new TextDecoder().decode(json)), sprite, async (rgba, width, height, pixel) => {
    try {
      const image = await engine.worker.call({ type: "tokenize", rgba, width, height }, [rgba.buffer]);
      $("inspect-title").scrollIntoView();
      await inspectImage(image, pixel);
      state.atlasOpened = { pixel, inspected: inspector.pinned };
    } catch (e) {
      $("inspect-summary").textContent = `Could not inspect that image: ${e.message ?? e}`;
    }
  });
  state.atlasShown = true;
}

async function main() {
  const name = await loadModel();
  state.objective = engine.objective;
  showCard(name, engine.card);
  $("rows").max = engine.height - 1;
  $("rows").value = Math.floor(engine.height / 2);
  await setUpExamples(engine.card);
  applyLink();
  const card = engine.card ? JSON.parse(engine.card) : {};
  setUpDrawing(card);
  state.wasmMemoryBytes = async () => (await engine.worker.call({ type: "memory" })).bytes;
  inspector = state.objective === "bert"
    ? new MaskedInspector({ worker: () => engine.worker, width: engine.width, height: engine.height, state, stopCurrent })
    : new Inspector({ worker: () => engine.worker, means: () => engine.means, width: engine.width, height: engine.height,
      examples: () => [...$("example").options].map((o) => [o.value, o.textContent]),
      tokenize: (source) => (source === "drawing" ? tokensOfDrawing() : tokensOfExample(source)),
      card, state, stopCurrent, resample: resampleFrom });
  offerAtlas(name);
  $("inspect").onclick = () => inspectChosen(false);
  $("inspect-drawing").onclick = () => inspectChosen(true);
  $("sample-controls").onsubmit = (e) => { e.preventDefault(); sampleGallery().catch(fail); };
  $("stop").onclick = () => stopCurrent();
  $("complete").onclick = () => completeChosen();
  $("copy-link").onclick = () => copyLink();
  $("cpu-match").onclick = () => checkCpuMatch();
  if (state.objective === "bert") {
    setUpInpainting();
    status("Ready: choose an image and press Fill.");
    if (params.has("inspect")) {
      await inspectImage(await tokensOfExample(params.get("inspect")));
      $("inspect-title").scrollIntoView();
    } else if (params.has("example")) await completeChosen();
    return;
  }
  // ?inspect=FILE (a bundled example): the inspector opens on it, centre pixel selected, and the
  // gallery waits for Sample (it would hold the model while the visitor explores).
  if (params.has("inspect")) {
    await inspectImage(await tokensOfExample(params.get("inspect")));
    $("inspect-title").scrollIntoView();
    status("Inspecting; press Sample to draw new images.");
    return;
  }
  await sampleGallery();
  if (params.has("example")) await completeChosen();
}

function fail(e) {
  status(`Error: ${e.message ?? e}`, true);
  console.warn(e);
  if (e.retry) {
    $("retry").hidden = false;
    $("retry").onclick = () => {
      $("retry").hidden = true;
      state.errors = [];
      main().catch(fail);
    };
  }
}

/// Offline visits: the service worker (sw.js) keeps the site's own files once they are all fetched
/// (state.offlineReady); where it cannot run (not https or localhost, or no support) the page works
/// online as before.
function keepForOffline() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register("sw.js")
    .then(() => navigator.serviceWorker.ready)
    .then(() => (state.offlineReady = true))
    .catch((e) => (state.offlineError = String(e?.message ?? e)));
}

keepForOffline();
main().catch(fail);
