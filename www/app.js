// The page: loads a model from models/, samples a gallery row by row, completes images, shows the card.
// All model work goes through the wasm class ImageGpt (src/web.rs); this file only drives and paints.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// What the end-to-end tests read; also handy in the console.
const state = (window.igptState = { model: null, backend: null, galleryDone: false, completionDone: false, completion: null, errors: [] });
let igpt = null;
let current = null; // the running generation: { cancelled, finished }

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
  if (isError) state.errors.push(text);
}

async function bindings() {
  if (window.wasmBindings) return window.wasmBindings;
  return new Promise((resolve) =>
    addEventListener("TrunkApplicationStarted", () => resolve(window.wasmBindings), { once: true }));
}

async function webgpuAdapter() {
  if (params.get("backend") === "cpu" || !navigator.gpu) return null;
  try {
    return await navigator.gpu.requestAdapter();
  } catch {
    return null;
  }
}

async function fetchBytes(url, onProgress) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    if (total) onProgress(received / total);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const c of chunks) { bytes.set(c, offset); offset += c.length; }
  return bytes;
}

async function fetchText(url, optional = false) {
  const response = await fetch(url);
  if (!response.ok) {
    if (optional) return undefined;
    throw new Error(`${url}: HTTP ${response.status}`);
  }
  return response.text();
}

/// With more than one bundled model, a menu to switch (it reloads the page with ?model=NAME).
function showModelPicker(models, selected) {
  if (models.length < 2) return;
  const select = $("model");
  for (const m of models) select.append(new Option(m.label ?? m.path, m.path, false, m.path === selected));
  select.addEventListener("change", () => {
    params.set("model", select.value);
    location.search = params.toString();
  });
  $("model-picker").hidden = false;
}

async function loadModel(ImageGpt) {
  const models = JSON.parse(await fetchText("models/index.json"));
  const name = params.get("model") || models[0]?.path;
  if (!name) throw new Error("No model is bundled with this site yet: export one into models/ (see README).");
  showModelPicker(models, name);
  state.model = name;
  const base = `models/${name.replace(/\/?$/, "/")}`;
  const adapter = await webgpuAdapter();
  status(`Downloading ${name}…`);
  let model;
  try {
    const weights = await fetchBytes(base + "model.safetensors", (f) => ($("progress").value = f));
    const [config, preprocessor, card] = await Promise.all([
      fetchText(base + "config.json"),
      fetchText(base + "preprocessor_config.json"),
      fetchText(base + "card.json", true),
    ]);
    status("Starting the model…");
    model = await ImageGpt.load(weights, config, preprocessor, card, adapter !== null);
  } catch (e) {
    throw new Error(`Could not load the model "${name}": ${e.message ?? e}`);
  }
  state.backend = model.backend();
  const info = adapter?.info ?? {};
  state.adapter = adapter ? `${info.vendor ?? ""} ${info.architecture ?? ""}`.trim() || "WebGPU" : null;
  return { model, name };
}

function canvasFor(container, caption) {
  const figure = document.createElement("figure");
  const canvas = document.createElement("canvas");
  canvas.width = igpt.width();
  canvas.height = igpt.height();
  figure.append(canvas);
  if (caption) {
    const fc = document.createElement("figcaption");
    fc.textContent = caption;
    figure.append(fc);
  }
  container.append(figure);
  return canvas;
}

function paint(canvas, ids) {
  const rgba = igpt.render(ids);
  const image = new ImageData(new Uint8ClampedArray(rgba), canvas.width, canvas.height);
  canvas.getContext("2d").putImageData(image, 0, 0);
}

async function stopCurrent() {
  if (!current) return;
  current.cancelled = true;
  await current.finished;
}

/// Generates `count` images continuing `prefix`, painting each chunk of rows as it arrives.
async function generate(canvases, prefix, label) {
  await stopCurrent();
  let finish;
  const run = (current = { cancelled: false, finished: new Promise((r) => (finish = r)) });
  try {
    const count = canvases.length;
    const total = igpt.width() * igpt.height();
    const temperature = Number($("temperature").value);
    const topK = Number($("top-k").value);
    igpt.start(count, prefix, temperature, topK, 0, Number($("seed").value) >>> 0);
    const began = performance.now();
    let drawn = prefix.length;
    while (!igpt.done() && !run.cancelled) {
      const ids = await igpt.advance(igpt.width());
      const perImage = ids.length / count;
      canvases.forEach((c, i) => paint(c, ids.slice(i * perImage, (i + 1) * perImage)));
      // Milliseconds from navigation to the first painted row (reported by the e2e tests).
      state.firstRowMs ??= performance.now();
      drawn = perImage;
      const rate = ((drawn - prefix.length) * count) / ((performance.now() - began) / 1000);
      $("progress").value = drawn / total;
      status(`${label}: ${drawn}/${total} pixels, ${rate.toFixed(0)} tokens/s on ${state.backend === "webgpu" ? "WebGPU" : "CPU (WebGPU unavailable)"}`);
      state.tokensPerSecond = rate;
    }
    if (run.cancelled) status(`${label}: stopped.`);
    return !run.cancelled;
  } finally {
    finish();
    if (current === run) current = null;
  }
}

async function sampleGallery() {
  state.galleryDone = false;
  const gallery = $("gallery");
  gallery.replaceChildren();
  const count = Math.max(1, Math.min(64, Number($("count").value) || 1));
  const canvases = Array.from({ length: count }, () => canvasFor(gallery));
  if (await generate(canvases, [], "Sampling")) state.galleryDone = true;
}

async function complete(ids) {
  state.completionDone = false;
  const width = igpt.width();
  const rows = Math.max(1, Math.min(igpt.height() - 1, Number($("rows").value) || 1));
  const prefix = ids.slice(0, rows * width);
  const out = $("completion");
  out.replaceChildren();
  paint(canvasFor(out, "what the model sees"), ids);
  paint(canvasFor(out, `given: ${rows} rows`), prefix);
  const n = Math.max(1, Math.min(16, Number($("completions").value) || 1));
  const canvases = Array.from({ length: n }, (_, i) => canvasFor(out, `completion ${i + 1}`));
  if (await generate(canvases, prefix, "Completing")) {
    state.completion = { rows, width, prefix: Array.from(prefix) };
    state.completionDone = true;
  }
}

// Larger files are refused before they are read; images are also capped by size in the decoder.
const MAX_UPLOAD_MB = 64;

async function tokensOfFile(file) {
  if (file.size === 0) throw new Error("the file is empty");
  if (file.size > MAX_UPLOAD_MB * 1024 * 1024) {
    throw new Error(`the file is ${Math.round(file.size / 1048576)} MB; the limit is ${MAX_UPLOAD_MB} MB`);
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  return igpt.tokenize(bytes);
}

function setUpDrawing() {
  const pad = $("draw");
  const ctx = pad.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let down = false;
  const dot = (e) => {
    const r = pad.getBoundingClientRect();
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(((e.clientX - r.left) / r.width) * pad.width, ((e.clientY - r.top) / r.height) * pad.height, 6, 0, 7);
    ctx.fill();
  };
  pad.addEventListener("pointerdown", (e) => { down = true; dot(e); });
  pad.addEventListener("pointermove", (e) => down && dot(e));
  addEventListener("pointerup", () => (down = false));
  $("clear-drawing").onclick = clear;
  $("use-drawing").onclick = () => {
    const { data } = ctx.getImageData(0, 0, pad.width, pad.height);
    complete(igpt.tokenize_rgba(data, pad.width, pad.height));
  };
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
  const bits = card.metrics?.test_bits_per_token;
  const tuned = fineTuned(card);
  const rows = [
    ["Model", card.name ?? name],
    ["Dataset", card.dataset ?? "unknown"],
    ["Image", `${igpt.width()}×${igpt.height()}, ${card.channels === 1 ? "grey" : "colour"}`],
    ["Parameters", card.training?.parameters ? `${(card.training.parameters / 1e6).toFixed(2)}M` : "unknown"],
    ["Training", trainingSummary(card.training)],
    ["Test bits/token", bits !== undefined ? bits.toFixed(4) : "not measured"],
    // What simple models score on the same test images (igpt baselines): the bars this model clears.
    ...(card.baselines ? [["Baselines", `${card.baselines.context3.toFixed(4)} (3-neighbour context model), ` +
      `${card.baselines.per_position.toFixed(4)} (per-position unigram), ${card.baselines.uniform.toFixed(1)} (uniform)`]] : []),
    // A fine-tuned model's own accuracy, or the one `igpt finetune --record` stored in its parent's card.
    ...(tuned ? [["Fine-tuned test accuracy", tuned]] : []),
    ["Backend", state.backend === "webgpu" ? `WebGPU (${state.adapter})` : "CPU in wasm (WebGPU unavailable)"],
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

async function setUpExamples() {
  const list = JSON.parse(await fetchText("examples/index.json"));
  for (const ex of list) $("example").append(new Option(ex.label, ex.file));
}

async function main() {
  if (params.get("count")) $("count").value = params.get("count");
  const { ImageGpt, wasm_memory_bytes } = await bindings();
  state.wasmMemoryBytes = wasm_memory_bytes;
  const { model, name } = await loadModel(ImageGpt);
  igpt = model;
  showCard(name, igpt.card());
  $("rows").max = igpt.height() - 1;
  $("rows").value = Math.floor(igpt.height() / 2);
  await setUpExamples();
  setUpDrawing();
  $("sample-controls").onsubmit = (e) => { e.preventDefault(); sampleGallery().catch(fail); };
  $("stop").onclick = () => stopCurrent();
  $("complete").onclick = async () => {
    $("complete-message").textContent = "";
    try {
      const file = $("upload").files[0];
      const ids = file
        ? await tokensOfFile(file)
        : igpt.tokenize(await fetchBytes(`examples/${$("example").value}`, () => {}));
      await complete(ids);
    } catch (e) {
      $("complete-message").textContent = `Could not use that image: ${e.message ?? e}`;
    }
  };
  await sampleGallery();
}

function fail(e) {
  status(`Error: ${e.message ?? e}`, true);
  console.warn(e);
}

main().catch(fail);
