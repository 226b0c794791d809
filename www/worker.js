// The model's thread: downloads and verifies the weights (with a cache), runs the wasm model, and sends
// the page RGBA rows to paint. The page (app.js) only lays out and paints, so it stays responsive.
//
// Token ids stay here: the page names an image by the handle tokenize gave it, and a prefix by its
// image and length; it sees only colours.
//
// Messages in:
//   size {config, batch}; load {base, files, webgpu}; stop; memory;
//   generate {run, count, from?: {image, pixels} | resume: true, ablate?: {part, mean},
//             patch?: {image, layer, region}, temperature, topK, seed, loseGpuAfterRow};
//   inpaint {run, image, hole (one byte per pixel, non-zero to fill), count, temperature, topK, seed}
//             (a BERT model: rows messages carry every fill whole, `drawn` its filled pixels);
//   tokenize {bytes} | {rgba, width, height}; inspect {image}; inspectPixel {pixel, temperature, topK};
//   inspectMasked {image} (a BERT model: each pixel's bits when hidden);
//   ablate {part, mean}; patch {image, layer, region}; distribution {pixel, temperature, topK};
//   logits {image} (teacher-forced, for the CPU-match check); classify {image} (a fine-tuned model);
//   handOver {port} (to a successor); takeOver {port}
// Messages out:
//   progress {fraction, text}; notice {text} (e.g. the weights could not be cached);
//   reply to size {gpuBufferBytes}; loaded {backend, card, width, height, means, objective, labels};
//   rows {run, first, last, rgba, drawn, tokensPerSecond}; finished {run, stopped}; gpuLost {run, drawn};
//   reply {call, ...} (to logits: {logits, colours}; to classify: igpt classify --explain's numbers
//   and the labels; to inspect: the views' numbers and, from a fine-tuned model, the same label);
//   failed {call?, run?, message, retry}
import init, { ImageGpt, check_image_header, gpu_buffer_bytes, heat_ramp, wasm_memory_bytes } from "./igpt.js";
import { verifiedBytes } from "./weights.js";

let model = null;
let stopRequested = false;
let gpuLost = false;
const post = (message, transfer = []) => postMessage(message, transfer);

// Test hook (index.html?lose-gpu-after-row=N): keep the GPUDevice that wgpu asks for, so it can be
// destroyed mid-sampling, as a driver reset or a lost GPU would.
let gpuDevice = null;
let markLost;
const deviceLost = new Promise((resolve) => (markLost = resolve));
// Every GPUDevice wgpu asks for is watched: when it is lost, generation stops and the page is told.
function watchDevices() {
  if (!self.GPUAdapter) return;
  const request = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await request.apply(this, args);
    gpuDevice = device;
    device.lost.then(() => {
      gpuLost = true;
      markLost();
    });
    return device;
  };
}

// Once the device is lost, wgpu's pending callbacks fail inside wasm (a panic, then a trap); those
// are expected, and the page has been told through "gpuLost", so they are not reported again.
for (const event of ["error", "unhandledrejection"]) {
  self.addEventListener(event, (e) => {
    if (gpuLost) e.preventDefault();
  });
}

// The wasm module, started once (sizing a model and loading it both need it).
let started = null;
const start = () => (started ??= init({ module_or_path: "./igpt_bg.wasm" }).then(watchDevices));

// The largest GPU buffer the model of this config.json needs for `batch` images: igpt's own sizing,
// asked before any weight is downloaded.
async function size({ config, batch }) {
  await start();
  return { gpuBufferBytes: gpu_buffer_bytes(config, batch) };
}

const megabytes = (bytes) => (bytes / 1e6).toFixed(1);

async function load({ base, files, webgpu }) {
  await start();
  const fetched = {};
  const names = Object.keys(files);
  const total = names.reduce((sum, f) => sum + (files[f]?.size ?? 0), 0) || 1;
  let done = 0;
  for (const name of names) {
    fetched[name] = await verifiedBytes(base + name, files[name], (bytes) =>
      post({ type: "progress", fraction: (done + bytes) / total, text: `Downloading ${name}: ${megabytes(done + bytes)} of ${megabytes(total)} MB…` }),
    (text) => post({ type: "notice", text }));
    done += files[name]?.size ?? fetched[name]?.length ?? 0;
  }
  const text = (name) => (fetched[name] ? new TextDecoder().decode(fetched[name]) : undefined);
  post({ type: "progress", fraction: 1, text: "Starting the model…" });
  // The light form unpacks in the same loader (igpt::store::q6).
  const weights = fetched["model.q6.safetensors"] ?? fetched["model.safetensors"];
  model = await ImageGpt.load(weights, text("config.json"),
    text("preprocessor_config.json"), text("card.json"), webgpu);
  // Optional: the parts' mean writes (igpt ablation-means), for mean ablation in the inspector.
  if (fetched["ablation-means.json"]) model.set_means(text("ablation-means.json"));
  return { backend: model.backend(), card: model.card(), width: model.width(), height: model.height(),
    means: model.has_means(), objective: model.objective(), labels: model.labels() };
}

// On WebGPU, the tokens drawn so far, kept after every row: if the GPU is lost, wasm may be left
// mid-call, and a CPU worker goes on from these (handOver). (The CPU has nothing to lose, so no copy.)
let lastTokens = new Uint16Array(0);
// What a predecessor handed over (takeOver): the lost generation's tokens, which `resume` continues.
let handedOver = null;

// The images tokenized so far, by handle (the newest few; the page holds a handle per image it shows).
const images = new Map();
let nextImage = 1;
const KEPT_IMAGES = 16;

function keptImage(image) {
  const ids = images.get(image);
  if (!ids) throw new Error("that image is no longer kept; choose it again");
  return ids;
}

function keepImage(ids) {
  const image = nextImage++;
  images.set(image, ids);
  for (const old of images.keys()) if (images.size > KEPT_IMAGES) images.delete(old);
  return image;
}

// The ids `count` images start from: nothing, the first `pixels` of a tokenized image for each, or
// (`resume`) what a lost GPU worker had drawn.
function startingIds({ count, from, resume }) {
  if (resume) {
    if (!handedOver) throw new Error("there is no generation to resume");
    const ids = handedOver;
    handedOver = null;
    return ids;
  }
  if (!from) return new Uint16Array(0);
  const ids = keptImage(from.image);
  const prefix = ids.subarray(0, from.pixels);
  const all = new Uint16Array(prefix.length * count);
  for (let i = 0; i < count; i++) all.set(prefix, i * prefix.length);
  return all;
}

// The model serves one call at a time: wasm-bindgen refuses any call into `model` while one of its
// async methods (a generation's advance, an inspection) is still running, so every use of the model
// goes through this queue. A call made while images generate runs between two of their rows.
let modelQueue = Promise.resolve();
function exclusive(body) {
  const turn = modelQueue.then(body);
  modelQueue = turn.catch(() => {});
  return turn;
}

// The generation running, if any: a new one stops it and waits, as both would drive the one model.
let running = null;

async function generate(message, body = generateRows) {
  while (running) {
    stopRequested = true;
    await running.catch(() => {});
  }
  running = body(message);
  try {
    await running;
  } finally {
    running = null;
  }
}

// Generates `count` images, each continuing its own prefix (`startingIds`: `count` prefixes of one
// length, concatenated), one message per row, until done or stopped.
async function generateRows({ run, count, from, resume, ablate, patch, temperature, topK, seed, loseGpuAfterRow }) {
  stopRequested = false;
  const prefixes = startingIds({ count, from, resume });
  const given = prefixes.length / count;
  const [width, height] = await exclusive(() => {
    // The inspector's resample under an ablation or a patch; else intact.
    model.set_ablation(ablate?.part, !!ablate?.mean);
    model.set_patch(patch ? keptImage(patch.image) : undefined, patch?.layer ?? 0, patch?.region ?? "");
    model.start_each(prefixes, count, temperature, topK, 0, seed >>> 0);
    return [model.width(), model.height()];
  });
  lastTokens = prefixes;
  const began = performance.now();
  let row = Math.floor(given / width);
  let drawn = given;
  for (;;) {
    // One row, and its pixels read, in one turn of the model.
    const next = await exclusive(async () => {
      if (model.done() || stopRequested) return null;
      if (loseGpuAfterRow !== undefined && row >= loseGpuAfterRow && gpuDevice) gpuDevice.destroy();
      if (gpuLost) throw { gpuLost: true };
      // A lost device may leave the readback waiting forever: race it against the loss.
      const now = await Promise.race([model.advance(width), deviceLost]);
      if (gpuLost) throw { gpuLost: true };
      if (gpuDevice) lastTokens = model.tokens();
      return { now, rgba: new Uint8Array(model.rows_rgba(row, Math.ceil(now / width))) };
    });
    if (!next) break;
    const { now, rgba } = next;
    const tokensPerSecond = ((now - given) * count) / ((performance.now() - began) / 1000);
    post({ type: "rows", run, first: row, last: Math.ceil(now / width), rgba, drawn: now, tokensPerSecond }, [rgba.buffer]);
    row = Math.floor(now / width);
    drawn = now;
    // Let a "stop" message in between rows.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  post({ type: "finished", run, stopped: drawn < width * height });
}

// Fills the hole of a kept image `count` ways with a BERT model (igpt inpaint's passes, the same
// pixels for a seed), sending every fill whole after each row's worth of passes, until done or stopped.
async function inpaintRows({ run, image, hole, count, temperature, topK, seed }) {
  stopRequested = false;
  const [width, total] = await exclusive(() => {
    model.start_inpaint(keptImage(image), new Uint8Array(hole), count, temperature, topK, 0, seed >>> 0);
    return [model.width(), model.inpaint_hole_size()];
  });
  const began = performance.now();
  let filled = 0;
  const send = () => {
    const tokens = model.inpaint_tokens();
    const each = tokens.length / count;
    const parts = Array.from({ length: count }, (_, i) => new Uint8Array(model.render(tokens.subarray(i * each, (i + 1) * each))));
    const rgba = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (rgba.set(p, at), at + p.length), 0);
    const tokensPerSecond = (filled * count) / Math.max(1e-9, (performance.now() - began) / 1000);
    post({ type: "rows", run, first: 0, last: model.height(), rgba, drawn: filled, tokensPerSecond }, [rgba.buffer]);
  };
  await exclusive(send);
  while (filled < total && !stopRequested) {
    await exclusive(async () => {
      filled = await model.advance_inpaint(width);
      send();
    });
    // Let a "stop" message in between passes.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  post({ type: "finished", run, stopped: filled < total });
}

// The inspector: one pass over an image, kept here; the page then asks about pixels.
let inspection = null;

async function inspect({ image }) {
  const ids = keptImage(image);
  inspection?.free();
  inspection = null;
  const began = performance.now();
  inspection = await model.inspect(ids);
  const layers = inspection.n_layer();
  // A fine-tuned model's label comes from the same pass (classify's numbers).
  const label = inspection.label();
  return {
    ms: performance.now() - began,
    label: label === undefined ? null : JSON.parse(label),
    layers,
    heads: inspection.n_head(),
    bits: inspection.bits(),
    features: Array.from({ length: layers + 1 }, (_, l) => inspection.features(l)),
    colours: model.colours_rgba(),
    heat: heat_ramp(),
  };
}

// A BERT model's inspector: each pixel's bits when hidden (`igpt inspect --json`'s numbers).
async function inspectMasked({ image }) {
  const began = performance.now();
  const surprise = JSON.parse(await model.inspect_masked(keptImage(image)));
  return { ms: performance.now() - began, ...surprise, heat: heat_ramp() };
}

// Everything the views show about one pixel (a raster index), each number computed once: the report
// (`igpt inspect --json`'s numbers, attention included), the distribution as sampling with
// `temperature` and `topK` draws from it, and the position similarities.
function inspectPixel({ pixel, temperature, topK }) {
  if (!inspection) throw new Error("nothing is inspected yet");
  const width = model.width();
  const report = JSON.parse(inspection.report(Math.floor(pixel / width), pixel % width));
  return {
    report,
    attention: Float32Array.from(report.attention.flat(2)),
    distribution: distribution({ pixel, temperature, topK }),
    positions: inspection.positions(pixel),
  };
}

// The distribution at a pixel for other sampling settings (the inspector's temperature and top-k).
function distribution({ pixel, temperature, topK }) {
  if (!inspection) throw new Error("nothing is inspected yet");
  return JSON.parse(inspection.distribution(pixel, temperature, topK));
}

// The RGBA pixels of an image file, decoded by the browser's own decoders (the wasm carries none). The
// header is checked first, in Rust as the CLI does, so a small file declaring a huge image is refused
// before anything allocates its pixels. Colour profiles are ignored, as the CLI's decoder ignores them.
async function decodeImage(bytes) {
  check_image_header(new Uint8Array(bytes));
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes]), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (e) {
    throw new Error(`cannot decode image: ${e.message ?? e}`);
  }
  const { width, height } = bitmap;
  const context = new OffscreenCanvas(width, height).getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { rgba: context.getImageData(0, 0, width, height).data, width, height };
}

// The quantised image of an image file or of canvas pixels: its handle (the tokens stay here) and
// its RGBA as the model sees it.
async function tokenize(message) {
  const { rgba, width, height } = message.bytes
    ? await decodeImage(message.bytes)
    : { rgba: new Uint8Array(message.rgba), width: message.width, height: message.height };
  const ids = model.tokenize_rgba(rgba, width, height);
  return { image: keepImage(ids), rgba: new Uint8Array(model.render(ids)) };
}

// After a GPU loss, this worker's state goes to the CPU worker that succeeds it, straight through a
// MessageChannel: the kept images (their handles stay valid) and the lost generation's tokens.
function handOver({ port }) {
  // (Not closed here: the page ends this worker once its successor has the message.)
  port.postMessage({ images: [...images], nextImage, tokens: lastTokens });
}

function takeOver({ port }) {
  return new Promise((resolve, reject) => {
    // The predecessor's JavaScript still runs after a loss; if it does not answer, say so.
    const late = setTimeout(() => reject(new Error("the worker whose GPU was lost did not hand over its images")), 10000);
    port.onmessage = ({ data }) => {
      clearTimeout(late);
      for (const [image, ids] of data.images) images.set(image, ids);
      nextImage = Math.max(nextImage, data.nextImage);
      handedOver = data.tokens;
      port.close();
      resolve({ drawn: data.tokens.length });
    };
  });
}

onmessage = async ({ data: message }) => {
  const { type, call, run } = message;
  try {
    switch (type) {
      case "size":
        post({ type: "reply", call, ...(await size(message)) });
        break;
      case "load":
        post({ type: "reply", call, ...(await load(message)) });
        break;
      case "generate":
        await generate(message);
        break;
      case "inpaint":
        await generate(message, inpaintRows);
        break;
      case "stop":
        stopRequested = true;
        break;
      case "tokenize":
        post({ type: "reply", call, ...(await exclusive(() => tokenize(message))) });
        break;
      case "inspect":
        post({ type: "reply", call, ...(await exclusive(() => inspect(message))) });
        break;
      case "inspectMasked":
        post({ type: "reply", call, ...(await exclusive(() => inspectMasked(message))) });
        break;
      case "inspectPixel":
        post({ type: "reply", call, ...(await exclusive(() => inspectPixel(message))) });
        break;
      case "ablate":
        if (!inspection) throw new Error("nothing is inspected yet");
        post({ type: "reply", call, ...JSON.parse(await exclusive(() => model.ablation(inspection, message.part, !!message.mean))) });
        break;
      case "patch":
        if (!inspection) throw new Error("nothing is inspected yet");
        post({ type: "reply", call, ...JSON.parse(await exclusive(() => model.patching(inspection, keptImage(message.image), message.layer, message.region))) });
        break;
      case "classify":
        post({ type: "reply", call, ...JSON.parse(await exclusive(() => model.classify(keptImage(message.image)))) });
        break;
      case "logits": {
        const { logits, pixels } = await exclusive(async () => ({
          logits: new Float32Array(await model.logits(keptImage(message.image))), pixels: model.width() * model.height() }));
        post({ type: "reply", call, logits, colours: logits.length / pixels }, [logits.buffer]);
        break;
      }
      case "distribution":
        post({ type: "reply", call, ...(await exclusive(() => distribution(message))) });
        break;
      case "handOver":
        handOver(message);
        break;
      case "takeOver":
        post({ type: "reply", call, ...(await takeOver(message)) });
        break;
      case "memory":
        post({ type: "reply", call, bytes: wasm_memory_bytes() });
        break;
    }
  } catch (e) {
    if (e?.gpuLost || gpuLost) {
      post({ type: "gpuLost", run, drawn: lastTokens.length });
      return;
    }
    post({ type: "failed", call, run, message: e?.message ?? String(e), retry: !!e?.retry });
  }
};
