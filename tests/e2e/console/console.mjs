// Drives Arbiter's console in headless Chromium (playwright-core on
// Debian's chromium): sign in, see conflicts of three reasons counted,
// follow a hot resource to its history and see the field diff, and see
// that a viewer of another tenant sees none of it. Screenshots go to
// $SHOTS. Run by tests/e2e/console.sh, which starts the server and makes
// the conflicts.
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import path from "node:path";

const require = createRequire(path.join(process.env.CONSOLE_DEPS, "package.json"));
const { chromium } = require("playwright-core");

const base = process.env.ARBITER_HTTP;
const shots = process.env.SHOTS;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  async function signIn(token, tenant) {
    await page.goto(`${base}/ui/`);
    await page.fill("#token", token);
    await page.fill("#tenant", tenant);
    await page.click("#sign-in button[type=submit]");
  }

  // The Conflicts page counts the three reasons made through the API.
  await signIn("acme-viewer-token", "acme");
  const byReason = page.locator("[data-testid=by-reason]");
  await byReason.waitFor();
  for (const [reason, count] of [["RESOURCE_EXISTS", "2"], ["ETAG_MISMATCH", "1"], ["ALREADY_IN_STATE", "1"], ["POLICY_DENIED", "1"]]) {
    const cell = byReason.locator(`tr[data-key="${reason}"] td.num`);
    assert.equal(await cell.textContent(), count, `${reason} on the Conflicts page`);
  }
  assert.equal(await page.locator("[data-testid=total]").textContent(), "5");
  assert.equal(await page.locator("[data-testid=recent] tbody tr").count(), 5);
  await page.screenshot({ path: `${shots}/conflicts.png`, fullPage: true });
  // Every part of the page is there, and nothing shows an absent value.
  const shownText = await page.locator("#page").innerText();
  assert.doesNotMatch(shownText, /\bnull\b|\bundefined\b|NaN|Invalid Date/);

  // A day's and a week's window count the same conflicts.
  await page.click("text=Last week");
  await page.waitForFunction(() => location.hash.includes("window=week"));
  await page.locator("[data-testid=total]").waitFor();
  assert.equal(await page.locator("[data-testid=total]").textContent(), "5");

  // A hot resource links to its history, with the field diff.
  await page.click("[data-testid=hot] a >> text=tenants/acme/vms/web-1");
  const diff = page.locator("[data-testid=diff] tr[data-field=display_name]");
  await diff.first().waitFor();
  assert.equal(await diff.first().locator("td.before").textContent(), "Web one");
  assert.equal(await diff.first().locator("td.after").textContent(), "Web 1");
  assert.doesNotMatch(await page.locator("#page").innerText(), /\bnull\b|\bundefined\b|NaN|Invalid Date/);
  await page.screenshot({ path: `${shots}/history.png`, fullPage: true });

  // Policies: vm-guard's evaluations, its one denial, its latency.
  await page.click("nav >> text=Policies");
  const guard = page.locator('[data-testid=policies] tr[data-policy="tenants/acme/policies/vm-guard"]');
  await guard.waitFor();
  const field = async (f) => Number(await guard.locator(`td[data-field=${f}]`).textContent());
  assert.equal(await field("denied"), 1);
  assert.ok(await field("allowed") >= 2, "vm-guard allowed the creates");
  assert.equal(await field("evaluations"), (await field("allowed")) + 1);
  assert.match(await guard.locator("td[data-field=p99]").textContent(), /(µs|ms)$/);
  assert.doesNotMatch(await page.locator("#page").innerText(), /\bnull\b|\bundefined\b|NaN|Invalid Date/);
  await page.screenshot({ path: `${shots}/policies.png`, fullPage: true });

  // Resources: the VMs are listed, and a change made now shows up live.
  await page.click("nav >> text=Resources");
  const rows = page.locator("[data-testid=resources] tbody tr");
  await rows.first().waitFor();
  assert.equal(await rows.count(), 2);
  await page.locator(".live", { hasText: "live" }).waitFor();
  const created = await fetch(`${base}/v1/tenants/acme/vms?vmId=web-2`, {
    method: "POST",
    headers: { authorization: "Bearer acme-editor-token", "content-type": "application/json" },
    body: JSON.stringify({ region: "us-east1", machineType: "e2-small", image: "debian-12" }),
  });
  assert.equal(created.status, 200, await created.text());
  await page.locator("[data-testid=resources] tbody tr", { hasText: "tenants/acme/vms/web-2" }).waitFor();
  await page.screenshot({ path: `${shots}/resources.png`, fullPage: true });

  // A phone's width.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("nav >> text=Conflicts");
  await page.locator("[data-testid=by-reason]").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than a phone`);
  await page.screenshot({ path: `${shots}/conflicts-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // A viewer of another tenant sees none of it.
  await page.click("#sign-out");
  await signIn("globex-viewer-token", "acme");
  const refused = page.locator("[data-testid=error]");
  await refused.waitFor();
  assert.match(await refused.textContent(), /^403 /);
  await page.screenshot({ path: `${shots}/other-tenant.png` });
  await page.click("#sign-out");
  await signIn("globex-viewer-token", "globex");
  await page.locator("[data-testid=total]").waitFor();
  assert.equal(await page.locator("[data-testid=total]").textContent(), "0");
  assert.equal(await page.locator("[data-testid=hot]").count(), 0);

  // A wrong token is sent back to sign in.
  await page.click("#sign-out");
  await signIn("not-a-token", "acme");
  await page.locator("#sign-in-error", { hasText: "not valid" }).waitFor();

  // The browser logs the refusals (401, 403) this test provokes.
  const unexpected = errors.filter((e) => !e.includes("Failed to load resource"));
  assert.deepEqual(unexpected, [], "errors in the page");
  console.log(`console: every check passed; screenshots in ${shots}`);
} finally {
  await browser.close();
}
