// Re-creates images/dashboard-events.png: the dashboard's event log during a
// many_clients lab run that kills and revives a node, and checks that the log
// shows the relay's own events (kill, down, revive, up), not only the page's
// own clicks.
//
// Needs what capture-dashboard.mjs needs (Node.js 18+, /usr/bin/chromium, the
// npm package playwright-core outside the repository). Then, one block:
//
//   cargo run --release -- --listen 127.0.0.1:18080 --db /tmp/shot/bookings.db &
//   sleep 3
//   NODE_PATH=/tmp/pw/node_modules node images/capture-events.mjs http://127.0.0.1:18080 &
//   sleep 6   # the page is open and polling before the load starts
//   cargo run --release --example many_clients -- --target 127.0.0.1:18080 \
//     --duration 20 --write-ratio 0 --kill-at 4 --revive-at 10
//
// (a browser started under full load can take many seconds to open the page;
// started first, it sees the whole run, so its 10 s rates are real.)
//
// Steps: loads /_relay/ before the kill, waits (DOM state, no fixed sleep)
// until its log holds a kill, a down, a revive and an up of one node, in that
// order, then screenshots and checks for 8 s that no rate on the page passes
// 100% (a revived node's counters start again). Exits 1 if that does not
// happen within 30 s, a rate passes 100%, or the page logged an error.

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
const problems = [];

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  await page.goto(base + "/_relay/", { waitUntil: "load" });
  // The log is newest first; read it oldest first and look for the four
  // events of one node in order.
  await page.waitForFunction(() => {
    const lines = [...document.querySelectorAll("#log li")].map((li) => li.textContent).reverse();
    const at = (re, from) => lines.findIndex((t, i) => i >= from && re.test(t));
    for (const name of new Set(lines.map((t) => (t.match(/node (\S+) kill:/) || [])[1]).filter(Boolean))) {
      const kill = at(new RegExp(`node ${name} kill:`), 0);
      const down = at(new RegExp(`node ${name} down:`), kill);
      const revive = at(new RegExp(`node ${name} revive:`), down);
      const up = at(new RegExp(`node ${name} up:`), revive);
      if (kill >= 0 && down > kill && revive > down && up > revive) return true;
    }
    return false;
  }, null, { timeout: 30000, polling: 200 });
  // A revived node's cache counters start again from zero: no hit rate on
  // the page may pass 100% in the seconds after the revive (8 s of samples).
  for (let i = 0; i < 16; i++) {
    const shown = await page.locator("#nodes, .tile").allTextContents();
    for (const pct of shown.join(" ").match(/[\d.]+%/g) || [])
      if (parseFloat(pct) > 100) problems.push(`a rate above 100% on the page: ${pct}`);
    if (i === 0) await page.screenshot({ path: join(out, "dashboard-events.png") });
    await page.waitForTimeout(500);
  }
  console.log("event log: " + JSON.stringify(await page.locator("#log li").allTextContents()));
} catch (e) {
  problems.push(e.message);
} finally {
  await browser.close();
}
for (const p of problems) { console.error("FAIL: " + p); process.exitCode = 1; }
if (!process.exitCode) console.log("OK: the dashboard's log showed kill, down, revive and up");
