// The inspector: what the model makes of one image. The worker runs one traced pass (igpt::inspect)
// and keeps it; choosing a pixel asks it for that pixel's numbers. Every view is drawn here.
//
// Grid cell p of every view is position p of the sequence: the step that predicts pixel p. Attention
// from p is over the pixels before it (a key's cell is the pixel it read), plus the start token.

const $ = (id) => document.getElementById(id);
const SCALE = 8; // canvas pixels per image pixel, so the selected pixel can be outlined

// Black → purple → orange → pale yellow: igpt's heat ramp (`igpt inspect -o` paints with it), as a
// table of RGB steps the worker sends with each inspection.
let heatRamp = new Uint8Array(6);
export const useHeatRamp = (ramp) => (heatRamp = ramp);
export function heat(v) {
  const steps = heatRamp.length / 3 - 1;
  const i = 3 * Math.round(Math.min(1, Math.max(0, v)) * steps);
  return [heatRamp[i], heatRamp[i + 1], heatRamp[i + 2]];
}
// Blue (−1) → light grey (0) → red (+1), for similarities and signed shares.
export function diverging(v) {
  const t = Math.min(1, Math.max(-1, v));
  const [end, mid] = [t < 0 ? [59, 76, 192] : [180, 4, 38], [221, 221, 221]];
  return mid.map((m, c) => Math.round(m + (end[c] - m) * Math.abs(t)));
}
const hex = (rgb) => "#" + rgb.map((x) => x.toString(16).padStart(2, "0")).join("");

/// Paints `colour(i)` (RGB, or null for dark grey) into a w×h grid on `canvas`, outlining `selected`.
export function paintCells(canvas, w, h, colour, selected) {
  const cells = new ImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const rgb = colour(i) ?? [48, 48, 48];
    cells.data.set([...rgb, 255], 4 * i);
  }
  const small = new OffscreenCanvas(w, h);
  small.getContext("2d").putImageData(cells, 0, 0);
  canvas.width = w * SCALE;
  canvas.height = h * SCALE;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, w * SCALE, h * SCALE);
  if (selected !== null) {
    ctx.strokeStyle = "#0ff";
    ctx.lineWidth = 2;
    ctx.strokeRect((selected % w) * SCALE + 1, Math.floor(selected / w) * SCALE + 1, SCALE - 2, SCALE - 2);
  }
}

/// The pixel (raster index) under pointer event `e` on `canvas`, which shows a w×h image.
export function pixelAt(canvas, e, w, h) {
  const r = canvas.getBoundingClientRect();
  const x = Math.min(w - 1, Math.max(0, Math.floor(((e.clientX - r.left) / r.width) * w)));
  const y = Math.min(h - 1, Math.max(0, Math.floor(((e.clientY - r.top) / r.height) * h)));
  return y * w + x;
}

/// One inspection pass in the worker (`message`), for `inspector` (either kind): the model is freed
/// first, the page says so while it runs, and `inspector.passing` holds it meanwhile (so a new
/// generation waits for it). Returns the worker's reply and when the pass began.
export async function workerPass(inspector, message) {
  const { app } = inspector;
  await app.stopCurrent(); // the model serves one call at a time
  const began = performance.now();
  app.state.inspectDone = false;
  $("inspect-summary").textContent = "Inspecting…";
  inspector.passing = app.worker().call(message);
  try {
    return { result: await inspector.passing, began };
  } finally {
    inspector.passing = null;
  }
}

export class Inspector {
  /// `app`: { worker(), means(), examples() ([file, label] pairs), tokenize(file or "drawing"), width, height, card, state,
  /// stopCurrent(), resample({ image, pixels }, rgba, count, out, { ablate, patch }) }.
  constructor(app) {
    this.app = app;
    this.result = null; // the pass: bits, features, colours, layers, heads, rgb of the image
    this.pixel = null; // the raster index shown
    this.pinned = null; // the one chosen (by click or keys); pointing previews others
    this.numbers = null; // the selected pixel's numbers
    this.pending = null; // a pixel asked for while another is on its way
    this.busy = false;
    this.passing = null; // the worker's pass, while it runs
    this.patchImage = null; // the worker's handle of the image the shown patch comes from
    this.regionSet = false; // the patch region gets its default once, then keeps the visitor's
    for (const id of ["inspect-image", "inspect-surprise", "inspect-attention", "inspect-rollout", "inspect-positions"]) {
      const canvas = $(id);
      const at = (e) => pixelAt(canvas, e, app.width, app.height);
      // A click (or tap) chooses the pixel; pointing with a mouse previews another until it leaves.
      canvas.addEventListener("click", (e) => this.select((this.pinned = at(e))));
      canvas.addEventListener("pointermove", (e) => e.buttons === 0 && e.pointerType === "mouse" && this.select(at(e)));
      canvas.addEventListener("pointerleave", () => this.pinned !== null && this.select(this.pinned));
      // Arrow keys move the selection (the canvases are focusable).
      canvas.addEventListener("keydown", (e) => {
        const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -app.width, ArrowDown: app.width };
        if (moves[e.key] === undefined || this.pinned === null) return;
        e.preventDefault();
        this.pinned = Math.min(app.width * app.height - 1, Math.max(0, this.pinned + moves[e.key]));
        this.select(this.pinned);
      });
    }
    for (const id of ["inspect-layer", "inspect-head"]) $(id).onchange = () => this.drawPixelViews();
    for (const id of ["inspect-temperature", "inspect-top-k"]) $(id).oninput = () => this.reshape();
    $("inspect-resample").onclick = () => this.resample();
    for (const id of ["inspect-patch-source", "inspect-patch-layer", "inspect-patch-top", "inspect-patch-bottom", "inspect-patch-left", "inspect-patch-right"]) {
      $(id).onchange = () => this.patch().catch((e) => ($("patch-summary").textContent = `Could not patch: ${e.message ?? e}`));
    }
    for (const id of ["inspect-ablate", "inspect-ablate-mode"]) {
      $(id).onchange = () => this.ablate().catch((e) => ($("ablation-summary").textContent = `Could not ablate: ${e.message ?? e}`));
    }
  }

  /// Inspects an image (`{ image, rgba }` from the worker's tokenize), selecting `pixel` (default: the
  /// centre, as `igpt inspect`).
  async inspect({ image, rgba }, pixel) {
    const { app } = this;
    const { result, began } = await workerPass(this, { type: "inspect", image });
    heatRamp = result.heat;
    result.rgba = rgba;
    result.rgb = Array.from({ length: rgba.length / 4 }, (_, i) => [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]]);
    result.image = image;
    this.result = result;
    this.fillMenus();
    $("inspect-views").hidden = false;
    this.pixel = null;
    this.drawFeatures();
    this.pinned = pixel ?? Math.floor(app.height / 2) * app.width + Math.floor(app.width / 2);
    await this.select(this.pinned);
    const ms = performance.now() - began;
    app.state.inspectMs = ms;
    app.state.inspectPassMs = result.ms;
    const mean = result.bits.reduce((a, b) => a + b, 0) / result.bits.length;
    $("inspect-summary").textContent = `${mean.toFixed(3)} bits per pixel on average; every view computed in ${ms.toFixed(0)} ms.`;
    if ($("inspect-ablate").value) await this.ablate(); // the chosen part, silenced on this image too
    if ($("inspect-patch-source").value) await this.patch(); // and the chosen patch
    app.state.inspectDone = true;
  }

  fillMenus() {
    const { layers, heads } = this.result;
    const keep = (id, options) => {
      const old = $(id).value;
      $(id).replaceChildren(...options.map(([v, label]) => new Option(label, v)));
      if (options.some(([v]) => v === old)) $(id).value = old;
    };
    keep("inspect-layer", Array.from({ length: layers }, (_, l) => [String(l), `${l}`]));
    keep("inspect-head", [["mean", "mean of heads"], ...Array.from({ length: heads }, (_, h) => [String(h), `${h}`])]);
    // The parts an ablation can silence, as `igpt inspect --ablate` names them.
    keep("inspect-ablate", [["", "nothing"], ...Array.from({ length: layers }, (_, l) => [
      ...Array.from({ length: heads }, (_, h) => [`head:${l}.${h}`, `layer ${l} head ${h}`]),
      [`attention:${l}`, `layer ${l} attention`], [`mlp:${l}`, `layer ${l} MLP`]]).flat()]);
    // Patching: the other image (a bundled example or the drawing), the layer of the stream (as the
    // lens counts them) and the region, the top half at first.
    keep("inspect-patch-source", [["", "nothing"], ...this.app.examples(), ["drawing", "your drawing"]]);
    keep("inspect-patch-layer", Array.from({ length: layers + 1 }, (_, l) => [String(l), l === 0 ? "0 (embeddings)" : `${l}`]));
    if (!this.regionSet) {
      $("inspect-patch-layer").value = String(Math.ceil(layers / 2));
      const { width: w, height: h } = this.app;
      [["top", 0, h], ["bottom", Math.floor(h / 2) - 1, h], ["left", 0, w], ["right", w - 1, w]].forEach(([side, value, size]) => {
        $(`inspect-patch-${side}`).value = value;
        $(`inspect-patch-${side}`).max = size - 1;
      });
      this.regionSet = true;
    }
    // Mean ablation needs the model's ablation-means.json; without it only zero is offered.
    const mode = $("inspect-ablate-mode");
    mode.disabled = !this.app.means();
    mode.title = mode.disabled ? "this model ships no mean writes (igpt ablation-means), so the part is zeroed" : "";
    if (mode.disabled) mode.value = "zero";
  }

  /// The image and its surprise, with the shown pixel outlined (redrawn as it moves).
  drawImageViews() {
    const { width: w, height: h } = this.app;
    const { bits, rgb } = this.result;
    const max = Math.max(1e-6, ...bits);
    paintCells($("inspect-image"), w, h, (i) => rgb[i], this.pixel);
    // Laid over the image: mostly heat, a little of the pixel's own colour.
    paintCells($("inspect-surprise"), w, h, (i) => heat(bits[i] / max).map((c, k) => Math.round(0.75 * c + 0.25 * rgb[i][k])), this.pixel);
    $("surprise-caption").textContent = `surprise: 0 (dark) to ${max.toFixed(1)} bits (pale)`;
  }

  /// Every layer's features and the card's probe accuracies: drawn once per inspected image.
  drawFeatures() {
    const { width: w, height: h, card } = this.app;
    const { features, layers } = this.result;
    const out = $("inspect-features");
    out.replaceChildren();
    for (let l = 0; l <= layers; l++) {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      canvas.setAttribute("role", "img");
      const name = l === 0 ? "embeddings" : `after block ${l}`;
      canvas.setAttribute("aria-label", `layer ${l} features (${name}), first three principal components as RGB`);
      const f = features[l];
      paintCells(canvas, w, h, (i) => [f[3 * i], f[3 * i + 1], f[3 * i + 2]], null);
      const caption = document.createElement("figcaption");
      caption.textContent = `layer ${l}: ${name}`;
      figure.append(canvas, caption);
      out.append(figure);
    }
    // The linear-probe accuracy by layer, when the card has it, beside these views.
    const probe = card.probe;
    $("inspect-probe").hidden = !probe;
    if (probe) {
      $("inspect-probe").textContent = "Linear-probe test accuracy by layer: " +
        probe.layers.map((p) => `${p.layer}: ${(100 * p.accuracy).toFixed(1)}%`).join(", ") +
        ` (best: layer ${probe.best_layer}).`;
    }
  }

  /// Selects a pixel: asks the worker for its numbers (the latest request wins) and redraws.
  async select(pixel) {
    if (!this.result) return;
    if (this.busy) {
      this.pending = pixel;
      return;
    }
    this.busy = true;
    try {
      this.pixel = pixel;
      this.numbers = await this.app.worker().call({ type: "inspectPixel", pixel, ...this.sampling() });
      this.app.state.inspect = this.numbers.report;
      this.drawImageViews();
      this.drawPixelViews();
    } finally {
      this.busy = false;
    }
    if (this.pending !== null && this.pending !== pixel) {
      const next = this.pending;
      this.pending = null;
      await this.select(next);
    }
    this.pending = null;
  }

  /// The views of the selected pixel: its distribution, its attention, its position's similarity.
  drawPixelViews() {
    const { width: w, height: h } = this.app;
    const { layers, heads } = this.result;
    const { attention, positions } = this.numbers;
    const p = this.pixel;
    const per = p + 1; // positions 0..=p
    const weights = (l, hd) => attention.subarray((l * heads + hd) * per, (l * heads + hd + 1) * per);
    const layer = Number($("inspect-layer").value);
    const head = $("inspect-head").value;
    let chosen = head === "mean" ? new Float32Array(per) : weights(layer, Number(head));
    if (head === "mean") {
      for (let hd = 0; hd < heads; hd++) weights(layer, hd).forEach((x, i) => (chosen[i] += x / heads));
    }
    // Cell i < p shows the weight on key i + 1 (the step that read pixel i); later cells are unseen.
    // The square root keeps weak weights visible.
    const draw = (canvas, ws) => {
      const peak = Math.max(1e-9, ...ws.subarray(1));
      paintCells(canvas, w, h, (i) => (i < p ? heat(Math.sqrt(ws[i + 1] / peak)) : null), p);
    };
    draw($("inspect-attention"), chosen);
    // Rollout through every layer (igpt's numbers): drawn as attention is.
    const { rollout } = this.numbers.report;
    draw($("inspect-rollout"), Float32Array.from(rollout));
    $("rollout-caption").textContent = `attention rollout through all ${layers} layers: ½·mean of heads + ½·identity each (start token: ${rollout[0].toFixed(3)})`;
    $("attention-caption").textContent = `attention, layer ${layer}, ${head === "mean" ? "mean of heads" : `head ${head}`} (start token: ${chosen[0].toFixed(3)})`;
    const grid = $("inspect-heads");
    grid.style.gridTemplateColumns = `repeat(${heads}, minmax(3rem, 6rem))`;
    grid.replaceChildren();
    for (let l = 0; l < layers; l++) {
      for (let hd = 0; hd < heads; hd++) {
        const canvas = document.createElement("canvas");
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `attention of layer ${l}, head ${hd}`);
        canvas.title = `layer ${l}, head ${hd}`;
        draw(canvas, weights(l, hd));
        grid.append(canvas);
      }
    }
    paintCells($("inspect-positions"), w, h, (i) => diverging(positions[i]), p);
    this.drawDistribution();
    this.drawLens();
    this.drawAttribution();
  }

  /// Direct logit attribution at the selected pixel: a table of layers (rows) by heads, attention
  /// bias and MLP (columns), the embeddings first, each part coloured by its sign and size.
  drawAttribution() {
    const { layers, heads } = this.result;
    const { logit, parts } = this.numbers.report.attribution;
    const sum = parts.reduce((a, p) => a + p.logit, 0);
    $("inspect-attribution-sum").textContent =
      `Its colour's logit: ${logit.toFixed(3)}; the parts sum to ${sum.toFixed(3)}.`;
    const peak = Math.max(1e-9, ...parts.map((p) => Math.abs(p.logit)));
    const cell = (tag, text, value) => {
      const c = document.createElement(tag);
      c.textContent = text;
      if (value !== undefined) {
        c.style.background = hex(diverging(value / peak));
        c.title = `${value >= 0 ? "+" : ""}${value.toFixed(4)}`;
      }
      return c;
    };
    const row = (...cells) => {
      const r = document.createElement("tr");
      r.append(...cells);
      return r;
    };
    const value = (v) => cell("td", `${v >= 0 ? "+" : ""}${v.toFixed(2)}`, v);
    const header = row(cell("th", ""), ...Array.from({ length: heads }, (_, h) => cell("th", `head ${h}`)),
      cell("th", "attn bias"), cell("th", "MLP"));
    const embedded = value(parts[0].logit);
    embedded.colSpan = heads + 2; // one part, not a head's
    embedded.style.textAlign = "left";
    const embeddings = row(cell("th", "embeddings"), embedded);
    const rows = Array.from({ length: layers }, (_, l) => {
      const at = 1 + l * (heads + 2);
      return row(cell("th", `layer ${l}`), ...parts.slice(at, at + heads + 2).map((p) => value(p.logit)));
    });
    $("inspect-attribution").replaceChildren(header, embeddings, ...rows);
  }

  /// The logit lens: every layer's surprise map on one scale, and the selected pixel's colour as each
  /// layer reads it (the worker's report).
  drawLens() {
    const { width: w, height: h } = this.app;
    const { colours } = this.result;
    const { lens, lens_bits_per_pixel: maps } = this.numbers.report;
    const colour = (id) => hex([colours[4 * id], colours[4 * id + 1], colours[4 * id + 2]]);
    const max = Math.max(1e-6, ...maps.map((bits) => Math.max(...bits)));
    const out = $("inspect-lens");
    if (out.children.length !== maps.length) {
      out.replaceChildren(...maps.map((_, l) => {
        const figure = document.createElement("figure");
        const canvas = document.createElement("canvas");
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `surprise of each pixel read from layer ${l}`);
        figure.append(canvas, document.createElement("figcaption"));
        return figure;
      }));
    }
    maps.forEach((bits, l) => {
      const figure = out.children[l];
      paintCells(figure.firstChild, w, h, (i) => heat(bits[i] / max), this.pixel);
      const mean = bits.reduce((a, b) => a + b, 0) / bits.length;
      const name = l === 0 ? "embeddings" : l === maps.length - 1 ? "output" : `block ${l}`;
      figure.lastChild.textContent = `layer ${l} (${name}): ${mean.toFixed(3)} bits`;
    });
    const swatch = (id, actual) => {
      const s = document.createElement("span");
      s.className = "swatch" + (actual ? " actual" : "");
      s.style.background = colour(id);
      s.title = colour(id);
      return s;
    };
    $("inspect-lens-pixel").replaceChildren(...lens.map(({ layer, top, actual, bits }) => {
      const item = document.createElement("li");
      item.append(`layer ${layer}: its colour`, swatch(actual.id, true),
        `${(100 * actual.p).toFixed(1)}%, rank ${actual.rank}, ${bits.toFixed(2)} bits; likeliest`,
        ...top.flatMap(({ id, p }) => [swatch(id, id === actual.id), `${(100 * p).toFixed(1)}%`]));
      return item;
    }));
  }

  /// The inspector's sampling settings as the worker takes them: temperature (0: greedy) and top-k
  /// (0: off); what is not a number is the default.
  sampling() {
    const t = Number($("inspect-temperature").value);
    return { temperature: Number.isFinite(t) && t >= 0 ? t : 1, topK: Math.max(0, Math.floor(Number($("inspect-top-k").value) || 0)) };
  }

  /// New temperature or top-k: the worker reshapes the selected pixel's distribution (the sampler's
  /// own code, no new pass).
  async reshape() {
    if (!this.numbers) return;
    const pixel = this.pixel;
    const distribution = await this.app.worker().call({ type: "distribution", pixel, ...this.sampling() });
    if (pixel !== this.pixel) return; // another pixel was chosen meanwhile, with its own distribution
    this.numbers.distribution = distribution;
    this.drawDistribution();
  }

  /// The next-colour distribution at the selected pixel as sampling with the inspector's temperature
  /// and top-k draws from it (the worker's numbers).
  drawDistribution() {
    if (!this.numbers) return;
    const { colours, bits } = this.result;
    const { distribution: { choices, actual, rank }, report } = this.numbers;
    const { temperature: t, topK: k } = this.sampling();
    const colour = (id) => [colours[4 * id], colours[4 * id + 1], colours[4 * id + 2]];
    const [row, col] = report.pixel;
    const truth = document.createElement("span");
    truth.className = "swatch";
    truth.style.background = hex(colour(actual.id));
    $("inspect-pixel").replaceChildren(
      `Pixel ${row}, ${col}: ${bits[this.pixel].toFixed(2)} bits. Its colour `, truth,
      ` ${hex(colour(actual.id))} has p = ${(100 * actual.p).toFixed(2)}%, rank ${rank ?? "— (cut by top-k)"}` +
      (t !== 1 || k > 0 ? ` at temperature ${t}${k > 0 ? `, top-${k}` : ""}.` : "."));
    const list = $("inspect-distribution");
    list.replaceChildren(...choices.map(({ id, p }) => {
      const item = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch" + (id === actual.id ? " actual" : "");
      sw.style.background = hex(colour(id));
      item.append(sw, `${(100 * p).toFixed(1)}%`);
      item.title = `${hex(colour(id))}${id === actual.id ? " (the true colour)" : ""}`;
      return item;
    }));
  }

  /// Completions that keep every pixel before the chosen one (with the chosen part silenced and the
  /// chosen patch applied, if any).
  async resample() {
    if (this.pinned === null) return;
    const count = Math.max(1, Math.min(16, Number($("inspect-resample-count").value) || 1));
    const chosen = this.patching();
    const patch = chosen && this.patchImage !== null ? { ...chosen, image: this.patchImage } : null;
    await this.app.resample({ image: this.result.image, pixels: this.pinned }, this.result.rgba, count, $("inspect-resample-out"),
      { ablate: this.ablation(), patch });
  }

  /// The chosen patch, `{ source, layer, region, label }` (region: `TOP,LEFT,BOTTOM,RIGHT`), or null.
  patching() {
    const source = $("inspect-patch-source");
    if (!source.value) return null;
    const [top, left, bottom, right] = ["top", "left", "bottom", "right"].map((side) => Number($(`inspect-patch-${side}`).value));
    const layer = Number($("inspect-patch-layer").value);
    return { source: source.value, layer, region: [top, left, bottom, right].join(","), box: { top, left, bottom, right },
      label: `rows ${top}-${bottom}, columns ${left}-${right} of ${source.selectedOptions[0].textContent} at layer ${layer}` };
  }

  /// The image run with the other image's states over the region: each pixel's change in surprise.
  async patch() {
    const chosen = this.patching();
    $("inspect-patch-view").hidden = !chosen;
    $("patch-summary").textContent = "";
    this.app.state.patching = null;
    this.patchImage = null;
    if (!chosen || !this.result) return;
    const { image, rgba } = await this.app.tokenize(chosen.source);
    const report = await this.app.worker().call({ type: "patch", image, layer: chosen.layer, region: chosen.region });
    if (this.patching()?.label !== chosen.label) return; // another patch was chosen meanwhile
    this.patchImage = image;
    const { width: w, height: h } = this.app;
    paintCells($("inspect-patch-from"), w, h, (i) => [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]], null);
    const { top, left, bottom, right } = chosen.box;
    const ctx = $("inspect-patch-from").getContext("2d");
    ctx.strokeStyle = "#0ff";
    ctx.lineWidth = 2;
    ctx.strokeRect(left * SCALE + 1, top * SCALE + 1, (right - left + 1) * SCALE - 2, (bottom - top + 1) * SCALE - 2);
    const peak = Math.max(1e-6, ...report.delta_bits.map(Math.abs));
    paintCells($("inspect-patch"), w, h, (i) => diverging(report.delta_bits[i] / peak), this.pixel);
    $("patch-caption").textContent = `with ${chosen.label}: change in bits per pixel (±${peak.toFixed(2)} at the ends)`;
    const signed = (x) => `${x >= 0 ? "+" : ""}${x.toFixed(4)}`;
    $("patch-summary").textContent = `With ${chosen.label}: ${signed(report.mean_delta)} bits per pixel on average, ${signed(report.mean_delta_outside)} outside the region.`;
    this.app.state.patching = report;
  }

  /// The chosen ablation, `{ part, mean, label }`, or null for none.
  ablation() {
    const select = $("inspect-ablate");
    if (!select.value) return null;
    const mean = $("inspect-ablate-mode").value === "mean";
    return { part: select.value, mean, label: `${select.selectedOptions[0].textContent}${mean ? " (mean)" : ""}` };
  }

  /// The image without the chosen part: each pixel's change in surprise (the worker's numbers).
  async ablate() {
    const chosen = this.ablation();
    $("inspect-ablation-view").hidden = !chosen;
    $("ablation-summary").textContent = "";
    this.app.state.ablation = null;
    if (!chosen || !this.result) return;
    const report = await this.app.worker().call({ type: "ablate", part: chosen.part, mean: chosen.mean });
    if (this.ablation()?.label !== chosen.label) return; // another part or mode was chosen meanwhile
    const { width: w, height: h } = this.app;
    const peak = Math.max(1e-6, ...report.delta_bits.map(Math.abs));
    const without = `${report.part}${report.mode === "mean" ? " (replaced by its mean)" : ""}`;
    paintCells($("inspect-ablation"), w, h, (i) => diverging(report.delta_bits[i] / peak), this.pixel);
    $("ablation-caption").textContent = `without ${without}: change in bits per pixel (±${peak.toFixed(2)} at the ends)`;
    $("ablation-summary").textContent = `Without ${without}: ${report.mean_delta >= 0 ? "+" : ""}${report.mean_delta.toFixed(4)} bits per pixel on average.`;
    this.app.state.ablation = report;
  }
}
