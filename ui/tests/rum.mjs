// A real user on a page carrying SOTP's RUM script: Debian's chromium, headless, driven by
// playwright-core, for tests/e2e/traces.rs. Loads PAGE_URL, waits for the page to fetch its
// API, clicks (an interaction, which also makes the LCP final), waits HOLD_MS for the
// batches to go out, then closes the page (which flushes what is left). Prints the console's
// errors and exits non-zero if there were any.
//
// Environment: PAGE_URL, HOLD_MS (default 3000), CHROMIUM.
import { chromium } from "playwright-core";

const url = process.env.PAGE_URL ?? (() => { throw new Error("PAGE_URL is not set"); })();
const hold = Number(process.env.HOLD_MS ?? 3000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const errors = [];
const page = await browser.newPage();
page.on("console", (m) => {
  // The test app has no favicon; everything else must load.
  const at = m.location()?.url ?? "";
  if (m.type() === "error" && !at.endsWith("/favicon.ico")) errors.push(`${m.text()} (${at})`);
});
page.on("pageerror", (e) => errors.push(String(e)));
await page.goto(url, { waitUntil: "networkidle" });
await page.waitForSelector("#status[data-done]", { timeout: 15000 });
await page.click("#buy");
await page.waitForTimeout(hold);
await page.close({ runBeforeUnload: true });
await browser.close();
if (errors.length) {
  console.error("console errors:\n" + errors.join("\n"));
  process.exit(1);
}
console.log("rum page done");
