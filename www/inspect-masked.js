// The inspector for a BERT model: each pixel's surprise when it is hidden (igpt::inspect::masked, the
// same numbers as `igpt inspect --json` on such a model). The pixels are dealt into round(1 / p)
// groups and one pass hides each group, so every pixel is judged from about the context the model
// trained with. The autoregressive inspector's other views (attention over earlier pixels, the lens,
// ablation, patching, resampling) read a causal model, so this one shows the image and its surprise.

import { heat, paintCells, pixelAt, useHeatRamp, workerPass } from "./inspect.js";

const $ = (id) => document.getElementById(id);

export class MaskedInspector {
  /// `app`: { worker(), width, height, state, stopCurrent() }.
  constructor(app) {
    this.app = app;
    this.result = null; // { bits_per_pixel, mean_bits, passes, rgb }
    this.pixel = null;
    this.passing = null; // the worker's pass, while it runs
    for (const id of ["masked-image", "masked-surprise"]) {
      const canvas = $(id);
      const at = (e) => pixelAt(canvas, e, app.width, app.height);
      canvas.addEventListener("click", (e) => this.select(at(e)));
      canvas.addEventListener("pointermove", (e) => e.pointerType === "mouse" && this.select(at(e)));
      canvas.addEventListener("keydown", (e) => {
        const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -app.width, ArrowDown: app.width };
        if (moves[e.key] === undefined || this.pixel === null) return;
        e.preventDefault();
        this.select(Math.min(app.width * app.height - 1, Math.max(0, this.pixel + moves[e.key])));
      });
    }
  }

  /// Inspects an image (`{ image, rgba }` from the worker's tokenize), selecting `pixel` (default: the
  /// centre).
  async inspect({ image, rgba }, pixel) {
    const { app } = this;
    const { result, began } = await workerPass(this, { type: "inspectMasked", image });
    useHeatRamp(result.heat);
    result.rgb = Array.from({ length: rgba.length / 4 }, (_, i) => [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]]);
    this.result = result;
    $("inspect-masked").hidden = false;
    this.select(pixel ?? Math.floor(app.height / 2) * app.width + Math.floor(app.width / 2));
    const ms = performance.now() - began;
    app.state.inspectMs = ms;
    app.state.inspect = { bits_per_pixel: result.bits_per_pixel, mean_bits: result.mean_bits, passes: result.passes };
    $("inspect-summary").textContent = `${result.mean_bits.toFixed(3)} bits per pixel on average when hidden ` +
      `(each pixel hidden once, in ${result.passes} passes); computed in ${ms.toFixed(0)} ms.`;
    app.state.inspectDone = true;
  }

  /// Outlines `pixel` and says how surprised the model was by it.
  select(pixel) {
    if (!this.result) return;
    this.pixel = pixel;
    const { width: w, height: h } = this.app;
    const { bits_per_pixel: bits, rgb } = this.result;
    const max = Math.max(1e-6, ...bits);
    paintCells($("masked-image"), w, h, (i) => rgb[i], pixel);
    // Laid over the image: mostly heat, a little of the pixel's own colour (as the other inspector).
    paintCells($("masked-surprise"), w, h, (i) => heat(bits[i] / max).map((c, k) => Math.round(0.75 * c + 0.25 * rgb[i][k])), pixel);
    $("masked-caption").textContent = `surprise when hidden: 0 (dark) to ${max.toFixed(1)} bits (pale)`;
    const [row, col] = [Math.floor(pixel / w), pixel % w];
    $("masked-pixel").textContent = `Pixel (row ${row}, column ${col}): ${bits[pixel].toFixed(2)} bits when hidden ` +
      `(a ${(100 * 2 ** -bits[pixel]).toFixed(1)}% chance on its true colour).`;
  }
}
