// The service worker: the site's own files, kept so that a later visit works offline.
//
// site-manifest.json (written at build time by scripts/site_manifest.py) lists every site file with
// its sha256, and a version named by them all. A version is cached whole, every file checked
// against the manifest, or not at all, so a cache never mixes two deploys; the newest complete one
// is kept and the others dropped.
//
// Online, the site's files come from the network, exactly as without a service worker: a new deploy
// is seen on the next visit, and never mixed with a cached one. Offline, they come from the cache.
// The model files are not touched here: weights.js verifies them and keeps them in its own cache.

const PREFIX = "igpt-site-";
const MANIFEST = "site-manifest.json";
const scope = new URL(self.registration.scope);

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/// Caches the deploy that `site` (a manifest) describes, unless it is cached already; its manifest
/// goes in last, which marks the version complete.
async function cacheVersion(site) {
  const name = PREFIX + site.version;
  const cache = await caches.open(name);
  if (await cache.match(new URL(MANIFEST, scope))) return name;
  for (const [path, expected] of Object.entries(site.files)) {
    const url = new URL(path, scope);
    const response = await fetch(url, { cache: "no-store" });
    const bytes = await response.arrayBuffer();
    if (!response.ok || (await sha256(bytes)) !== expected) {
      // A deploy under way (or a broken host): try again on a later visit.
      await caches.delete(name);
      throw new Error(`${path} does not belong to site version ${site.version}`);
    }
    await cache.put(url, new Response(bytes, { headers: response.headers }));
  }
  await cache.put(new URL(MANIFEST, scope), new Response(JSON.stringify(site), { headers: { "content-type": "application/json" } }));
  return name;
}

/// The newest complete version's cache and manifest, or null before the first one is cached.
let current = null;

/// Caches the deploy now online, if new, and drops older versions.
async function refresh() {
  const response = await fetch(new URL(MANIFEST, scope), { cache: "no-store" });
  if (!response.ok) throw new Error(`${MANIFEST}: HTTP ${response.status}`);
  const site = await response.json();
  const name = await cacheVersion(site);
  current = { name, site };
  for (const key of await caches.keys()) if (key.startsWith(PREFIX) && key !== name) await caches.delete(key);
}

/// The cached version after a restart of this worker (it keeps nothing in memory across them).
async function cached() {
  if (current) return current;
  for (const name of await caches.keys()) {
    if (!name.startsWith(PREFIX)) continue;
    const manifest = await (await caches.open(name)).match(new URL(MANIFEST, scope));
    if (manifest) return (current = { name, site: await manifest.json() });
  }
  return null;
}

self.addEventListener("install", (event) => event.waitUntil(refresh().then(() => self.skipWaiting())));
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/// The site file a request names ("" and navigations with a query are index.html), or null.
function sitePath(request) {
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return null;
  const path = url.pathname.slice(scope.pathname.length);
  return request.mode === "navigate" && (path === "" || path === "index.html") ? "index.html" : path;
}

async function fromNetworkOrCache(request, path) {
  try {
    return await fetch(request);
  } catch (offline) {
    const version = await cached();
    const hit = version && version.site.files[path] && (await (await caches.open(version.name)).match(new URL(path, scope)));
    if (hit) return hit;
    throw offline;
  }
}

self.addEventListener("fetch", (event) => {
  const path = sitePath(event.request);
  // Not a site file: another origin, the manifest (always fresh), or a model's files (weights.js's).
  if (path === null || path === MANIFEST || /^models\/[^/]+\//.test(path)) return;
  // Each visit online checks for a new deploy, in the background.
  if (event.request.mode === "navigate") event.waitUntil(refresh().catch(() => {}));
  event.respondWith(fromNetworkOrCache(event.request, path));
});
