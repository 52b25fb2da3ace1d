// SOTP's own web UI in Debian's chromium (playwright-core), for tests/e2e/platform.rs: signs
// in as SOTP_TOKEN at SOTP_URL, opens the "Platform" page from the navigation, waits for its
// probe table, reloads (a second page load), waits HOLD_MS for the RUM batches, closes the
// page (which flushes what is left). Prints console errors and exits non-zero on any.
//
// Environment: SOTP_URL, SOTP_TOKEN, HOLD_MS (default 3000), CHROMIUM; SOTP_SHOT: a path for a
// screenshot of the page (docs/ui/platform-desktop.png when tests run with SOTP_UI_DOCS).
import { chromium } from "playwright-core";

const need = (k) => process.env[k] ?? (() => { throw new Error(`${k} is not set`); })();
const base = need("SOTP_URL");
const token = need("SOTP_TOKEN");
const hold = Number(process.env.HOLD_MS ?? 3000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const errors = [];
const page = await browser.newPage({ baseURL: base, viewport: { width: 1280, height: 800 } });
page.on("console", (m) => {
  if (m.type() === "error") errors.push(`${m.text()} (${m.location()?.url ?? ""})`);
});
page.on("pageerror", (e) => errors.push(String(e)));

await page.goto("/ui/", { waitUntil: "networkidle" });
await page.getByLabel("API token").fill(token);
await page.getByRole("button", { name: "Sign in" }).click();
await page.getByRole("link", { name: "Platform" }).click();
await page.getByRole("heading", { name: "Platform health" }).waitFor();
await page.locator('table[aria-label="Probes"] tr[data-probe="sign-in-page"]').waitFor({ timeout: 15000 });
await page.reload({ waitUntil: "networkidle" });
await page.getByRole("heading", { name: "Platform health" }).waitFor();
await page.locator('table[aria-label="UI latency"]').waitFor();
if (process.env.SOTP_SHOT) await page.screenshot({ path: process.env.SOTP_SHOT, fullPage: true });
await page.waitForTimeout(hold);
await page.close({ runBeforeUnload: true });
await browser.close();
if (errors.length) {
  console.error("console errors:\n" + errors.join("\n"));
  process.exit(1);
}
console.log("platform page done");
