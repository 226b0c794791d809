// The CPU-match check: do WebGPU and the CPU fallback choose the same colours? Each bundled example
// of the model's dataset is run teacher-forced (every pixel predicted from the true pixels before it)
// on the page's WebGPU worker and on a CPU worker, and their logits are compared pixel by pixel.
//
// Sampling draws with one noise stream on every backend (igpt::sample::SamplingNoise), so wherever
// the two agree on the logits, a seeded image is the same on both.

/// Compares the two workers (`ModelWorker`s of app.js, one model loaded in each) over `files` (example
/// file names): how many pixels the two give the same most likely colour, and the largest difference
/// between any two logits. `progress(done, total)` after each image; `stopped()` ends it early.
export async function cpuMatch(gpu, cpu, files, progress, stopped = () => false) {
  const result = { images: 0, pixels: 0, agree: 0, maxLogitDiff: 0 };
  for (const file of files) {
    if (stopped()) break;
    const response = await fetch(`examples/${file}`);
    if (!response.ok) throw new Error(`could not read the example ${file} (HTTP ${response.status})`);
    const bytes = await response.arrayBuffer();
    const [a, b] = await Promise.all([gpu, cpu].map(async (worker) => {
      const { image } = await worker.call({ type: "tokenize", bytes: bytes.slice(0) });
      return worker.call({ type: "logits", image });
    }));
    if (a.logits.length !== b.logits.length) throw new Error("the two backends gave logits of different sizes");
    const k = a.colours;
    for (let row = 0; row < a.logits.length; row += k) {
      if (argmax(a.logits, row, k) === argmax(b.logits, row, k)) result.agree++;
      for (let c = row; c < row + k; c++) {
        result.maxLogitDiff = Math.max(result.maxLogitDiff, Math.abs(a.logits[c] - b.logits[c]));
      }
      result.pixels++;
    }
    result.images++;
    progress(result.images, files.length);
  }
  return result;
}

/// The index of the largest of `values[start..start + k]` (the first, on ties), from `start`.
function argmax(values, start, k) {
  let best = start;
  for (let i = start + 1; i < start + k; i++) if (values[i] > values[best]) best = i;
  return best - start;
}
