// Re-creates images/dashboard-before-kill.png and images/dashboard-after-kill.png
// and checks that the dashboard's Kill and Revive buttons work in a real browser
// (the admin calls it sends must pass the relay's cross-site protection).
//
// Needs: Node.js 18+, a Chromium (Debian: `apt-get install chromium`, which is
// /usr/bin/chromium) and the npm package playwright-core (not `playwright`,
// which downloads a browser of its own), installed outside the repository:
//
//   mkdir -p /tmp/pw && (cd /tmp/pw && npm install playwright-core)
//   cargo run --release -- --listen 127.0.0.1:18080 --db /tmp/shot/bookings.db &
//   NODE_PATH=/tmp/pw/node_modules node images/capture-dashboard.mjs http://127.0.0.1:18080
//
// (or run it from /tmp/pw after copying it there). Optional environment:
// CHROMIUM=path to the browser [default /usr/bin/chromium], OUT=directory of
// the screenshots [default: the directory of this script].
//
// Steps: sends a few booking GETs (so the counters are not all zero), loads
// /_relay/, waits until every node card is "up" and rates are shown,
// screenshots, clicks Kill on the first node, waits until its card shows
// "down" (DOM state, no fixed sleep) and /_relay/status says
// "healthy":false, screenshots, clicks Revive and waits until it is "up" and
// healthy again. Exits 1 if a step fails, if an admin call was not 2xx, or if
// the page logged an error or threw.

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(join(process.cwd(), "noop.js"));
let chromium;
try {
  ({ chromium } = require("playwright-core"));
} catch {
  ({ chromium } = await import("playwright-core"));
}

const base = (process.argv[2] || "http://127.0.0.1:18080").replace(/\/+$/, "");
const out = process.env.OUT || dirname(fileURLToPath(import.meta.url));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 15000; // health checks mark a killed node down within ~2 s

const problems = [];
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };

async function status() {
  const res = await fetch(base + "/_relay/status", { cache: "no-store" });
  if (!res.ok) throw new Error("/_relay/status: HTTP " + res.status);
  return res.json();
}
async function waitHealthy(name, healthy) {
  const end = Date.now() + TIMEOUT;
  for (;;) {
    const n = (await status()).nodes.find((x) => x.name === name);
    if (n && n.healthy === healthy) return n;
    if (Date.now() > end) throw new Error(`${name}: /_relay/status never said "healthy":${healthy}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A little read traffic so the cards show requests and a cache hit rate.
async function warmUp() {
  const list = await (await fetch(base + "/bookings?limit=30")).json();
  const ids = (list.items || []).map((b) => b.booking_id);
  for (let round = 0; round < 2; round++)
    await Promise.all(ids.map((id) => fetch(`${base}/bookings/${id}`).then((r) => r.arrayBuffer())));
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  page.on("console", (m) => {
    console.log(`[console.${m.type()}] ${m.text()} ${m.location()?.url || ""}`);
    if (m.type() === "error") problems.push("console error: " + m.text());
  });
  page.on("pageerror", (e) => { console.log("[pageerror] " + e.message); problems.push("page error: " + e.message); });
  page.on("requestfailed", (r) => console.log(`[requestfailed] ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    const req = r.request();
    if (r.status() >= 400) console.log(`[http ${r.status()}] ${req.method()} ${r.url()}`);
    if (req.method() !== "GET") {
      console.log(`[admin] ${req.method()} ${r.url()} -> ${r.status()}`);
      if (r.status() < 200 || r.status() > 299) problems.push(`${req.method()} ${r.url()} answered ${r.status()}`);
    }
  });

  await warmUp();
  await page.goto(base + "/_relay/", { waitUntil: "load" });
  // Every card rendered and up, and the connection indicator live.
  await page.waitForFunction(() => {
    const cards = [...document.querySelectorAll("#nodes .card")];
    return cards.length > 0 && cards.every((c) => c.querySelector(".badge")?.textContent === "up")
      && document.getElementById("conn").classList.contains("ok")
      && document.getElementById("t-rps").textContent !== "–"; // a second poll gave rates
  }, null, { timeout: TIMEOUT });

  // Each thread node's buttons carry their own labels (a stat written into
  // a button by a shared name would show a number there instead).
  const labels = await page.locator("#nodes .card").first().locator("button").allTextContents();
  for (const want of ["Kill", "Revive", "Fail", "Heal", "Remove"]) {
    if (!labels.includes(want)) problems.push(`no ${want} button on a node card (buttons: ${labels.join(", ")})`);
  }

  const card = page.locator("#nodes .card").first();
  const name = (await card.locator(".name").textContent()).trim();
  const badge = card.locator(".badge");
  console.log(`node ${name}: badge before kill "${await badge.textContent()}"`);
  await page.screenshot({ path: join(out, "dashboard-before-kill.png") });

  const killed = page.waitForResponse((r) => r.url().endsWith(`/_relay/nodes/${name}/kill`));
  await card.getByRole("button", { name: "Kill" }).click();
  const killRes = await killed;
  console.log(`kill answered ${killRes.status()} ${await killRes.text()}`);
  if (!killRes.ok()) throw new Error(`kill ${name}: HTTP ${killRes.status()}`);
  // The card turns "down" once the relay's health check has seen the node gone.
  await page.waitForFunction((n) => {
    const c = [...document.querySelectorAll("#nodes .card")].find((x) => x.querySelector(".name").textContent === n);
    return c && c.classList.contains("down") && c.querySelector(".badge").textContent === "down"
      && !c.querySelector("button.good").disabled;
  }, name, { timeout: TIMEOUT });
  const down = await waitHealthy(name, false);
  console.log(`node ${name}: badge after kill "${await badge.textContent()}", status healthy=${down.healthy}`);
  await page.screenshot({ path: join(out, "dashboard-after-kill.png") });

  const revived = page.waitForResponse((r) => r.url().endsWith(`/_relay/nodes/${name}/revive`));
  await card.getByRole("button", { name: "Revive" }).click();
  const reviveRes = await revived;
  console.log(`revive answered ${reviveRes.status()} ${await reviveRes.text()}`);
  if (!reviveRes.ok()) throw new Error(`revive ${name}: HTTP ${reviveRes.status()}`);
  await page.waitForFunction((n) => {
    const c = [...document.querySelectorAll("#nodes .card")].find((x) => x.querySelector(".name").textContent === n);
    return c && !c.classList.contains("down") && c.querySelector(".badge").textContent === "up";
  }, name, { timeout: TIMEOUT });
  const up = await waitHealthy(name, true);
  console.log(`node ${name}: badge after revive "${await badge.textContent()}", status healthy=${up.healthy}`);
  console.log("event log: " + JSON.stringify(await page.locator("#log li").allTextContents()));
} catch (e) {
  fail(e.message);
} finally {
  await browser.close();
}
for (const p of problems) fail(p);
if (!process.exitCode) console.log("OK: Kill and Revive worked from the dashboard");
