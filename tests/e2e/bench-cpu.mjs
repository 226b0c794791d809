// CPU-fallback sampling speed of one or more built sites, measured in turn in the same Chromium:
//   node tests/e2e/bench-cpu.mjs [--count N] [--rounds R] [--model NAME] DIST [DIST...]
// Each round opens every site once (backend=cpu, a fresh browser; --model picks one its models/index.json
// lists, so sites whose default models differ still run the same one) and reads the tokens/s the page
// reports once its gallery is done; the median per site is printed, with each site's wasm size gzipped.
import { chromium } from "playwright-core";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : Number(args.splice(i, 2)[1]);
};
const count = option("--count", 4);
const rounds = option("--rounds", 3);
const modelAt = args.indexOf("--model");
const model = modelAt < 0 ? null : args.splice(modelAt, 2)[1];
const sites = args.map((d) => path.resolve(d));
if (!sites.length) throw new Error("usage: bench-cpu.mjs [--count N] [--rounds R] DIST [DIST...]");

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css",
  ".json": "application/json" };
const servers = await Promise.all(sites.map(async (dist) => {
  const server = http.createServer((req, res) => {
    const file = path.join(dist, decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return server;
}));

const rates = sites.map(() => []);
for (let round = 0; round < rounds; round++) {
  for (const [i, server] of servers.entries()) {
    const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: ["--headless=new", "--no-sandbox", "--disable-gpu"] });
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/index.html?backend=cpu&count=${count}${model ? `&model=${model}` : ""}`);
    await page.waitForFunction(() => window.igptState.galleryDone || window.igptState.errors.length, null, { timeout: 600_000 });
    const s = await page.evaluate(() => window.igptState);
    await browser.close();
    if (s.errors.length) throw new Error(`${sites[i]}: ${s.errors}`);
    rates[i].push(s.tokensPerSecond);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
for (const [i, dist] of sites.entries()) {
  const wasm = fs.readFileSync(path.join(dist, "igpt_bg.wasm"));
  const gz = zlib.gzipSync(wasm, { level: 9 }).length;
  console.log(`${dist}: ${median(rates[i]).toFixed(0)} tokens/s (count ${count}; ${model ? `model ${model}; ` : ""}rounds ${rates[i].map((r) => r.toFixed(0)).join(", ")}); wasm ${(wasm.length / 1e6).toFixed(2)} MB, ${(gz / 1e6).toFixed(2)} MB gzipped`);
}
for (const s of servers) s.close();
