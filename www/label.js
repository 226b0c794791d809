// A fine-tuned model's label for an image: its three likeliest classes with their probabilities, and
// which pixels moved it. The worker asks the model (igpt::analysis::explain: the numbers `igpt
// classify --json --explain` prints). The head reads the mean of every position's state, so the
// likeliest class's logit above the mean class's is exactly a sum of per-pixel shares: red pushed
// the label toward that class, blue away.

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
