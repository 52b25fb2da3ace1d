// The web UI in a real browser: Debian's chromium, headless, driven by playwright-core,
// against a real sotp that tests/e2e/ui.rs started and filled with data. Every step saves a
// screenshot; the browser console must stay free of errors (except the HTTP errors a step
// provokes on purpose); the other tenant's data must never appear.
//
// Environment: SOTP_URL, SOTP_TOKEN (tenant acme), SOTP_OTHER (a string only the other
// tenant's data contains), SOTP_INCIDENT (an open incident's id), SOTP_MANIFEST and
// SOTP_WASM (a component to upload by drag and drop), SOTP_ARTIFACTS (screenshots),
// SOTP_DOCS (if set: also write each page at both sizes there, for docs/), CHROMIUM.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const env = (k, d) => process.env[k] ?? d ?? (() => { throw new Error(`${k} is not set`); })();
const BASE = env("SOTP_URL");
const TOKEN = env("SOTP_TOKEN");
const OTHER = env("SOTP_OTHER");
const INCIDENT = env("SOTP_INCIDENT");
const ARTIFACTS = env("SOTP_ARTIFACTS");
const DOCS = process.env.SOTP_DOCS;
const env_percent = process.env.SOTP_PERCENT;
mkdirSync(ARTIFACTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const failures = [];
let expectedHttpErrors = 0;

async function newPage(viewport) {
  const context = await browser.newContext({ viewport, baseURL: BASE });
  const page = await context.newPage();
  const httpErrors = [];
  page.on("response", (r) => {
    if (r.status() >= 400) httpErrors.push(`${r.request().method()} ${r.url()}: ${r.status()}`);
  });
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (expectedHttpErrors > 0 && m.text().startsWith("Failed to load resource")) {
      expectedHttpErrors--;
      return;
    }
    const cause = m.text().startsWith("Failed to load resource") ? ` (${httpErrors.at(-1) ?? "?"})` : "";
    failures.push(`console error: ${m.text()}${cause}`);
  });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function noLeak(page, where) {
  const text = await page.locator("body").innerText();
  if (text.includes(OTHER)) failures.push(`${where}: the other tenant's data (${OTHER}) is visible`);
}

async function step(name, f) {
  const started = Date.now();
  try {
    await f();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failures.push(`${name}: ${e.message.split("\n")[0]}`);
    console.log(`FAIL ${name}: ${e.message}`);
    await page.screenshot({ path: join(ARTIFACTS, `failed-${name.replace(/\W+/g, "-").slice(0, 40)}.png`), fullPage: true }).catch(() => {});
  }
}

async function signIn(page, token) {
  await page.goto("/");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}

const desktop = { width: 1280, height: 800 };
const phone = { width: 390, height: 844 };
const page = await newPage(desktop);

await step("a wrong token shows the sign-in page with the reason", async () => {
  expectedHttpErrors = 1;
  await signIn(page, "sotp_wrong_token");
  await page.getByRole("alert").filter({ hasText: /token/i }).waitFor({ timeout: 5000 });
  await shot(page, "signin-wrong-token");
});

await step("sign in and see the overview", async () => {
  await signIn(page, TOKEN);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.getByRole("heading", { name: "Open incidents" }).waitFor();
  await page.locator(`a[href="#/incidents/${INCIDENT}"]`).waitFor();
  await page.getByText("Serving").waitFor();
  await noLeak(page, "overview");
  await shot(page, "overview");
});

await step("the session is an HttpOnly SameSite=Strict cookie, no token in storage", async () => {
  const cookies = await page.context().cookies();
  const c = cookies.find((c) => c.name === "sotp_session");
  if (!c || !c.httpOnly || c.sameSite !== "Strict") throw new Error(`cookie: ${JSON.stringify(cookies)}`);
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  if (stored.includes(TOKEN)) throw new Error("the token is in web storage");
  const readable = await page.evaluate(() => document.cookie);
  if (readable.includes("sotp_session")) throw new Error("the session cookie is readable by scripts");
});

await step("the compliance report of a real audit, drilled into a failing device", async () => {
  await page.goto("/ui/#/compliance");
  await page.getByRole("heading", { name: "Compliance", exact: true }).waitFor();
  // core1 and dist1 compliant, dist2 failing, acc1 waived, the other access devices without
  // a backup (errors): the percent the API computed.
  await page.getByText(env("SOTP_PERCENT")).first().waitFor();
  await page.getByRole("checkbox", { name: "failing only" }).check();
  await shot(page, "compliance");
  await page.getByRole("checkbox", { name: "failing only" }).uncheck();
  await page.getByRole("link", { name: "acc1" }).click();
  await page.getByText(/Waived: being replaced \(until 20\d\d-/).waitFor();
  await shot(page, "compliance-waived");
  await page.goBack();
  await page.getByRole("link", { name: "dist2" }).click();
  await page.getByRole("heading", { name: "dist2", exact: true, level: 1 }).waitFor();
  await page.locator("pre.missing").filter({ hasText: "ntp server 10.0.0.1" }).waitFor();
  await page.locator('pre[aria-label="remediation"]').filter({ hasText: "ntp server 10.0.0.1" }).waitFor();
  await page.locator('pre[aria-label="running config"]').filter({ hasText: "hostname dist2" }).waitFor();
  await page.getByRole("button", { name: "Copy" }).waitFor();
  await page.locator('pre[aria-label="intended config"]').filter({ hasText: "ntp server 10.0.0.1" }).waitFor();
  await noLeak(page, "compliance");
  await shot(page, "compliance-device");
});

await step("the editor: a broken rule file shows its error at the line", async () => {
  await page.goto("/ui/#/rules/ntp.yaml");
  const content = page.locator(".cm-content");
  await content.filter({ hasText: "ntp server 10.0.0.1" }).waitFor();
  await content.click();
  await page.keyboard.press("Control+a");
  await page.keyboard.insertText("rules:\n  - id: ntp\n    requird: [x]\n");
  expectedHttpErrors = 1;
  await page.getByRole("button", { name: "Check and dry run" }).click();
  await page.getByRole("alert").filter({ hasText: "requird" }).waitFor();
  const marked = await page.locator(".cm-lintRange-error").innerText();
  if (!marked.includes("requird")) throw new Error(`the error marks \`${marked}\`, not line 3`);
  await shot(page, "editor-error");
});

await step("fix it: the dry run shows the change, activate, the report follows", async () => {
  const content = page.locator(".cm-content");
  await content.click();
  await page.keyboard.press("Control+a");
  await page.keyboard.insertText("rules:\n  - id: ntp\n    required:\n      - ntp server 10.0.0.1\n      - ntp server 10.0.0.2\n");
  await page.getByRole("button", { name: "Check and dry run" }).click();
  await page.getByRole("status").filter({ hasText: "2 device(s) would change status" }).waitFor();
  await page.getByRole("cell", { name: "core1", exact: true }).waitFor();
  await shot(page, "editor-dry-run");
  await page.getByLabel("Device to preview").selectOption("core1");
  await page.getByRole("button", { name: "Render the intended config" }).click();
  await page.locator('pre[aria-label="preview"]').filter({ hasText: "ntp server 10.0.0.2" }).waitFor();
  await page.getByRole("button", { name: "Save and activate" }).click();
  await page.getByRole("status").filter({ hasText: "Saved as version 2, active" }).waitFor();
  // Version 1 beside the editor: the merge view marks the added line. (Wait for the versions
  // table to show version 2 active first: while it re-renders, row 1's first button turns
  // from "Diff" into "Activate".)
  await page.getByRole("row", { name: /^2 / }).getByText("active", { exact: true }).waitFor();
  await page.getByRole("row", { name: /^1 / }).getByRole("button", { name: "Activate" }).waitFor();
  await page.getByRole("row", { name: /^1 / }).getByRole("button", { name: "Diff with the editor" }).click();
  await page.locator(".cm-mergeView .cm-changedLine").filter({ hasText: "ntp server 10.0.0.2" }).first().waitFor();
  await shot(page, "editor-diff");
  await page.goto("/ui/#/compliance");
  await page.getByRole("button", { name: "Run an audit now" }).click();
  await page.getByText("audit 2,").waitFor({ timeout: 30000 });
  const audits = await page.evaluate(() => fetch("/v1/compliance/audits").then((r) => r.json()));
  const now = `${audits.audits.at(-1).summary.percent_devices.toFixed(1)} %`;
  if (now === env_percent) throw new Error(`the report did not change (${now})`);
  await page.getByText(now).first().waitFor();
  await page.getByRole("heading", { name: "Trend" }).waitFor();
  await shot(page, "compliance-after");
  // And back: roll the rule file back to version 1.
  await page.goto("/ui/#/rules/ntp.yaml");
  await page.getByText("Active version: 2").waitFor();
  await page.getByRole("button", { name: "Roll back" }).click();
  await page.getByText("Active version: 1").waitFor();
});

await step("open an incident: root cause, suppressed children, the graph, the timeline", async () => {
  await page.goto("/ui/#/overview");
  await page.locator(`a[href="#/incidents/${INCIDENT}"]`).first().click();
  await page.getByRole("heading", { name: /down \(\d+ child devices? affected\)/ }).waitFor();
  await page.getByRole("img", { name: /devices behind it/ }).waitFor();
  const suppressed = await page.locator("td .badge.child").count();
  if (suppressed < 2) throw new Error(`${suppressed} suppressed alerts shown`);
  await page.getByRole("heading", { name: "Timeline" }).waitFor();
  await noLeak(page, "incident");
  await shot(page, "incident");
});

await step("upload a component by drag and drop", async () => {
  await page.goto("/ui/#/components");
  await page.getByRole("heading", { name: "Upload a component" }).waitFor();
  const manifest = readFileSync(env("SOTP_MANIFEST"), "utf8");
  const wasm = readFileSync(env("SOTP_WASM")).toString("base64");
  const dataTransfer = await page.evaluateHandle(
    ([m, w]) => {
      const bytes = Uint8Array.from(atob(w), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([m], "sotp.toml", { type: "application/toml" }));
      dt.items.add(new File([bytes], "component.wasm", { type: "application/wasm" }));
      return dt;
    },
    [manifest, wasm],
  );
  await page.dispatchEvent("[data-testid=dropzone]", "drop", { dataTransfer });
  await page.getByText("component.wasm").waitFor();
  await page.getByRole("button", { name: "Upload" }).click();
  await page.getByRole("status").filter({ hasText: /Uploaded .* version 1/ }).waitFor({ timeout: 60000 });
  await page.getByRole("link", { name: "ui-uploaded" }).waitFor();
  await shot(page, "components");
});

await step("a component's page: versions, counters, log", async () => {
  await page.getByRole("link", { name: "ui-uploaded" }).click();
  await page.getByRole("heading", { name: "Versions" }).waitFor();
  await page.getByRole("heading", { name: "Counters" }).waitFor();
  await shot(page, "component");
});

await step("flows: top talkers and bytes/s by source and by application", async () => {
  await page.goto("/ui/#/flows");
  await page.getByRole("heading", { name: "Top by bytes" }).waitFor();
  const first = await page.locator('section[aria-labelledby="h-top"] tbody tr').first().innerText();
  if (!first.includes("10.1.0.1") || !first.includes("5.0 MB")) throw new Error(`top row: ${first}`);
  await page.getByRole("img", { name: "Bytes per second by src_addr" }).waitFor();
  await page.getByLabel("By", { exact: true }).selectOption("app");
  await page.getByRole("cell", { name: "test-app" }).waitFor();
  await shot(page, "flows");
});

await step("backups: a device's history and the diff between revisions", async () => {
  await page.goto("/ui/#/backups");
  await page.getByRole("link", { name: "core1" }).click();
  await page.locator('pre[aria-label="diff"] .add').filter({ hasText: "logging host 10.0.0.9" }).waitFor();
  await page.locator('pre[aria-label="configuration"]').filter({ hasText: "logging host 10.0.0.9" }).waitFor();
  await noLeak(page, "backups");
  await shot(page, "backup");
});

await step("devices: the tenant's inventory only", async () => {
  await page.goto("/ui/#/devices");
  await page.getByRole("heading", { name: "Devices" }).waitFor();
  await page.getByRole("cell", { name: "core1", exact: true }).first().waitFor();
  const rows = await page.locator(".virtual tbody tr:not([aria-hidden])").count();
  if (rows !== 7) throw new Error(`${rows} device rows, expected acme's 7`);
  await noLeak(page, "devices");
  await shot(page, "devices");
});

await step("an API error shows as a message, not a blank page", async () => {
  expectedHttpErrors = 1;
  await page.goto("/ui/#/incidents/999999");
  await page.getByRole("alert").filter({ hasText: /no incident/i }).waitFor();
  await shot(page, "api-error");
});

await step("keyboard: every page is reachable with Tab and Enter", async () => {
  await page.goto("/ui/#/overview");
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.locator("body").focus();
  const reached = [];
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press("Tab");
    reached.push(await page.evaluate(() => document.activeElement?.textContent?.trim() ?? ""));
  }
  for (const name of ["Compliance", "Rules", "Incidents", "Flows", "Components", "Devices", "Backups", "Sign out"]) {
    if (!reached.includes(name)) throw new Error(`Tab never reached ${name}: ${reached.join(" | ")}`);
  }
  await page.locator("nav").getByRole("link", { name: "Incidents" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Incidents", exact: true }).waitFor();
});

await step("the phone layout: menu, overview", async () => {
  const small = await newPage(phone);
  await signIn(small, TOKEN);
  await small.getByRole("heading", { name: "Overview" }).waitFor();
  await small.getByRole("button", { name: "Menu" }).click();
  await small.locator("nav").getByRole("link", { name: "Incidents" }).click();
  await small.getByRole("heading", { name: "Incidents" }).waitFor();
  await shot(small, "phone-incidents");
  await small.context().close();
});

await step("an expired token's session ends on the sign-in page with a message", async () => {
  const created = Date.now();
  const r = await fetch(`${BASE}/v1/tokens`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "ui-short", scopes: ["read"], expires_in: "3s" }),
  });
  const short = (await r.json()).token;
  const p = await newPage(desktop);
  await signIn(p, short);
  await p.getByRole("button", { name: "Sign out" }).waitFor();
  await new Promise((f) => setTimeout(f, Math.max(0, created + 3500 - Date.now())));
  await p.reload();
  await p.getByRole("status").filter({ hasText: /Signed out: your session has ended/ }).waitFor();
  await p.getByLabel("API token").waitFor();
  await shot(p, "signin-expired");
  await p.context().close();
});

await step("sign out ends the session on the server", async () => {
  await page.goto("/ui/#/overview");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API token").waitFor();
  const r = await page.evaluate(() => fetch("/ui/session").then((r) => r.json()));
  if (r.signed_in) throw new Error("still signed in");
});

await step("the admin token picks the tenant to act for", async () => {
  const p = await newPage(desktop);
  await signIn(p, env("SOTP_ADMIN"));
  await p.getByText("Choose a tenant to act for.").waitFor();
  await p.getByLabel("Tenant").selectOption("acme");
  await p.getByRole("heading", { name: "Overview" }).waitFor();
  await p.locator(`a[href="#/incidents/${INCIDENT}"]`).waitFor();
  await p.getByLabel("Tenant").selectOption("globex");
  await p.goto("/ui/#/devices");
  await p.getByRole("cell", { name: "globex-only-router" }).waitFor();
  await shot(p, "admin-globex");
  await p.getByRole("button", { name: "Sign out" }).click();
  await p.getByLabel("API token").waitFor();
  await p.context().close();
});

if (DOCS) {
  await step("screenshots for docs/ at both sizes", async () => {
    mkdirSync(DOCS, { recursive: true });
    for (const [size, viewport] of [["desktop", desktop], ["phone", phone]]) {
      const p = await newPage(viewport);
      await p.goto("/");
      await p.getByLabel("API token").waitFor();
      await p.screenshot({ path: join(DOCS, `signin-${size}.png`) });
      await signIn(p, TOKEN);
      await p.getByRole("heading", { name: "Overview" }).waitFor();
      for (const [name, hash, heading] of [
        ["overview", "overview", "Overview"],
        ["compliance", "compliance", "Compliance"],
        ["compliance-device", "compliance/dist2", "dist2"],
        ["rules", "rules", "Golden-config rules"],
        ["editor", "rules/ntp.yaml", "ntp.yaml"],
        ["incidents", "incidents", "Incidents"],
        ["incident", `incidents/${INCIDENT}`, "Timeline"],
        ["flows", "flows", "Flows"],
        ["backups", "backups/core1", "core1"],
        ["components", "components", "Components"],
        ["devices", "devices", "Devices"],
      ]) {
        await p.goto(`/ui/#/${hash}`);
        await p.getByRole("heading", { name: heading, exact: true }).first().waitFor();
        await p.waitForTimeout(200);
        await p.screenshot({ path: join(DOCS, `${name}-${size}.png`), fullPage: size === "desktop" });
      }
      await p.context().close();
    }
  });
}

await browser.close();
if (failures.length) {
  console.log(`\n${failures.length} failure(s):\n- ${failures.join("\n- ")}`);
  process.exit(1);
}
console.log("\nthe web UI passed in chromium");
