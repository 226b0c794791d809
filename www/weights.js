// Model files, downloaded once and checked: models/index.json gives each file's size and sha256; a
// file is used only when its hash matches, and kept in the Cache API under that hash, so a later visit
// reads it from the cache and a new version of the file replaces the old one there.

const CACHE = "igpt-models-v1";

/// Thrown for a download that failed or did not match its hash; the page offers to retry.
export class DownloadError extends Error {
  constructor(message) {
    super(message);
    this.retry = true;
  }
}

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The Cache API exists only in secure contexts (https, localhost); elsewhere files are not cached.
async function openCache() {
  try {
    return self.caches ? await caches.open(CACHE) : null;
  } catch {
    return null;
  }
}

async function download(url, expected, onProgress) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (e) {
    throw new DownloadError(`downloading ${url} failed (${e.message ?? e})`);
  }
  if (!response.ok) throw new DownloadError(`downloading ${url} failed: HTTP ${response.status}`);
  const chunks = [];
  let received = 0;
  try {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      received += value.length;
      onProgress(received);
    }
  } catch (e) {
    throw new DownloadError(`the download of ${url} broke off after ${received.toLocaleString("en")} bytes (${e.message ?? e})`);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const c of chunks) { bytes.set(c, offset); offset += c.length; }
  if (expected && received !== expected.size) {
    throw new DownloadError(`${url} is ${received.toLocaleString("en")} bytes; models/index.json says ${expected.size.toLocaleString("en")}`);
  }
  return bytes;
}

/// The bytes of `url`, verified against `expected` ({size, sha256}, from models/index.json) when given:
/// from the cache when a copy with that hash is there, else downloaded (reporting bytes so far) and
/// cached, older versions of the same file dropped. A file with no entry is not fetched at all
/// (undefined, as if missing): the page uses no byte that the index does not vouch for. If the cache
/// cannot keep the file (storage full), `onNotKept(message)` says so and the bytes are used anyway.
export async function verifiedBytes(url, expected, onProgress, onNotKept = () => {}) {
  const absolute = new URL(url, location.href);
  if (!expected) return undefined;
  const key = `${absolute.pathname}?sha256=${expected.sha256}`;
  const cache = await openCache();
  const hit = await cache?.match(key);
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if ((await sha256(bytes)) === expected.sha256) {
      onProgress(bytes.length);
      return bytes;
    }
    await cache.delete(key); // damaged in storage: fetch it again
  }
  const bytes = await download(absolute, expected, onProgress);
  const actual = await sha256(bytes);
  if (actual !== expected.sha256) {
    throw new DownloadError(`${absolute.pathname} does not match models/index.json (sha256 ${actual.slice(0, 12)}…, expected ${expected.sha256.slice(0, 12)}…)`);
  }
  if (cache) {
    for (const old of await cache.keys()) {
      const oldUrl = new URL(old.url);
      if (oldUrl.pathname === absolute.pathname && oldUrl.search !== `?sha256=${expected.sha256}`) await cache.delete(old);
    }
    // A full disk only costs the next visit a download: say so, and go on.
    await cache.put(key, new Response(bytes)).catch((e) => onNotKept(e?.name === "QuotaExceededError"
      ? `The browser's storage for this site is full, so ${absolute.pathname.split("/").pop()} was not kept: this visit works, and the next one downloads it again.`
      : `${absolute.pathname.split("/").pop()} could not be kept for the next visit (${e?.message ?? e}).`));
  }
  return bytes;
}
