// A fine-tuned model's label for an image: its three likeliest classes with their probabilities, and
// which pixels moved it. The worker asks the model (igpt::analysis::explain: the numbers `igpt
// classify --json --explain` prints). The head reads the mean of every position's state, so the
// likeliest class's logit above the mean class's is exactly a sum of per-pixel shares: red pushed
// the label toward that class, blue away. An autoregressive model's state at a pixel has read it and
// every pixel before it, so its shares grow as the scan reaches the object; the change from one
// pixel's share to the next is what reading that pixel did.

import { diverging, paintCells } from "./inspect.js";

/// `image`'s label from the worker: { labels, logits, probabilities, class, pixel_shares, start_share }.
export function classify(worker, image) {
  return worker.call({ type: "classify", image });
}

/// The `count` likeliest classes, likeliest first: [{ label, probability }].
export function topClasses(result, count = 3) {
  return result.probabilities
    .map((probability, i) => ({ label: result.labels[i], probability }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, count);
}

/// The three likeliest classes as the items of the list `ol`.
export function showTop(ol, result) {
  ol.replaceChildren(...topClasses(result).map(({ label, probability }) => {
    const item = document.createElement("li");
    item.textContent = `${label}: ${(100 * probability).toFixed(1)}%`;
    return item;
  }));
}

/// Paints each pixel's share of the label onto `canvas` (a w×h image), scaled by the largest share,
/// and returns its caption.
export function paintShares(canvas, w, h, result) {
  const shares = result.pixel_shares;
  const peak = shares.reduce((m, s) => Math.max(m, Math.abs(s)), 0) || 1;
  paintCells(canvas, w, h, (i) => diverging(shares[i] / peak), null);
  const name = result.labels[result.class];
  return `which pixels moved the label: red toward ${name}, blue away (largest share ${peak.toFixed(3)} of the logit)`;
}

/// An autoregressive model's change of share at each pixel: its state's share less the share of the
/// state before it (the start token's, for the first pixel). The last pixel is read by no state: 0.
export function shareChanges(result) {
  const shares = result.pixel_shares;
  return shares.map((s, i) => (i === shares.length - 1 ? 0 : s - (i === 0 ? result.start_share : shares[i - 1])));
}

/// Paints `shareChanges` onto `canvas` (a w×h image) as `paintShares` paints shares; returns its caption.
export function paintChanges(canvas, w, h, result) {
  const changes = shareChanges(result);
  const peak = changes.reduce((m, s) => Math.max(m, Math.abs(s)), 0) || 1;
  paintCells(canvas, w, h, (i) => diverging(changes[i] / peak), null);
  return `what reading each pixel changed: red toward ${result.labels[result.class]}, blue away (largest ${peak.toFixed(4)})`;
}
